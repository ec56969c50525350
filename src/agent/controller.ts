// One task's controller: drives its container toward the task's desired state through the
// runtime and reports each state it reaches, in the TaskState order, never backwards
// (ACCEPTED → PREPARING → READY → STARTING → RUNNING → COMPLETE / FAILED, or SHUTDOWN).
import { TaskState, type Task, type TaskStatus } from '../gen/cluster/v1/objects';
import type { Logger } from '../common/logger';
import {
  RuntimeUnavailableError,
  TaskRuntimeError,
  type ContainerInfo,
  type ExecResult,
  type HealthStatus,
  type Runtime,
} from './runtime';
import { abortableSleep } from '../common/sleep';
import {
  ENGINE_HEALTH_POLL_MS,
  networkProbe,
  probeArgv,
  runNetworkProbe,
  runProbeLoop,
  specHasHealthcheck,
  type NetworkProbe,
  type ProbeLoopDeps,
} from './health';
import { ProgressThrottle } from './progress';

/** Retry pace while the runtime is down: the task waits for it instead of failing. */
export const RUNTIME_RETRY_BASE_MS = 200;
export const RUNTIME_RETRY_MAX_MS = 5000;

/** Stop grace when the spec gives none (Docker's and Swarm's default). */
export const DEFAULT_STOP_GRACE_MS = 10_000;

/**
 * How long a running task with a network address keeps serving after it was told to stop,
 * before its stop signal: the leader takes it out of the load balancer's backends in the same
 * write that asks for the stop, and every node's agent must get that and reprogram its nftables
 * first (tens of ms on an idle lab, a few hundred under load). 2 s covers that with a margin;
 * connections opened before may finish meanwhile. `cluster daemon --drain-period` changes it.
 */
export const DEFAULT_DRAIN_MS = 2_000;
/** Swarm's error for a task failed by its healthcheck. */
export const UNHEALTHY_ERROR = 'unhealthy container';

export type StatusReporter = (taskId: string, status: TaskStatus) => void;

export function isTerminal(state: TaskState): boolean {
  return state >= TaskState.TASK_STATE_COMPLETE;
}

function graceOf(task: Task): number {
  const d = task.spec?.container?.stopGracePeriod;
  if (!d) return DEFAULT_STOP_GRACE_MS;
  return d.seconds * 1000 + Math.floor(d.nanos / 1e6);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class TaskController {
  private task: Task;
  private state: TaskState;
  private containerId: string | undefined;
  private readonly runAbort = new AbortController();
  /** Aborted when the agent lets go of the task (detach): a drain in progress ends without a stop. */
  private readonly detachAbort = new AbortController();
  private running: Promise<void> | undefined;
  private shuttingDown: Promise<void> | undefined;
  /** The last health reported ("" without a healthcheck). */
  private health: HealthStatus = '';
  private lastStatus: TaskStatus | undefined;

  constructor(
    task: Task,
    private readonly deps: {
      runtime: Runtime;
      nodeId: string;
      report: StatusReporter;
      logger: Logger;
      /** Drain period before stopping a serving task (DEFAULT_DRAIN_MS when absent). */
      drainMs?: number;
      /** How often the engine's own health verdict is read (tests shorten it). */
      healthPollMs?: number;
      /** Least time between two progress messages while PREPARING (PROGRESS_REPORT_INTERVAL_MS when absent). */
      progressIntervalMs?: number;
      /** Runs an HTTP/TCP probe in the namespace of process `pid` (runNetworkProbe when absent). */
      networkProbe?: (probe: NetworkProbe, pid: number, timeoutMs: number) => Promise<ExecResult>;
    },
    /** A container found by label after an agent restart. */
    adopted?: ContainerInfo,
  ) {
    this.task = task;
    this.state = task.status?.state ?? TaskState.TASK_STATE_ASSIGNED;
    this.containerId = adopted?.id;
    // After an agent restart: the last report stands (its time, its health) until news.
    this.lastStatus = task.status;
    this.health = (task.status?.health ?? '') as HealthStatus;
  }

  get taskId(): string {
    return this.task.id;
  }

  get reportedState(): TaskState {
    return this.state;
  }

  get reportedHealth(): HealthStatus {
    return this.health;
  }

  get container(): string | undefined {
    return this.containerId;
  }

  /** Starts driving the task; call update() with newer versions of it as they arrive. */
  start(): void {
    this.update(this.task);
  }

  update(task: Task): void {
    this.task = task;
    if (task.desiredState >= TaskState.TASK_STATE_SHUTDOWN) {
      void this.shutdown(true);
      return;
    }
    // Desired READY: a replacement waiting out its restart delay. It starts once the
    // orchestrator moves it to RUNNING (a later update).
    if (task.desiredState < TaskState.TASK_STATE_RUNNING) return;
    if (!this.running && !this.shuttingDown) {
      this.running = this.run(this.runAbort.signal).catch((err: unknown) =>
        this.deps.logger.error({ taskId: task.id, err }, 'task controller failed'),
      );
    }
  }

  /** Settles once the controller has nothing more to do until a new update (tests wait on it). */
  async idle(): Promise<void> {
    await this.running;
    await this.shuttingDown;
  }

  private report(state: TaskState, extra: Partial<TaskStatus> = {}): void {
    // Forward only: after an adoption or a retry, states already reported are not repeated.
    if (state <= this.state) return;
    this.state = state;
    const status: TaskStatus = {
      timestamp: new Date(),
      state,
      message: extra.message ?? TaskState[state].replace('TASK_STATE_', '').toLowerCase(),
      err: extra.err ?? '',
      container:
        extra.container ??
        (this.containerId ? { containerId: this.containerId, pid: 0, exitCode: 0 } : undefined),
      health: extra.health ?? this.health,
    };
    this.lastStatus = status;
    this.deps.report(this.task.id, status);
  }

  /** A change of health alone: the same state and time, so "Running 5 minutes ago" stays true. */
  private reportHealth(health: HealthStatus): void {
    if (health === this.health) return;
    this.health = health;
    const last = this.lastStatus;
    if (isTerminal(this.state) || this.state !== TaskState.TASK_STATE_RUNNING) return;
    const status: TaskStatus = {
      timestamp: last?.timestamp ?? new Date(),
      state: this.state,
      message: last?.message ?? 'started',
      err: last?.err ?? '',
      container: last?.container,
      health,
    };
    this.lastStatus = status;
    this.deps.report(this.task.id, status);
  }

  /**
   * Where PREPARING stands (an image pull), as the same state with a new message and the time
   * it began, so "Preparing 5 seconds ago" stays true. Reported only while still PREPARING.
   */
  private reportProgress(message: string): void {
    if (this.state !== TaskState.TASK_STATE_PREPARING) return;
    const last = this.lastStatus;
    const status: TaskStatus = {
      timestamp: last?.state === this.state ? last.timestamp : new Date(),
      state: this.state,
      message,
      err: '',
      container: undefined,
      health: this.health,
    };
    this.lastStatus = status;
    this.deps.report(this.task.id, status);
  }

  /** The runtime's prepare, its progress reported paced (see ProgressThrottle). */
  private async prepare(signal: AbortSignal): Promise<string> {
    const throttle = new ProgressThrottle(this.deps.progressIntervalMs);
    // Once prepare settled, a message still held back is stale: the next report is READY or FAILED.
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const flushLater = () => {
      const due = throttle.dueAtMs;
      if (due === undefined || timer !== undefined || settled || signal.aborted) return;
      timer = setTimeout(
        () => {
          timer = undefined;
          if (settled || signal.aborted) return;
          const text = throttle.flush(Date.now());
          if (text !== undefined) this.reportProgress(text);
          flushLater();
        },
        Math.max(0, due - Date.now()),
      );
    };
    const onProgress = (message: string) => {
      if (settled || signal.aborted) return;
      const text = throttle.offer(message, Date.now());
      if (text !== undefined) this.reportProgress(text);
      else flushLater();
    };
    try {
      return await this.deps.runtime.prepare(this.task, this.deps.nodeId, { onProgress, signal });
    } finally {
      settled = true;
      clearTimeout(timer);
    }
  }

  /**
   * Watches the running container's health until it turns unhealthy (resolves true) or the
   * signal fires (resolves false): the agent's HTTP/TCP probes on every runtime; for a command
   * check, Docker's own verdict where the runtime has one, else the agent's probes through `exec`.
   */
  private async watchHealth(containerId: string, signal: AbortSignal): Promise<boolean> {
    const { runtime } = this.deps;
    const pollMs = this.deps.healthPollMs ?? ENGINE_HEALTH_POLL_MS;
    const config = this.task.spec?.container?.healthcheck;
    if (config?.test[0] === 'NONE') return false;
    const network = networkProbe(config);
    if (network) return this.probeLoop(this.networkCheck(containerId, network), signal);
    if (runtime.health) {
      while (!signal.aborted) {
        let status: HealthStatus;
        try {
          status = await runtime.health(containerId);
        } catch (err) {
          if (signal.aborted) return false;
          this.deps.logger.debug({ taskId: this.task.id, err }, 'health not readable; retrying');
          await abortableSleep(pollMs, signal);
          continue;
        }
        if (signal.aborted) return false;
        // No healthcheck in the spec nor in the image: nothing to watch.
        if (status === '' && !specHasHealthcheck(this.task)) return false;
        if (status !== '') this.reportHealth(status);
        if (status === 'unhealthy') return true;
        await abortableSleep(pollMs, signal);
      }
      return false;
    }
    const argv = probeArgv(config);
    if (!argv) return false;
    const exec = runtime.exec?.bind(runtime);
    if (!exec) {
      this.deps.logger.warn(
        { taskId: this.task.id, runtime: runtime.name },
        'the runtime can neither run healthchecks nor exec: the task stays "starting"',
      );
      return false;
    }
    return this.probeLoop((timeoutMs) => exec(containerId, argv, timeoutMs), signal);
  }

  /**
   * An HTTP/TCP check from inside the container's network namespace, found through its process
   * (looked up until the runtime gives one: a check without it fails).
   */
  private networkCheck(containerId: string, probe: NetworkProbe): ProbeLoopDeps['check'] {
    const run = this.deps.networkProbe ?? runNetworkProbe;
    let pid = 0;
    return async (timeoutMs) => {
      if (pid <= 0) pid = (await this.deps.runtime.inspect(containerId))?.pid ?? 0;
      if (pid <= 0) return { exitCode: -1, output: 'the container has no process to probe from' };
      return run(probe, pid, timeoutMs);
    };
  }

  /** The agent's own probes, every interval, until unhealthy (true) or the signal fires (false). */
  private async probeLoop(check: ProbeLoopDeps['check'], signal: AbortSignal): Promise<boolean> {
    const verdict = await runProbeLoop(
      this.task.spec?.container?.healthcheck,
      {
        check,
        sleep: abortableSleep,
        nowMs: Date.now,
        onChange: (status, output) => {
          if (status === 'unhealthy')
            this.deps.logger.info({ taskId: this.task.id, output }, 'task turned unhealthy');
          this.reportHealth(status);
        },
      },
      signal,
    );
    return verdict === 'unhealthy' && !signal.aborted;
  }

  private reportExit(exitCode: number, runtimeError = ''): void {
    const container = { containerId: this.containerId ?? '', pid: 0, exitCode };
    if (exitCode === 0 && !runtimeError) {
      this.report(TaskState.TASK_STATE_COMPLETE, { message: 'finished', container });
    } else {
      const err = runtimeError || `task: non-zero exit (${exitCode})`;
      this.report(TaskState.TASK_STATE_FAILED, { message: 'started', err, container });
    }
  }

  private async run(signal: AbortSignal): Promise<void> {
    for (let attempt = 0; !signal.aborted; attempt++) {
      try {
        await this.runOnce(signal);
        return;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof RuntimeUnavailableError) {
          // The engine is down: the task is not at fault; reconcile when it answers again.
          this.deps.logger.warn(
            { taskId: this.task.id, err: err.message },
            'runtime unavailable; will retry',
          );
          await abortableSleep(
            Math.min(RUNTIME_RETRY_MAX_MS, RUNTIME_RETRY_BASE_MS * 2 ** Math.min(attempt, 8)),
            signal,
          );
          continue;
        }
        if (!(err instanceof TaskRuntimeError))
          this.deps.logger.warn({ taskId: this.task.id, err }, 'task failed');
        this.report(TaskState.TASK_STATE_FAILED, { err: message(err), message: 'failed' });
        return;
      }
    }
  }

  private async runOnce(signal: AbortSignal): Promise<void> {
    if (isTerminal(this.state)) return;
    const { runtime } = this.deps;
    let info = this.containerId ? await runtime.inspect(this.containerId) : undefined;
    if (signal.aborted) return;
    if (!info) {
      this.containerId = undefined;
      if (this.state >= TaskState.TASK_STATE_RUNNING) {
        // It ran before the agent restarted and its container is gone: it did not finish well.
        this.report(TaskState.TASK_STATE_FAILED, {
          err: 'the task container disappeared while the agent was away',
        });
        return;
      }
      this.report(TaskState.TASK_STATE_ACCEPTED);
      this.report(TaskState.TASK_STATE_PREPARING);
      this.containerId = await this.prepare(signal);
      if (signal.aborted) return;
      this.report(TaskState.TASK_STATE_READY);
      info = {
        id: this.containerId,
        taskId: this.task.id,
        status: 'created',
        exitCode: 0,
        pid: 0,
        error: '',
      };
    }
    const id = info.id;
    if (info.status === 'exited') {
      // It ended while nobody watched: report how.
      this.report(TaskState.TASK_STATE_RUNNING);
      this.reportExit(info.exitCode, info.error);
      return;
    }
    if (info.status !== 'running') {
      this.report(TaskState.TASK_STATE_READY);
      this.report(TaskState.TASK_STATE_STARTING);
      await runtime.start(id);
      if (signal.aborted) return;
    }
    // A defined check starts as "starting": never healthy (nor in the load balancer) before it passes.
    if (specHasHealthcheck(this.task) && this.state < TaskState.TASK_STATE_RUNNING) this.health = 'starting';
    this.report(TaskState.TASK_STATE_RUNNING, { message: 'started' });
    const watch = new AbortController();
    const stopWatch = () => watch.abort();
    signal.addEventListener('abort', stopWatch, { once: true });
    let outcome: { exitCode: number } | 'unhealthy';
    try {
      const exited = runtime.wait(id, watch.signal).then((exitCode) => ({ exitCode }));
      const unhealthy = this.watchHealth(id, watch.signal).then((turned) =>
        turned ? ('unhealthy' as const) : new Promise<never>(() => undefined),
      );
      // The loser is settled by the abort below; its rejection must not go unhandled.
      exited.catch(() => undefined);
      outcome = await Promise.race([exited, unhealthy]);
    } finally {
      signal.removeEventListener('abort', stopWatch);
      watch.abort();
    }
    if (signal.aborted) return;
    if (outcome === 'unhealthy') {
      // Swarm's behaviour: the task fails and its container stops; the restart policy replaces it.
      this.report(TaskState.TASK_STATE_FAILED, { message: 'started', err: UNHEALTHY_ERROR });
      try {
        await runtime.stop(id, graceOf(this.task));
      } catch (err) {
        this.deps.logger.warn({ taskId: this.task.id, err }, 'could not stop an unhealthy container');
      }
      return;
    }
    const { exitCode } = outcome;
    const after = await runtime.inspect(id);
    this.reportExit(exitCode, after?.error ?? '');
  }

  /**
   * Stops (stop signal, grace, kill) and removes the container. With `report`, the task is
   * reported SHUTDOWN unless it already ended; without, it is no longer assigned to us.
   */
  shutdown(report: boolean): Promise<void> {
    this.shuttingDown ??= (async () => {
      // Read before the run loop stops: whether the load balancer may still send it connections.
      const drain = report && this.servesTraffic();
      this.runAbort.abort();
      await this.running;
      const id = this.containerId;
      if (drain && id) {
        const drainMs = this.deps.drainMs ?? DEFAULT_DRAIN_MS;
        this.deps.logger.debug({ taskId: this.task.id, drainMs }, 'draining before the stop signal');
        await abortableSleep(drainMs, this.detachAbort.signal);
        // The agent stops: the container keeps running and a restarted agent stops it.
        if (this.detachAbort.signal.aborted) return;
      }
      if (id) {
        try {
          await this.deps.runtime.stop(id, graceOf(this.task));
        } catch (err) {
          this.deps.logger.warn({ taskId: this.task.id, err }, 'could not stop the task container');
        }
      }
      if (report && !isTerminal(this.state))
        this.report(TaskState.TASK_STATE_SHUTDOWN, { message: 'shutdown' });
      if (id) {
        try {
          await this.deps.runtime.remove(id);
        } catch (err) {
          this.deps.logger.warn({ taskId: this.task.id, err }, 'could not remove the task container');
        }
      }
    })();
    return this.shuttingDown;
  }

  /**
   * Whether the load balancer may have sent it connections: it runs and has a network address
   * (the routing mesh and VIPs balance only over tasks with one).
   */
  private servesTraffic(): boolean {
    return (
      this.state === TaskState.TASK_STATE_RUNNING &&
      this.task.networks.some((attachment) => attachment.addresses.length > 0)
    );
  }

  /** For an agent stopping: leave the container running (a restarted agent adopts it). */
  detach(): Promise<void> {
    this.runAbort.abort();
    this.detachAbort.abort();
    return this.running ?? Promise.resolve();
  }
}
