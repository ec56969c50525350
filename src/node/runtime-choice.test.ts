// `cluster daemon --runtime docker|oci`, and the detection without the flag: docker where an
// engine answers on its socket, else the embedded oci runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { DockerRuntime } from '../agent/runtime/docker';
import { chooseRuntime } from './index';

test('the flag decides; without it, no engine on the socket means oci', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-choice-'));
  try {
    const absent = new DockerRuntime({ socketPath: path.join(dir, 'no-docker.sock') });
    assert.equal((await chooseRuntime('oci', dir, absent)).name, 'oci');
    assert.equal((await chooseRuntime('docker', dir, absent)).name, 'docker');
    assert.equal((await chooseRuntime(undefined, dir, absent)).name, 'oci');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("the daemon's log limits reach the oci runtime, which refuses ones it cannot keep", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-choice-'));
  try {
    const absent = new DockerRuntime({ socketPath: path.join(dir, 'no-docker.sock') });
    const tooSmall = { maxSizeBytes: 1000, maxFiles: 2 };
    await assert.rejects(chooseRuntime('oci', dir, absent, tooSmall), /log max size/);
    await assert.rejects(chooseRuntime(undefined, dir, absent, tooSmall), /log max size/);
    const fine = { maxSizeBytes: 1 << 20, maxFiles: 2 };
    assert.equal((await chooseRuntime('oci', dir, absent, fine)).name, 'oci');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('without the flag, an engine that answers means docker', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runtime-choice-'));
  const socketPath = path.join(dir, 'docker.sock');
  // Just enough of the Engine API for describe(): /version and /info.
  const server = http.createServer((req, res) => {
    res.setHeader('Content-Type', 'application/json');
    res.end(
      req.url?.endsWith('/version') ? '{"Version":"20.10.24","Os":"linux","Arch":"amd64"}' : '{"NCPU":2}',
    );
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  try {
    const engine = new DockerRuntime({ socketPath });
    assert.equal((await chooseRuntime(undefined, dir, engine)).name, 'docker');
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
