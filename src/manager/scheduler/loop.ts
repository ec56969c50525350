// The scheduler's leader loop: gathers PENDING tasks (changes batched for a few ms), places them
// with the pure placeTasks, and writes ASSIGNED + node for each placed task; a task that fits
// nowhere stays PENDING with the reason in its status message, and is tried again whenever
// nodes or tasks change.
import { NodeAvailability, NodeState, TaskState, TaskStatus, type Task } from '../../gen/cluster/v1/objects';
import type { LeaderLoop } from '../../node/leader_loops';
import type { MemoryStore } from '../../store';
import type { ClusterState, Plan } from '../orchestrator/plan';
import { reconcilerLoop, type ReconcilerOptions } from '../orchestrator/reconciler';
import { isLive, stateOf } from '../orchestrator/tasks';
import { placeTasks } from './placement';

function withStatus(task: Task, state: TaskState, message: string, err = ''): Task {
  const next = structuredClone(task);
  next.status = TaskStatus.fromPartial({ ...task.status, state, message, err });
  return next;
}

/**
 * Records why a task waits, writing only when the reason changed (no churn while it waits). The
 * reason goes in `err` too: that is what `service ps` shows under ERROR, as SwarmKit's "no
 * suitable node (...)".
 */
function explain(task: Task, reason: string, plan: Plan): void {
  if (task.status?.message !== reason || task.status.err !== reason)
    plan.updateTask(withStatus(task, TaskState.TASK_STATE_PENDING, reason, reason));
}

export function planScheduling(state: ClusterState, plan: Plan): void {
  const pendingTasks: Task[] = [];
  const tasksOnNodes: Task[] = [];
  const nodes = new Map(state.nodes.map((n) => [n.id, n]));
  for (const task of state.tasks) {
    const waiting = stateOf(task) === TaskState.TASK_STATE_PENDING && isLive(task);
    if (waiting && task.nodeId === '') {
      pendingTasks.push(task);
      continue;
    }
    if (task.nodeId === '') continue;
    tasksOnNodes.push(task);
    if (!waiting) continue;
    // A global service's task is made for its node: it only needs the node to be usable.
    const node = nodes.get(task.nodeId);
    const nodeState = node?.status?.state ?? NodeState.NODE_STATE_UNKNOWN;
    if (node === undefined) explain(task, `node ${task.nodeId} no longer exists`, plan);
    else if (nodeState !== NodeState.NODE_STATE_READY)
      explain(task, `node ${task.nodeId} is not ready`, plan);
    else if (node.spec?.availability === NodeAvailability.NODE_AVAILABILITY_DRAIN)
      explain(task, `node ${task.nodeId} is drained`, plan);
    else
      plan.updateTask(
        withStatus(task, TaskState.TASK_STATE_ASSIGNED, `scheduler assigned task to node ${task.nodeId}`),
      );
  }
  if (pendingTasks.length === 0) return;
  const result = placeTasks({ pendingTasks, nodes: state.nodes, tasksOnNodes });
  const byId = new Map(pendingTasks.map((t) => [t.id, t]));
  for (const { taskId, nodeId } of result.assignments) {
    const task = byId.get(taskId);
    if (task === undefined) continue;
    const assigned = withStatus(
      task,
      TaskState.TASK_STATE_ASSIGNED,
      `scheduler assigned task to node ${nodeId}`,
    );
    assigned.nodeId = nodeId;
    plan.updateTask(assigned);
  }
  for (const { taskId, reason } of result.unplaced) {
    const task = byId.get(taskId);
    if (task !== undefined) explain(task, reason, plan);
  }
}

export function schedulerLoop(store: MemoryStore, options: ReconcilerOptions = {}): LeaderLoop {
  return reconcilerLoop(
    'scheduler',
    store,
    ['tasks', 'nodes'],
    (state, plan) => planScheduling(state, plan),
    options,
  );
}
