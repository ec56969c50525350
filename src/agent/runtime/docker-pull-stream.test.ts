// DockerRuntime's pull against a scripted engine on a unix socket: how it reads the stream as it
// comes (progress before the end), and what each way a pull can end becomes (success, the
// registry's reason, an engine that went away, no progress, a task that went away). The real
// engine and registry are in cluster-tests/pull.test.ts.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Task } from '../../gen/cluster/v1/objects';
import { DockerRuntime } from './docker';
import { RuntimeUnavailableError, TaskRuntimeError } from './index';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'docker-pull-stream-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let nextSocket = 1;

const IMAGE = 'reg.test:5000/web:1';
const task = Task.fromPartial({ id: 't1', serviceId: 's1', spec: { container: { image: IMAGE } } });
const line = (event: object) => JSON.stringify(event) + '\r\n';

/** What the scripted engine does with POST /images/create. */
type PullScript = (res: http.ServerResponse, req: http.IncomingMessage) => void;

/** An engine that has no image until its pull script ends the stream well; creates any container. */
async function engine(script: PullScript): Promise<{ socketPath: string; close: () => Promise<void> }> {
  const socketPath = path.join(dir, `engine${nextSocket++}.sock`);
  let pulled = false;
  const server = http.createServer((req, res) => {
    const url = req.url ?? '';
    if (req.method === 'GET' && url.includes('/images/')) {
      res.writeHead(pulled ? 200 : 404, { 'Content-Type': 'application/json' });
      res.end(pulled ? '{}' : '{"message":"No such image"}');
    } else if (req.method === 'POST' && url.includes('/images/create')) {
      res.on('finish', () => (pulled = res.statusCode === 200 && res.writableEnded && !res.destroyed));
      script(res, req);
    } else if (req.method === 'POST' && url.includes('/containers/create')) {
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end('{"Id":"c0ffee"}');
    } else {
      res.writeHead(500);
      res.end('{"message":"unexpected call"}');
    }
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

test('progress is heard while the stream flows, before it ends; the pull then succeeds', async () => {
  let sendRest: () => void = () => undefined;
  const e = await engine((res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write(line({ status: 'Pulling from web', id: '1' }));
    res.write(line({ status: 'Pulling fs layer', progressDetail: {}, id: 'aaa' }));
    // Half a line: it counts once the rest arrives.
    const downloading = line({
      status: 'Downloading',
      progressDetail: { current: 500_000, total: 2_000_000 },
      id: 'aaa',
    });
    res.write(downloading.slice(0, 20));
    sendRest = () => {
      res.write(downloading.slice(20));
      res.write(line({ status: 'Pull complete', progressDetail: {}, id: 'aaa' }));
      res.end(line({ status: `Status: Downloaded newer image for ${IMAGE}` }));
    };
  });
  try {
    const heard: string[] = [];
    const rt = new DockerRuntime({ socketPath: e.socketPath });
    let layerSeen: () => void = () => undefined;
    const sawLayer = new Promise<void>((resolve) => (layerSeen = resolve));
    const prepared = rt.prepare(task, 'n1', {
      onProgress: (m) => {
        heard.push(m);
        if (m.endsWith('0 of 1 layer')) layerSeen();
      },
    });
    // The stream is still open here: what was heard came from its first lines.
    await sawLayer;
    assert.deepEqual(heard, [`pulling image ${IMAGE}`, `pulling image ${IMAGE}: 0 of 1 layer`]);
    sendRest();
    assert.equal(await prepared, 'c0ffee');
    assert.deepEqual(heard.slice(2), [
      `pulling image ${IMAGE}: 0 of 1 layer, 500.0 kB of 2.0 MB`,
      `pulling image ${IMAGE}: 1 of 1 layer, 2.0 MB of 2.0 MB`,
    ]);
  } finally {
    await e.close();
  }
});

test("an error inside the stream fails the task with the registry's reason", async () => {
  const e = await engine((res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write(line({ status: 'Pulling from web', id: '1' }));
    res.end(line({ errorDetail: { message: 'manifest unknown' }, error: 'manifest unknown' }));
  });
  try {
    const rt = new DockerRuntime({ socketPath: e.socketPath });
    await assert.rejects(rt.prepare(task, 'n1'), (err: Error) => {
      assert.ok(err instanceof TaskRuntimeError);
      assert.equal(err.message, `image ${IMAGE} not found locally and the pull failed: manifest unknown`);
      return true;
    });
  } finally {
    await e.close();
  }
});

test('a refusal before the stream (HTTP 500) fails the task with its message', async () => {
  const reason = 'Get "http://reg.test:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused';
  const e = await engine((res) => {
    res.writeHead(500, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ message: reason }));
  });
  try {
    const rt = new DockerRuntime({ socketPath: e.socketPath });
    await assert.rejects(rt.prepare(task, 'n1'), (err: Error) => {
      assert.ok(err instanceof TaskRuntimeError);
      assert.equal(
        err.message,
        `image ${IMAGE} not found locally and no registry is reachable (pull failed: ${reason})`,
      );
      return true;
    });
  } finally {
    await e.close();
  }
});

test('a stream the engine cuts is the engine going away, not a failure of the task', async () => {
  const e = await engine((res, req) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write(line({ status: 'Pulling from web', id: '1' }), () => req.socket.destroy());
  });
  try {
    const rt = new DockerRuntime({ socketPath: e.socketPath });
    await assert.rejects(rt.prepare(task, 'n1'), RuntimeUnavailableError);
  } finally {
    await e.close();
  }
});

test('a pull without progress for the pull timeout is given up with that reason', async () => {
  const e = await engine((res) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write(line({ status: 'Pulling from web', id: '1' }));
    // ... and nothing more.
  });
  try {
    const rt = new DockerRuntime({ socketPath: e.socketPath, pullTimeoutMs: 200 });
    await assert.rejects(rt.prepare(task, 'n1'), (err: Error) => {
      assert.ok(err instanceof TaskRuntimeError);
      assert.match(
        err.message,
        /no registry is reachable \(pull failed: no progress from the engine's pull for 200 ms\)/,
      );
      return true;
    });
  } finally {
    await e.close();
  }
});

test('a task that goes away hangs up the pull: prepare ends with the abort, the engine sees the hang-up', async () => {
  let hungUp: () => void = () => undefined;
  const engineSawHangUp = new Promise<void>((resolve) => (hungUp = resolve));
  const abort = new AbortController();
  const e = await engine((res, req) => {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.write(line({ status: 'Pulling from web', id: '1' }));
    req.socket.on('close', hungUp);
  });
  try {
    const rt = new DockerRuntime({ socketPath: e.socketPath });
    const prepared = rt.prepare(task, 'n1', {
      signal: abort.signal,
      onProgress: () => abort.abort(),
    });
    await assert.rejects(prepared, { name: 'AbortError' });
    await engineSawHangUp;
  } finally {
    await e.close();
  }
});
