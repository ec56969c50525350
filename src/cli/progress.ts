// The wait after `service create|scale|update`: poll the tasks, print per-slot progress like
// Docker's ("2/3: running   [=====>   ]"), and stop when the service has converged or the
// timeout passes. The progress itself is a pure function of (service, tasks).
import { setTimeout as sleep } from 'node:timers/promises';
import { ClusterError, toClusterError } from '../common/errors';
import { TaskSpec, TaskState, UpdateStatus_State, type Service, type Task } from '../gen/cluster/v1/objects';
import { shortId, taskStateName } from './views';

export const POLL_INTERVAL_MS = 200;
export const DEFAULT_CONVERGE_TIMEOUT_MS = 120_000;

// Docker's progress bar: how far along the life cycle a task is, out of "running".
const STAGES: TaskState[] = [
  TaskState.TASK_STATE_NEW,
  TaskState.TASK_STATE_PENDING,
  TaskState.TASK_STATE_ASSIGNED,
  TaskState.TASK_STATE_ACCEPTED,
  TaskState.TASK_STATE_PREPARING,
  TaskState.TASK_STATE_READY,
  TaskState.TASK_STATE_STARTING,
  TaskState.TASK_STATE_RUNNING,
];
const BAR_WIDTH = 50;

function bar(state: TaskState | undefined): string {
  const stage = state === undefined ? -1 : STAGES.indexOf(state);
  if (stage < 0) return '';
  const filled = Math.round(((stage + 1) / STAGES.length) * BAR_WIDTH);
  return `[${'='.repeat(Math.max(0, filled - 1))}>${' '.repeat(BAR_WIDTH - filled)}]`;
}

const emptyTaskSpec = TaskSpec.fromPartial({});

/** JSON with object keys sorted, so that equal messages compare equal whatever their map order. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(
          Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)),
        )
      : v,
  );
}

export interface ProgressLine {
  /** Stable identity of the line: "overall", a slot number or a node id. */
  key: string;
  text: string;
}

export interface Progress {
  lines: ProgressLine[];
  running: number;
  desired: number;
  converged: boolean;
}

export interface ProgressOptions {
  /**
   * Only tasks made from the service's current task spec count (after an update that changes
   * it, the old tasks are the ones being replaced). Compared by content, as the orchestrator
   * does: the service's version also moves for status writes that redeploy nothing.
   */
  requireCurrentSpec?: boolean;
}

function taskLine(label: string, task: Task | undefined): string {
  if (!task) return `${label}:`;
  const state = taskStateName(task.status?.state);
  const progress = bar(task.status?.state);
  // While preparing, where the image pull stands ("pulling image x:1: 1 of 2 layers, ...").
  const message = task.status?.message ?? '';
  const detail =
    task.status?.state === TaskState.TASK_STATE_PREPARING && message !== 'preparing' ? message : '';
  return [`${label}: ${progress ? state.padEnd(9) : state}`, progress, task.status?.err || detail]
    .filter((part) => part !== '')
    .join(' ');
}

const newest = (tasks: Task[]): Task | undefined =>
  [...tasks].sort((a, b) => (b.status?.timestamp?.getTime() ?? 0) - (a.status?.timestamp?.getTime() ?? 0))[0];

export function computeProgress(service: Service, tasks: Task[], options: ProgressOptions = {}): Progress {
  const own = tasks.filter((t) => t.serviceId === service.id);
  const wantedSpec = canonicalJson(TaskSpec.toJSON(service.spec?.task ?? emptyTaskSpec));
  const current = (t: Task) =>
    t.desiredState === TaskState.TASK_STATE_RUNNING &&
    (!options.requireCurrentSpec || canonicalJson(TaskSpec.toJSON(t.spec ?? emptyTaskSpec)) === wantedSpec);
  const isRunning = (t: Task | undefined) => t?.status?.state === TaskState.TASK_STATE_RUNNING;
  const lines: ProgressLine[] = [];
  let running = 0;
  let desired: number;
  let extraRunning = false;

  const mode = service.spec?.mode;
  if (mode?.$case === 'global') {
    const byNode = new Map<string, Task[]>();
    for (const t of own.filter(current)) byNode.set(t.nodeId, [...(byNode.get(t.nodeId) ?? []), t]);
    desired = byNode.size;
    for (const nodeId of [...byNode.keys()].sort()) {
      const task = newest(byNode.get(nodeId) ?? []);
      if (isRunning(task)) running += 1;
      lines.push({ key: nodeId, text: taskLine(shortId(nodeId), task) });
    }
  } else {
    desired = mode?.$case === 'replicated' ? mode.value.replicas : 0;
    for (let slot = 1; slot <= desired; slot++) {
      const inSlot = own.filter((t) => t.slot === slot);
      const task = newest(inSlot.filter(current)) ?? newest(inSlot);
      const ok = task !== undefined && current(task) && isRunning(task);
      if (ok) running += 1;
      lines.push({ key: String(slot), text: taskLine(`${slot}/${desired}`, task) });
    }
    // After a scale down the removed slots must stop before the service has converged.
    extraRunning = own.some((t) => t.slot > desired && t.desiredState === TaskState.TASK_STATE_RUNNING);
  }
  const converged = running === desired && !extraRunning && (desired > 0 || mode?.$case !== 'global');
  return {
    lines: [{ key: 'overall', text: `overall progress: ${running} out of ${desired} tasks` }, ...lines],
    running,
    desired,
    converged,
  };
}

/** How a rolling update (or rollback) the CLI waits on ended, from the service's update_status. */
export interface RolloutOutcome {
  /** The final state line: "updated", "paused: reason", "rolled back", "rolled back: reason". */
  line: string;
  /** Whether the change the user asked for is in place (exit 0). */
  ok: boolean;
}

/**
 * The end of a rollout as the updater recorded it, or undefined while it goes on. `rollback`:
 * the user asked for the rollback, so rolling back is success; after an update it is the
 * failure action. Without an update_status (a change that replaces no task) the service is
 * done once it has converged.
 */
export function rolloutOutcome(
  service: Service,
  progress: Progress,
  rollback: boolean,
): RolloutOutcome | undefined {
  const status = service.updateStatus;
  const reason = status?.message ?? '';
  switch (status?.state) {
    case UpdateStatus_State.STATE_COMPLETED:
      return progress.converged ? { line: 'updated', ok: !rollback } : undefined;
    case UpdateStatus_State.STATE_PAUSED:
      return { line: `paused: ${reason}`, ok: false };
    case UpdateStatus_State.STATE_ROLLBACK_PAUSED:
      return { line: `rollback paused: ${reason}`, ok: false };
    case UpdateStatus_State.STATE_ROLLBACK_COMPLETED:
      if (!progress.converged) return undefined;
      return rollback ? { line: 'rolled back', ok: true } : { line: `rolled back: ${reason}`, ok: false };
    case UpdateStatus_State.STATE_UPDATING:
    case UpdateStatus_State.STATE_ROLLBACK_STARTED:
      return undefined;
    default:
      return progress.converged ? { line: rollback ? 'rolled back' : 'updated', ok: true } : undefined;
  }
}

export interface WaitOptions extends ProgressOptions {
  serviceName: string;
  fetch: () => Promise<{ service: Service; tasks: Task[] }>;
  write: (text: string) => void;
  isTTY: boolean;
  timeoutMs?: number;
  intervalMs?: number;
  now?: () => number;
  /**
   * Wait for the rolling update to end (update_status), not only for the tasks to run, and
   * print its final state line; `rollback` when the user asked for a rollback.
   */
  rollout?: { rollback: boolean };
}

/** Polls until the service converges; throws FAILED_PRECONDITION (exit 1) at the timeout. */
export async function waitForConvergence(options: WaitOptions): Promise<void> {
  const now = options.now ?? Date.now;
  const deadline = now() + (options.timeoutMs ?? DEFAULT_CONVERGE_TIMEOUT_MS);
  const printed = new Map<string, string>();
  let ttyLines = 0;
  let last: Progress | undefined;
  for (;;) {
    try {
      const { service, tasks } = await options.fetch();
      last = computeProgress(service, tasks, options);
      if (options.isTTY) {
        // Rewrite the block in place: cursor up over the previous block, clear each line.
        const up = ttyLines > 0 ? `\x1b[${ttyLines}A` : '';
        options.write(up + last.lines.map((l) => `\x1b[2K${l.text}\n`).join(''));
        ttyLines = last.lines.length;
      } else {
        for (const line of last.lines) {
          if (printed.get(line.key) !== line.text) {
            options.write(line.text + '\n');
            printed.set(line.key, line.text);
          }
        }
      }
      if (options.rollout !== undefined) {
        const outcome = rolloutOutcome(service, last, options.rollout.rollback);
        if (outcome !== undefined) {
          options.write(outcome.line + '\n');
          if (!outcome.ok) {
            throw new ClusterError(
              'FAILED_PRECONDITION',
              `service '${options.serviceName}' ${outcome.line} (see 'cluster service inspect ${options.serviceName}')`,
            );
          }
          return;
        }
      } else if (last.converged) {
        options.write('verify: Service converged\n');
        return;
      }
    } catch (e) {
      const err = toClusterError(e);
      // A manager election or a blip is worth waiting through; anything else ends the wait.
      if (err.code !== 'UNAVAILABLE' && err.code !== 'NOT_LEADER' && err.code !== 'DEADLINE_EXCEEDED')
        throw err;
    }
    if (now() >= deadline) {
      const counts = last ? `${last.running}/${last.desired} running` : 'no answer from the manager';
      throw new ClusterError(
        'FAILED_PRECONDITION',
        `service '${options.serviceName}' not converged yet: ${counts}; the change was accepted and the managers keep working on it (see 'cluster service ps ${options.serviceName}')`,
      );
    }
    await sleep(options.intervalMs ?? POLL_INTERVAL_MS);
  }
}
