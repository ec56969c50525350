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
  | {
      kind: 'stats';
      statusRequests: number;
      statusUpdates: number;
      errors: number;
      sessionRestarts: number;
      errorKinds: [string, number][];
    }
  | { kind: 'error'; message: string };

const RUNNING_PATH: readonly TaskState[] = [
  TaskState.TASK_STATE_ACCEPTED,
  TaskState.TASK_STATE_PREPARING,
  TaskState.TASK_STATE_READY,
  TaskState.TASK_STATE_STARTING,
  TaskState.TASK_STATE_RUNNING,
];

const stats = { statusRequests: 0, statusUpdates: 0, errors: 0, sessionRestarts: 0 };
/** How often each distinct error was seen, to tell a slow manager from a broken one. */
const errorKinds = new Map<string, number>();

function noteError(err: Error): void {
  stats.errors++;
  const key = err.message.slice(0, 120);
  errorKinds.set(key, (errorKinds.get(key) ?? 0) + 1);
}

class SimAgent {
  private readonly client: DispatcherClient;
  private session?: ClientReadableStream<SessionMessage>;
  private assignments?: ClientReadableStream<AssignmentsMessage>;
  private heartbeatTimer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
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

  /** Resolves once the first session is open and its (full) assignment set has arrived. */
  start(): Promise<void> {
    return new Promise((resolve) => this.openSession(resolve));
  }

  /** One session; when it ends (an error, an expiry) a new one opens, as a real agent does. */
  private openSession(onFirstAssignments?: () => void): void {
    let ended = false;
    const end = (err: Error) => {
      if (ended || this.stopped) return;
      ended = true;
      noteError(err);
      stats.sessionRestarts++;
      clearTimeout(this.heartbeatTimer);
      this.assignments?.cancel();
      this.session?.cancel();
      this.assignments = undefined;
      this.retryTimer = setTimeout(() => this.openSession(onFirstAssignments), 100);
    };
    const session = this.client.session(
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
    this.session = session;
    session.on('error', (err: ServiceError) => end(err));
    session.on('end', () => end(new Error('the dispatcher ended the session')));
    let opened = false;
    session.on('data', (msg: SessionMessage) => {
      if (opened || ended) return;
      opened = true;
      this.heartbeat(msg.sessionId, end);
      const assignments = this.client.assignments({ sessionId: msg.sessionId });
      this.assignments = assignments;
      assignments.on('data', (m: AssignmentsMessage) => {
        if (ended) return;
        this.apply(msg.sessionId, m.updatedTasks);
        onFirstAssignments?.();
        onFirstAssignments = undefined;
      });
      assignments.on('error', (err: ServiceError) => end(err));
      assignments.on('end', () => end(new Error('the dispatcher ended the assignments')));
    });
  }

  private heartbeat(sessionId: string, end: (err: Error) => void): void {
    this.client.heartbeat(
      { sessionId, runtimeError: '' },
      new Metadata(),
      { deadline: Date.now() + 5000 },
      (err, res) => {
        if (this.stopped) return;
        if (err || !res) {
          end(err ?? new Error('empty heartbeat answer'));
          return;
        }
        const p = res.period;
        const periodMs = p ? p.seconds * 1000 + Math.floor(p.nanos / 1e6) : 1000;
        this.heartbeatTimer = setTimeout(() => this.heartbeat(sessionId, end), Math.max(100, periodMs));
      },
    );
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
      if (err && !this.stopped) noteError(err);
    });
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.heartbeatTimer);
    clearTimeout(this.retryTimer);
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
      send({ kind: 'stats', ...stats, errorKinds: [...errorKinds] });
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
