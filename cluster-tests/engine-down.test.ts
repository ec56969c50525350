// The Docker engine going away under a running agent, on a PRIVATE dockerd this test starts and
// stops by PID (the shared engine is never touched): the node turns NOT_READY naming the engine,
// its running task stays in the store and keeps running (live-restore), a task assigned
// meanwhile waits; when the engine returns the node is READY, the running task is adopted (same
// container, same process) and watched again, the waiting one runs. An agent (re)started while
// the engine is down connects NOT_READY, fails none of its tasks, and adopts them when it returns.
//
// The private engine: its own socket, data root, exec root, pidfile and containerd (it starts
// its own unless a system containerd answers on /run/containerd/containerd.sock; its own
// containerd namespaces either way), `--bridge none --iptables=false --ip6tables=false`, run in
// a network namespace of its own (`unshare --net`: with `--bridge none` dockerd deletes any link
// named docker0 it sees, which on the host is the shared engine's bridge). A task without networks asks Docker for the default bridge;
// with `--bridge none` the engine gives such a container its own network namespace with
// loopback only, which is all these tasks need.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { NodeState, Task, TaskState } from '../src/gen/cluster/v1/objects';
import { componentLogger } from '../src/common/logger';
import { localStores, makeNode } from '../src/store/testing';
import { Agent } from '../src/agent';
import { DockerRuntime } from '../src/agent/runtime/docker';
import { startTestDispatcher } from '../src/agent/testing';
import { NODE_ID_LABEL, type ContainerInfo } from '../src/agent/runtime';

const logger = componentLogger('engine-down-test');
logger.level = 'silent';
const NODE_ID = `edown${process.pid}${Math.floor(Math.random() * 1e6)}`;
const IMAGE = 'local/busybox:1';
/** Generous: a loaded machine may take long to start an engine or turn a heartbeat around. */
const WAIT_MS = 90_000;

async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = WAIT_MS,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Mount points at or under `dir`, deepest first (from /proc/self/mountinfo). */
function mountsUnder(dir: string): string[] {
  const found: string[] = [];
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const point = line.split(' ')[4]?.replace(/\\040/g, ' ');
    if (point && (point === dir || point.startsWith(`${dir}/`))) found.push(point);
  }
  return found.sort((a, b) => b.length - a.length);
}

/**
 * A dockerd of this test's own, started and stopped by PID. Its state survives a stop (the
 * point of the test); `destroy` removes everything it made.
 */
class PrivateEngine {
  readonly socketDir = `/run/cluster-test-dockerd-${process.pid}`;
  readonly socketPath = `${this.socketDir}/docker.sock`;
  readonly dataRoot = `/var/lib/cluster-test-docker-${process.pid}`;
  readonly execRoot = `/run/cluster-test-docker-exec-${process.pid}`;
  private readonly namespace = `cluster-test-${process.pid}`;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  /** Its own client, for the engine's state as it is (not through the agent). */
  readonly api: DockerRuntime;

  constructor(readonly logPath: string) {
    this.api = new DockerRuntime({ socketPath: this.socketPath });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    return this.child !== undefined;
  }

  async start(): Promise<void> {
    fs.mkdirSync(this.socketDir, { recursive: true });
    const log = fs.openSync(this.logPath, 'a');
    // In a network namespace of its own (unshare execs dockerd: the child's PID is dockerd's):
    // whatever dockerd does to links by name stays there. Without it, `--bridge none` deletes
    // the host's docker0 at start (libnetwork's removeDefaultBridgeInterface), which is the
    // shared engine's default bridge.
    const child = spawn(
      'unshare',
      [
        '--net',
        '--',
        'dockerd',
        '--host',
        `unix://${this.socketPath}`,
        '--data-root',
        this.dataRoot,
        '--exec-root',
        this.execRoot,
        '--pidfile',
        `${this.socketDir}/dockerd.pid`,
        '--containerd-namespace',
        this.namespace,
        '--containerd-plugins-namespace',
        `${this.namespace}-plugins`,
        '--bridge',
        'none',
        '--iptables=false',
        '--ip6tables=false',
        '--live-restore',
      ],
      { stdio: ['ignore', log, log] },
    );
    fs.closeSync(log);
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once('exit', () => {
        if (this.child === child) this.child = undefined;
        resolve();
      }),
    );
    await until(`the private dockerd to answer on ${this.socketPath}`, async () => {
      if (!this.running) assert.fail(`the private dockerd exited; its log:\n${this.logTail()}`);
      return this.api.ping().then(
        () => true,
        () => false,
      );
    });
  }

  /** SIGTERM by PID and wait for the exit (SIGKILL if it does not come). */
  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    child.kill('SIGTERM');
    const killed = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((r) => setTimeout(() => r(true), WAIT_MS).unref()),
    ]);
    if (killed) {
      child.kill('SIGKILL');
      await this.exited;
    }
  }

  logTail(): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Containers of `nodeId` (and of `taskId` when given) in this engine. */
  async containers(nodeId: string, taskId?: string): Promise<ContainerInfo[]> {
    const all = await this.api.adopt(nodeId);
    return taskId === undefined ? all : all.filter((c) => c.taskId === taskId);
  }

  async kill(containerId: string): Promise<void> {
    await this.api.stop(containerId, 0);
  }

  /**
   * Removes its containers through its API (starting it if it is down), stops it, unmounts
   * what it left mounted, and removes its directories. Best effort: reports what it could not do.
   */
  async destroy(): Promise<string[]> {
    const problems: string[] = [];
    let removed = true;
    if (fs.existsSync(this.dataRoot)) {
      try {
        if (!this.running) await this.start();
        const res = await fetchContainers(this.socketPath);
        for (const id of res) await this.api.remove(id);
      } catch (err) {
        removed = false;
        problems.push(`containers not removed through the API: ${String(err)}`);
      }
    }
    await this.stop();
    if (!removed) this.removeLeftovers(problems);
    for (const point of mountsUnder(this.dataRoot).concat(mountsUnder(this.execRoot))) {
      const r = spawnSync('umount', [point], { encoding: 'utf8' });
      if (r.status !== 0) {
        const lazy = spawnSync('umount', ['-l', point], { encoding: 'utf8' });
        if (lazy.status !== 0) problems.push(`umount ${point}: ${r.stderr.trim()}`);
      }
    }
    for (const dir of [this.dataRoot, this.execRoot, this.socketDir]) {
      try {
        fs.rmSync(dir, { recursive: true, force: true });
      } catch (err) {
        problems.push(`rm ${dir}: ${String(err)}`);
      }
    }
    return problems;
  }

  /**
   * When the engine could not be asked: its live-restored containers through runc (its runc
   * state is under our exec root), then their shims, found by our containerd's address.
   */
  private removeLeftovers(problems: string[]): void {
    const runcRoots = path.join(this.execRoot, 'runtime-runc');
    for (const namespace of fs.existsSync(runcRoots) ? fs.readdirSync(runcRoots) : []) {
      const root = path.join(runcRoots, namespace);
      const list = spawnSync('runc', ['--root', root, 'list', '-q'], { encoding: 'utf8' });
      for (const id of list.stdout.split('\n').filter(Boolean)) {
        const r = spawnSync('runc', ['--root', root, 'delete', '--force', id], { encoding: 'utf8' });
        if (r.status !== 0) problems.push(`runc delete ${id}: ${r.stderr.trim()}`);
      }
    }
    const address = path.join(this.execRoot, 'containerd', 'containerd.sock');
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let argv: string[];
      try {
        argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      } catch {
        continue; // Gone meanwhile.
      }
      if (argv[0]?.includes('containerd-shim') && argv.includes(address)) {
        try {
          process.kill(Number(entry), 'SIGKILL');
        } catch (err) {
          problems.push(`kill shim ${entry}: ${String(err)}`);
        }
      }
    }
  }
}

/** Every container the engine on `socketPath` has, ours or not (it is ours alone). */
function fetchContainers(socketPath: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, path: '/v1.41/containers/json?all=true' }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve((JSON.parse(body) as { Id: string }[]).map((c) => c.Id)));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** The host's bridges by name (docker0 is the shared engine's; the lab's come and go under the lock we hold). */
function hostBridges(): string[] {
  const r = spawnSync('ip', ['-j', 'link', 'show', 'type', 'bridge'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return (JSON.parse(r.stdout) as { ifname: string }[]).map((l) => l.ifname).sort();
}

function processAlive(pid: number): boolean {
  return pid > 0 && fs.existsSync(`/proc/${pid}`);
}

const isRoot = process.getuid?.() === 0;
const hasDockerd =
  spawnSync('dockerd', ['--version'], { encoding: 'utf8' }).status === 0 &&
  spawnSync('unshare', ['--version'], { encoding: 'utf8' }).status === 0;
const sharedImage =
  spawnSync('docker', ['image', 'inspect', IMAGE], { encoding: 'utf8', timeout: 60_000 }).status === 0;

test(
  'the Docker engine stops and returns under a running agent (private dockerd, live-restore)',
  {
    skip:
      (!isRoot && 'needs root (it runs its own dockerd)') ||
      (!hasDockerd && 'no dockerd or unshare (apt-get install docker.io util-linux)') ||
      (!sharedImage && `the shared engine has no ${IMAGE} (scripts/make-images.sh)`),
  },
  async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'engine-down-'));
    const engine = new PrivateEngine(path.join(tmp, 'dockerd.log'));
    const { stores } = localStores(1);
    const store = stores[0];
    if (!store) throw new Error('no store');
    await store.update((tx) => tx.nodes.create(makeNode('h', { id: NODE_ID })));
    const served = await startTestDispatcher({ store, nodeId: NODE_ID, logger, heartbeatPeriodMs: 500 });
    const agentOptions = {
      dataDir: path.join(tmp, 'agent'),
      credentials: credentials.createInsecure(),
      managers: [served.addr],
      nodeId: NODE_ID,
      runtime: new DockerRuntime({ socketPath: engine.socketPath, pullTimeoutMs: 10_000 }),
      logger,
    };
    let agent: Agent | undefined;
    t.after(async () => {
      await agent?.stop();
      await served.stop();
      const problems = await engine.destroy();
      fs.rmSync(tmp, { recursive: true, force: true });
      assert.deepEqual(problems, [], 'the private engine was not cleaned up completely');
    });

    const bridgesBefore = hostBridges();
    await engine.start();
    // Its own containerd (under its exec root) unless a system one answers; its own namespaces either way.
    const systemContainerd = fs.existsSync('/run/containerd/containerd.sock');
    t.diagnostic(
      systemContainerd
        ? 'the private dockerd shares the system containerd, in namespace cluster-test-<pid>'
        : 'the private dockerd runs its own containerd',
    );
    if (!systemContainerd)
      assert.ok(fs.existsSync(path.join(engine.execRoot, 'containerd', 'containerd.sock')));
    const load = spawnSync(
      'bash',
      ['-o', 'pipefail', '-c', `docker save ${IMAGE} | docker -H unix://${engine.socketPath} load`],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(load.status, 0, `image load into the private engine: ${load.stderr}`);

    const node = () => store.view((tx) => tx.nodes.get(NODE_ID));
    const stateOf = (id: string) => store.view((tx) => tx.tasks.get(id)?.status);
    const addTask = (id: string) =>
      store.update((tx) =>
        tx.tasks.create(
          Task.fromPartial({
            id,
            serviceId: 'svc',
            nodeId: NODE_ID,
            slot: 1,
            desiredState: TaskState.TASK_STATE_RUNNING,
            spec: { container: { image: IMAGE, command: ['sleep', '86400'] } },
          }),
        ),
      );
    /** The one container of a task, with its process; fails on none or a duplicate. */
    const onlyContainer = async (taskId: string): Promise<ContainerInfo> => {
      const found = await engine.containers(NODE_ID, taskId);
      assert.equal(found.length, 1, `one container for ${taskId}, found ${found.length}`);
      const [only] = found;
      if (!only) throw new Error('unreachable');
      return only;
    };
    const notReadyNamingEngine = () =>
      node()?.status?.state === NodeState.NODE_STATE_NOT_READY &&
      (node()?.status?.message ?? '').includes(engine.socketPath);

    agent = await Agent.start(agentOptions);
    await agent.connected();
    await until('node READY', () => node()?.status?.state === NodeState.NODE_STATE_READY);

    await t.test('engine stops: NOT_READY, the running task stays and keeps running', async () => {
      await addTask('t1');
      await until('t1 RUNNING', () => stateOf('t1')?.state === TaskState.TASK_STATE_RUNNING);
      const t1 = await onlyContainer('t1');
      assert.equal(t1.status, 'running');
      assert.ok(processAlive(t1.pid), `t1's process ${t1.pid} runs`);

      const stoppedAt = Date.now();
      await engine.stop();
      await until('node NOT_READY naming the engine', notReadyNamingEngine);
      t.diagnostic(`SIGTERM to NOT_READY in the store: ${Date.now() - stoppedAt} ms`);
      assert.match(node()?.status?.message ?? '', /^container runtime unavailable: the Docker engine/);
      assert.ok(processAlive(t1.pid), 'live-restore: the container outlives its engine');
      assert.deepEqual(fs.readFileSync(`/proc/${t1.pid}/cmdline`, 'utf8').split('\0', 2), ['sleep', '86400']);

      // Assigned while the engine is down (as if by hand: the scheduler gives NOT_READY nodes none).
      await addTask('t2');
      await until('t2 accepted and PREPARING', () => stateOf('t2')?.state === TaskState.TASK_STATE_PREPARING);
      assert.equal(
        stateOf('t1')?.state,
        TaskState.TASK_STATE_RUNNING,
        'the engine being down is not t1 failing',
      );
      assert.equal(stateOf('t1')?.err, '');
      assert.ok(processAlive(t1.pid));

      await engine.start();
      const answeredAt = Date.now();
      await until('node READY again', () => node()?.status?.state === NodeState.NODE_STATE_READY);
      t.diagnostic(`engine answering to READY in the store: ${Date.now() - answeredAt} ms`);
      await until('t2 RUNNING', () => stateOf('t2')?.state === TaskState.TASK_STATE_RUNNING);
      const after = await onlyContainer('t1');
      assert.equal(after.id, t1.id, 'the same container, adopted not recreated');
      assert.equal(after.pid, t1.pid, 'the same process');
      assert.equal(stateOf('t1')?.state, TaskState.TASK_STATE_RUNNING);
      assert.equal(stateOf('t1')?.container?.containerId, t1.id);
      const t2 = await onlyContainer('t2');
      assert.equal(t2.status, 'running');
      assert.equal(stateOf('t2')?.container?.containerId, t2.id);

      // Watched again: its end is reported.
      await engine.kill(t1.id);
      await until(
        't1 FAILED after its container was killed',
        () => stateOf('t1')?.state === TaskState.TASK_STATE_FAILED,
      );
      assert.match(stateOf('t1')?.err ?? '', /non-zero exit \(137\)/);
    });

    await t.test(
      'an agent started while the engine is down connects NOT_READY and adopts its task when it returns',
      async () => {
        const t2 = await onlyContainer('t2');
        // The agent goes (its containers stay), then the engine; the agent comes back first.
        await agent?.stop();
        agent = undefined;
        await engine.stop();
        assert.ok(processAlive(t2.pid), 'live-restore: t2 outlives agent and engine');
        agent = await Agent.start(agentOptions);
        await agent.connected();
        await until('node NOT_READY naming the engine', notReadyNamingEngine);
        await until('the agent holds t2 again', () => agent?.assignedTaskIds().includes('t2') ?? false);
        assert.equal(
          stateOf('t2')?.state,
          TaskState.TASK_STATE_RUNNING,
          'the engine being down is not t2 failing',
        );

        await engine.start();
        await until('node READY', () => node()?.status?.state === NodeState.NODE_STATE_READY);
        await until('t2 watched again', () => agent?.controller('t2')?.container === t2.id);
        const after = await onlyContainer('t2');
        assert.equal(after.id, t2.id, 'the same container, adopted not recreated');
        assert.equal(after.pid, t2.pid, 'the same process');
        assert.equal(stateOf('t2')?.state, TaskState.TASK_STATE_RUNNING);
        await engine.kill(t2.id);
        await until(
          't2 FAILED after its container was killed',
          () => stateOf('t2')?.state === TaskState.TASK_STATE_FAILED,
        );
        assert.match(stateOf('t2')?.err ?? '', /non-zero exit \(137\)/);
      },
    );

    await t.test('the shared engine was not touched', () => {
      const ping = spawnSync('docker', ['version', '--format', '{{.Server.Version}}'], { encoding: 'utf8' });
      assert.equal(ping.status, 0, `the shared engine answers: ${ping.stderr}`);
      const mine = spawnSync('docker', ['ps', '-aq', '--filter', `label=${NODE_ID_LABEL}=${NODE_ID}`], {
        encoding: 'utf8',
      });
      assert.equal(mine.stdout.trim(), '', 'none of our containers is in the shared engine');
      const bridgesNow = hostBridges();
      assert.deepEqual(
        bridgesBefore.filter((b) => !bridgesNow.includes(b)),
        [],
        "the host's bridges (the shared engine's docker0) are all still there after two engine starts",
      );
    });
  },
);
