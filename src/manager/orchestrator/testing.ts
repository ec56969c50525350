// Builders for the control-loop tests: services, tasks and nodes with only the fields the
// planners read, and a snapshot helper that applies a plan the way the store would.
import {
  NodeAvailability,
  NodeState,
  RestartPolicy_Condition,
  Service,
  Task,
  TaskState,
  type Node,
} from '../../gen/cluster/v1/objects';
import { makeNode as makeSchedulerNode, type NodeOptions } from '../scheduler/testing';
import { Plan, type ClusterState } from './plan';

export interface ServiceOptions {
  replicas?: number;
  global?: boolean;
  image?: string;
  version?: number;
  restart?: {
    condition?: RestartPolicy_Condition;
    delayMs?: number;
    maxAttempts?: number;
    windowMs?: number;
  };
  constraints?: string[];
}

const duration = (ms: number) => ({ seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 });

export function service(id: string, options: ServiceOptions = {}): Service {
  const restart = options.restart ?? {};
  const svc = Service.fromPartial({
    id,
    meta: { version: options.version ?? 1 },
    spec: {
      annotations: { name: id },
      task: {
        container: { image: options.image ?? 'nginx:1' },
        restart: {
          condition: restart.condition ?? RestartPolicy_Condition.CONDITION_ANY,
          delay: duration(restart.delayMs ?? 0),
          maxAttempts: restart.maxAttempts ?? 0,
          window: duration(restart.windowMs ?? 0),
        },
        placement: { constraints: options.constraints ?? [] },
      },
    },
  });
  if (svc.spec) {
    svc.spec.mode = options.global
      ? { $case: 'global', value: {} }
      : { $case: 'replicated', value: { replicas: options.replicas ?? 1 } };
  }
  return svc;
}

export interface TaskOptions {
  slot?: number;
  nodeId?: string;
  state?: TaskState;
  desired?: TaskState;
  createdMs?: number;
  version?: number;
  exitCode?: number;
  labels?: Record<string, string>;
}

let counter = 0;

/** A task made from the service's current spec, RUNNING on `nodeId` unless told otherwise. */
export function task(svc: Service, options: TaskOptions = {}): Task {
  counter++;
  return Task.fromPartial({
    id: `t${String(counter).padStart(4, '0')}`,
    meta: { version: options.version ?? counter, createdAt: new Date(options.createdMs ?? 0) },
    spec: structuredClone(svc.spec?.task ?? {}),
    serviceId: svc.id,
    slot: options.slot ?? 0,
    nodeId: options.nodeId ?? '',
    annotations: { name: '', labels: options.labels ?? {} },
    status: {
      state: options.state ?? TaskState.TASK_STATE_RUNNING,
      container: { containerId: '', pid: 0, exitCode: options.exitCode ?? 0 },
    },
    desiredState: options.desired ?? TaskState.TASK_STATE_RUNNING,
  });
}

export function node(id: string, options: NodeOptions & { changedMs?: number } = {}): Node {
  const n = makeSchedulerNode(id, options);
  n.meta = { version: 1, createdAt: new Date(0), updatedAt: new Date(options.changedMs ?? 0) };
  return n;
}

export const DOWN = NodeState.NODE_STATE_DOWN;
export const DRAIN = NodeAvailability.NODE_AVAILABILITY_DRAIN;
export const PAUSE = NodeAvailability.NODE_AVAILABILITY_PAUSE;

export function state(parts: Partial<ClusterState>): ClusterState {
  return { services: parts.services ?? [], tasks: parts.tasks ?? [], nodes: parts.nodes ?? [] };
}

/** Runs a planner once and returns its plan. */
export function planOnce(fn: (plan: Plan) => void): Plan {
  const plan = new Plan();
  fn(plan);
  return plan;
}

/** The state after the plan is written (created tasks get `nowMs` as their creation time). */
export function applyPlan(before: ClusterState, plan: Plan, nowMs = 0): ClusterState {
  const tasks = before.tasks
    .filter((t) => !plan.deletedTasks.has(t.id))
    .map((t) => plan.updatedTasks.get(t.id) ?? t);
  for (const created of plan.createdTasks) {
    counter++;
    tasks.push({
      ...created,
      meta: { version: counter, createdAt: new Date(nowMs), updatedAt: new Date(nowMs) },
    });
  }
  const services = before.services.map((s) => plan.updatedServices.get(s.id) ?? s);
  return { services, tasks, nodes: [...before.nodes] };
}

export function live(tasks: readonly Task[]): Task[] {
  return tasks.filter((t) => t.desiredState <= TaskState.TASK_STATE_RUNNING);
}

export function slotsOf(tasks: readonly Task[]): number[] {
  return live(tasks)
    .map((t) => t.slot)
    .sort((a, b) => a - b);
}
