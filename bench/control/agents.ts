// The simulated workers of the control-plane benchmark, run in a child process of bench.ts so
// that they do not share the manager's event loop (a real cluster's agents run on other hosts).
// Each one is a real Dispatcher client with its own node certificate over mutual TLS: it opens a
// session, heartbeats at the period the dispatcher asks for, reads its assignments and reports
// every task ACCEPTED → PREPARING → READY → STARTING → RUNNING at once (no container runtime), and
// SHUTDOWN when the task's desired state says so.
import { Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import {
  DispatcherClient,
  SessionRequest,
  UpdateTaskStatusRequest,
  type AssignmentsMessage,
  type SessionMessage,
  type TaskStatusUpdate,
} from '../../src/gen/cluster/v1/dispatcher';
import { TaskState, type Task } from '../../src/gen/cluster/v1/objects';
import { clientCredentials, NODE_CHANNEL_OPTIONS, type NodeTls } from '../../src/manager/ca';

export interface AgentsSetup {
  kind: 'setup';
  managerAddr: string;
  nodes: { name: string; tls: NodeTls }[];
}

export type ParentMessage = AgentsSetup | { kind: 'stop' };

export type ChildMessage =
  | { kind: 'ready'; sessions: number }
  | { kind: 'stats'; statusRequests: number; statusUpdates: number; errors: number }
  | { kind: 'error'; message: string };

const RUNNING_PATH: readonly TaskState[] = [
  TaskState.TASK_STATE_ACCEPTED,
  TaskState.TASK_STATE_PREPARING,
  TaskState.TASK_STATE_READY,
  TaskState.TASK_STATE_STARTING,
  TaskState.TASK_STATE_RUNNING,
];

const stats = { statusRequests: 0, statusUpdates: 0, errors: 0 };

class SimAgent {
  private readonly client: DispatcherClient;
  private session?: ClientReadableStream<SessionMessage>;
  private assignments?: ClientReadableStream<AssignmentsMessage>;
  private heartbeatTimer?: NodeJS.Timeout;
  private stopped = false;
  /** The furthest state reported per task, so a repeated assignment is not reported twice. */
  private readonly reported = new Map<string, TaskState>();

  constructor(
    private readonly name: string,
    managerAddr: string,
    tls: NodeTls,
  ) {
    this.client = new DispatcherClient(managerAddr, clientCredentials(tls, 'manager'), NODE_CHANNEL_OPTIONS);
  }

  /** Resolves once the session is open and the first (full) assignment set has arrived. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const fail = (err: Error) => {
        if (this.stopped) return;
        stats.errors++;
        reject(err);
      };
      this.session = this.client.session(
        SessionRequest.fromPartial({
          description: {
            hostname: this.name,
            os: 'linux',
            architecture: 'x86_64',
            resources: { nanoCpus: 4e9, memoryBytes: 8 * 2 ** 30 },
            runtimeName: 'simulated',
            runtimeVersion: '0',
            engineLabels: {},
          },
        }),
      );
      this.session.on('error', (err: ServiceError) => fail(err));
      this.session.on('data', (msg: SessionMessage) => {
        if (this.assignments) return;
        this.heartbeat(msg.sessionId);
        this.assignments = this.client.assignments({ sessionId: msg.sessionId });
        let first = true;
        this.assignments.on('data', (m: AssignmentsMessage) => {
          this.apply(msg.sessionId, m.updatedTasks);
          if (first) {
            first = false;
            resolve();
          }
        });
        this.assignments.on('error', (err: ServiceError) => fail(err));
      });
    });
  }

  private heartbeat(sessionId: string): void {
    this.client.heartbeat({ sessionId }, new Metadata(), { deadline: Date.now() + 5000 }, (err, res) => {
      if (this.stopped) return;
      if (err) stats.errors++;
      const p = res?.period;
      const periodMs = p ? p.seconds * 1000 + Math.floor(p.nanos / 1e6) : 1000;
      this.heartbeatTimer = setTimeout(() => this.heartbeat(sessionId), Math.max(100, periodMs));
    });
  }

  private apply(sessionId: string, tasks: Task[]): void {
    const updates: TaskStatusUpdate[] = [];
    for (const task of tasks) {
      const done = this.reported.get(task.id) ?? TaskState.TASK_STATE_NEW;
      if (task.desiredState <= TaskState.TASK_STATE_RUNNING) {
        if (done >= TaskState.TASK_STATE_RUNNING) continue;
        for (const state of RUNNING_PATH) {
          updates.push({ taskId: task.id, status: { state, message: '', err: '', health: '' } });
        }
        this.reported.set(task.id, TaskState.TASK_STATE_RUNNING);
      } else if (done < TaskState.TASK_STATE_SHUTDOWN) {
        updates.push({
          taskId: task.id,
          status: { state: TaskState.TASK_STATE_SHUTDOWN, message: 'shutdown', err: '', health: '' },
        });
        this.reported.set(task.id, TaskState.TASK_STATE_SHUTDOWN);
      }
    }
    if (updates.length === 0) return;
    stats.statusRequests++;
    stats.statusUpdates += updates.length;
    this.client.updateTaskStatus(UpdateTaskStatusRequest.fromPartial({ sessionId, updates }), (err) => {
      if (err && !this.stopped) stats.errors++;
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.heartbeatTimer);
    this.assignments?.cancel();
    this.session?.cancel();
    this.client.close();
  }
}

function send(message: ChildMessage): void {
  process.send?.(message);
}

function main(): void {
  let agents: SimAgent[] = [];
  process.on('message', (message: ParentMessage) => {
    if (message.kind === 'stop') {
      for (const a of agents) a.stop();
      agents = [];
      send({ kind: 'stats', ...stats });
      process.disconnect();
      return;
    }
    agents = message.nodes.map((n) => new SimAgent(n.name, message.managerAddr, n.tls));
    Promise.all(agents.map((a) => a.start())).then(
      () => send({ kind: 'ready', sessions: agents.length }),
      (err: unknown) => send({ kind: 'error', message: err instanceof Error ? err.message : String(err) }),
    );
  });
}

main();
