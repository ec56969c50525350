// The replicated and global orchestrators as pure planners: from the cluster state and the time,
// which tasks to create, stop and delete so that every replicated service has one task per slot
// 1..replicas and every global service one task per eligible node. Spec changes roll through
// the slots `update.parallelism` at a time in the service's update order; a service's
// update_status says whether a rollout is under way.
import {
  NodeAvailability,
  NodeState,
  TaskState,
  TaskStatus,
  UpdateConfig_Order,
  UpdateStatus_State,
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import { constraintMatches, parseConstraints, type Constraint } from '../scheduler';
import type { ClusterState, Plan } from './plan';
import {
  byAge,
  hasEnded,
  isLive,
  isNotOnAgent,
  isUpToDate,
  newTask,
  nodeCondition,
  occupiesSlot,
  stateOf,
  stopTask,
} from './tasks';

export interface OrchestratorOptions {
  nodeDownGraceMs: number;
}

/** Tasks grouped by a key: the slot number, or for global services the node id. */
function groupBy(tasks: readonly Task[], keyOf: (task: Task) => string): Map<string, Task[]> {
  const groups = new Map<string, Task[]>();
  for (const task of tasks) {
    const key = keyOf(task);
    const group = groups.get(key);
    if (group) group.push(task);
    else groups.set(key, [task]);
  }
  return groups;
}

export function tasksByService(tasks: readonly Task[]): Map<string, Task[]> {
  return groupBy(tasks, (t) => t.serviceId);
}

/** How one slot (or one global node) stands after its duplicates are settled. */
type SlotOutcome =
  /** Nothing occupies it: a task must be created. */
  | 'empty'
  /** Its task was made from the current spec and is settled. */
  | 'current'
  /** A replacement from the current spec exists but does not run yet: an update is under way. */
  | 'updating'
  /** Only tasks of an older spec occupy it: it waits for the rollout. */
  | 'outdated';

/**
 * Settles one slot: at most one task of the current spec stays (the running one, else the newest);
 * an outdated task is stopped once its replacement runs (start-first) or at once (stop-first).
 */
function settleSlot(service: Service, group: readonly Task[], plan: Plan): SlotOutcome {
  const occupying = group.filter(occupiesSlot);
  if (occupying.length === 0) return 'empty';
  const current = occupying.filter((t) => isUpToDate(t, service));
  const outdated = occupying.filter((t) => !isUpToDate(t, service));
  if (current.length === 0) {
    // Duplicates of an old spec (a leader died mid-rollout): keep the newest until its turn.
    const [keep, ...extra] = [...outdated].sort(preferRunningThenNewest);
    for (const task of extra) plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'duplicate task in slot'));
    return keep === undefined ? 'empty' : 'outdated';
  }
  const [keep, ...extra] = [...current].sort(preferRunningThenNewest);
  for (const task of extra) plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'duplicate task in slot'));
  if (keep === undefined) return 'empty';
  const startFirst = service.spec?.update?.order === UpdateConfig_Order.ORDER_START_FIRST;
  const replacementRuns = stateOf(keep) >= TaskState.TASK_STATE_RUNNING;
  for (const task of outdated) {
    if (startFirst && !replacementRuns) continue;
    plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'replaced by service update'));
  }
  const replacedHere = group.some((t) => !isUpToDate(t, service));
  return replacedHere && !replacementRuns && !hasEnded(keep) ? 'updating' : 'current';
}

function preferRunningThenNewest(a: Task, b: Task): number {
  const aRuns = isLive(a) && stateOf(a) === TaskState.TASK_STATE_RUNNING ? 1 : 0;
  const bRuns = isLive(b) && stateOf(b) === TaskState.TASK_STATE_RUNNING ? 1 : 0;
  return bRuns - aRuns || byAge(b, a);
}

/**
 * Starts the rollout of outdated slots, `parallelism` at a time (0: all) counting those still
 * updating, and keeps the service's update_status in step.
 */
function rollOut(
  service: Service,
  outdated: readonly { group: readonly Task[]; replace: () => Task }[],
  updating: number,
  plan: Plan,
  nowMs: number,
): void {
  const parallelism = service.spec?.update?.parallelism ?? 1;
  const budget = parallelism === 0 ? outdated.length : Math.max(0, parallelism - updating);
  const startFirst = service.spec?.update?.order === UpdateConfig_Order.ORDER_START_FIRST;
  for (const { group, replace } of outdated.slice(0, budget)) {
    plan.createTask(replace());
    if (startFirst) continue;
    for (const task of group.filter(occupiesSlot)) {
      plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'replaced by service update'));
    }
  }
  setUpdateStatus(service, outdated.length + updating > 0, plan, nowMs);
}

const ROLLBACK_STATES = new Set([UpdateStatus_State.STATE_ROLLBACK_STARTED, UpdateStatus_State.STATE_ROLLBACK_PAUSED]);

function setUpdateStatus(service: Service, inProgress: boolean, plan: Plan, nowMs: number): void {
  const state = service.updateStatus?.state ?? UpdateStatus_State.STATE_UNKNOWN;
  const rollback = ROLLBACK_STATES.has(state) || state === UpdateStatus_State.STATE_ROLLBACK_COMPLETED;
  let next: UpdateStatus_State | undefined;
  if (inProgress && state !== UpdateStatus_State.STATE_UPDATING && !ROLLBACK_STATES.has(state)) {
    // A first deployment (no previous spec) is not an update.
    if (service.previousSpec === undefined) return;
    next = rollback ? UpdateStatus_State.STATE_ROLLBACK_STARTED : UpdateStatus_State.STATE_UPDATING;
  } else if (!inProgress && state === UpdateStatus_State.STATE_UPDATING) {
    next = UpdateStatus_State.STATE_COMPLETED;
  } else if (!inProgress && state === UpdateStatus_State.STATE_ROLLBACK_STARTED) {
    next = UpdateStatus_State.STATE_ROLLBACK_COMPLETED;
  }
  if (next === undefined) return;
  const updated = structuredClone(service);
  const now = new Date(nowMs);
  const started = next === UpdateStatus_State.STATE_UPDATING || next === UpdateStatus_State.STATE_ROLLBACK_STARTED;
  updated.updateStatus = {
    state: next,
    startedAt: started ? now : service.updateStatus?.startedAt,
    completedAt: started ? undefined : now,
    message: started ? 'update in progress' : 'update completed',
  };
  plan.updateService(updated);
}

// ------------------------------------------------------------------------------ replicated

/**
 * Keeps slots 1..replicas each filled by one task of the current spec; stops the tasks of slots
 * above `replicas` (scaling down removes the highest slots) and deletes their finished tasks.
 */
export function planReplicatedService(service: Service, tasks: readonly Task[], plan: Plan, nowMs: number): void {
  const mode = service.spec?.mode;
  if (mode?.$case !== 'replicated') return;
  const replicas = mode.value.replicas;
  const slots = groupBy(tasks, (t) => String(t.slot));
  const outdated: { group: readonly Task[]; replace: () => Task }[] = [];
  let updating = 0;
  for (let slot = 1; slot <= replicas; slot++) {
    const group = slots.get(String(slot)) ?? [];
    const outcome = settleSlot(service, group, plan);
    if (outcome === 'empty') plan.createTask(newTask(service, { slot }));
    else if (outcome === 'updating') updating++;
    else if (outcome === 'outdated') outdated.push({ group, replace: () => newTask(service, { slot }) });
  }
  for (const [key, group] of slots) {
    const slot = Number(key);
    if (slot >= 1 && slot <= replicas) continue;
    for (const task of group) {
      if (occupiesSlot(task)) plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'service scaled down'));
      else if (isNotOnAgent(task)) plan.deleteTask(task);
    }
  }
  rollOut(service, outdated, updating, plan, nowMs);
}

// ---------------------------------------------------------------------------------- global

/** Whether a global service wants a task on the node, and whether a new one may start there. */
function globalFit(
  node: Node,
  constraints: readonly Constraint[] | undefined,
  nowMs: number,
  graceMs: number,
): { keep: boolean; start: boolean; lostWhy?: string } {
  const condition = nodeCondition(node, nowMs, graceMs);
  if (condition.kind === 'lost') return { keep: false, start: false, lostWhy: condition.why };
  const availability = node.spec?.availability ?? NodeAvailability.NODE_AVAILABILITY_ACTIVE;
  const matches = constraints !== undefined && constraints.every((c) => constraintMatches(c, node));
  const keep = matches && availability !== NodeAvailability.NODE_AVAILABILITY_DRAIN;
  // A paused node keeps its tasks but takes no new ones, as Swarm's.
  const start =
    keep &&
    availability === NodeAvailability.NODE_AVAILABILITY_ACTIVE &&
    node.status?.state === NodeState.NODE_STATE_READY;
  return { keep, start };
}

/** One task per eligible node; tasks on drained, lost or no longer matching nodes stop. */
export function planGlobalService(
  service: Service,
  tasks: readonly Task[],
  nodes: readonly Node[],
  plan: Plan,
  nowMs: number,
  options: OrchestratorOptions,
): void {
  if (service.spec?.mode?.$case !== 'global') return;
  let constraints: Constraint[] | undefined;
  try {
    constraints = parseConstraints(service.spec.task?.placement?.constraints ?? []);
  } catch {
    // Validated at creation; a constraint that no longer parses matches no node.
    constraints = undefined;
  }
  const byNode = groupBy(tasks, (t) => t.nodeId);
  const outdated: { group: readonly Task[]; replace: () => Task }[] = [];
  let updating = 0;
  const seen = new Set<string>();
  for (const node of nodes) {
    seen.add(node.id);
    const group = byNode.get(node.id) ?? [];
    const fit = globalFit(node, constraints, nowMs, options.nodeDownGraceMs);
    const condition = nodeCondition(node, nowMs, options.nodeDownGraceMs);
    if (condition.kind === 'down-in-grace') plan.wakeAt(condition.untilMs);
    if (!fit.keep) {
      stopGroup(group, plan, fit.lostWhy ?? 'node is no longer eligible (drained or constraints)', fit.lostWhy !== undefined);
      continue;
    }
    const hasTask = group.some(occupiesSlot);
    if (!hasTask && !fit.start) continue;
    const outcome = settleSlot(service, group, plan);
    const replace = () => newTask(service, { slot: 0, nodeId: node.id });
    if (outcome === 'empty') plan.createTask(replace());
    else if (outcome === 'updating') updating++;
    else if (outcome === 'outdated') outdated.push({ group, replace });
  }
  for (const [nodeId, group] of byNode) {
    if (seen.has(nodeId)) continue;
    // Tasks not yet bound to a node (nodeId '') are bugs for a global service: stop them too.
    stopGroup(group, plan, nodeId === '' ? 'global task without a node' : 'node was removed from the cluster', nodeId !== '');
  }
  rollOut(service, outdated, updating, plan, nowMs);
}

function stopGroup(group: readonly Task[], plan: Plan, why: string, orphan: boolean): void {
  for (const task of group) {
    if (!occupiesSlot(task)) continue;
    const stopped = stopTask(task, TaskState.TASK_STATE_SHUTDOWN, why);
    if (orphan) markOrphaned(stopped, why);
    plan.updateTask(stopped);
  }
}

/** No agent will report on this task any more: its status ends here. */
export function markOrphaned(task: Task, why: string): void {
  if (hasEnded(task)) return;
  task.status = TaskStatus.fromPartial({ ...task.status, state: TaskState.TASK_STATE_ORPHANED, message: why });
}

// ---------------------------------------------------------------------------------- reaper

/**
 * Tasks of removed services: desired REMOVE (the control API sets it too, in batches), deleted
 * once nothing runs them on an agent (or their node is lost).
 */
export function planRemovedServiceTasks(
  tasks: readonly Task[],
  nodes: ReadonlyMap<string, Node>,
  plan: Plan,
  nowMs: number,
  options: OrchestratorOptions,
): void {
  for (const task of tasks) {
    const lost = task.nodeId !== '' && nodeCondition(nodes.get(task.nodeId), nowMs, options.nodeDownGraceMs).kind === 'lost';
    if (isNotOnAgent(task) || lost) plan.deleteTask(task);
    else if (task.desiredState < TaskState.TASK_STATE_REMOVE) {
      plan.updateTask(stopTask(task, TaskState.TASK_STATE_REMOVE, 'service removed'));
    }
  }
}

/** The orchestrators' whole pass: every service, and the tasks whose service is gone. */
export function planOrchestration(state: ClusterState, plan: Plan, nowMs: number, options: OrchestratorOptions): void {
  const byService = tasksByService(state.tasks);
  const nodes = new Map(state.nodes.map((n) => [n.id, n]));
  for (const service of state.services) {
    const tasks = byService.get(service.id) ?? [];
    byService.delete(service.id);
    if (service.spec?.mode?.$case === 'global') planGlobalService(service, tasks, state.nodes, plan, nowMs, options);
    else planReplicatedService(service, tasks, plan, nowMs);
  }
  for (const orphans of byService.values()) planRemovedServiceTasks(orphans, nodes, plan, nowMs, options);
}
