// What each list command prints: Docker's columns and JSON field names for nodes, services,
// tasks and networks, computed from the wire objects. Pure functions of (objects, now).
import {
  NodeAvailability,
  NodeRole,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  TaskState,
  UpdateStatus_State,
  type Network,
  type Node,
  type PortConfig,
  type Service,
  type Task,
} from '../gen/cluster/v1/objects';
import { humanDuration, type Column } from './output';

const SHORT_ID = 12;
export const shortId = (id: string, noTrunc = false): string => (noTrunc ? id : id.slice(0, SHORT_ID));
const capitalize = (s: string): string => (s === '' ? s : s[0]?.toUpperCase() + s.slice(1));

// ------------------------------------------------------------------ nodes

export function nodeStateName(state: NodeState | undefined): string {
  switch (state) {
    case NodeState.NODE_STATE_READY:
      return 'Ready';
    case NodeState.NODE_STATE_DOWN:
      return 'Down';
    case NodeState.NODE_STATE_DISCONNECTED:
      return 'Disconnected';
    case NodeState.NODE_STATE_NOT_READY:
      return 'Not ready';
    default:
      return 'Unknown';
  }
}

export function availabilityName(availability: NodeAvailability | undefined): string {
  switch (availability) {
    case NodeAvailability.NODE_AVAILABILITY_PAUSE:
      return 'Pause';
    case NodeAvailability.NODE_AVAILABILITY_DRAIN:
      return 'Drain';
    default:
      return 'Active';
  }
}

export function managerStatusName(node: Node): string {
  const ms = node.managerStatus;
  if (node.role !== NodeRole.NODE_ROLE_MANAGER || !ms) return '';
  if (ms.leader) return 'Leader';
  return ms.reachability === 'reachable' ? 'Reachable' : 'Unreachable';
}

export interface NodeRow {
  node: Node;
  self: boolean;
}

export const NODE_COLUMNS: Column<NodeRow>[] = [
  { header: 'ID', field: 'ID', value: (r) => r.node.id + (r.self ? ' *' : '') },
  { header: 'HOSTNAME', field: 'Hostname', value: (r) => r.node.description?.hostname ?? '' },
  { header: 'STATUS', field: 'Status', value: (r) => nodeStateName(r.node.status?.state) },
  {
    header: 'AVAILABILITY',
    field: 'Availability',
    value: (r) => availabilityName(r.node.spec?.availability),
  },
  { header: 'MANAGER STATUS', field: 'ManagerStatus', value: (r) => managerStatusName(r.node) },
  {
    header: 'ENGINE VERSION',
    field: 'EngineVersion',
    value: (r) => r.node.description?.runtimeVersion ?? '',
  },
];
/** JSON lines carry the id without the "*" marker, and Self as Docker's boolean. */
export const NODE_JSON_COLUMNS: Column<NodeRow>[] = [
  { header: 'ID', field: 'ID', value: (r) => r.node.id },
  ...NODE_COLUMNS.slice(1),
  { header: 'SELF', field: 'Self', value: (r) => String(r.self), json: (r) => r.self },
];

export function nodeRows(nodes: Node[], selfId: string | undefined): NodeRow[] {
  return [...nodes]
    .sort(
      (a, b) =>
        (a.description?.hostname ?? '').localeCompare(b.description?.hostname ?? '') ||
        a.id.localeCompare(b.id),
    )
    .map((node) => ({ node, self: node.id === selfId }));
}

// ------------------------------------------------------------------ services

export function portsText(ports: PortConfig[]): string {
  return ports
    .filter((p) => p.publishedPort !== 0)
    .map(
      (p) =>
        `*:${p.publishedPort}->${p.targetPort}/${p.protocol === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp'}`,
    )
    .join(', ');
}

export interface ServiceRow {
  service: Service;
  running: number;
  desired: number;
}

export const serviceMode = (s: Service): string =>
  s.spec?.mode?.$case === 'global' ? 'global' : 'replicated';

export const SERVICE_COLUMNS: Column<ServiceRow>[] = [
  { header: 'ID', field: 'ID', value: (r) => shortId(r.service.id) },
  { header: 'NAME', field: 'Name', value: (r) => r.service.spec?.annotations?.name ?? '' },
  { header: 'MODE', field: 'Mode', value: (r) => serviceMode(r.service) },
  { header: 'REPLICAS', field: 'Replicas', value: (r) => `${r.running}/${r.desired}` },
  { header: 'IMAGE', field: 'Image', value: (r) => r.service.spec?.task?.container?.image ?? '' },
  {
    header: 'PORTS',
    field: 'Ports',
    value: (r) => {
      const allocated = r.service.endpoint?.ports ?? [];
      return portsText(allocated.length > 0 ? allocated : (r.service.spec?.endpoint?.ports ?? []));
    },
  },
  { header: 'UPDATE', field: 'UpdateStatus', value: (r) => updateStateName(r.service) },
];

/** The rollout's state as Docker names it (UpdateStatus.State), empty when none was recorded. */
export function updateStateName(service: Service): string {
  switch (service.updateStatus?.state) {
    case UpdateStatus_State.STATE_UPDATING:
      return 'updating';
    case UpdateStatus_State.STATE_PAUSED:
      return 'paused';
    case UpdateStatus_State.STATE_COMPLETED:
      return 'completed';
    case UpdateStatus_State.STATE_ROLLBACK_STARTED:
      return 'rollback_started';
    case UpdateStatus_State.STATE_ROLLBACK_PAUSED:
      return 'rollback_paused';
    case UpdateStatus_State.STATE_ROLLBACK_COMPLETED:
      return 'rollback_completed';
    default:
      return '';
  }
}

/**
 * Counts as Docker's: running tasks (desired and observed running) per service; the desired
 * count is the replicas, or for a global service the tasks meant to run.
 */
export function serviceRows(services: Service[], tasks: Task[]): ServiceRow[] {
  const running = new Map<string, number>();
  const desiredGlobal = new Map<string, number>();
  for (const t of tasks) {
    if (t.desiredState !== TaskState.TASK_STATE_RUNNING) continue;
    desiredGlobal.set(t.serviceId, (desiredGlobal.get(t.serviceId) ?? 0) + 1);
    if (t.status?.state === TaskState.TASK_STATE_RUNNING)
      running.set(t.serviceId, (running.get(t.serviceId) ?? 0) + 1);
  }
  return [...services]
    .sort((a, b) => (a.spec?.annotations?.name ?? '').localeCompare(b.spec?.annotations?.name ?? ''))
    .map((service) => {
      const mode = service.spec?.mode;
      const desired =
        mode?.$case === 'replicated' ? mode.value.replicas : (desiredGlobal.get(service.id) ?? 0);
      return { service, running: running.get(service.id) ?? 0, desired };
    });
}

// ------------------------------------------------------------------ tasks

/** Docker's lower-case task state names. */
export function taskStateName(state: TaskState | undefined): string {
  switch (state) {
    case TaskState.TASK_STATE_NEW:
      return 'new';
    case TaskState.TASK_STATE_PENDING:
      return 'pending';
    case TaskState.TASK_STATE_ASSIGNED:
      return 'assigned';
    case TaskState.TASK_STATE_ACCEPTED:
      return 'accepted';
    case TaskState.TASK_STATE_PREPARING:
      return 'preparing';
    case TaskState.TASK_STATE_READY:
      return 'ready';
    case TaskState.TASK_STATE_STARTING:
      return 'starting';
    case TaskState.TASK_STATE_RUNNING:
      return 'running';
    case TaskState.TASK_STATE_COMPLETE:
      return 'complete';
    case TaskState.TASK_STATE_SHUTDOWN:
      return 'shutdown';
    case TaskState.TASK_STATE_FAILED:
      return 'failed';
    case TaskState.TASK_STATE_REJECTED:
      return 'rejected';
    case TaskState.TASK_STATE_REMOVE:
      return 'remove';
    case TaskState.TASK_STATE_ORPHANED:
      return 'orphaned';
    default:
      return 'unknown';
  }
}

export interface TaskRow {
  task: Task;
  /** "web.1", or "web.<node id>" for a global service's task. */
  name: string;
  /** An older task of the same slot, printed under the current one as Docker's " \_ web.1". */
  history: boolean;
  nodeHostname: string;
}

export function taskColumns(now: Date, noTrunc: boolean): Column<TaskRow>[] {
  return [
    { header: 'ID', field: 'ID', value: (r) => shortId(r.task.id, noTrunc) },
    { header: 'NAME', field: 'Name', value: (r) => (r.history ? ` \\_ ${r.name}` : r.name) },
    { header: 'IMAGE', field: 'Image', value: (r) => r.task.spec?.container?.image ?? '' },
    { header: 'NODE', field: 'Node', value: (r) => r.nodeHostname },
    {
      header: 'DESIRED STATE',
      field: 'DesiredState',
      value: (r) => capitalize(taskStateName(r.task.desiredState)),
    },
    {
      header: 'CURRENT STATE',
      field: 'CurrentState',
      value: (r) => {
        const state = capitalize(taskStateName(r.task.status?.state));
        const at = r.task.status?.timestamp;
        const text = at ? `${state} ${humanDuration(now.getTime() - at.getTime())} ago` : state;
        // As `docker ps` shows a container's health: "Running 3 seconds ago (healthy)".
        const health = r.task.status?.health;
        if (health) return `${text} (${health})`;
        // Where a pull stands: "Preparing 4 seconds ago (pulling image x:1: 1 of 2 layers, ...)".
        const message = r.task.status?.message ?? '';
        const preparing = r.task.status?.state === TaskState.TASK_STATE_PREPARING;
        return preparing && message !== '' && message !== 'preparing' ? `${text} (${message})` : text;
      },
    },
    {
      header: 'ERROR',
      field: 'Error',
      value: (r) => {
        const err = r.task.status?.err ?? '';
        return !noTrunc && err.length > 30 ? `"${err.slice(0, 29)}…"` : err === '' ? '' : `"${err}"`;
      },
    },
    {
      header: 'PORTS',
      field: 'Ports',
      value: (r) =>
        portsText(
          (r.task.endpoint?.ports ?? []).filter(
            (p) => p.publishMode === PortConfig_PublishMode.PUBLISH_MODE_HOST,
          ),
        ),
    },
  ];
}

/**
 * Tasks grouped by service and slot (node for global services), the newest first in each
 * group and older ones marked as history, as `docker service ps` prints them.
 */
export function taskRows(
  tasks: Task[],
  serviceNames: Map<string, string>,
  nodeHostnames: Map<string, string>,
): TaskRow[] {
  const groupKey = (t: Task) =>
    `${serviceNames.get(t.serviceId) ?? t.serviceId}.${t.slot > 0 ? String(t.slot).padStart(12, '0') : t.nodeId}`;
  const when = (t: Task) => t.status?.timestamp?.getTime() ?? t.meta?.createdAt?.getTime() ?? 0;
  const sorted = [...tasks].sort(
    (a, b) => groupKey(a).localeCompare(groupKey(b)) || when(b) - when(a) || a.id.localeCompare(b.id),
  );
  let previousGroup = '';
  return sorted.map((task) => {
    const key = groupKey(task);
    const history = key === previousGroup;
    previousGroup = key;
    const service = serviceNames.get(task.serviceId) ?? task.serviceId;
    return {
      task,
      name: `${service}.${task.slot > 0 ? task.slot : task.nodeId}`,
      history,
      nodeHostname: nodeHostnames.get(task.nodeId) ?? task.nodeId,
    };
  });
}

// ------------------------------------------------------------------ networks

export const NETWORK_COLUMNS: Column<Network>[] = [
  { header: 'NETWORK ID', field: 'ID', value: (n) => shortId(n.id) },
  { header: 'NAME', field: 'Name', value: (n) => n.spec?.annotations?.name ?? '' },
  { header: 'DRIVER', field: 'Driver', value: (n) => n.spec?.driver || 'overlay' },
  { header: 'SCOPE', field: 'Scope', value: () => 'swarm' },
];

export function networkRows(networks: Network[]): Network[] {
  return [...networks].sort((a, b) =>
    (a.spec?.annotations?.name ?? '').localeCompare(b.spec?.annotations?.name ?? ''),
  );
}
