// Task facts every control loop shares: which tasks still hold a slot, which have ended, when a
// node counts as lost, how a new task is made from its service, and whether a task is out of
// date with its service's spec.
import {
  NodeAvailability,
  NodeState,
  Task,
  TaskState,
  type Node,
  type Service,
} from '../../gen/cluster/v1/objects';
import type { Duration } from '../../gen/google/protobuf/duration';
import { newId } from '../../store';

/**
 * How long a node may stay DOWN before its tasks are taken as lost and replaced elsewhere: a
 * short network blip must not move every task of a node (issue 4: a blip under 1 s moves
 * nothing). Counted from the node's last change, which is the dispatcher marking it down.
 */
export const NODE_DOWN_GRACE_MS = 1_000;

/** Swarm's default task history per slot: the running task and the last few that ended. */
export const TASK_HISTORY_RETENTION_LIMIT = 5;

/** Whether the task is meant to run: RUNNING, or READY while its restart delay lasts. */
export function isLive(task: Task): boolean {
  return task.desiredState <= TaskState.TASK_STATE_RUNNING;
}

/** Whether the task declares a healthcheck (Docker's ["NONE"] turns an image's one off). */
export function hasHealthcheck(task: Task): boolean {
  const test = task.spec?.container?.healthcheck?.test ?? [];
  return test.length > 0 && test[0] !== 'NONE';
}

/**
 * Whether the load balancer may send new connections to the task: running, meant to keep
 * running (a task being stopped leaves the endpoint set first), and healthy when it has a
 * healthcheck.
 */
export function takesTraffic(task: Task): boolean {
  return (
    stateOf(task) === TaskState.TASK_STATE_RUNNING &&
    task.desiredState === TaskState.TASK_STATE_RUNNING &&
    (!hasHealthcheck(task) || task.status?.health === 'healthy')
  );
}

/** Whether the task finished by policy (restart condition, attempts): it keeps its slot. */
export function isFinishedByPolicy(task: Task): boolean {
  return task.desiredState === TaskState.TASK_STATE_COMPLETE;
}

/** A slot (or a global service's node) is occupied by a live task or one finished by policy. */
export function occupiesSlot(task: Task): boolean {
  return isLive(task) || isFinishedByPolicy(task);
}

export function stateOf(task: Task): TaskState {
  return task.status?.state ?? TaskState.TASK_STATE_NEW;
}

/** The container has stopped (or was never started): COMPLETE, SHUTDOWN, FAILED, REJECTED, ... */
export function hasEnded(task: Task): boolean {
  return stateOf(task) >= TaskState.TASK_STATE_COMPLETE;
}

/** Nothing runs for this task on any agent: it ended, or was never handed to a node. */
export function isNotOnAgent(task: Task): boolean {
  return hasEnded(task) || task.nodeId === '' || stateOf(task) < TaskState.TASK_STATE_ASSIGNED;
}

export function durationMs(duration: Duration | undefined, fallbackMs: number): number {
  if (duration === undefined) return fallbackMs;
  return duration.seconds * 1000 + Math.floor(duration.nanos / 1e6);
}

export function timeMs(date: Date | undefined): number {
  return date === undefined ? 0 : date.getTime();
}

/** Oldest first: creation time, then version, then id (tasks made in one pass share a time). */
export function byAge(a: Task, b: Task): number {
  return (
    timeMs(a.meta?.createdAt) - timeMs(b.meta?.createdAt) ||
    (a.meta?.version ?? 0) - (b.meta?.version ?? 0) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

export function serviceName(service: Service): string {
  return service.spec?.annotations?.name ?? service.id;
}

/** Node health as the orchestrators see it at `nowMs`. */
export type NodeCondition =
  | { kind: 'up' }
  /** DOWN for less than the grace period: its tasks stay; `untilMs` is when they are lost. */
  | { kind: 'down-in-grace'; untilMs: number }
  | { kind: 'lost'; why: string };

export function nodeCondition(node: Node | undefined, nowMs: number, graceMs: number): NodeCondition {
  if (node === undefined) return { kind: 'lost', why: 'node was removed from the cluster' };
  if ((node.status?.state ?? NodeState.NODE_STATE_UNKNOWN) !== NodeState.NODE_STATE_DOWN)
    return { kind: 'up' };
  const untilMs = timeMs(node.meta?.updatedAt) + graceMs;
  if (nowMs < untilMs) return { kind: 'down-in-grace', untilMs };
  return { kind: 'lost', why: 'node is down' };
}

export function isDrained(node: Node | undefined): boolean {
  return node?.spec?.availability === NodeAvailability.NODE_AVAILABILITY_DRAIN;
}

export interface NewTaskOptions {
  slot: number;
  /** Set for global services: the task belongs to that node. */
  nodeId?: string;
  /** READY while a restart delay lasts, RUNNING otherwise. */
  desiredState?: TaskState;
  labels?: Record<string, string>;
}

/** A new task of the service, state NEW, made from the service's current spec. */
export function newTask(service: Service, options: NewTaskOptions): Task {
  const nodeId = options.nodeId ?? '';
  const name = `${serviceName(service)}.${options.slot > 0 ? options.slot : nodeId}`;
  return Task.fromPartial({
    id: newId(),
    spec: structuredClone(service.spec?.task ?? {}),
    serviceId: service.id,
    slot: options.slot,
    nodeId,
    annotations: { name, labels: options.labels ?? {} },
    status: { state: TaskState.TASK_STATE_NEW, message: 'created' },
    desiredState: options.desiredState ?? TaskState.TASK_STATE_RUNNING,
    specVersion: service.meta?.version ?? 0,
  });
}

/**
 * Whether the task was made from the service's current task spec. Compared by content, not by
 * spec_version: the service's version also moves when the allocator or the updater writes its
 * status fields, which must not redeploy anything.
 */
export function isUpToDate(task: Task, service: Service): boolean {
  if (!sameData(task.spec ?? {}, service.spec?.task ?? {})) return false;
  // As SwarmKit's IsTaskDirty: a task given an endpoint (by the allocator) must have the
  // service's current one, so a port change redeploys.
  return task.endpoint === undefined || sameData(task.endpoint.spec ?? null, service.spec?.endpoint ?? null);
}

/** Structural equality of plain data (generated messages): key order and undefined fields ignored. */
export function sameData(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Date || b instanceof Date) {
    return a instanceof Date && b instanceof Date && a.getTime() === b.getTime();
  }
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const key of keys) if (!sameData(ra[key], rb[key])) return false;
  return true;
}

/** Marks a task to be stopped by its agent (desired SHUTDOWN), with the reason in its status. */
export function stopTask(task: Task, desired: TaskState, message?: string): Task {
  const next = structuredClone(task);
  next.desiredState = desired;
  if (message !== undefined && next.status !== undefined && !hasEnded(next)) next.status.message = message;
  return next;
}
