// The worker agent: keeps a session with the leader's dispatcher (any manager leads it there),
// heartbeats, receives assignments, keeps them in LevelDB, and runs one controller per task.
// Containers outlive the agent: a restarted agent adopts them by label instead of duplicating.
import path from 'node:path';
import { ChannelCredentials, Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { ClassicLevel } from 'classic-level';
import {
  DispatcherClient,
  LogBrokerClient,
  SessionRequest,
  UpdateTaskStatusRequest,
  type AssignmentsMessage,
  type MeshState,
  type SessionMessage,
  type TaskStatusUpdate,
} from '../gen/cluster/v1/dispatcher';
import { Task, TaskState, type NodeDescription, type TaskStatus } from '../gen/cluster/v1/objects';
import { ClusterError, toClusterError } from '../common/errors';
import type { Logger } from '../common/logger';
import { clientCredentials, type NodeTls } from '../manager/ca';
import { TaskController } from './controller';
import { LogPublisher } from './logs';
import {
  hostDescription,
  RuntimeUnavailableError,
  type ContainerInfo,
  type Runtime,
  type RuntimeDescription,
} from './runtime';
import { abortableSleep } from '../common/sleep';

export { DEFAULT_DRAIN_MS, TaskController } from './controller';
export type { Runtime } from './runtime';

/** The metadata key a follower's dispatcher names the leader with. */
export const LEADER_ADDR_METADATA = 'cluster-leader-addr';
export const RECONNECT_BASE_MS = 100;
export const RECONNECT_MAX_MS = 5000;
/** Heartbeat period until the dispatcher says otherwise. */
export const INITIAL_HEARTBEAT_PERIOD_MS = 1000;
/** How often the agent asks its runtime whether it answers: a node whose runtime is down takes no new tasks. */
export const RUNTIME_CHECK_MS = 1000;
/** Status updates per UpdateTaskStatus call. */
export const MAX_STATUS_UPDATES_PER_CALL = 500;
/** Status updates held while no session is open; the oldest beyond are dropped (later ones supersede them). */
export const MAX_PENDING_STATUS_UPDATES = 10_000;

export interface AgentOptions {
  /** D/agent: the LevelDB of assigned tasks lives under it. */
  dataDir: string;
  tls?: NodeTls;
  /** Overrides the mutual-TLS credentials made from `tls` (unit tests use insecure ones). */
  credentials?: ChannelCredentials;
  managers: string[];
  nodeId: string;
  runtime: Runtime;
  logger: Logger;
  /** Node labels reported in the description (engine labels). */
  labels?: Record<string, string>;
  /** Wait between a serving task leaving the load balancer and its stop signal (DEFAULT_DRAIN_MS). */
  drainMs?: number;
  /** Takes the routing mesh state the dispatcher sends (src/agent/mesh.ts); ignored when absent. */
  mesh?: { apply(state: MeshState): void; close(): void; teardown?(): Promise<void> };
}

/** Full jitter over an exponential backoff: many agents reconnecting do not move in step. */
export function backoffMs(attempt: number, random = Math.random): number {
  const ceiling = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(attempt, 10));
  return Math.floor(ceiling / 2 + (random() * ceiling) / 2);
}

function leaderFrom(err: unknown): string | undefined {
  const md = (err as { metadata?: Metadata } | undefined)?.metadata;
  if (!(md instanceof Metadata)) return undefined;
  const value = md.get(LEADER_ADDR_METADATA)[0];
  return typeof value === 'string' && value ? value : undefined;
}

interface OpenSession {
  id: string;
  client: DispatcherClient;
  fail(err: Error): void;
}

export class Agent {
  private readonly stopController = new AbortController();
  /** Why the runtime does not answer, as last checked; '' while it does. Sent with every heartbeat. */
  private runtimeError = '';
  private runtimeWatch: Promise<void> | undefined;
  private readonly controllers = new Map<string, TaskController>();
  private readonly tasks = new Map<string, Task>();
  /**
   * Whether the runtime has listed this node's containers since the agent started. Until it has
   * (the runtime was down at start), no controller starts: one would take a running task whose
   * container it cannot see yet for gone (FAILED), or start a second container for it.
   */
  private adoptionDone = false;
  /** Containers found by label at start whose task the first full assignment has not named yet. */
  private readonly adopted = new Map<string, ContainerInfo>();
  private pending: TaskStatusUpdate[] = [];
  private sending = false;
  private session: OpenSession | undefined;
  private sawFullSet = false;
  private loop: Promise<void> = Promise.resolve();
  private dbQueue: Promise<unknown> = Promise.resolve();
  private managers: string[];
  private managerIndex = 0;
  private readonly clients = new Map<string, DispatcherClient>();
  /** Log broker clients, on the same managers as the sessions. */
  private readonly logClients = new Map<string, LogBrokerClient>();
  private readonly logPublisher: LogPublisher;
  private readonly credentials: ChannelCredentials;
  private readonly logger: Logger;
  /** Settles each time the agent connects (tests and the daemon's start-up wait on it). */
  private connectedWaiters: (() => void)[] = [];

  private constructor(
    private readonly options: AgentOptions,
    private readonly db: ClassicLevel<string, Uint8Array>,
  ) {
    this.logger = options.logger;
    this.managers = [...new Set(options.managers)];
    this.logPublisher = new LogPublisher({
      runtime: options.runtime,
      containerOf: (taskId) => this.controllers.get(taskId)?.container,
      logger: options.logger,
    });
    if (options.credentials) this.credentials = options.credentials;
    else if (options.tls) this.credentials = clientCredentials(options.tls, 'manager');
    else
      throw new ClusterError(
        'INVALID_ARGUMENT',
        'the agent needs the node TLS material (tls) to reach managers',
      );
  }

  static async start(options: AgentOptions): Promise<Agent> {
    if (options.managers.length === 0) {
      throw new ClusterError('INVALID_ARGUMENT', 'the agent needs at least one manager address');
    }
    const db = new ClassicLevel<string, Uint8Array>(path.join(options.dataDir, 'tasks'), {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
    });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause ?? err;
      throw new ClusterError(
        'FAILED_PRECONDITION',
        `the agent cannot open its task database in ${options.dataDir}: ${cause instanceof Error ? cause.message : String(cause)}`,
      );
    }
    const agent = new Agent(options, db);
    try {
      await agent.resume();
    } catch (err) {
      await db.close();
      throw err;
    }
    await agent.checkRuntime();
    agent.runtimeWatch = agent.watchRuntime();
    agent.loop = agent.sessionLoop();
    return agent;
  }

  get nodeId(): string {
    return this.options.nodeId;
  }

  /** Ids of the tasks this agent holds, for tests and `node ps` style views. */
  assignedTaskIds(): string[] {
    return [...this.tasks.keys()];
  }

  controller(taskId: string): TaskController | undefined {
    return this.controllers.get(taskId);
  }

  /** Resolves once a session is open (now or later). */
  connected(): Promise<void> {
    if (this.session) return Promise.resolve();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  /** Takes back what this node ran before a restart: stored tasks, and containers by label. */
  private async resume(): Promise<void> {
    for await (const [id, value] of this.db.iterator()) {
      this.tasks.set(id, Task.decode(value));
    }
    await this.adoptContainers();
  }

  /**
   * Lists this node's containers by label and starts the controllers of the tasks held, each
   * with its container. False while the runtime does not answer: retried as it comes back.
   */
  private async adoptContainers(): Promise<boolean> {
    let containers: ContainerInfo[];
    try {
      containers = await this.options.runtime.adopt(this.options.nodeId);
    } catch (err) {
      this.logger.warn(
        { err: err instanceof Error ? err.message : String(err) },
        'could not list containers to adopt; tasks wait until the runtime answers',
      );
      return false;
    }
    for (const c of containers) {
      const previous = this.adopted.get(c.taskId);
      if (previous) {
        // Two containers of one task (should not happen): keep one, remove the other.
        this.logger.warn(
          { taskId: c.taskId, containerId: c.id },
          'duplicate container of a task: removing it',
        );
        await this.options.runtime.remove(c.id).catch(() => undefined);
        continue;
      }
      this.adopted.set(c.taskId, c);
    }
    this.adoptionDone = true;
    // A full assignment came while the runtime was down: what it did not name is not ours.
    if (this.sawFullSet) this.removeOrphans(new Set(this.tasks.keys()));
    for (const task of this.tasks.values()) this.ensureController(task);
    this.logger.info({ tasks: this.tasks.size, containers: containers.length }, 'agent resumed');
    return true;
  }

  /** Stops and removes adopted containers of tasks not in `named` (the first full assignment). */
  private removeOrphans(named: Set<string>): void {
    for (const [taskId, container] of [...this.adopted]) {
      if (named.has(taskId)) continue;
      this.adopted.delete(taskId);
      this.logger.info(
        { taskId, containerId: container.id },
        'removing the container of a task no longer assigned',
      );
      this.options.runtime
        .stop(container.id, 0)
        .then(() => this.options.runtime.remove(container.id))
        .catch((err: unknown) => this.logger.warn({ err, taskId }, 'could not remove an orphan container'));
    }
  }

  private ensureController(task: Task): void {
    // Held (in this.tasks) until adoptContainers can match it with its container.
    if (!this.adoptionDone) return;
    const existing = this.controllers.get(task.id);
    if (existing) {
      existing.update(task);
      return;
    }
    const adopted = this.adopted.get(task.id);
    this.adopted.delete(task.id);
    const controller = new TaskController(
      task,
      {
        runtime: this.options.runtime,
        nodeId: this.options.nodeId,
        report: (taskId, status) => this.report(taskId, status),
        logger: this.logger,
        drainMs: this.options.drainMs,
      },
      adopted,
    );
    this.controllers.set(task.id, controller);
    controller.start();
  }

  private persist(task: Task): void {
    const bytes = Task.encode(task).finish();
    this.dbQueue = this.dbQueue
      .then(() => this.db.put(task.id, bytes))
      .catch((err: unknown) =>
        this.logger.error({ err, taskId: task.id }, 'could not persist an assigned task'),
      );
  }

  private forget(taskId: string): void {
    this.dbQueue = this.dbQueue
      .then(() => this.db.del(taskId))
      .catch((err: unknown) => this.logger.error({ err, taskId }, 'could not forget a task'));
  }

  private report(taskId: string, status: TaskStatus): void {
    const task = this.tasks.get(taskId);
    if (task) {
      task.status = status;
      this.persist(task);
    }
    this.pending.push({ taskId, status });
    if (this.pending.length > MAX_PENDING_STATUS_UPDATES)
      this.pending.splice(0, this.pending.length - MAX_PENDING_STATUS_UPDATES);
    this.sendStatus();
  }

  private sendStatus(): void {
    const session = this.session;
    if (!session || this.sending || this.pending.length === 0) return;
    this.sending = true;
    const batch = this.pending.splice(0, MAX_STATUS_UPDATES_PER_CALL);
    session.client.updateTaskStatus(
      UpdateTaskStatusRequest.fromPartial({ sessionId: session.id, updates: batch }),
      new Metadata(),
      { deadline: Date.now() + 10_000 },
      (err) => {
        this.sending = false;
        if (err) {
          const code = toClusterError(err).code;
          if (
            code === 'UNAVAILABLE' ||
            code === 'NOT_FOUND' ||
            code === 'DEADLINE_EXCEEDED' ||
            code === 'INTERNAL'
          ) {
            // The session is gone: sent again on the next one, in the same order.
            this.pending.unshift(...batch);
            session.fail(err);
          } else {
            // Refused for what it says (not our task any more): resending would be refused again.
            this.logger.warn(
              { err: toClusterError(err).message, updates: batch.length },
              'task status refused',
            );
            this.sendStatus();
          }
          return;
        }
        this.sendStatus();
      },
    );
  }

  private applyAssignments(message: AssignmentsMessage): void {
    if (message.mesh) this.options.mesh?.apply(message.mesh);
    if (message.full) {
      const named = new Set(message.updatedTasks.map((t) => t.id));
      for (const id of [...this.tasks.keys()]) if (!named.has(id)) this.unassign(id);
      if (!this.sawFullSet) {
        this.sawFullSet = true;
        if (this.adoptionDone) this.removeOrphans(named);
      }
    }
    for (const incoming of message.updatedTasks) {
      const known = this.tasks.get(incoming.id);
      // Our own last report may be ahead of what the store has applied.
      const status =
        known?.status && (known.status.state ?? 0) > (incoming.status?.state ?? TaskState.TASK_STATE_NEW)
          ? known.status
          : incoming.status;
      const task: Task = { ...incoming, status };
      this.tasks.set(task.id, task);
      this.persist(task);
      this.ensureController(task);
    }
    for (const id of message.removedTaskIds) this.unassign(id);
  }

  private unassign(taskId: string): void {
    this.tasks.delete(taskId);
    this.forget(taskId);
    const controller = this.controllers.get(taskId);
    if (!controller) return;
    this.controllers.delete(taskId);
    controller
      .shutdown(false)
      .catch((err: unknown) => this.logger.warn({ err, taskId }, 'could not shut down an unassigned task'));
  }

  private pickManager(): string {
    const addr = this.managers[this.managerIndex % this.managers.length] ?? this.options.managers[0] ?? '';
    return addr;
  }

  private clientFor(addr: string): DispatcherClient {
    let client = this.clients.get(addr);
    if (!client) {
      client = new DispatcherClient(addr, this.credentials);
      this.clients.set(addr, client);
    }
    return client;
  }

  private logClientFor(addr: string): LogBrokerClient {
    let client = this.logClients.get(addr);
    if (!client) {
      client = new LogBrokerClient(addr, this.credentials);
      this.logClients.set(addr, client);
    }
    return client;
  }

  /** Asks the runtime whether it answers; logs and records a change (the next heartbeat carries it). */
  private async checkRuntime(): Promise<void> {
    let error = '';
    try {
      await this.options.runtime.ping();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
    }
    // Back after a start without it: take the containers and start the held tasks.
    if (!error && !this.adoptionDone && !(await this.adoptContainers()))
      error = 'could not list its containers';
    if (error === this.runtimeError) return;
    if (error)
      this.logger.warn({ err: error }, 'container runtime unavailable: this node takes no new tasks');
    else this.logger.info('container runtime answers again: this node takes new tasks');
    this.runtimeError = error;
  }

  private async watchRuntime(): Promise<void> {
    const signal = this.stopController.signal;
    while (!signal.aborted) {
      await abortableSleep(RUNTIME_CHECK_MS, signal);
      if (!signal.aborted) await this.checkRuntime();
    }
  }

  private async description(): Promise<NodeDescription> {
    let d: RuntimeDescription;
    try {
      d = await this.options.runtime.describe();
    } catch (err) {
      if (!(err instanceof RuntimeUnavailableError)) throw err;
      // The node still connects (so its tasks are not moved for a restarting engine), described
      // from the host alone, and says its runtime is down.
      this.runtimeError = err.message;
      d = hostDescription(this.options.runtime.name, '');
    }
    return {
      hostname: d.hostname,
      os: d.os,
      architecture: d.architecture,
      resources: { nanoCpus: d.nanoCpus, memoryBytes: d.memoryBytes, pids: 0 },
      runtimeName: d.runtimeName,
      runtimeVersion: d.runtimeVersion,
      engineLabels: { ...this.options.labels },
    };
  }

  private async sessionLoop(): Promise<void> {
    const signal = this.stopController.signal;
    let attempt = 0;
    let next: string | undefined;
    while (!signal.aborted) {
      const addr = next ?? this.pickManager();
      next = undefined;
      let opened = false;
      try {
        opened = await this.runSession(addr, signal);
      } catch (err) {
        if (signal.aborted) break;
        const leader = leaderFrom(err);
        const e = toClusterError(err);
        this.logger.info({ manager: addr, leader, err: e.message }, 'dispatcher session ended');
        if (leader && leader !== addr) {
          if (!this.managers.includes(leader)) this.managers.push(leader);
          next = leader;
          continue;
        }
      }
      if (signal.aborted) break;
      // Fail over: the next try goes to another manager.
      this.managerIndex++;
      attempt = opened ? 0 : attempt + 1;
      await abortableSleep(backoffMs(attempt), signal);
    }
  }

  /** One session: resolves or rejects when it ends; `true` when it had opened. */
  private runSession(addr: string, signal: AbortSignal): Promise<boolean> {
    return new Promise<boolean>((resolve, reject) => {
      let opened = false;
      let ended = false;
      let heartbeatTimer: NodeJS.Timeout | undefined;
      let sessionStream: ClientReadableStream<SessionMessage> | undefined;
      let assignments: ClientReadableStream<AssignmentsMessage> | undefined;
      let stopLogs: (() => void) | undefined;
      const client = this.clientFor(addr);
      const finish = (err?: Error) => {
        if (ended) return;
        ended = true;
        clearTimeout(heartbeatTimer);
        signal.removeEventListener('abort', onAbort);
        if (this.session?.client === client) this.session = undefined;
        sessionStream?.cancel();
        assignments?.cancel();
        stopLogs?.();
        if (err && !signal.aborted) reject(err);
        else resolve(opened);
      };
      const onAbort = () => finish();
      signal.addEventListener('abort', onAbort, { once: true });

      const heartbeat = (sessionId: string) => {
        client.heartbeat(
          { sessionId, runtimeError: this.runtimeError },
          new Metadata(),
          { deadline: Date.now() + 3 * periodMs },
          (err, res) => {
            if (ended) return;
            if (err || !res) {
              finish(err ?? new Error('empty heartbeat answer'));
              return;
            }
            const p = res.period;
            if (p) periodMs = Math.max(10, p.seconds * 1000 + Math.floor(p.nanos / 1e6));
            heartbeatTimer = setTimeout(() => heartbeat(sessionId), periodMs);
          },
        );
      };
      let periodMs = INITIAL_HEARTBEAT_PERIOD_MS;

      this.description().then(
        (description) => {
          if (ended) return;
          sessionStream = client.session(
            SessionRequest.fromPartial({ description, runtimeError: this.runtimeError }),
          );
          sessionStream.on('error', (err: ServiceError) => finish(err));
          sessionStream.on('end', () =>
            finish(new ClusterError('UNAVAILABLE', 'the dispatcher ended the session')),
          );
          sessionStream.on('data', (msg: SessionMessage) => {
            if (ended) return;
            for (const m of msg.managers) if (m && !this.managers.includes(m)) this.managers.push(m);
            if (opened) return;
            opened = true;
            this.session = { id: msg.sessionId, client, fail: (err) => finish(err) };
            this.logger.info({ manager: addr, sessionId: msg.sessionId }, 'dispatcher session open');
            heartbeatTimer = setTimeout(() => heartbeat(msg.sessionId), 0);
            assignments = client.assignments({ sessionId: msg.sessionId });
            assignments.on('data', (m: AssignmentsMessage) => {
              if (!ended) this.applyAssignments(m);
            });
            assignments.on('error', (err: ServiceError) => finish(err));
            assignments.on('end', () =>
              finish(new ClusterError('UNAVAILABLE', 'the dispatcher ended the assignments')),
            );
            stopLogs = this.logPublisher.listen(this.logClientFor(addr), msg.sessionId);
            this.sendStatus();
            const waiters = this.connectedWaiters;
            this.connectedWaiters = [];
            for (const w of waiters) w();
          });
        },
        (err: unknown) => {
          // The runtime does not answer: no session, so no new work comes here until it does.
          this.logger.warn({ err }, 'cannot describe the node (container runtime down?)');
          finish(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  /**
   * Stops the agent: sessions end, controllers let go of their containers, which keep running
   * (a restarted agent adopts them). Nothing is stopped on the host.
   */
  async stop(): Promise<void> {
    this.stopController.abort();
    this.options.mesh?.close();
    await this.loop;
    await this.runtimeWatch;
    await Promise.all([...this.controllers.values()].map((c) => c.detach()));
    this.controllers.clear();
    for (const client of this.clients.values()) client.close();
    this.clients.clear();
    for (const client of this.logClients.values()) client.close();
    this.logClients.clear();
    await this.dbQueue;
    await this.db.close();
  }

  /** Stops every task container and removes it (for `cluster leave`), then stops the agent. */
  async shutdownTasks(): Promise<void> {
    // The session ends first: an assignment arriving meanwhile must not start a task that the
    // shutdown below would miss (stop() would then leave its container running).
    this.stopController.abort();
    await this.loop;
    await Promise.all([...this.controllers.values()].map((c) => c.shutdown(false)));
    this.controllers.clear();
    // Leaving: the node's overlay networks and load balancer go with its tasks.
    await this.options.mesh?.teardown?.();
    await this.stop();
  }
}
