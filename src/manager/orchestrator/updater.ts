// The rolling updater's decision as a pure function of (service, its slots, now): which outdated
// slots to replace next, whether to wait (the delay between batches, the monitor period of the
// last replacements), and what the service's update_status becomes, including the failure
// action (pause, continue, or roll back to previous_spec) once too many new tasks failed.
// Everything it reads is in the store, so a new leader resumes a rollout where it stood: slots
// already replaced hold tasks of the current spec and are not redone.
import {
  TaskState,
  UpdateConfig_FailureAction,
  UpdateStatus_State,
  type Service,
  type Task,
  type UpdateConfig,
} from '../../gen/cluster/v1/objects';
import { DEFAULT_UPDATE_MONITOR_MS } from './defaults';
import { durationMs, hasEnded, isUpToDate, stateOf, timeMs } from './tasks';

/** One slot (a replica slot, or a global service's node) as the orchestrator settled it. */
export interface SlotView {
  readonly key: string;
  /** Every task of the slot, history included. */
  readonly tasks: readonly Task[];
  /** The task of the current spec that holds the slot, if any. */
  readonly current: Task | undefined;
  /** Whether only tasks of an older spec hold the slot. */
  readonly outdated: boolean;
  /**
   * No task holds the slot yet because a stopped one has not ended (stop-first: the replacement
   * waits for the old task to stop). Counts against parallelism when the old task is outdated.
   */
  readonly stopping?: boolean;
}

export interface UpdateStep {
  /** Slot keys whose outdated task is replaced now. */
  readonly replace: readonly string[];
  /** The service with a new update_status (and, on rollback, spec), when it changes. */
  readonly service: Service | undefined;
  /** When to look again although nothing changed (a delay or monitor period ends). */
  readonly wakeAtMs: number | undefined;
}

const IN_PROGRESS = new Set([UpdateStatus_State.STATE_UPDATING, UpdateStatus_State.STATE_ROLLBACK_STARTED]);
const PAUSED = new Set([UpdateStatus_State.STATE_PAUSED, UpdateStatus_State.STATE_ROLLBACK_PAUSED]);

function hasHealthcheck(task: Task): boolean {
  const test = task.spec?.container?.healthcheck?.test ?? [];
  return test.length > 0 && test[0] !== 'NONE';
}

/** When the task started running (the agent's status time, else the task's last change). */
function runningSinceMs(task: Task): number {
  return timeMs(task.status?.timestamp ?? task.meta?.updatedAt);
}

function failed(task: Task): boolean {
  const state = stateOf(task);
  return (
    state === TaskState.TASK_STATE_FAILED ||
    state === TaskState.TASK_STATE_REJECTED ||
    (state === TaskState.TASK_STATE_COMPLETE && (task.status?.container?.exitCode ?? 0) !== 0)
  );
}

/** Ends the message of a rollback the failure action started; the reason comes before it. */
const ROLLING_BACK = ': rolling back';

/**
 * A finished rollback says why it happened when the failure action started it (the CLI prints
 * "rolled back: <reason>"); a rollback the user asked for just completed.
 */
function rollbackDoneMessage(service: Service): string {
  const started = service.updateStatus?.message ?? '';
  return started.endsWith(ROLLING_BACK) ? started.slice(0, -ROLLING_BACK.length) : 'rollback completed';
}

/** The config the rollout follows: the rollback config while rolling back. */
export function activeUpdateConfig(service: Service): UpdateConfig | undefined {
  const state = service.updateStatus?.state;
  const rollingBack =
    state === UpdateStatus_State.STATE_ROLLBACK_STARTED || state === UpdateStatus_State.STATE_ROLLBACK_PAUSED;
  return rollingBack ? service.spec?.rollback : service.spec?.update;
}

export function nextUpdateStep(service: Service, slots: readonly SlotView[], nowMs: number): UpdateStep {
  const config = activeUpdateConfig(service);
  const state = service.updateStatus?.state ?? UpdateStatus_State.STATE_UNKNOWN;
  const startedMs =
    IN_PROGRESS.has(state) || PAUSED.has(state) ? timeMs(service.updateStatus?.startedAt) : nowMs;
  const monitorMs = durationMs(config?.monitor, DEFAULT_UPDATE_MONITOR_MS);
  let wakeAtMs: number | undefined;
  const wake = (ms: number) => {
    wakeAtMs = wakeAtMs === undefined ? ms : Math.min(wakeAtMs, ms);
  };

  const outdated: string[] = [];
  /** Replacements not yet running (and healthy): they use up the batch. */
  let inFlight = 0;
  /** Replacements running, still inside their monitor window: the update is not complete. */
  let monitoring = 0;
  /** When the last replacement so far started running (healthy): the delay counts from it. */
  let lastDoneMs: number | undefined;
  let failures = 0;
  for (const slot of slots) {
    if (slot.outdated) {
      outdated.push(slot.key);
      continue;
    }
    if (slot.stopping === true) {
      if (slot.tasks.some((t) => !isUpToDate(t, service))) inFlight++;
      continue;
    }
    // Failed tasks of the current spec since the rollout began count against it.
    for (const task of slot.tasks) {
      if (isUpToDate(task, service) && failed(task) && timeMs(task.meta?.createdAt) >= startedMs) failures++;
    }
    const current = slot.current;
    const replacedHere = slot.tasks.some((t) => !isUpToDate(t, service));
    if (current === undefined || !replacedHere || hasEnded(current)) continue;
    // A replacement holds its batch until it runs, healthy if it has a healthcheck; then the
    // next batch may start (as Swarm's updater), and the monitor window keeps counting its
    // failure until `monitor` after it started: the update completes only when every window
    // has passed.
    const runs = stateOf(current) === TaskState.TASK_STATE_RUNNING;
    const healthy = !hasHealthcheck(current) || current.status?.health === 'healthy';
    if (!(runs && healthy)) {
      inFlight++;
      continue;
    }
    const since = runningSinceMs(current);
    lastDoneMs = Math.max(lastDoneMs ?? since, since);
    if (nowMs < since + monitorMs) {
      monitoring++;
      wake(since + monitorMs);
    }
  }

  const active = outdated.length + inFlight + monitoring > 0;
  if (!active) {
    if (state === UpdateStatus_State.STATE_UPDATING)
      return finish(service, UpdateStatus_State.STATE_COMPLETED, 'update completed', nowMs);
    if (state === UpdateStatus_State.STATE_ROLLBACK_STARTED)
      return finish(
        service,
        UpdateStatus_State.STATE_ROLLBACK_COMPLETED,
        rollbackDoneMessage(service),
        nowMs,
      );
    return { replace: [], service: undefined, wakeAtMs };
  }
  if (PAUSED.has(state)) return { replace: [], service: undefined, wakeAtMs: undefined };
  // Outside an update only outdated slots start one: a replaced slot whose task failed and is
  // being restarted after the update ended (or a scale reset the status) reopens nothing.
  if (!IN_PROGRESS.has(state) && outdated.length === 0)
    return { replace: [], service: undefined, wakeAtMs: undefined };

  // A first deployment (no previous spec) is not an update: replace without bookkeeping.
  let updated: Service | undefined;
  if (!IN_PROGRESS.has(state) && service.previousSpec !== undefined) {
    updated = withStatus(service, UpdateStatus_State.STATE_UPDATING, 'update in progress', nowMs, true);
  }

  const maxFailureRatio = config?.maxFailureRatio ?? 0;
  if (failures > 0 && failures > maxFailureRatio * slots.length) {
    const action = config?.failureAction ?? UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE;
    const rollingBack = state === UpdateStatus_State.STATE_ROLLBACK_STARTED;
    const why = `${failures} of ${slots.length} updated tasks failed (max failure ratio ${maxFailureRatio})`;
    if (
      action === UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK &&
      !rollingBack &&
      service.previousSpec !== undefined
    ) {
      const back = withStatus(
        service,
        UpdateStatus_State.STATE_ROLLBACK_STARTED,
        `${why}${ROLLING_BACK}`,
        nowMs,
        true,
      );
      back.spec = structuredClone(service.previousSpec);
      back.previousSpec = structuredClone(service.spec);
      return { replace: [], service: back, wakeAtMs: undefined };
    }
    if (action !== UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE) {
      const paused = rollingBack ? UpdateStatus_State.STATE_ROLLBACK_PAUSED : UpdateStatus_State.STATE_PAUSED;
      return {
        replace: [],
        service: withStatus(service, paused, `${why}: paused`, nowMs, false),
        wakeAtMs: undefined,
      };
    }
  }

  const delayMs = durationMs(config?.delay, 0);
  if (inFlight === 0 && delayMs > 0 && lastDoneMs !== undefined && nowMs < lastDoneMs + delayMs) {
    wake(lastDoneMs + delayMs);
    return { replace: [], service: updated, wakeAtMs };
  }
  const parallelism = config?.parallelism ?? 1;
  const budget = parallelism === 0 ? outdated.length : Math.max(0, parallelism - inFlight);
  return { replace: outdated.slice(0, budget), service: updated, wakeAtMs };
}

function withStatus(
  service: Service,
  state: UpdateStatus_State,
  message: string,
  nowMs: number,
  starts: boolean,
): Service {
  const next = structuredClone(service);
  next.updateStatus = {
    state,
    startedAt: starts ? new Date(nowMs) : service.updateStatus?.startedAt,
    completedAt: starts ? undefined : new Date(nowMs),
    message,
  };
  return next;
}

function finish(service: Service, state: UpdateStatus_State, message: string, nowMs: number): UpdateStep {
  return { replace: [], service: withStatus(service, state, message, nowMs, false), wakeAtMs: undefined };
}
