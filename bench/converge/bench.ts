// Convergence benchmark (issue 5): the time from `cluster service create --replicas N` to N tasks
// running with the Docker runtime, beside `docker service create --replicas N` on a single-node
// Docker Swarm on the same engine, in one run, for N = 3 and 100; and the agent's RSS while 100
// tasks run: a second daemon joins as a worker (the manager drained) and its process's VmRSS is
// read; the single-node daemon's (manager and agent in one process) is printed too.
//
// Both sides are timed the same way: the clock starts before the create command is spawned (its
// CLI start-up counts), then the bench polls each side's API every POLL_MS (ours: ListTasks on
// the daemon's unix socket; Swarm: GET /services?status=true on the Docker socket, which is what
// `docker service ls` shows) until N tasks run.
//
// It creates a temp data dir and a daemon (stopped by its PID), and joins no swarm that exists:
// `docker swarm init` only when the engine is in none, `docker swarm leave --force` only then.
// Only the services and containers it created are removed. The last line is one JSON object.
// Before both, the engine floor: the same containers created and started in parallel through the
// Engine API with no orchestrator (labelled, removed after).
// Usage: node dist/bench/converge/bench.js [--runs N] [--sizes 3,100]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import {
  ControlClient,
  type GetServiceResponse,
  type ListNodesResponse,
  type ListTasksResponse,
} from '../../src/gen/cluster/v1/control';
import { NodeState, TaskState, type Node as ClusterNode, type Task } from '../../src/gen/cluster/v1/objects';
import { freeManagerPort } from '../../src/common/ports';

const REPO = path.resolve(__dirname, '..', '..', '..');
const CLI = path.join(REPO, 'bin', 'cluster.js');
const IMAGE = 'local/busybox:1';
const DOCKER_SOCKET = '/var/run/docker.sock';
const POLL_MS = 50;
const CONVERGE_TIMEOUT_MS = 300_000;
const REMOVE_TIMEOUT_MS = 180_000;
const RSS_TARGET_MB = 80;
/** Swarm's figures in shared/peers/RESULTS.md section A (CLI poll of `service ls`, 100 ms), seconds. */
const SWARM_REFERENCE_S: Record<number, number> = { 3: 0.95, 100: 32.32 };

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface RunResult {
  stdout: string;
  stderr: string;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve({ stdout, stderr });
    });
  });
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function parseArgs(argv: string[]): { runs: number; sizes: number[] } {
  let runs = 1;
  let sizes = [3, 100];
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1] ?? '';
    if (argv[i] === '--runs') {
      runs = Number(value);
      i++;
    } else if (argv[i] === '--sizes') {
      sizes = value.split(',').map(Number);
      i++;
    } else {
      throw new Error(`unknown argument ${argv[i]}: use --runs N, --sizes 3,100`);
    }
  }
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs needs a whole number ≥ 1');
  if (sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--sizes needs whole numbers ≥ 1');
  return { runs, sizes };
}

// ------------------------------------------------------------------ Docker API

async function dockerGet<T>(urlPath: string): Promise<T> {
  return JSON.parse(await dockerSend('GET', urlPath)) as T;
}

function dockerSend(method: 'GET' | 'POST' | 'DELETE', urlPath: string, body?: object): Promise<string> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        socketPath: DOCKER_SOCKET,
        method,
        path: urlPath,
        timeout: 60_000,
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          if ((res.statusCode ?? 500) >= 300)
            reject(new Error(`docker ${method} ${urlPath}: ${res.statusCode} ${text}`));
          else resolve(text);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`docker ${method} ${urlPath}: timed out`)));
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * The engine's own floor: N containers of the same image and command created and started in
 * parallel straight through the Engine API, on the default bridge as both orchestrators' tasks
 * are, with no orchestration at all. Neither side can converge faster than this.
 */
async function timeEngine(tag: string, replicas: number): Promise<number> {
  const label = `cluster-bench-floor=${tag}`;
  const t0 = performance.now();
  try {
    // allSettled: on a failure the cleanup below must not run before the other creates land.
    const outcomes = await Promise.allSettled(
      Array.from({ length: replicas }, async () => {
        const created = await dockerSend('POST', '/v1.41/containers/create', {
          Image: IMAGE,
          Cmd: ['httpd', '-f', '-p', '80', '-h', '/www'],
          Labels: { 'cluster-bench-floor': tag },
        });
        const { Id } = JSON.parse(created) as { Id: string };
        await dockerSend('POST', `/v1.41/containers/${Id}/start`);
      }),
    );
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failure) throw failure.reason;
    return performance.now() - t0;
  } finally {
    const filters = encodeURIComponent(JSON.stringify({ label: [label] }));
    const list = await dockerGet<{ Id: string }[]>(`/v1.41/containers/json?all=1&filters=${filters}`);
    await Promise.all(list.map((c) => dockerSend('DELETE', `/v1.41/containers/${c.Id}?force=true`)));
  }
}

async function containersWithLabel(label: string): Promise<number> {
  const filters = encodeURIComponent(JSON.stringify({ label: [label] }));
  const list = await dockerGet<unknown[]>(`/v1.41/containers/json?all=1&filters=${filters}`);
  return list.length;
}

async function waitContainersGone(label: string): Promise<void> {
  const deadline = Date.now() + REMOVE_TIMEOUT_MS;
  while ((await containersWithLabel(label)) > 0) {
    if (Date.now() > deadline) throw new Error(`containers with label ${label} still present`);
    await sleep(250);
  }
}

// ------------------------------------------------------------------ ours

class OurCluster {
  private constructor(
    readonly dir: string,
    readonly addr: string,
    readonly daemon: ChildProcess,
    readonly env: NodeJS.ProcessEnv,
    readonly control: ControlClient,
  ) {}

  /** A daemon that inits a cluster, or joins one when `join` is given. */
  static async start(join?: { token: string; managerAddr: string }): Promise<OurCluster> {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cluster-bench-converge-'));
    const port = await freeManagerPort();
    const addr = `127.0.0.1:${port}`;
    const socket = path.join(dir, 'cluster.sock');
    const env = { ...process.env, CLUSTER_HOST: `unix://${socket}`, CLUSTER_LOG_LEVEL: 'warn' };
    const log = fs.openSync(path.join(dir, 'daemon.log'), 'a');
    // The script itself, as the lab and the systemd unit start it: its first line holds the
    // daemon's V8 flags.
    const daemon = spawn(CLI, ['daemon', '--data-dir', dir, '--listen-addr', addr], {
      env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    const control = new ControlClient(`unix://${socket}`, credentials.createInsecure());
    const cluster = new OurCluster(dir, addr, daemon, env, control);
    try {
      const deadline = Date.now() + 30_000;
      while (!fs.existsSync(socket)) {
        if (daemon.exitCode !== null) throw new Error(`the daemon exited (code ${daemon.exitCode})`);
        if (Date.now() > deadline) throw new Error('the daemon did not open its socket within 30 s');
        await sleep(50);
      }
      const args = join
        ? ['join', '--token', join.token, '--advertise-addr', addr, join.managerAddr]
        : ['init', '--advertise-addr', addr];
      await run(process.execPath, [CLI, ...args], env);
    } catch (err) {
      await cluster.stop();
      throw err;
    }
    return cluster;
  }

  cli(args: string[]): Promise<RunResult> {
    return run(process.execPath, [CLI, ...args], this.env);
  }

  /** The service's tasks that run now. */
  running(serviceId: string): Promise<Task[]> {
    return new Promise((resolve, reject) => {
      this.control.listTasks(
        { filters: { service: serviceId } },
        (err: ServiceError | null, res?: ListTasksResponse) => {
          if (err || !res) {
            reject(err ?? new Error('empty ListTasks answer'));
            return;
          }
          resolve(
            res.tasks.filter(
              (t) =>
                t.serviceId === serviceId &&
                t.desiredState === TaskState.TASK_STATE_RUNNING &&
                t.status?.state === TaskState.TASK_STATE_RUNNING,
            ),
          );
        },
      );
    });
  }

  createdAt(serviceId: string): Promise<Date | undefined> {
    return new Promise((resolve, reject) => {
      this.control.getService({ serviceId }, (err: ServiceError | null, res?: GetServiceResponse) => {
        if (err || !res) reject(err ?? new Error('empty GetService answer'));
        else resolve(res.service?.meta?.createdAt);
      });
    });
  }

  nodes(role: string): Promise<ClusterNode[]> {
    return new Promise((resolve, reject) => {
      this.control.listNodes({ filters: { role } }, (err: ServiceError | null, res?: ListNodesResponse) => {
        if (err || !res) reject(err ?? new Error('empty ListNodes answer'));
        else resolve(res.nodes);
      });
    });
  }

  /** VmRSS of the daemon process, MiB. */
  rssMb(): number {
    const status = fs.readFileSync(`/proc/${this.daemon.pid}/status`, 'utf8');
    const kb = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    if (!kb) throw new Error('no VmRSS in /proc status');
    return Number(kb) / 1024;
  }

  async stop(): Promise<void> {
    // Leaving removes what the node programmed in this (the root) namespace: its overlay
    // networks and the routing mesh's nft table, which a plain stop keeps for a restart.
    await this.cli(['leave', '--force']).catch((err: unknown) => console.error(`leave: ${String(err)}`));
    this.control.close();
    const child = this.daemon;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      process.kill(child.pid, 'SIGTERM');
      const timer = setTimeout(() => {
        if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
      }, 20_000);
      await exited;
      clearTimeout(timer);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

interface Timed {
  totalMs: number;
  createCmdMs: number;
  /** The last task's RUNNING timestamp minus the service's creation time, as the engines record them. */
  serverMs: number;
}

/** Server-side convergence in ms; NaN when a timestamp is missing. */
function serverSpan(createdAt: Date | undefined, runningAt: (Date | undefined)[]): number {
  if (!createdAt || runningAt.some((d) => d === undefined)) return NaN;
  const last = Math.max(...runningAt.map((d) => d?.getTime() ?? 0));
  return last - createdAt.getTime();
}

async function timeOurs(
  cluster: OurCluster,
  name: string,
  replicas: number,
  whileRunning?: () => Promise<void>,
): Promise<Timed> {
  const t0 = performance.now();
  let serviceId = '';
  try {
    const out = await cluster.cli([
      'service',
      'create',
      '--detach',
      '--quiet',
      '--name',
      name,
      '--replicas',
      String(replicas),
      IMAGE,
    ]);
    const createCmdMs = performance.now() - t0;
    serviceId = out.stdout.trim();
    if (!serviceId) throw new Error('service create printed no id');
    let tasks: Task[];
    for (;;) {
      tasks = await cluster.running(serviceId);
      if (tasks.length >= replicas) break;
      if (performance.now() - t0 > CONVERGE_TIMEOUT_MS) throw new Error(`${name} did not converge`);
      await sleep(POLL_MS);
    }
    const totalMs = performance.now() - t0;
    const serverMs = serverSpan(
      await cluster.createdAt(serviceId),
      tasks.map((t) => t.status?.timestamp),
    );
    await whileRunning?.();
    return { totalMs, createCmdMs, serverMs };
  } finally {
    await cluster.cli(['service', 'rm', name]).catch((err: unknown) => console.error(String(err)));
    if (serviceId) await waitContainersGone(`cluster.service.id=${serviceId}`);
  }
}

// ------------------------------------------------------------------ Swarm

interface SwarmService {
  CreatedAt?: string;
  ServiceStatus?: { RunningTasks?: number; DesiredTasks?: number };
}

interface SwarmTask {
  DesiredState?: string;
  Status?: { State?: string; Timestamp?: string };
}

async function swarmServerMs(serviceId: string): Promise<number> {
  const service = await dockerGet<SwarmService>(`/v1.41/services/${serviceId}`);
  const filters = encodeURIComponent(JSON.stringify({ service: [serviceId], 'desired-state': ['running'] }));
  const tasks = await dockerGet<SwarmTask[]>(`/v1.41/tasks?filters=${filters}`);
  const at = (s: string | undefined) => (s ? new Date(s) : undefined);
  return serverSpan(
    at(service.CreatedAt),
    tasks.filter((t) => t.Status?.State === 'running').map((t) => at(t.Status?.Timestamp)),
  );
}

async function swarmRunning(serviceId: string): Promise<number> {
  const filters = encodeURIComponent(JSON.stringify({ id: [serviceId] }));
  const list = await dockerGet<SwarmService[]>(`/v1.41/services?status=true&filters=${filters}`);
  return list[0]?.ServiceStatus?.RunningTasks ?? 0;
}

async function timeSwarm(name: string, replicas: number): Promise<Timed> {
  const t0 = performance.now();
  let serviceId = '';
  try {
    const out = await run('docker', [
      'service',
      'create',
      '--detach',
      '--no-resolve-image',
      '--name',
      name,
      '--replicas',
      String(replicas),
      IMAGE,
      'httpd',
      '-f',
      '-p',
      '80',
      '-h',
      '/www',
    ]);
    const createCmdMs = performance.now() - t0;
    serviceId = out.stdout.trim().split('\n').pop() ?? '';
    if (!serviceId) throw new Error('docker service create printed no id');
    for (;;) {
      if ((await swarmRunning(serviceId)) >= replicas) break;
      if (performance.now() - t0 > CONVERGE_TIMEOUT_MS) throw new Error(`${name} did not converge`);
      await sleep(POLL_MS);
    }
    const totalMs = performance.now() - t0;
    return { totalMs, createCmdMs, serverMs: await swarmServerMs(serviceId) };
  } finally {
    await run('docker', ['service', 'rm', name]).catch((err: unknown) => console.error(String(err)));
    if (serviceId) await waitContainersGone(`com.docker.swarm.service.id=${serviceId}`);
  }
}

// ------------------------------------------------------------------ main

async function ensureDocker(): Promise<void> {
  try {
    await run('docker', ['version', '--format', '{{.Server.Version}}']);
  } catch {
    throw new Error('no Docker engine answers: run scripts/dockerd.sh first');
  }
  try {
    await run('docker', ['image', 'inspect', IMAGE]);
  } catch {
    await run('bash', [path.join(REPO, 'scripts', 'make-images.sh')]);
  }
}

async function main(): Promise<void> {
  const { runs, sizes } = parseArgs(process.argv.slice(2));
  await ensureDocker();
  const tag = `${process.pid}`;
  const ours = new Map<number, Timed[]>();
  const swarm = new Map<number, Timed[]>();
  const engine = new Map<number, number[]>();
  const rssSamples: number[] = [];
  let rssTasks = 0;
  const workerRss: number[] = [];
  let workerRssTasks = 0;
  let workerRun: Timed | undefined;

  for (const n of sizes) {
    const floor: number[] = [];
    for (let r = 1; r <= runs; r++) floor.push(await timeEngine(`${tag}-${n}-${r}`, n));
    engine.set(n, floor);
  }
  // Ours first, before any swarm exists on the engine.
  const cluster = await OurCluster.start();
  try {
    for (const n of sizes) {
      const results: Timed[] = [];
      for (let r = 1; r <= runs; r++) {
        // The RSS is read while the largest service's tasks run, a few times over two seconds.
        const sampleRss =
          n === Math.max(...sizes) && r === 1
            ? async () => {
                rssTasks = n;
                for (let i = 0; i < 5; i++) {
                  rssSamples.push(cluster.rssMb());
                  await sleep(500);
                }
              }
            : undefined;
        results.push(await timeOurs(cluster, `bench-conv-${tag}-${n}-${r}`, n, sampleRss));
      }
      ours.set(n, results);
    }
    // The agent alone: a second daemon joins as a worker, the manager is drained, and the
    // worker daemon's RSS is read while the largest service's tasks run on it.
    const n = Math.max(...sizes);
    const token = (await cluster.cli(['join-token', '--quiet', 'worker'])).stdout.trim();
    const worker = await OurCluster.start({ token, managerAddr: cluster.addr });
    try {
      const deadline = Date.now() + 30_000;
      while (!(await cluster.nodes('worker')).some((w) => w.status?.state === NodeState.NODE_STATE_READY)) {
        if (Date.now() > deadline) throw new Error('the worker did not become ready within 30 s');
        await sleep(100);
      }
      for (const m of await cluster.nodes('manager')) {
        await cluster.cli(['node', 'update', '--availability', 'drain', m.id]);
      }
      workerRun = await timeOurs(cluster, `bench-conv-${tag}-worker-${n}`, n, async () => {
        workerRssTasks = n;
        for (let i = 0; i < 5; i++) {
          workerRss.push(worker.rssMb());
          await sleep(500);
        }
      });
    } finally {
      await worker.stop();
    }
  } finally {
    await cluster.stop();
  }

  const state = (await run('docker', ['info', '--format', '{{.Swarm.LocalNodeState}}'])).stdout.trim();
  let createdSwarm = false;
  if (state === 'inactive') {
    await run('docker', ['swarm', 'init', '--advertise-addr', '127.0.0.1']);
    createdSwarm = true;
  } else if (state !== 'active') {
    throw new Error(`the engine's swarm state is "${state}": cannot measure Swarm`);
  }
  try {
    for (const n of sizes) {
      const results: Timed[] = [];
      for (let r = 1; r <= runs; r++) results.push(await timeSwarm(`bench-conv-swarm-${tag}-${n}-${r}`, n));
      swarm.set(n, results);
    }
  } finally {
    if (createdSwarm) await run('docker', ['swarm', 'leave', '--force']);
  }

  const fmt = (ms: number) => (ms / 1000).toFixed(2).padStart(7);
  console.log(
    `create → N running, ${IMAGE}, single node, median of ${runs} run(s), poll every ${POLL_MS} ms`,
  );
  console.log(`host: ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}, node ${process.version}`);
  console.log(
    '   N   ours (s)  create cmd  server   swarm (s)  create cmd  server   ours/swarm  swarm ref (s)  engine floor (s)',
  );
  const json: Record<string, number | boolean | string> = {};
  for (const n of sizes) {
    const o = ours.get(n) ?? [];
    const s = swarm.get(n) ?? [];
    const om = median(o.map((x) => x.totalMs));
    const sm = median(s.map((x) => x.totalMs));
    const cols = [
      fmt(om),
      fmt(median(o.map((x) => x.createCmdMs))),
      fmt(median(o.map((x) => x.serverMs))),
      fmt(sm),
      fmt(median(s.map((x) => x.createCmdMs))),
      fmt(median(s.map((x) => x.serverMs))),
      (om / sm).toFixed(2).padStart(9),
      SWARM_REFERENCE_S[n]?.toFixed(2).padStart(9) ?? '-',
      fmt(median(engine.get(n) ?? [])).padStart(12),
    ];
    console.log(`${String(n).padStart(4)}  ${cols.join('   ')}`);
    json[`ours${n}Ms`] = Math.round(om);
    json[`swarm${n}Ms`] = Math.round(sm);
    json[`ratio${n}`] = Number((om / sm).toFixed(3));
    json[`oursServer${n}Ms`] = Math.round(median(o.map((x) => x.serverMs)));
    json[`swarmServer${n}Ms`] = Math.round(median(s.map((x) => x.serverMs)));
    json[`engineFloor${n}Ms`] = Math.round(median(engine.get(n) ?? []));
  }
  const rss = rssSamples.length > 0 ? Math.max(...rssSamples) : 0;
  const agentRss = workerRss.length > 0 ? Math.max(...workerRss) : 0;
  if (workerRun) {
    console.log(
      `2 nodes (manager drained, 1 worker daemon): ${workerRssTasks} replicas → running in ${fmt(workerRun.totalMs).trim()} s`,
    );
  }
  console.log(
    `agent RSS (worker daemon) with ${workerRssTasks} tasks running: ${agentRss.toFixed(1)} MiB (max of ${workerRss.length} samples; target ≤ ${RSS_TARGET_MB})`,
  );
  console.log(
    `single-node daemon (manager + agent) RSS with ${rssTasks} tasks running: ${rss.toFixed(1)} MiB (max of ${rssSamples.length} samples)`,
  );
  console.log(`targets: ours ≤ 0.5 × Swarm's time; agent RSS ≤ ${RSS_TARGET_MB} MB`);
  console.log(
    "engine floor: the same N containers created and started in parallel through the Engine API, no orchestrator; above it, each side's own cost",
  );
  json.agentRssMb = Number(agentRss.toFixed(1));
  json.agentRssTasks = workerRssTasks;
  json.singleNodeDaemonRssMb = Number(rss.toFixed(1));
  if (workerRun) json[`workerNode${workerRssTasks}Ms`] = Math.round(workerRun.totalMs);
  json.runs = runs;
  console.log(JSON.stringify(json));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
