// Placement: which node each pending task goes to, as a pure function of (pending tasks, nodes,
// tasks already on nodes). Filters as SwarmKit's pipeline, ranking as its nodeLess, spread
// preferences as its decision tree; no I/O, no clock, so tests state exact outcomes.
import { ClusterError } from '../../common/errors';
import {
  NodeAvailability,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  TaskState,
  type Node,
  type Task,
} from '../../gen/cluster/v1/objects';
import {
  firstUnmetConstraint,
  nodeAttributeValue,
  parseConstraints,
  parseSpreadPreference,
  type Constraint,
  type SpreadPreference,
} from './constraint';
import { MinHeap } from './heap';

export interface PlacementInput {
  /** Tasks to place (PENDING, no node yet). */
  readonly pendingTasks: readonly Task[];
  readonly nodes: readonly Node[];
  /**
   * Tasks already on nodes, in any state: those whose container has stopped hold nothing, and
   * those with a desired state past RUNNING do not count for spreading.
   */
  readonly tasksOnNodes: readonly Task[];
}

export interface TaskAssignment {
  readonly taskId: string;
  readonly nodeId: string;
}

export interface UnplacedTask {
  readonly taskId: string;
  /** Why no node could take it, in words a person can act on. */
  readonly reason: string;
}

export interface PlacementResult {
  readonly assignments: TaskAssignment[];
  readonly unplaced: UnplacedTask[];
}

/** What a task needs from a node; identical for every task of a group. */
interface Requirements {
  readonly serviceId: string;
  readonly constraints: readonly Constraint[];
  readonly spread: readonly SpreadPreference[];
  readonly reserveNanoCpus: number;
  readonly reserveMemoryBytes: number;
  /** "80/tcp" for each host-mode published port. */
  readonly hostPorts: readonly string[];
}

/** Pending tasks that are interchangeable for placement: same service, same requirements. */
interface TaskGroup {
  readonly key: string;
  readonly tasks: Task[];
  readonly requirements: Requirements | ClusterError;
}

/** Per-node bookkeeping for one placement run, starting from the tasks already on the node. */
interface NodeInfo {
  readonly node: Node;
  /** Position in node-id order: the final tie-break, so results do not depend on input order. */
  readonly rank: number;
  /** Why the node takes no new tasks at all ("down", "drained"), or undefined if it takes them. */
  readonly unavailable: UnavailableReason | undefined;
  freeNanoCpus: number;
  freeMemoryBytes: number;
  activeTasks: number;
  readonly activeTasksByService: Map<string, number>;
  readonly usedHostPorts: Set<string>;
  /** Active tasks of the service being placed; scratch, valid only while its group is placed. */
  groupServiceTasks: number;
}

type UnavailableReason =
  'down' | 'disconnected' | 'without a container runtime' | 'in unknown state' | 'paused' | 'drained';
const UNAVAILABLE_ORDER: readonly UnavailableReason[] = [
  'down',
  'disconnected',
  'without a container runtime',
  'in unknown state',
  'paused',
  'drained',
];

/**
 * A level of the spread-preference tree: tasks go to the branch holding the fewest tasks of the
 * service, and the leaves hold the nodes. Without preferences the tree is a single leaf.
 */
type SpreadTree = SpreadLeaf | SpreadBranch;
interface SpreadLeaf {
  readonly kind: 'leaf';
  readonly order: number;
  serviceTasks: number;
  readonly nodes: MinHeap<NodeInfo>;
}
interface SpreadBranch {
  readonly kind: 'branch';
  readonly order: number;
  serviceTasks: number;
  readonly children: MinHeap<SpreadTree>;
}

/** Places as many pending tasks as fit; every pending task ends up in exactly one of the lists. */
export function placeTasks(input: PlacementInput): PlacementResult {
  const nodes = buildNodeInfos(input.nodes, input.tasksOnNodes);
  const available = nodes.filter((info) => info.unavailable === undefined);
  const assignments: TaskAssignment[] = [];
  const unplaced: UnplacedTask[] = [];
  for (const group of groupPendingTasks(input.pendingTasks)) {
    const requirements = group.requirements;
    if (requirements instanceof ClusterError) {
      for (const task of group.tasks) unplaced.push({ taskId: task.id, reason: requirements.message });
      continue;
    }
    const placed = placeGroup(group.tasks, requirements, nodes, available, assignments);
    if (placed < group.tasks.length) {
      const reason = explainNoSuitableNode(requirements, nodes);
      for (let i = placed; i < group.tasks.length; i++) {
        unplaced.push({ taskId: group.tasks[i].id, reason });
      }
    }
  }
  return { assignments, unplaced };
}

/** Places the group's tasks one by one on the best node that still fits; returns how many. */
function placeGroup(
  tasks: readonly Task[],
  requirements: Requirements,
  nodes: readonly NodeInfo[],
  available: readonly NodeInfo[],
  assignments: TaskAssignment[],
): number {
  const serviceId = requirements.serviceId;
  for (const info of nodes) info.groupServiceTasks = info.activeTasksByService.get(serviceId) ?? 0;
  // The static filters run once per group, not once per task: every task of it asks the same.
  const eligible = available.filter(
    (info) =>
      firstUnmetConstraint(requirements.constraints, info.node) === undefined && fitsNow(info, requirements),
  );
  if (eligible.length === 0) return 0;
  const tree = buildSpreadTree(requirements.spread, 0, 0, eligible, nodes);
  let placed = 0;
  for (const task of tasks) {
    const info = placeOne(tree, requirements);
    if (info === undefined) break;
    assignments.push({ taskId: task.id, nodeId: info.node.id });
    placed++;
  }
  return placed;
}

/**
 * Takes the best node of the tree that still fits, charges it one task, and restores the heap
 * order on the path back up. Nodes that no longer fit leave the tree: within a group, free
 * resources and ports only shrink.
 */
function placeOne(tree: SpreadTree, requirements: Requirements): NodeInfo | undefined {
  if (tree.kind === 'leaf') {
    for (let best = tree.nodes.peek(); best !== undefined; best = tree.nodes.peek()) {
      if (fitsNow(best, requirements)) {
        charge(best, requirements);
        tree.nodes.topIncreased();
        tree.serviceTasks++;
        return best;
      }
      tree.nodes.pop();
    }
    return undefined;
  }
  for (let child = tree.children.peek(); child !== undefined; child = tree.children.peek()) {
    const info = placeOne(child, requirements);
    if (info !== undefined) {
      tree.children.topIncreased();
      tree.serviceTasks++;
      return info;
    }
    tree.children.pop();
  }
  return undefined;
}

function fitsNow(info: NodeInfo, requirements: Requirements): boolean {
  if (requirements.reserveNanoCpus > 0 && info.freeNanoCpus < requirements.reserveNanoCpus) return false;
  if (requirements.reserveMemoryBytes > 0 && info.freeMemoryBytes < requirements.reserveMemoryBytes)
    return false;
  for (const port of requirements.hostPorts) if (info.usedHostPorts.has(port)) return false;
  return true;
}

function charge(info: NodeInfo, requirements: Requirements): void {
  info.freeNanoCpus -= requirements.reserveNanoCpus;
  info.freeMemoryBytes -= requirements.reserveMemoryBytes;
  for (const port of requirements.hostPorts) info.usedHostPorts.add(port);
  info.activeTasks++;
  info.groupServiceTasks++;
  info.activeTasksByService.set(requirements.serviceId, info.groupServiceTasks);
}

// SwarmKit's nodeLess: fewest tasks of this service, then fewest tasks in all; then node id.
function nodeLess(a: NodeInfo, b: NodeInfo): boolean {
  if (a.groupServiceTasks !== b.groupServiceTasks) return a.groupServiceTasks < b.groupServiceTasks;
  if (a.activeTasks !== b.activeTasks) return a.activeTasks < b.activeTasks;
  return a.rank < b.rank;
}

function branchLess(a: SpreadTree, b: SpreadTree): boolean {
  if (a.serviceTasks !== b.serviceTasks) return a.serviceTasks < b.serviceTasks;
  return a.order < b.order;
}

/**
 * Splits nodes by the value of each preference in turn. A branch counts the service's tasks on
 * all its nodes, eligible or not, so that tasks already in a zone count for that zone; only
 * branches with an eligible node exist. Nodes without the label form a branch of their own.
 */
function buildSpreadTree(
  preferences: readonly SpreadPreference[],
  level: number,
  order: number,
  eligible: readonly NodeInfo[],
  all: readonly NodeInfo[],
): SpreadTree {
  let serviceTasks = 0;
  for (const info of all) serviceTasks += info.groupServiceTasks;
  if (level === preferences.length) {
    return { kind: 'leaf', order, serviceTasks, nodes: new MinHeap(nodeLess, eligible) };
  }
  const attribute = preferences[level].attribute;
  const eligibleByValue = partitionBy(eligible, (info) => nodeAttributeValue(attribute, info.node));
  const allByValue = partitionBy(all, (info) => nodeAttributeValue(attribute, info.node));
  // Values in code-unit order, the nodes without the label last: a fixed order for ties.
  const values = [...eligibleByValue.keys()].sort(compareOptionalStrings);
  const children = values.map((value, index) =>
    buildSpreadTree(
      preferences,
      level + 1,
      index,
      eligibleByValue.get(value) ?? [],
      allByValue.get(value) ?? [],
    ),
  );
  return { kind: 'branch', order, serviceTasks, children: new MinHeap(branchLess, children) };
}

function partitionBy<T, K>(items: readonly T[], keyOf: (item: T) => K): Map<K, T[]> {
  const parts = new Map<K, T[]>();
  for (const item of items) {
    const key = keyOf(item);
    const part = parts.get(key);
    if (part === undefined) parts.set(key, [item]);
    else part.push(item);
  }
  return parts;
}

function compareOptionalStrings(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return 1;
  if (b === undefined) return -1;
  return a < b ? -1 : 1;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function unavailableReason(node: Node): UnavailableReason | undefined {
  switch (node.status?.state ?? NodeState.NODE_STATE_UNKNOWN) {
    case NodeState.NODE_STATE_READY:
      break;
    case NodeState.NODE_STATE_DOWN:
      return 'down';
    case NodeState.NODE_STATE_DISCONNECTED:
      return 'disconnected';
    case NodeState.NODE_STATE_NOT_READY:
      return 'without a container runtime';
    default:
      return 'in unknown state';
  }
  switch (node.spec?.availability ?? NodeAvailability.NODE_AVAILABILITY_ACTIVE) {
    case NodeAvailability.NODE_AVAILABILITY_ACTIVE:
      return undefined;
    case NodeAvailability.NODE_AVAILABILITY_PAUSE:
      return 'paused';
    default:
      return 'drained';
  }
}

const NO_PORTS: readonly string[] = [];

function hostPortsOf(task: Task): readonly string[] {
  const published = task.endpoint?.ports;
  // Most tasks publish nothing on the host: no array for them, this runs once per task.
  if (published === undefined || published.length === 0) return NO_PORTS;
  const ports: string[] = [];
  for (const port of published) {
    if (port.publishMode !== PortConfig_PublishMode.PUBLISH_MODE_HOST || port.publishedPort <= 0) continue;
    const protocol = port.protocol === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp';
    ports.push(`${port.publishedPort}/${protocol}`);
  }
  return ports;
}

function buildNodeInfos(nodes: readonly Node[], tasksOnNodes: readonly Task[]): NodeInfo[] {
  const sorted = [...nodes].sort((a, b) => compareStrings(a.id, b.id));
  const byId = new Map<string, NodeInfo>();
  const infos: NodeInfo[] = [];
  for (const node of sorted) {
    if (byId.has(node.id)) continue;
    const capacity = node.description?.resources;
    const info: NodeInfo = {
      node,
      rank: infos.length,
      unavailable: unavailableReason(node),
      freeNanoCpus: capacity?.nanoCpus ?? 0,
      freeMemoryBytes: capacity?.memoryBytes ?? 0,
      activeTasks: 0,
      activeTasksByService: new Map(),
      usedHostPorts: new Set(),
      groupServiceTasks: 0,
    };
    byId.set(node.id, info);
    infos.push(info);
  }
  for (const task of tasksOnNodes) {
    const info = byId.get(task.nodeId);
    if (info === undefined) continue;
    // As SwarmKit: a task holds its reservations and ports until its container has stopped,
    // even when asked to shut down, since the memory is in use until then.
    if ((task.status?.state ?? TaskState.TASK_STATE_NEW) > TaskState.TASK_STATE_RUNNING) continue;
    const reservations = task.spec?.resources?.reservations;
    info.freeNanoCpus -= reservations?.nanoCpus ?? 0;
    info.freeMemoryBytes -= reservations?.memoryBytes ?? 0;
    for (const port of hostPortsOf(task)) info.usedHostPorts.add(port);
    // A task that is being stopped is no reason to keep new tasks of its service away.
    if (task.desiredState > TaskState.TASK_STATE_RUNNING) continue;
    info.activeTasks++;
    info.activeTasksByService.set(task.serviceId, (info.activeTasksByService.get(task.serviceId) ?? 0) + 1);
  }
  return infos;
}

/**
 * Groups tasks with the same service and the same placement-relevant spec, as SwarmKit does, so
 * filters run once per group. Groups come in (service, requirements) order and tasks in
 * (slot, id) order, so the result does not depend on the order the store listed them in.
 */
function groupPendingTasks(tasks: readonly Task[]): TaskGroup[] {
  const groups = new Map<string, TaskGroup>();
  for (const task of tasks) {
    const hostPorts = hostPortsOf(task);
    const placement = task.spec?.placement;
    const reservations = task.spec?.resources?.reservations;
    // Concatenated, not joined from an array: this runs once per pending task.
    const key =
      task.serviceId +
      '\u0000' +
      (placement === undefined ? '' : placement.constraints.join('\u0001')) +
      '\u0000' +
      (placement === undefined ? '' : placement.spreadPreferences.join('\u0001')) +
      '\u0000' +
      String(reservations?.nanoCpus ?? 0) +
      '\u0000' +
      String(reservations?.memoryBytes ?? 0) +
      '\u0000' +
      hostPorts.join(',');
    let group = groups.get(key);
    if (group === undefined) {
      group = { key, tasks: [], requirements: requirementsOf(task, hostPorts) };
      groups.set(key, group);
    }
    group.tasks.push(task);
  }
  const ordered = [...groups.values()].sort((a, b) => compareStrings(a.key, b.key));
  for (const group of ordered) {
    group.tasks.sort((a, b) => a.slot - b.slot || compareStrings(a.id, b.id));
  }
  return ordered;
}

function requirementsOf(task: Task, hostPorts: readonly string[]): Requirements | ClusterError {
  const placement = task.spec?.placement;
  const reservations = task.spec?.resources?.reservations;
  try {
    return {
      serviceId: task.serviceId,
      constraints: parseConstraints(placement?.constraints ?? []),
      spread: (placement?.spreadPreferences ?? []).map(parseSpreadPreference),
      reserveNanoCpus: Math.max(0, reservations?.nanoCpus ?? 0),
      reserveMemoryBytes: Math.max(0, reservations?.memoryBytes ?? 0),
      hostPorts: [...new Set(hostPorts)],
    };
  } catch (e) {
    // A spec that slipped past validation must not stop the other tasks from being placed.
    if (e instanceof ClusterError) return e;
    throw e;
  }
}

/**
 * SwarmKit's "no suitable node (...)": each node is counted once, under the first filter that
 * turns it away, in filter order. Run against the state after this group's placements, so nodes
 * the group filled show up as lacking resources or ports.
 */
function explainNoSuitableNode(requirements: Requirements, nodes: readonly NodeInfo[]): string {
  if (nodes.length === 0) return 'no suitable node (the cluster has no nodes)';
  const unavailable = new Map<UnavailableReason, number>();
  const unmetConstraints = new Map<Constraint, number>();
  const lacking = new Map<'CPU' | 'memory' | 'CPU and memory', number>();
  const busyPorts = new Map<string, number>();
  const bump = <K>(counts: Map<K, number>, key: K) => counts.set(key, (counts.get(key) ?? 0) + 1);
  for (const info of nodes) {
    if (info.unavailable !== undefined) {
      bump(unavailable, info.unavailable);
      continue;
    }
    const unmet = firstUnmetConstraint(requirements.constraints, info.node);
    if (unmet !== undefined) {
      bump(unmetConstraints, unmet);
      continue;
    }
    const cpuShort = requirements.reserveNanoCpus > 0 && info.freeNanoCpus < requirements.reserveNanoCpus;
    const memoryShort =
      requirements.reserveMemoryBytes > 0 && info.freeMemoryBytes < requirements.reserveMemoryBytes;
    if (cpuShort || memoryShort) {
      bump(lacking, cpuShort && memoryShort ? 'CPU and memory' : cpuShort ? 'CPU' : 'memory');
      continue;
    }
    const port = requirements.hostPorts.find((p) => info.usedHostPorts.has(p));
    if (port !== undefined) bump(busyPorts, port);
  }

  const parts: string[] = [];
  const unavailableTotal = [...unavailable.values()].reduce((sum, n) => sum + n, 0);
  if (unavailableTotal > 0) {
    const detail = UNAVAILABLE_ORDER.filter((r) => unavailable.has(r))
      .map((r) => `${unavailable.get(r) ?? 0} ${r}`)
      .join(', ');
    parts.push(`${countNodes(unavailableTotal)} not available for new tasks: ${detail}`);
  }
  for (const constraint of requirements.constraints) {
    const count = unmetConstraints.get(constraint);
    if (count !== undefined) {
      parts.push(`${countNodes(count)} did not match constraint ${constraint.expression.trim()}`);
    }
  }
  for (const what of ['CPU', 'memory', 'CPU and memory'] as const) {
    const count = lacking.get(what);
    if (count === undefined) continue;
    const needs = [
      what !== 'memory' ? formatCpus(requirements.reserveNanoCpus) : '',
      what !== 'CPU' ? formatBytes(requirements.reserveMemoryBytes) : '',
    ]
      .filter((s) => s !== '')
      .join(' and ');
    const verb = count === 1 ? 'has' : 'have';
    parts.push(`${countNodes(count)} ${verb} insufficient ${what} for a task reserving ${needs}`);
  }
  for (const port of requirements.hostPorts) {
    const count = busyPorts.get(port);
    if (count !== undefined) parts.push(`host-mode port ${port} already in use on ${countNodes(count)}`);
  }
  return `no suitable node (${parts.join('; ')})`;
}

function countNodes(count: number): string {
  return count === 1 ? '1 node' : `${count} nodes`;
}

function formatCpus(nanoCpus: number): string {
  const cpus = Math.round(nanoCpus / 1e6) / 1e3;
  return cpus === 1 ? '1 CPU' : `${cpus} CPUs`;
}

const BYTE_UNITS: readonly [string, number][] = [
  ['GiB', 1024 ** 3],
  ['MiB', 1024 ** 2],
  ['KiB', 1024],
];

function formatBytes(bytes: number): string {
  for (const [unit, size] of BYTE_UNITS) {
    if (bytes >= size) return `${Math.round((bytes / size) * 100) / 100} ${unit}`;
  }
  return `${bytes} bytes`;
}
