// Control-plane benchmark (issue 4): one manager (an in-process Daemon: real Raft with LevelDB in
// a temp dir, real gRPC with mutual TLS on 127.0.0.1) and 100 simulated workers in a child process
// (bench/control/agents.ts), each a real Dispatcher client with its own node certificate signed by
// the cluster's CA. Times CreateService with 1,000 replicas until all 1,000 tasks are RUNNING in
// the manager's store. The manager node is drained so every task lands on a simulated worker.
// Prints the median of --runs N rounds (default 3); the last line printed is one JSON object.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import { ControlClient } from '../../src/gen/cluster/v1/control';
import { LocalClient } from '../../src/gen/cluster/v1/local';
import {
  NodeAvailability,
  NodeRole,
  NodeState,
  ServiceSpec,
  TaskState,
} from '../../src/gen/cluster/v1/objects';
import { setLogLevel } from '../../src/common/logger';
import { generateNodeKey, signNodeCertificate, type NodeTls } from '../../src/manager/ca';
import { Daemon, daemonOptions, type Manager } from '../../src/node';
import { newId } from '../../src/store';
import type { AgentsSetup, ChildMessage, ParentMessage } from './agents';
import { freeManagerPort } from '../../src/common/ports';

const NODES = 100;
const REPLICAS = 1_000;
const WARMUP_REPLICAS = 100;
const TARGET_MS = 3_000;
const POLL_MS = 5;
const CONVERGE_TIMEOUT_MS = 60_000;

function unary<Res>(invoke: (cb: (err: ServiceError | null, res?: Res) => void) => unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke((err, res) =>
      err || res === undefined ? reject(err ?? new Error('empty answer')) : resolve(res),
    );
  });
}

function countTasks(manager: Manager, serviceId: string): { assigned: number; running: number } {
  return manager.store.view((tx) => {
    let assigned = 0;
    let running = 0;
    for (const t of tx.tasks.find('serviceId', serviceId)) {
      if (t.desiredState !== TaskState.TASK_STATE_RUNNING) continue;
      if (t.nodeId) assigned++;
      if (t.status?.state === TaskState.TASK_STATE_RUNNING) running++;
    }
    return { assigned, running };
  });
}

interface Converged {
  createRpcMs: number;
  assignedMs: number;
  runningMs: number;
}

async function createAndConverge(
  control: ControlClient,
  manager: Manager,
  name: string,
  replicas: number,
): Promise<Converged & { serviceId: string }> {
  const spec = ServiceSpec.fromPartial({
    annotations: { name, labels: {} },
    task: { container: { image: 'local/busybox:1', args: [] }, networks: [] },
    mode: { $case: 'replicated', value: { replicas } },
  });
  const t0 = performance.now();
  const created = await unary<{ service?: { id: string } }>((cb) => control.createService({ spec }, cb));
  const createRpcMs = performance.now() - t0;
  const serviceId = created.service?.id;
  if (!serviceId) throw new Error('CreateService returned no service');
  let assignedMs = 0;
  for (;;) {
    const { assigned, running } = countTasks(manager, serviceId);
    const t = performance.now() - t0;
    if (!assignedMs && assigned >= replicas) assignedMs = t;
    if (running >= replicas) return { serviceId, createRpcMs, assignedMs, runningMs: t };
    if (t > CONVERGE_TIMEOUT_MS) {
      throw new Error(`${name}: ${running}/${replicas} running after ${CONVERGE_TIMEOUT_MS} ms`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function waitUntil(what: string, check: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function startAgents(setup: AgentsSetup): Promise<ChildProcess> {
  const child = fork(path.join(__dirname, 'agents.js'), [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, CLUSTER_LOG_LEVEL: 'warn' },
  });
  return new Promise((resolve, reject) => {
    // The agents retry until their sessions open: a manager that never answers must not hang us.
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('the simulated agents did not all open sessions within 60 s'));
    }, 60_000);
    const onMessage = (m: ChildMessage) => {
      if (m.kind === 'ready') {
        clearTimeout(timer);
        child.off('message', onMessage);
        resolve(child);
      } else if (m.kind === 'error') {
        clearTimeout(timer);
        reject(new Error(`simulated agents: ${m.message}`));
      }
    };
    child.on('message', onMessage);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`simulated agents exited early (code ${code})`));
    });
    child.send(setup satisfies ParentMessage);
  });
}

async function stopAgents(child: ChildProcess): Promise<ChildMessage | undefined> {
  if (child.exitCode !== null) return undefined;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stats = new Promise<ChildMessage | undefined>((resolve) => {
    child.once('message', (m: ChildMessage) => resolve(m));
    child.once('exit', () => resolve(undefined));
  });
  child.send({ kind: 'stop' } satisfies ParentMessage);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  const result = await stats;
  await exited;
  clearTimeout(timer);
  return result;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** `--runs N` (default 3): timed rounds of 1,000 replicas, each a new service after the last is removed. */
function parseRuns(argv: string[]): number {
  if (argv.length === 0) return 3;
  const n = Number(argv[1]);
  if (argv[0] !== '--runs' || argv.length !== 2 || !Number.isInteger(n) || n < 1) {
    throw new Error('usage: bench.js [--runs N]');
  }
  return n;
}

async function main(): Promise<void> {
  const runCount = parseRuns(process.argv.slice(2));
  setLogLevel('warn');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cluster-bench-control-'));
  let daemon: Daemon | undefined;
  let agents: ChildProcess | undefined;
  let local: LocalClient | undefined;
  let control: ControlClient | undefined;
  try {
    const port = await freeManagerPort();
    const addr = `127.0.0.1:${port}`;
    // The manager runs no agent of its own: it is drained below, as a dedicated manager.
    daemon = await Daemon.start({
      ...daemonOptions({ dataDir: dir, listenAddr: addr, advertiseAddr: addr }),
      startAgent: undefined,
    });
    const socket = `unix://${daemon.socketPath}`;
    local = new LocalClient(socket, credentials.createInsecure());
    const localClient = local;
    const tSetup = performance.now();
    await unary((cb) => localClient.init({ listenAddr: addr, advertiseAddr: addr }, cb));
    const manager = daemon.currentManager;
    if (!manager) throw new Error('no manager after init');
    control = new ControlClient(socket, credentials.createInsecure());
    const controlClient = control;

    const self = await unary<{ node?: { meta?: { version: number } } }>((cb) =>
      controlClient.getNode({ nodeId: manager.nodeId }, cb),
    );
    const selfVersion = self.node?.meta?.version ?? 0;
    await unary((cb) =>
      controlClient.updateNode(
        {
          nodeId: manager.nodeId,
          version: selfVersion,
          spec: {
            annotations: { name: os.hostname(), labels: {} },
            desiredRole: NodeRole.NODE_ROLE_MANAGER,
            availability: NodeAvailability.NODE_AVAILABILITY_DRAIN,
          },
        },
        cb,
      ),
    );

    // Worker certificates signed with the cluster's CA, as NodeCA would for a join.
    const cluster = manager.store.view((tx) => tx.clusters.list()[0]);
    if (!cluster) throw new Error('no cluster object in the store');
    const ca = { certPem: cluster.rootCaCert, keyPem: cluster.rootCaKey };
    const nodes: AgentsSetup['nodes'] = [];
    const nodeIds: string[] = [];
    for (let i = 0; i < NODES; i++) {
      const key = await generateNodeKey();
      const nodeId = newId();
      const certPem = await signNodeCertificate(ca, key.csrPem, {
        nodeId,
        role: 'worker',
        clusterId: cluster.id,
      });
      const tls: NodeTls = { caCertPem: cluster.rootCaCert, certPem, keyPem: key.keyPem };
      nodes.push({ name: `sim-${String(i).padStart(3, '0')}`, tls });
      nodeIds.push(nodeId);
    }
    // The record NodeCA writes at join time: the dispatcher admits only members it knows.
    await manager.store.update((tx) => {
      for (const [i, id] of nodeIds.entries()) {
        const name = `sim-${String(i).padStart(3, '0')}`;
        tx.nodes.create({
          id,
          spec: {
            annotations: { name, labels: {} },
            desiredRole: NodeRole.NODE_ROLE_WORKER,
            availability: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
          },
          status: { state: NodeState.NODE_STATE_UNKNOWN, message: 'joining', addr: '' },
          role: NodeRole.NODE_ROLE_WORKER,
          attachments: [],
        });
      }
    });
    agents = await startAgents({ kind: 'setup', managerAddr: addr, nodes });
    await waitUntil(
      `${NODES} ready workers`,
      () =>
        manager.store.view(
          (tx) =>
            tx.nodes.list(
              (n) => n.role === NodeRole.NODE_ROLE_WORKER && n.status?.state === NodeState.NODE_STATE_READY,
            ).length,
        ) >= NODES,
      30_000,
    );
    const setupMs = performance.now() - tSetup;

    const removeAndWait = async (serviceId: string) => {
      await unary((cb) => controlClient.removeService({ serviceId }, cb));
      await waitUntil(
        'the removed service’s tasks to stop',
        () =>
          manager.store.view(
            (tx) =>
              tx.tasks
                .find('serviceId', serviceId)
                .filter((t) => t.status?.state === TaskState.TASK_STATE_RUNNING).length,
          ) === 0,
        60_000,
      );
    };
    // One untimed round first: JIT warm-up of every path (create, schedule, dispatch, status).
    const warm = await createAndConverge(controlClient, manager, 'warmup', WARMUP_REPLICAS);
    await removeAndWait(warm.serviceId);

    const runs: Converged[] = [];
    for (let r = 1; r <= runCount; r++) {
      const one = await createAndConverge(controlClient, manager, `bench-${r}`, REPLICAS);
      runs.push(one);
      if (r < runCount) await removeAndWait(one.serviceId);
    }
    const run: Converged = {
      createRpcMs: median(runs.map((x) => x.createRpcMs)),
      assignedMs: median(runs.map((x) => x.assignedMs)),
      runningMs: median(runs.map((x) => x.runningMs)),
    };
    const stats = await stopAgents(agents);
    agents = undefined;

    const row = (label: string, ms: number, note = '') =>
      console.log(`${label.padEnd(44)} ${ms.toFixed(0).padStart(8)} ms  ${note}`);
    console.log(
      `control plane: 1 manager (in-process, Raft+LevelDB, mTLS gRPC), ${NODES} simulated workers (child process)`,
    );
    console.log(`host: ${os.cpus().length} CPUs, ${os.cpus()[0]?.model ?? '?'}, node ${process.version}`);
    row('setup (init, drain, certs, sessions)', setupMs);
    row(`warm-up ${WARMUP_REPLICAS} replicas: create → all RUNNING`, warm.runningMs);
    console.log(
      `median of ${runCount} run(s); each: ${runs.map((x) => x.runningMs.toFixed(0)).join(', ')} ms`,
    );
    row(`${REPLICAS} replicas: CreateService RPC`, run.createRpcMs);
    row(`${REPLICAS} replicas: create → all assigned`, run.assignedMs);
    row(
      `${REPLICAS} replicas / ${NODES} nodes: create → all RUNNING`,
      run.runningMs,
      `target ≤ ${TARGET_MS} ms: ${run.runningMs <= TARGET_MS ? 'met' : 'NOT met'}`,
    );
    if (stats?.kind === 'stats') {
      console.log(
        `agents: ${stats.statusRequests} status requests, ${stats.statusUpdates} updates, ${stats.errors} errors, ${stats.sessionRestarts} session restarts`,
      );
      for (const [message, count] of stats.errorKinds) console.log(`  ${count} × ${message}`);
    }
    console.log(
      JSON.stringify({
        replicas1000Nodes100Ms: Math.round(run.runningMs),
        replicas1000AssignedMs: Math.round(run.assignedMs),
        createRpcMs: Math.round(run.createRpcMs),
        warmup100Ms: Math.round(warm.runningMs),
        targetMs: TARGET_MS,
        runs: runCount,
      }),
    );
  } finally {
    if (agents) await stopAgents(agents);
    local?.close();
    control?.close();
    if (daemon) await daemon.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
