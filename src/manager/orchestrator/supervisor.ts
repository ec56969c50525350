// The task supervisor as a pure planner: replaces tasks that ended while meant to run (by the
// restart policy: condition, delay, attempts within a window), tasks on drained nodes and on
// nodes lost past the grace period; starts delayed replacements when their delay is over; and
// keeps a bounded history of finished tasks per slot.
//
// Everything it needs survives a leader change in the store: a replacement waiting for its
// delay has desired state READY (agents start only RUNNING tasks) and is promoted once
// created_at + delay has passed; the restart times inside the window travel with each
// replacement in a label, so the attempt count does not depend on the history kept.
import {
  RestartPolicy_Condition,
  TaskState,
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import { markOrphaned, tasksByService } from './orchestrator';
import type { ClusterState, Plan } from './plan';
import {
  TASK_HISTORY_RETENTION_LIMIT,
  byAge,
  durationMs,
  hasEnded,
  isDrained,
  isLive,
  isNotOnAgent,
  newTask,
  nodeCondition,
  occupiesSlot,
  stateOf,
  stopTask,
  timeMs,
} from './tasks';

/** Docker's default restart delay when a policy leaves it out. */
export const DEFAULT_RESTART_DELAY_MS = 5_000;
/** Label on a replacement task: restart times (ms) that count against max_attempts. */
export const RESTART_HISTORY_LABEL = 'cluster.restart-history';
/** Restart times a label keeps at most when max_attempts is 0 (unlimited): only a bound. */
const MAX_RECORDED_RESTARTS = 16;

export interface SupervisorOptions {
  nodeDownGraceMs: number;
  historyRetentionLimit?: number;
}

export type RestartDecision =
  { restart: false; why: string } | { restart: true; delayMs: number; history: number[] };

function restartHistory(task: Task): number[] {
  const raw = task.annotations?.labels[RESTART_HISTORY_LABEL] ?? '';
  if (raw === '') return [];
  return raw.split(',').map(Number).filter(Number.isFinite);
}

/** Whether the task failed (as opposed to exiting 0): what on-failure restarts. */
export function taskFailed(task: Task): boolean {
  const state = stateOf(task);
  if (state === TaskState.TASK_STATE_FAILED || state === TaskState.TASK_STATE_REJECTED) return true;
  if (state === TaskState.TASK_STATE_ORPHANED) return true;
  return (task.status?.container?.exitCode ?? 0) !== 0;
}

/** SwarmKit's shouldRestart: the policy of the task's own spec decides. */
export function restartDecision(task: Task, nowMs: number): RestartDecision {
  const policy = task.spec?.restart;
  const condition = policy?.condition ?? RestartPolicy_Condition.CONDITION_ANY;
  if (condition === RestartPolicy_Condition.CONDITION_NONE)
    return { restart: false, why: 'restart condition is none' };
  if (condition === RestartPolicy_Condition.CONDITION_ON_FAILURE && !taskFailed(task)) {
    return { restart: false, why: 'task completed successfully (restart condition on-failure)' };
  }
  const windowMs = durationMs(policy?.window, 0);
  const maxAttempts = policy?.maxAttempts ?? 0;
  const recent = restartHistory(task).filter((t) => windowMs === 0 || t > nowMs - windowMs);
  if (maxAttempts > 0 && recent.length >= maxAttempts) {
    return {
      restart: false,
      why: `restart attempts exhausted (${maxAttempts}${windowMs > 0 ? ` within ${windowMs} ms` : ''})`,
    };
  }
  const keep = maxAttempts > 0 ? maxAttempts : MAX_RECORDED_RESTARTS;
  return {
    restart: true,
    delayMs: durationMs(policy?.delay, DEFAULT_RESTART_DELAY_MS),
    history: [...recent, nowMs].slice(-keep),
  };
}

/** A replacement in the same slot (global: on the same node) from the service's current spec. */
function replacement(service: Service, old: Task, delayMs: number, history: number[] | undefined): Task {
  const task = newTask(service, {
    slot: old.slot,
    nodeId: service.spec?.mode?.$case === 'global' ? old.nodeId : '',
    desiredState: delayMs > 0 ? TaskState.TASK_STATE_READY : TaskState.TASK_STATE_RUNNING,
    labels: history === undefined ? {} : { [RESTART_HISTORY_LABEL]: history.join(',') },
  });
  return task;
}

function planTask(
  task: Task,
  service: Service,
  nodes: ReadonlyMap<string, Node>,
  plan: Plan,
  nowMs: number,
  options: SupervisorOptions,
): void {
  if (!isLive(task)) return;
  const global = service.spec?.mode?.$case === 'global';

  if (task.desiredState === TaskState.TASK_STATE_READY) {
    const startAtMs =
      timeMs(task.meta?.createdAt) + durationMs(task.spec?.restart?.delay, DEFAULT_RESTART_DELAY_MS);
    if (nowMs >= startAtMs) {
      const started = structuredClone(task);
      started.desiredState = TaskState.TASK_STATE_RUNNING;
      plan.updateTask(started);
    } else {
      plan.wakeAt(startAtMs);
    }
  }

  // Node loss and drain move replicated tasks; for global services the global orchestrator
  // decides per node.
  if (!global && task.nodeId !== '' && !hasEnded(task)) {
    const condition = nodeCondition(nodes.get(task.nodeId), nowMs, options.nodeDownGraceMs);
    if (condition.kind === 'down-in-grace') plan.wakeAt(condition.untilMs);
    if (condition.kind === 'lost') {
      const stopped = stopTask(task, TaskState.TASK_STATE_SHUTDOWN);
      markOrphaned(stopped, `${condition.why}: task rescheduled`);
      plan.updateTask(stopped);
      plan.createTask(replacement(service, task, 0, undefined));
      return;
    }
    if (isDrained(nodes.get(task.nodeId))) {
      plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'node drained: task rescheduled'));
      plan.createTask(replacement(service, task, 0, undefined));
      return;
    }
  }

  if (!hasEnded(task)) return;
  // Tasks the orchestrators are about to stop are not restarted: a slot above the replica
  // count, or a global task whose node no longer takes tasks.
  const mode = service.spec?.mode;
  if (mode?.$case === 'replicated' && task.slot > mode.value.replicas) return;
  if (global) {
    const node = nodes.get(task.nodeId);
    if (isDrained(node) || nodeCondition(node, nowMs, options.nodeDownGraceMs).kind === 'lost') return;
  }
  const decision = restartDecision(task, nowMs);
  if (!decision.restart) {
    // Finished by policy: it keeps its slot so the orchestrator does not refill it.
    plan.updateTask(stopTask(task, TaskState.TASK_STATE_COMPLETE));
    return;
  }
  plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN));
  plan.createTask(replacement(service, task, decision.delayMs, decision.history));
}

/** Deletes the oldest finished tasks of each slot beyond the retention limit. */
export function planHistoryRetention(
  service: Service,
  tasks: readonly Task[],
  plan: Plan,
  limit: number,
): void {
  const global = service.spec?.mode?.$case === 'global';
  const groups = new Map<string, Task[]>();
  for (const task of tasks) {
    const key = global ? task.nodeId : String(task.slot);
    const group = groups.get(key);
    if (group) group.push(task);
    else groups.set(key, [task]);
  }
  for (const group of groups.values()) {
    if (group.length <= limit) continue;
    let excess = group.length - limit;
    for (const task of [...group].sort(byAge)) {
      if (excess === 0) break;
      if (occupiesSlot(task) || !isNotOnAgent(task)) continue;
      plan.deleteTask(task);
      excess--;
    }
  }
}

export function planSupervision(
  state: ClusterState,
  plan: Plan,
  nowMs: number,
  options: SupervisorOptions,
): void {
  const nodes = new Map(state.nodes.map((n) => [n.id, n]));
  const byService = tasksByService(state.tasks);
  for (const service of state.services) {
    const tasks = byService.get(service.id) ?? [];
    for (const task of tasks) planTask(task, service, nodes, plan, nowMs, options);
    planHistoryRetention(service, tasks, plan, options.historyRetentionLimit ?? TASK_HISTORY_RETENTION_LIMIT);
  }
}
