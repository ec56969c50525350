// The allocator as a pure planner: gives each service the resources its tasks need before they
// can be scheduled, then moves their tasks NEW → PENDING with the service's endpoint. For now
// the resources are published ingress ports (a port asked as 0 gets one from the dynamic range,
// unique across services; explicit ports were checked for conflicts by the control API).
// Host-mode ports are the scheduler's (per node). Network attachments and IPs (issue 6) plug in
// through TaskAllocator.
import {
  Endpoint,
  PortConfig_PublishMode,
  TaskState,
  TaskStatus,
  type PortConfig,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import type { ClusterState, Plan } from '../orchestrator/plan';
import { isLive, sameData, serviceName, stateOf } from '../orchestrator/tasks';

/** Docker's dynamic range for ingress ports published without a number. */
export const INGRESS_PORT_RANGE_START = 30000;
export const INGRESS_PORT_RANGE_END = 32767;

/**
 * An extra allocation step, run after the service's ports are allocated: the networking issue
 * adds one that gives services VIPs and tasks network attachments and addresses. Each pass
 * calls `prepare` once with the whole state (to rebuild what is in use), then `allocateService`
 * for each allocated service (it may change the service: a change is written) and
 * `allocateTask` for each task about to become PENDING (it may change the task). The
 * allocate methods return undefined when done, or why the task must wait (kept in its status).
 */
export interface TaskAllocator {
  readonly name: string;
  prepare?(state: ClusterState): void;
  allocateService?(service: Service, state: ClusterState): string | undefined;
  allocateTask(task: Task, service: Service, state: ClusterState): string | undefined;
}

export interface AllocatorOptions {
  taskAllocators?: readonly TaskAllocator[];
}

const portKey = (port: number, protocol: number) => `${port}/${protocol}`;

function isIngress(port: PortConfig): boolean {
  return port.publishMode === PortConfig_PublishMode.PUBLISH_MODE_INGRESS;
}

/**
 * The endpoint the service should have: its spec's ports with each ingress port asked as 0 given
 * a number (the one it had, if still free to it), or an error when the range is exhausted.
 * `owners` maps a claimed ingress port to the service holding it; it is updated.
 */
export function allocateEndpoint(service: Service, owners: Map<string, string>): Endpoint | string {
  const spec = service.spec?.endpoint;
  const previous = service.endpoint?.ports ?? [];
  const ports: PortConfig[] = [];
  for (const port of spec?.ports ?? []) {
    const allocated = { ...port };
    if (isIngress(port) && port.publishedPort === 0) {
      const before = previous.find(
        (p) =>
          isIngress(p) &&
          p.targetPort === port.targetPort &&
          p.protocol === port.protocol &&
          p.name === port.name &&
          p.publishedPort >= INGRESS_PORT_RANGE_START &&
          p.publishedPort <= INGRESS_PORT_RANGE_END &&
          (owners.get(portKey(p.publishedPort, p.protocol)) ?? service.id) === service.id &&
          !ports.some((q) => q.publishedPort === p.publishedPort && q.protocol === p.protocol),
      );
      let chosen = before?.publishedPort;
      for (
        let candidate = INGRESS_PORT_RANGE_START;
        chosen === undefined && candidate <= INGRESS_PORT_RANGE_END;
        candidate++
      ) {
        if (!owners.has(portKey(candidate, port.protocol))) chosen = candidate;
      }
      if (chosen === undefined) {
        return `no free ingress port left in ${INGRESS_PORT_RANGE_START}-${INGRESS_PORT_RANGE_END} for target port ${port.targetPort} of service ${serviceName(service)}`;
      }
      allocated.publishedPort = chosen;
    }
    if (isIngress(allocated) && allocated.publishedPort > 0) {
      owners.set(portKey(allocated.publishedPort, allocated.protocol), service.id);
    }
    ports.push(allocated);
  }
  return Endpoint.fromPartial({
    spec: spec === undefined ? undefined : structuredClone(spec),
    ports,
    virtualIps: service.endpoint?.virtualIps ?? [],
  });
}

function isAllocated(service: Service): boolean {
  return (
    service.endpoint !== undefined && sameData(service.endpoint.spec ?? null, service.spec?.endpoint ?? null)
  );
}

export function planAllocation(state: ClusterState, plan: Plan, options: AllocatorOptions = {}): void {
  // Ports already held count first, so a restarted leader keeps every service's ports.
  const owners = new Map<string, string>();
  for (const service of state.services) {
    const held = isAllocated(service) ? (service.endpoint?.ports ?? []) : [];
    for (const port of [...(service.spec?.endpoint?.ports ?? []), ...held]) {
      if (isIngress(port) && port.publishedPort > 0)
        owners.set(portKey(port.publishedPort, port.protocol), service.id);
    }
  }
  const ready = new Map<string, Service>();
  const problems = new Map<string, string>();
  const pending = [...state.services].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const service of pending) {
    if (isAllocated(service)) {
      ready.set(service.id, service);
      continue;
    }
    const endpoint = allocateEndpoint(service, owners);
    if (typeof endpoint === 'string') {
      problems.set(service.id, endpoint);
      continue;
    }
    const updated = structuredClone(service);
    updated.endpoint = endpoint;
    plan.updateService(updated);
    ready.set(service.id, updated);
  }

  const extensions = options.taskAllocators ?? [];
  for (const extension of extensions) extension.prepare?.(state);
  for (const [id, service] of ready) {
    let next = service;
    for (const extension of extensions) {
      if (extension.allocateService === undefined) continue;
      const candidate = structuredClone(next);
      const waitFor = extension.allocateService(candidate, state);
      if (waitFor !== undefined) {
        ready.delete(id);
        problems.set(id, waitFor);
        break;
      }
      next = candidate;
    }
    if (next !== service && !sameData(next, service)) {
      plan.updateService(next);
      ready.set(id, next);
    }
  }

  for (const task of state.tasks) {
    if (stateOf(task) !== TaskState.TASK_STATE_NEW || !isLive(task)) continue;
    const service = ready.get(task.serviceId);
    let waitFor = service === undefined ? problems.get(task.serviceId) : undefined;
    if (service === undefined && waitFor === undefined) continue;
    const next = structuredClone(task);
    if (service !== undefined) {
      next.endpoint = structuredClone(service.endpoint);
      for (const allocator of extensions) {
        waitFor = allocator.allocateTask(next, service, state);
        if (waitFor !== undefined) break;
      }
    }
    if (waitFor !== undefined) {
      // Only a changed message is written, so a waiting task does not churn the store.
      if (task.status?.message !== waitFor) {
        const waiting = structuredClone(task);
        waiting.status = TaskStatus.fromPartial({ ...task.status, message: waitFor });
        plan.updateTask(waiting);
      }
      continue;
    }
    next.status = TaskStatus.fromPartial({
      ...task.status,
      state: TaskState.TASK_STATE_PENDING,
      message: 'pending task scheduling',
    });
    plan.updateTask(next);
  }
}
