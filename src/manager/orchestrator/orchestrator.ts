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
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import { constraintMatches, parseConstraints, type Constraint } from '../scheduler';
import type { ClusterState, Plan } from './plan';
import { activeUpdateConfig, nextUpdateStep, type SlotView } from './updater';
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

/**
 * Whether the agent still has to stop this task: it was told to stop (not by policy), runs on an
 * agent, has not reported an end yet, and its node is up. Stop-first replacements wait for it.
 */
function stillStopping(task: Task, nodes: ReadonlyMap<string, Node>): boolean {
  if (occupiesSlot(task) || isNotOnAgent(task)) return false;
  const node = nodes.get(task.nodeId);
  return node !== undefined && node.status?.state !== NodeState.NODE_STATE_DOWN;
}

/**
 * Settles one slot: at most one task of the current spec stays (the running one, else the
 * newest); an outdated task is stopped once its replacement runs (start-first) or at once
 * (stop-first). An empty slot gets a new task from `create`, but only once every task stopped
 * in it has ended (or its node is down or gone): stop-first never runs old and new side by side.
 * Returns how the slot stands for the updater (undefined: the slot stays empty).
 */
function settleSlot(
  service: Service,
  key: string,
  group: readonly Task[],
  plan: Plan,
  nodes: ReadonlyMap<string, Node>,
  create: () => Task,
): SlotView | undefined {
  const occupying = group.filter(occupiesSlot);
  if (occupying.length === 0) {
    if (group.some((t) => stillStopping(t, nodes)))
      return { key, tasks: group, current: undefined, outdated: false, stopping: true };
    const fresh = create();
    plan.createTask(fresh);
    return { key, tasks: [...group, fresh], current: fresh, outdated: false };
  }
  const current = occupying.filter((t) => isUpToDate(t, service));
  const outdated = occupying.filter((t) => !isUpToDate(t, service));
  const [keep, ...extra] = [...(current.length > 0 ? current : outdated)].sort(preferRunningThenNewest);
  // Duplicates (a leader died between two writes): one task per slot stays.
  for (const task of extra)
    plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'duplicate task in slot'));
  if (current.length === 0) return { key, tasks: group, current: undefined, outdated: true };
  const startFirst = activeUpdateConfig(service)?.order === UpdateConfig_Order.ORDER_START_FIRST;
  const replacementRuns = keep !== undefined && stateOf(keep) >= TaskState.TASK_STATE_RUNNING;
  for (const task of outdated) {
    if (startFirst && !replacementRuns) continue;
    plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'replaced by service update'));
  }
  return { key, tasks: group, current: keep, outdated: false };
}

function preferRunningThenNewest(a: Task, b: Task): number {
  const aRuns = isLive(a) && stateOf(a) === TaskState.TASK_STATE_RUNNING ? 1 : 0;
  const bRuns = isLive(b) && stateOf(b) === TaskState.TASK_STATE_RUNNING ? 1 : 0;
  return bRuns - aRuns || byAge(b, a);
}

/**
 * Applies the updater's next step and the service status. Start-first creates the replacement
 * at once (the old task stops once it runs, in settleSlot). Stop-first stops the old task first;
 * the replacement is created in the same pass only when nothing is left to wait for (the old
 * task never reached an agent, or its node is down), otherwise by settleSlot once it has ended.
 */
function rollOut(
  service: Service,
  slots: readonly SlotView[],
  replaceFor: (key: string) => Task,
  plan: Plan,
  nowMs: number,
  nodes: ReadonlyMap<string, Node>,
): void {
  const step = nextUpdateStep(service, slots, nowMs);
  if (step.service !== undefined) plan.updateService(step.service);
  if (step.wakeAtMs !== undefined) plan.wakeAt(step.wakeAtMs);
  const startFirst = activeUpdateConfig(service)?.order === UpdateConfig_Order.ORDER_START_FIRST;
  const byKey = new Map(slots.map((slot) => [slot.key, slot]));
  for (const key of step.replace) {
    if (startFirst) {
      plan.createTask(replaceFor(key));
      continue;
    }
    const stopped = (byKey.get(key)?.tasks.filter(occupiesSlot) ?? []).map((task) =>
      stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'replaced by service update'),
    );
    for (const task of stopped) plan.updateTask(task);
    if (!stopped.some((t) => stillStopping(t, nodes))) plan.createTask(replaceFor(key));
  }
}

// ------------------------------------------------------------------------------ replicated

/**
 * Keeps slots 1..replicas each filled by one task of the current spec; stops the tasks of slots
 * above `replicas` (scaling down removes the highest slots) and deletes their finished tasks.
 */
export function planReplicatedService(
  service: Service,
  tasks: readonly Task[],
  nodes: ReadonlyMap<string, Node>,
  plan: Plan,
  nowMs: number,
): void {
  const mode = service.spec?.mode;
  if (mode?.$case !== 'replicated') return;
  const replicas = mode.value.replicas;
  const slots = groupBy(tasks, (t) => String(t.slot));
  const views: SlotView[] = [];
  for (let slot = 1; slot <= replicas; slot++) {
    const view = settleSlot(service, String(slot), slots.get(String(slot)) ?? [], plan, nodes, () =>
      newTask(service, { slot }),
    );
    if (view !== undefined) views.push(view);
  }
  for (const [key, group] of slots) {
    const slot = Number(key);
    if (slot >= 1 && slot <= replicas) continue;
    for (const task of group) {
      if (occupiesSlot(task))
        plan.updateTask(stopTask(task, TaskState.TASK_STATE_SHUTDOWN, 'service scaled down'));
      else if (isNotOnAgent(task)) plan.deleteTask(task);
    }
  }
  rollOut(service, views, (key) => newTask(service, { slot: Number(key) }), plan, nowMs, nodes);
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
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const views: SlotView[] = [];
  const seen = new Set<string>();
  for (const node of nodes) {
    seen.add(node.id);
    const group = byNode.get(node.id) ?? [];
    const fit = globalFit(node, constraints, nowMs, options.nodeDownGraceMs);
    const condition = nodeCondition(node, nowMs, options.nodeDownGraceMs);
    if (condition.kind === 'down-in-grace') plan.wakeAt(condition.untilMs);
    if (!fit.keep) {
      stopGroup(
        group,
        plan,
        fit.lostWhy ?? 'node is no longer eligible (drained or constraints)',
        fit.lostWhy !== undefined,
      );
      continue;
    }
    const hasTask = group.some(occupiesSlot);
    if (!hasTask && !fit.start) continue;
    const view = settleSlot(service, node.id, group, plan, byId, () =>
      newTask(service, { slot: 0, nodeId: node.id }),
    );
    if (view !== undefined) views.push(view);
  }
  for (const [nodeId, group] of byNode) {
    if (seen.has(nodeId)) continue;
    // Tasks not yet bound to a node (nodeId '') are bugs for a global service: stop them too.
    stopGroup(
      group,
      plan,
      nodeId === '' ? 'global task without a node' : 'node was removed from the cluster',
      nodeId !== '',
    );
  }
  rollOut(service, views, (nodeId) => newTask(service, { slot: 0, nodeId }), plan, nowMs, byId);
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
  task.status = TaskStatus.fromPartial({
    ...task.status,
    state: TaskState.TASK_STATE_ORPHANED,
    message: why,
  });
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
    const lost =
      task.nodeId !== '' &&
      nodeCondition(nodes.get(task.nodeId), nowMs, options.nodeDownGraceMs).kind === 'lost';
    if (isNotOnAgent(task) || lost) plan.deleteTask(task);
    else if (task.desiredState < TaskState.TASK_STATE_REMOVE) {
      plan.updateTask(stopTask(task, TaskState.TASK_STATE_REMOVE, 'service removed'));
    }
  }
}

/** The orchestrators' whole pass: every service, and the tasks whose service is gone. */
export function planOrchestration(
  state: ClusterState,
  plan: Plan,
  nowMs: number,
  options: OrchestratorOptions,
): void {
  const byService = tasksByService(state.tasks);
  const nodes = new Map(state.nodes.map((n) => [n.id, n]));
  for (const service of state.services) {
    const tasks = byService.get(service.id) ?? [];
    byService.delete(service.id);
    if (service.spec?.mode?.$case === 'global')
      planGlobalService(service, tasks, state.nodes, plan, nowMs, options);
    else planReplicatedService(service, tasks, nodes, plan, nowMs);
  }
  for (const orphans of byService.values()) planRemovedServiceTasks(orphans, nodes, plan, nowMs, options);
}
