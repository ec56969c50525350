// Image pulls from a real registry (Debian's docker-registry, distribution 2.8, on loopback) into
// a one-node lab on the Docker runtime, through the CLI: a missing image is pulled and the task's
// PREPARING status tells how far the pull got (`service ps`); with the registry gone, a locally
// present image still runs and a missing one fails the task with a clear message.
//
// The registry sits behind a small TCP gate in this process: once armed, it lets the first bytes
// of the pull through and holds the rest until the test has seen the progress in `service ps`,
// so the PREPARING message is observed for certain, not by racing a fast loopback pull.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PULL_TIMEOUT_MS } from '../src/agent/runtime/docker';
import { tasksOf } from './lib/health';
import { capabilities, eventually, root, run, useLab } from './lib/lab';

const REGISTRY_BIN = '/usr/bin/docker-registry';
const BASE_IMAGE = 'local/busybox:1';
/** Random bytes in the pushed image's own layer: never present locally, so the pull downloads it. */
const BLOB_BYTES = 4_000_000;
/** What the gate lets through once armed: the manifest, the config and the first part of the layer. */
const GATE_BYTES = 256 * 1024;
const WAIT_MS = 90_000;
const SERVICES = ['abandoned', 'pulled', 'unknown', 'present', 'missing'];

const escapeRe = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

async function docker(...args: string[]): Promise<string> {
  const r = await run('docker', args, { timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

async function imagePresent(image: string): Promise<boolean> {
  return (await run('docker', ['image', 'inspect', image])).code === 0;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
}

function httpStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { timeout: 2000, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(0));
  });
}

/**
 * A TCP relay on 127.0.0.1 to the registry. Armed with `hold(n)`, it passes n more bytes from
 * the registry to its clients, then pauses every registry connection until `release()`.
 */
class PullGate {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private limit: number | undefined;
  private passed = 0;
  private readonly held: (() => void)[] = [];
  /** Engine connections open now. */
  clients = 0;

  constructor(upstreamPort: number) {
    this.server = net.createServer((client) => {
      this.clients++;
      client.on('close', () => this.clients--);
      const upstream = net.connect(upstreamPort, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.on('data', (chunk: Buffer) => this.forward(chunk, client, upstream));
      upstream.on('end', () => client.end());
    });
  }

  listen(port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
  }

  private forward(chunk: Buffer, client: net.Socket, upstream: net.Socket): void {
    if (this.limit === undefined || this.passed + chunk.length <= this.limit) {
      this.passed += chunk.length;
      client.write(chunk);
      return;
    }
    const room = Math.max(0, this.limit - this.passed);
    this.passed += room;
    if (room > 0) client.write(chunk.subarray(0, room));
    upstream.pause();
    this.held.push(() => {
      client.write(chunk.subarray(room));
      upstream.resume();
    });
  }

  hold(bytes: number): void {
    this.limit = bytes;
    this.passed = 0;
  }

  /** Whether a registry connection waits at the gate. */
  get holding(): boolean {
    return this.held.length > 0;
  }

  release(): void {
    this.limit = undefined;
    for (const go of this.held.splice(0)) go();
  }

  close(): Promise<void> {
    this.release();
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

const caps = capabilities();
const needs =
  caps.labUnavailable ??
  (!caps.agent
    ? `needs agents that run tasks: ${caps.agentMissing ?? ''}`
    : !fs.existsSync(REGISTRY_BIN)
      ? `${REGISTRY_BIN} is missing (Debian's docker-registry: scripts/setup.sh)`
      : false);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 1, workers: 0 });

describe('image pulls from a registry on loopback (one-node lab, Docker runtime)', { skip: needs }, () => {
  let tmp = '';
  let registry: ChildProcess | undefined;
  let gate: PullGate | undefined;
  /** The pushed image's name, through the gate: 127.0.0.1:PORT/pulltest/busybox:1. */
  let image = '';
  const sourceContainer = `cluster-pulltest-src-${process.pid}`;

  const theLab = () => {
    if (!lab) throw new Error('no lab');
    return lab;
  };
  const tasks = (service: string) => tasksOf(theLab(), service);
  const registryLog = () => {
    try {
      return fs.readFileSync(path.join(tmp, 'registry.log'), 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '';
    }
  };

  const stopRegistry = async () => {
    const child = registry;
    registry = undefined;
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      process.kill(child.pid, 'SIGTERM');
      await exited;
    }
    await gate?.close();
    gate = undefined;
  };

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cluster-pull-'));
    assert.ok(await imagePresent(BASE_IMAGE), `${BASE_IMAGE} is missing (scripts/make-images.sh)`);
    const registryPort = await freePort();
    const gatePort = await freePort();
    // Not the package's own /etc/docker/registry/config.yml (port 5000, htpasswd): ours, loopback only.
    const config = path.join(tmp, 'config.yml');
    fs.writeFileSync(
      config,
      [
        'version: 0.1',
        'log:',
        '  level: warn',
        'storage:',
        '  filesystem:',
        `    rootdirectory: ${path.join(tmp, 'storage')}`,
        '  delete:',
        '    enabled: true',
        'http:',
        `  addr: 127.0.0.1:${registryPort}`,
        '',
      ].join('\n'),
    );
    const log = fs.openSync(path.join(tmp, 'registry.log'), 'a');
    registry = spawn(REGISTRY_BIN, ['serve', config], { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    await eventually('the registry answers /v2/', 30_000, async () =>
      (await httpStatus(`http://127.0.0.1:${registryPort}/v2/`)) === 200 ? true : undefined,
    );
    gate = new PullGate(registryPort);
    await gate.listen(gatePort);
    image = `127.0.0.1:${gatePort}/pulltest/busybox:1`;

    // local/busybox:1 plus a layer of random bytes: that layer can only come from the registry.
    fs.writeFileSync(path.join(tmp, 'blob'), crypto.randomBytes(BLOB_BYTES));
    await docker('create', '--name', sourceContainer, BASE_IMAGE);
    await docker('cp', path.join(tmp, 'blob'), `${sourceContainer}:/blob`);
    await docker('commit', sourceContainer, image);
    await docker('rm', '-f', sourceContainer);
    await docker('push', image);
    await docker('rmi', image);
    assert.equal(await imagePresent(image), false, `${image} is still present locally after rmi`);
  });

  after(async () => {
    await stopRegistry();
    await run('docker', ['rm', '-f', sourceContainer]);
    if (image !== '') {
      // Left by a failed test: the services first (else the agent starts new containers), then
      // their containers, so that the image can go.
      await lab?.cli('manager1', 'service', 'rm', ...SERVICES);
      const left = (await run('docker', ['ps', '-aq', '--filter', `ancestor=${image}`])).stdout.split('\n');
      const ids = left.filter((id) => id.trim() !== '');
      if (ids.length > 0) await run('docker', ['rm', '-f', ...ids]);
      await run('docker', ['rmi', '-f', image]);
    }
    if (tmp !== '') fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** The first task of SERVICE once it runs; a task that ended instead fails the test at once. */
  const runningTask = (service: string, what: string) =>
    eventually(what, WAIT_MS, async () => {
      const row = (await tasks(service))[0];
      if (row && /^(Failed|Rejected)/.test(row.CurrentState))
        throw new Error(`the task ended: ${row.CurrentState} ${row.Error}`);
      return row && /^Running/.test(row.CurrentState) ? row : undefined;
    });

  /** Creates SERVICE from IMAGE, never restarted, and waits for its task to fail. */
  const failedTask = async (service: string, img: string, what: string) => {
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--restart-condition',
      'none',
      '--name',
      service,
      img,
    );
    return eventually(what, WAIT_MS, async () => {
      const row = (await tasks(service))[0];
      return row && /^Failed/.test(row.CurrentState) ? row : undefined;
    });
  };

  /** `service ps SERVICE`'s CurrentState once it shows the pull's progress with byte counts. */
  const pullProgress = (service: string): Promise<string> => {
    const escaped = escapeRe(image);
    const withBytes = new RegExp(
      `^Preparing .* \\(pulling image ${escaped}: \\d+ of \\d+ layers?, [\\d.]+ k?B of [\\d.]+ MB\\)$`,
    );
    return eventually(`service ps ${service} shows the pull progress while PREPARING`, WAIT_MS, async () => {
      const row = (await tasks(service))[0];
      if (row === undefined) return undefined;
      if (/^(Failed|Rejected)/.test(row.CurrentState))
        throw new Error(`the task ended: ${row.CurrentState} ${row.Error}\n${registryLog()}`);
      return withBytes.test(row.CurrentState) ? row.CurrentState : undefined;
    });
  };

  test('a task stopped while its image is pulled stops at once; the pull is given up', async () => {
    gate?.hold(GATE_BYTES);
    await theLab().ok('manager1', 'service', 'create', '-d', '--name', 'abandoned', image);
    await pullProgress('abandoned');
    await theLab().ok('manager1', 'service', 'scale', '-d', 'abandoned=0');
    // The pull cannot end while the gate holds it: the task ends (SHUTDOWN; the orchestrator then
    // deletes a scaled-down slot's ended task) because the agent hangs up its pull request. Were
    // it waiting for the pull, only the pull's own time limit would end it (PULL_TIMEOUT_MS
    // without progress): the wait here is generous but stops short of that.
    await eventually('the preparing task ended and was removed', PULL_TIMEOUT_MS - 15_000, async () => {
      const rows = await tasks('abandoned');
      if (rows.length === 0) return true;
      throw new Error(`service ps: ${JSON.stringify(rows)}`);
    });
    assert.ok(gate?.holding, 'the pull was still held at the gate');
    // The Engine gives up a transfer nobody waits for: it hangs up on the registry, no image.
    gate?.release();
    await eventually('the Engine leaves the registry', WAIT_MS, () =>
      Promise.resolve(gate?.clients === 0 ? true : undefined),
    );
    assert.equal(await imagePresent(image), false, 'the abandoned pull made no image');
    await theLab().ok('manager1', 'service', 'rm', 'abandoned');
  });

  test('a missing image is pulled; PREPARING tells how far the pull got, in service ps and in service create', async (t) => {
    gate?.hold(GATE_BYTES);
    // Not detached: the CLI waits for the task and prints each slot's line as it changes.
    const create = spawn(
      'bash',
      [
        path.join(root, 'scripts', 'lab'),
        'exec',
        'manager1',
        '--',
        'cluster',
        'service',
        'create',
        '--name',
        'pulled',
        image,
      ],
      // Its own process group: on a failure the group (bash and the CLI under it) is killed.
      { env: { ...process.env, LAB_DIR: theLab().dir }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    let out = '';
    let err = '';
    create.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    create.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()));
    const exited = new Promise<number>((resolve) => create.on('close', (code) => resolve(code ?? 1)));
    try {
      const seen = await pullProgress('pulled');
      t.diagnostic(`service ps: ${seen}`);
      const createLine = new RegExp(
        `^1/1: preparing \\[[=> ]+\\] pulling image ${escapeRe(image)}: \\d+ of \\d+ layers?, [\\d.]+ k?B of [\\d.]+ MB$`,
        'm',
      );
      const line = await eventually('service create prints the pull progress', WAIT_MS, () =>
        Promise.resolve(createLine.exec(out)?.[0]),
      );
      t.diagnostic(`service create: ${line}`);
      assert.ok(gate?.holding, 'the pull was still held at the gate when its progress showed');
      gate?.release();
      assert.equal(await exited, 0, `service create: ${out}${err}`);
      assert.match(out, /verify: Service converged\n$/);
    } finally {
      if (create.exitCode === null && create.signalCode === null && create.pid !== undefined)
        process.kill(-create.pid, 'SIGKILL');
    }
    const running = await runningTask('pulled', 'the pulled task runs');
    assert.equal(running.Error, '');
    assert.ok(await imagePresent(image), 'the image is present locally after the pull');
  });

  test("an image the registry does not have fails the task with the registry's reason", async (t) => {
    const unknown = image.replace('/pulltest/busybox:1', '/pulltest/nosuch:1');
    const failed = await failedTask('unknown', unknown, 'the task of an unknown image fails');
    t.diagnostic(`error: ${failed.Error}`);
    // The registry answered: its reason, not "no registry is reachable".
    assert.match(
      failed.Error,
      new RegExp(
        `^"image ${escapeRe(unknown)} not found locally and the pull failed: .*(not found|unknown|does not exist).*"$`,
      ),
    );
    await theLab().ok('manager1', 'service', 'rm', 'unknown');
  });

  test('with no registry: a present image runs; a missing one fails the task with a clear message', async () => {
    await stopRegistry();
    assert.notEqual(
      await httpStatus(`http://${image.split('/')[0] ?? ''}/v2/`),
      200,
      'the registry still answers',
    );
    await theLab().ok('manager1', 'service', 'create', '-d', '--name', 'present', image);
    await runningTask('present', 'the task of a locally present image runs without a registry');

    await theLab().ok('manager1', 'service', 'rm', 'pulled', 'present');
    // rmi succeeds once no container of the removed services holds the image.
    await eventually(`docker rmi ${image}`, WAIT_MS, async () =>
      (await run('docker', ['rmi', image])).code === 0 ? true : undefined,
    );
    assert.equal(await imagePresent(image), false);

    const failed = await failedTask('missing', image, 'the task of a missing image fails');
    assert.match(
      failed.Error,
      new RegExp(
        `^"image ${escapeRe(image)} not found locally and no registry is reachable \\(pull failed: .*connection refused.*\\)"$`,
      ),
    );
    assert.equal(await imagePresent(image), false, 'a failed pull leaves no image behind');
  });
});
