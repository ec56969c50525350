// Builders for nodes and tasks in scheduler tests and the benchmark: only the fields placement
// reads, everything else at its proto default.
import {
  NodeAvailability,
  NodeRole,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  Node,
  Task,
  TaskState,
} from '../../gen/cluster/v1/objects';

export const GiB = 1024 ** 3;
export const MiB = 1024 ** 2;
export const CPU = 1e9;

export interface NodeOptions {
  hostname?: string;
  role?: NodeRole;
  state?: NodeState;
  availability?: NodeAvailability;
  labels?: Record<string, string>;
  engineLabels?: Record<string, string>;
  nanoCpus?: number;
  memoryBytes?: number;
  os?: string;
  architecture?: string;
}

export function makeNode(id: string, options: NodeOptions = {}): Node {
  return Node.fromPartial({
    id,
    role: options.role ?? NodeRole.NODE_ROLE_WORKER,
    spec: {
      annotations: { name: '', labels: options.labels ?? {} },
      availability: options.availability ?? NodeAvailability.NODE_AVAILABILITY_ACTIVE,
    },
    description: {
      hostname: options.hostname ?? id,
      os: options.os ?? 'linux',
      architecture: options.architecture ?? 'x86_64',
      resources: { nanoCpus: options.nanoCpus ?? 4 * CPU, memoryBytes: options.memoryBytes ?? 8 * GiB },
      engineLabels: options.engineLabels ?? {},
    },
    status: { state: options.state ?? NodeState.NODE_STATE_READY },
  });
}

export interface TaskOptions {
  slot?: number;
  nodeId?: string;
  constraints?: string[];
  spread?: string[];
  reserveNanoCpus?: number;
  reserveMemoryBytes?: number;
  /** Host-mode published TCP ports. */
  hostPorts?: number[];
  state?: TaskState;
  desiredState?: TaskState;
}

export function makeTask(id: string, serviceId: string, options: TaskOptions = {}): Task {
  return Task.fromPartial({
    id,
    serviceId,
    slot: options.slot ?? 0,
    nodeId: options.nodeId ?? '',
    desiredState: options.desiredState ?? TaskState.TASK_STATE_RUNNING,
    status: {
      state: options.state ?? (options.nodeId ? TaskState.TASK_STATE_RUNNING : TaskState.TASK_STATE_PENDING),
    },
    spec: {
      placement: { constraints: options.constraints ?? [], spreadPreferences: options.spread ?? [] },
      resources: {
        reservations: {
          nanoCpus: options.reserveNanoCpus ?? 0,
          memoryBytes: options.reserveMemoryBytes ?? 0,
        },
      },
    },
    endpoint: {
      ports: (options.hostPorts ?? []).map((port) => ({
        protocol: PortConfig_Protocol.PROTOCOL_TCP,
        targetPort: port,
        publishedPort: port,
        publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
      })),
    },
  });
}

/** `count` pending tasks of a service with ids `${serviceId}.${slot}`. */
export function makeTasks(serviceId: string, count: number, options: TaskOptions = {}): Task[] {
  return Array.from({ length: count }, (_, i) =>
    makeTask(`${serviceId}.${i + 1}`, serviceId, { ...options, slot: i + 1 }),
  );
}
