// The control API's logic, free of gRPC: each method takes the request message and resolves
// with the response or throws a ClusterError. Reads are local views of the store; each write
// validates, then builds one store transaction from the state it read (so a stale version is
// a CONFLICT), and returns what was applied.
import { ClusterError, invalidArgument } from '../../common/errors';
import type { Logger } from '../../common/logger';
import type {
  CreateNetworkRequest,
  CreateNetworkResponse,
  CreateServiceRequest,
  CreateServiceResponse,
  GetClusterRequest,
  GetClusterResponse,
  GetNetworkRequest,
  GetNetworkResponse,
  GetNodeRequest,
  GetNodeResponse,
  GetServiceRequest,
  GetServiceResponse,
  ListNetworksRequest,
  ListNetworksResponse,
  ListNodesRequest,
  ListNodesResponse,
  ListServicesRequest,
  ListServicesResponse,
  ListTasksRequest,
  ListTasksResponse,
  RemoveNetworkRequest,
  RemoveNetworkResponse,
  RemoveNodeRequest,
  RemoveNodeResponse,
  RemoveServiceRequest,
  RemoveServiceResponse,
  UpdateClusterRequest,
  UpdateClusterResponse,
  UpdateNodeRequest,
  UpdateNodeResponse,
  UpdateServiceRequest,
  UpdateServiceResponse,
} from '../../gen/cluster/v1/control';
import {
  Cluster,
  ClusterSpec,
  Network,
  NetworkSpec,
  Node,
  NodeAvailability,
  NodeRole,
  NodeSpec,
  NodeState,
  PortConfig_PublishMode,
  Service,
  ServiceSpec,
  TaskState,
  UpdateStatus_State,
  type Task,
} from '../../gen/cluster/v1/objects';
import { makeJoinToken } from '../ca';
import {
  newId,
  thaw,
  type DeepReadonly,
  type MemoryStore,
  type ReadTx,
  type TableName,
  type TableTypes,
  type UpdateResult,
  type WriteTx,
} from '../../store';
import { randomServiceName, withServiceDefaults } from './defaults';
import { anyPrefix, enumValues, labelsMatch, parseFilters, type ParsedFilters } from './filters';
import { parseCidr, subnetsOverlap } from './subnet';
import {
  protocolName,
  validateClusterSpec,
  validateName,
  validateNetworkSpec,
  validateNodeSpec,
  validateServiceSpec,
} from './validate';

/** A Raft member as the leader sees it, for the quorum checks of demote and remove. */
export interface RaftMemberInfo {
  nodeId: string;
  reachable: boolean;
}

export interface ControlApiDeps {
  store: MemoryStore;
  /** Wall clock for status timestamps the API writes (rollback start). */
  clock?: () => Date;
  /** This manager's node id (for logs). */
  nodeId?: string;
  /**
   * The Raft members and whether the leader hears from each. Left out, the store's manager
   * nodes stand in, reachable unless their manager status says "unreachable".
   */
  raftMembers?: () => readonly RaftMemberInfo[];
  logger?: Logger;
}

/** Tasks marked for removal per transaction when a service is removed: keeps entries small. */
export const REMOVE_TASKS_BATCH = 500;
/** Retries of a task batch that met a concurrent task write (the dispatcher updates status). */
const REMOVE_TASKS_RETRIES = 5;
/** Attempts at a generated service name that is free. */
const NAME_ATTEMPTS = 20;
/** The values `UpdateServiceRequest.rollback` accepts: Docker's API says "previous". */
const ROLLBACK_VALUES = ['previous', 'rollback'];

const SERVICE_FILTERS = ['id', 'name', 'label', 'mode'] as const;
const NODE_FILTERS = [
  'id',
  'name',
  'hostname',
  'role',
  'membership',
  'availability',
  'label',
  'node.label',
] as const;
const TASK_FILTERS = ['id', 'name', 'service', 'node', 'desired-state'] as const;
const NETWORK_FILTERS = ['id', 'name', 'label', 'driver'] as const;

/** Runs `fn` so that a synchronous throw becomes a rejection, as an async caller expects. */
function settle<T>(fn: () => T | Promise<T>): Promise<T> {
  return new Promise<T>((resolve) => resolve(fn()));
}

function failedPrecondition(message: string, details?: Record<string, unknown>): ClusterError {
  return new ClusterError('FAILED_PRECONDITION', message, details);
}

function requireVersion(kind: string, version: number): void {
  if (!Number.isSafeInteger(version) || version <= 0) {
    throw invalidArgument(
      `version: the ${kind}'s current version is required (inspect it first), got ${version}`,
      {
        field: 'version',
      },
    );
  }
}

/** The object a transaction wrote to `table` with this id, as applied (with its new meta). */
function applied<N extends TableName>(result: UpdateResult<unknown>, table: N, id: string): TableTypes[N] {
  for (const event of result.events) {
    if (event.table === table && event.kind !== 'delete' && event.object.id === id) {
      return thaw<TableTypes[N]>(event.object as DeepReadonly<TableTypes[N]>);
    }
  }
  throw new ClusterError('INTERNAL', `the transaction applied but wrote no ${table} object ${id}`);
}

function serviceName(service: { spec?: { annotations?: { name: string } | undefined } | undefined }): string {
  return service.spec?.annotations?.name ?? '';
}

function nodeLabel(node: DeepReadonly<Node>): string {
  return node.spec?.annotations?.name || node.description?.hostname || node.id;
}

/** What the control API returns for a cluster: never the CA key. */
function redactCluster(cluster: Cluster): Cluster {
  return { ...cluster, rootCaKey: '' };
}

interface PublishedPort {
  port: number;
  protocol: number;
  mode: PortConfig_PublishMode;
  service: DeepReadonly<Service>;
}

export class ControlApi {
  private readonly store: MemoryStore;
  private readonly clock: () => Date;
  private readonly logger: Logger | undefined;
  /**
   * Writes run one at a time: the checks that span objects (published ports, subnets, quorum)
   * read state the store does not re-check at apply, so two writes must not pass them at once.
   */
  private writes: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: ControlApiDeps) {
    this.store = deps.store;
    this.clock = deps.clock ?? (() => new Date());
    this.logger = deps.logger;
  }

  private serialize<T>(write: () => Promise<T>): Promise<T> {
    const run = this.writes.then(write, write);
    this.writes = run.catch(() => undefined);
    return run;
  }

  // -------------------------------------------------------------------------------- nodes

  getNode(request: GetNodeRequest): Promise<GetNodeResponse> {
    return settle(() => {
      return { node: this.store.view((tx) => tx.nodes.lookup(request.nodeId)) };
    });
  }

  listNodes(request: ListNodesRequest): Promise<ListNodesResponse> {
    return settle(() => {
      const filters = parseFilters(request.filters, NODE_FILTERS);
      const roles = filters.has('role')
        ? enumValues('role', filters.get('role') ?? [], {
            manager: NodeRole.NODE_ROLE_MANAGER,
            worker: NodeRole.NODE_ROLE_WORKER,
          })
        : undefined;
      const availabilities = filters.has('availability')
        ? enumValues('availability', filters.get('availability') ?? [], {
            active: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
            pause: NodeAvailability.NODE_AVAILABILITY_PAUSE,
            drain: NodeAvailability.NODE_AVAILABILITY_DRAIN,
          })
        : undefined;
      // Every node in the store has been accepted (its certificate was issued at join).
      const memberships = filters.has('membership')
        ? enumValues('membership', filters.get('membership') ?? [], { accepted: true, pending: false })
        : undefined;
      const ids = filters.get('id');
      const names = [...(filters.get('name') ?? []), ...(filters.get('hostname') ?? [])];
      const engineLabels = filters.get('label');
      const nodeLabels = filters.get('node.label');
      const nodes = this.store.view((tx) =>
        tx.nodes.list(
          (n) =>
            (ids === undefined || anyPrefix(ids, n.id)) &&
            (names.length === 0 ||
              anyPrefix(names, n.spec?.annotations?.name ?? '') ||
              anyPrefix(names, n.description?.hostname ?? '')) &&
            (roles === undefined || roles.includes(n.role)) &&
            (availabilities === undefined || availabilities.includes(n.spec?.availability ?? 0)) &&
            (memberships === undefined || memberships.includes(true)) &&
            (engineLabels === undefined || labelsMatch(engineLabels, n.description?.engineLabels)) &&
            (nodeLabels === undefined || labelsMatch(nodeLabels, n.spec?.annotations?.labels)),
        ),
      );
      return { nodes };
    });
  }

  updateNode(request: UpdateNodeRequest): Promise<UpdateNodeResponse> {
    return settle(() => {
      requireVersion('node', request.version);
      const spec = request.spec;
      validateNodeSpec(spec);
      return this.serialize(async () => {
        const result = await this.store.update((tx) => {
          const node = tx.nodes.lookup(request.nodeId);
          const wasManager =
            node.spec?.desiredRole === NodeRole.NODE_ROLE_MANAGER || node.role === NodeRole.NODE_ROLE_MANAGER;
          if (spec.desiredRole === NodeRole.NODE_ROLE_WORKER && wasManager) this.checkCanDemote(tx, node);
          node.spec = NodeSpec.fromPartial(spec);
          node.meta = { ...node.meta, version: request.version };
          tx.nodes.update(node);
          return node.id;
        });
        return { node: applied(result, 'nodes', result.value) };
      });
    });
  }

  /** The Raft members, from the injected view or else from the store's manager nodes. */
  private raftMembers(tx: ReadTx | WriteTx): readonly RaftMemberInfo[] {
    if (this.deps.raftMembers) return this.deps.raftMembers();
    return tx.nodes
      .find('role', NodeRole.NODE_ROLE_MANAGER)
      .map((n) => ({ nodeId: n.id, reachable: n.managerStatus?.reachability !== 'unreachable' }));
  }

  /**
   * Refuses to demote the last manager, or a manager whose removal from Raft would leave fewer
   * reachable members than a majority of the smaller group (SwarmKit's CanRemoveMember).
   */
  private checkCanDemote(tx: WriteTx, node: Node): void {
    const label = nodeLabel(node);
    const managers = tx.nodes.list(
      (n) => n.spec?.desiredRole === NodeRole.NODE_ROLE_MANAGER || n.role === NodeRole.NODE_ROLE_MANAGER,
    );
    if (managers.every((m) => m.id === node.id)) {
      throw failedPrecondition(`node ${label} is the last manager of the cluster and cannot be demoted`, {
        nodeId: node.id,
      });
    }
    this.checkQuorumWithout(tx, node, 'demote');
  }

  private checkQuorumWithout(tx: ReadTx | WriteTx, node: DeepReadonly<Node>, verb: string): void {
    const members = this.raftMembers(tx);
    if (!members.some((m) => m.nodeId === node.id)) return;
    const remaining = members.length - 1;
    const needed = Math.floor(remaining / 2) + 1;
    const reachable = members.filter((m) => m.nodeId !== node.id && m.reachable).length;
    if (reachable < needed) {
      throw failedPrecondition(
        `cannot ${verb} node ${nodeLabel(node)}: the cluster would lose quorum (${reachable} of the ${remaining} remaining managers are reachable, ${needed} needed); bring the unreachable managers back first`,
        { nodeId: node.id, reachable, remaining, needed },
      );
    }
  }

  removeNode(request: RemoveNodeRequest): Promise<RemoveNodeResponse> {
    return settle(() => {
      return this.serialize(async () => {
        await this.store.update((tx) => {
          const node = tx.nodes.lookup(request.nodeId);
          const isMember = this.raftMembers(tx).some((m) => m.nodeId === node.id);
          if (
            isMember ||
            node.role === NodeRole.NODE_ROLE_MANAGER ||
            node.spec?.desiredRole === NodeRole.NODE_ROLE_MANAGER
          ) {
            throw failedPrecondition(
              `node ${request.nodeId} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal`,
              { nodeId: node.id },
            );
          }
          if (
            !request.force &&
            (node.status?.state === NodeState.NODE_STATE_READY ||
              node.status?.state === NodeState.NODE_STATE_NOT_READY)
          ) {
            throw failedPrecondition(
              `node ${request.nodeId} is not down and can't be removed (use --force to remove it anyway)`,
              {
                nodeId: node.id,
              },
            );
          }
          // Its tasks stay: the orchestrators see the node gone and replace them (as SwarmKit's).
          tx.nodes.delete(node.id);
          // Its certificate stays valid until it expires: every manager refuses it from now on.
          for (const cluster of tx.clusters.list()) {
            if (cluster.removedNodes.includes(node.id)) continue;
            tx.clusters.update({ ...cluster, removedNodes: [...cluster.removedNodes, node.id] });
          }
        });
        this.logger?.info({ nodeId: request.nodeId, force: request.force }, 'node removed');
        return {};
      });
    });
  }

  // ----------------------------------------------------------------------------- services

  createService(request: CreateServiceRequest): Promise<CreateServiceResponse> {
    return settle(() => {
      validateServiceSpec(request.spec);
      const spec = withServiceDefaults(request.spec);
      return this.serialize(async () => {
        const annotations = (spec.annotations ??= { name: '', labels: {} });
        if (annotations.name === '') annotations.name = this.freeServiceName();
        const id = newId();
        const result = await this.store.update((tx) => {
          this.resolveNetworks(tx, spec);
          this.checkPublishedPorts(tx, spec, id);
          tx.services.create(Service.fromPartial({ id, spec }));
        });
        this.logger?.info({ serviceId: id, name: annotations.name }, 'service created');
        return { service: applied(result, 'services', id) };
      });
    });
  }

  private freeServiceName(): string {
    for (let attempt = 0; attempt < NAME_ATTEMPTS; attempt++) {
      const name = randomServiceName();
      if (this.store.view((tx) => tx.services.find('name', name).length === 0)) return name;
    }
    throw new ClusterError('ALREADY_EXISTS', 'could not find a free service name: give the service a name');
  }

  /**
   * Replaces each network target (name, id or prefix) by the network's id, as Docker's daemon
   * does before SwarmKit sees the spec: removal checks and the allocator then compare ids.
   */
  private resolveNetworks(tx: WriteTx, spec: ServiceSpec): void {
    const seen = new Set<string>();
    spec.task?.networks.forEach((attachment, i) => {
      const field = `task.networks[${i}].target`;
      let network: Network;
      try {
        network = tx.networks.lookup(attachment.target);
      } catch (e) {
        if (e instanceof ClusterError) throw invalidArgument(`${field}: ${e.message}`, { field });
        throw e;
      }
      if (network.spec?.ingress) {
        throw invalidArgument(
          `${field}: a service cannot be attached to the ingress network '${attachment.target}' explicitly`,
          {
            field,
          },
        );
      }
      if (seen.has(network.id))
        throw invalidArgument(`${field}: network '${attachment.target}' is attached twice`, { field });
      seen.add(network.id);
      attachment.target = network.id;
    });
  }

  /**
   * An ingress port is claimed on every node, so it may not be published by any other service,
   * in either mode; a host-mode port only conflicts with another service's ingress port (the
   * scheduler keeps host-mode ports apart per node).
   */
  private checkPublishedPorts(tx: ReadTx | WriteTx, spec: ServiceSpec, serviceId: string): void {
    const wanted = spec.endpoint?.ports ?? [];
    if (!wanted.some((p) => p.publishedPort > 0)) return;
    const inUse = new Map<string, PublishedPort[]>();
    for (const service of tx.services.list((s) => s.id !== serviceId)) {
      const ports = [...(service.spec?.endpoint?.ports ?? []), ...(service.endpoint?.ports ?? [])];
      for (const p of ports) {
        if (p.publishedPort === 0) continue;
        const key = `${p.publishedPort}/${p.protocol}`;
        const list = inUse.get(key) ?? [];
        list.push({ port: p.publishedPort, protocol: p.protocol, mode: p.publishMode, service });
        inUse.set(key, list);
      }
    }
    wanted.forEach((p, i) => {
      if (p.publishedPort === 0) return;
      const ingress = p.publishMode === PortConfig_PublishMode.PUBLISH_MODE_INGRESS;
      for (const other of inUse.get(`${p.publishedPort}/${p.protocol}`) ?? []) {
        const otherIngress = other.mode === PortConfig_PublishMode.PUBLISH_MODE_INGRESS;
        if (!ingress && !otherIngress) continue;
        const field = `endpoint.ports[${i}].published_port`;
        throw invalidArgument(
          `${field}: port '${p.publishedPort}/${protocolName(p.protocol)}' is already in use by service '${serviceName(other.service)}' (${other.service.id}) as ${otherIngress ? 'an ingress' : 'a host-published'} port`,
          { field, serviceId: other.service.id, port: p.publishedPort },
        );
      }
    });
  }

  getService(request: GetServiceRequest): Promise<GetServiceResponse> {
    return settle(() => {
      return { service: this.store.view((tx) => tx.services.lookup(request.serviceId)) };
    });
  }

  listServices(request: ListServicesRequest): Promise<ListServicesResponse> {
    return settle(() => {
      const filters = parseFilters(request.filters, SERVICE_FILTERS);
      const modes = filters.has('mode')
        ? enumValues('mode', filters.get('mode') ?? [], { replicated: 'replicated', global: 'global' })
        : undefined;
      const ids = filters.get('id');
      const names = filters.get('name');
      const labels = filters.get('label');
      const services = this.store.view((tx) =>
        tx.services.list(
          (s) =>
            (ids === undefined || anyPrefix(ids, s.id)) &&
            (names === undefined || anyPrefix(names, s.spec?.annotations?.name ?? '')) &&
            (labels === undefined || labelsMatch(labels, s.spec?.annotations?.labels)) &&
            (modes === undefined || modes.includes(s.spec?.mode?.$case ?? 'replicated')),
        ),
      );
      return { services };
    });
  }

  updateService(request: UpdateServiceRequest): Promise<UpdateServiceResponse> {
    return settle(() => {
      requireVersion('service', request.version);
      const rollback = request.rollback !== '';
      if (rollback && !ROLLBACK_VALUES.includes(request.rollback)) {
        throw invalidArgument(
          `rollback: use 'previous' to roll back to the previous spec, got '${request.rollback}'`,
          {
            field: 'rollback',
          },
        );
      }
      let requested: ServiceSpec | undefined;
      if (!rollback) {
        validateServiceSpec(request.spec);
        requested = withServiceDefaults(request.spec);
      }
      return this.serialize(async () => {
        const result = await this.store.update((tx) => {
          const service = tx.services.lookup(request.serviceId);
          const current = service.spec ?? ServiceSpec.fromPartial({});
          const name = serviceName(service);
          let next: ServiceSpec;
          if (requested === undefined) {
            if (service.previousSpec === undefined) {
              throw failedPrecondition(`service ${name} does not have a previous spec to roll back to`, {
                serviceId: service.id,
              });
            }
            next = service.previousSpec;
            service.updateStatus = {
              state: UpdateStatus_State.STATE_ROLLBACK_STARTED,
              startedAt: this.clock(),
              completedAt: undefined,
              message: 'manually requested rollback',
            };
          } else {
            next = ServiceSpec.fromPartial(requested);
            const annotations = (next.annotations ??= { name: '', labels: {} });
            if (annotations.name === '') annotations.name = name;
            if (annotations.name !== name) {
              throw invalidArgument(
                `name: renaming services is not supported ('${name}' to '${annotations.name}')`,
                { field: 'name' },
              );
            }
            const from = current.mode?.$case ?? 'replicated';
            const to = next.mode?.$case ?? 'replicated';
            if (from !== to) {
              throw invalidArgument(
                from === 'global'
                  ? `mode: service ${name} is a global service and cannot become replicated (scale applies to replicated services only)`
                  : `mode: service ${name} is replicated and cannot become global: create a new service`,
                { field: 'mode' },
              );
            }
            // The updater (another component) reads the new spec; a fresh update clears its status.
            service.updateStatus = undefined;
          }
          this.resolveNetworks(tx, next);
          this.checkPublishedPorts(tx, next, service.id);
          service.previousSpec = current;
          service.spec = next;
          service.meta = { ...service.meta, version: request.version };
          tx.services.update(service);
          return service.id;
        });
        this.logger?.info({ serviceId: result.value, rollback }, 'service updated');
        return { service: applied(result, 'services', result.value) };
      });
    });
  }

  /**
   * Deletes the service and sets its tasks' desired state to REMOVE, as SwarmKit's orchestrator
   * does on a service deletion: agents stop them, and the task reaper deletes them once they are
   * down. The first batch of tasks goes in the service's own transaction; a service with more
   * tasks than a batch gets further transactions (the orchestrator treats tasks of a deleted
   * service the same way, should this manager fail between batches).
   */
  removeService(request: RemoveServiceRequest): Promise<RemoveServiceResponse> {
    return settle(() => {
      return this.serialize(async () => {
        const first = await this.store.update((tx) => {
          const service = tx.services.lookup(request.serviceId);
          tx.services.delete(service.id);
          return { serviceId: service.id, marked: this.markTasksRemoved(tx, service.id) };
        });
        const { serviceId } = first.value;
        let marked = first.value.marked;
        let retries = 0;
        while (marked === REMOVE_TASKS_BATCH) {
          try {
            marked = (await this.store.update((tx) => this.markTasksRemoved(tx, serviceId))).value;
          } catch (e) {
            // A task changed between our read and the apply (a status report): read again.
            if (!(e instanceof ClusterError && e.code === 'CONFLICT') || ++retries > REMOVE_TASKS_RETRIES)
              throw e;
          }
        }
        this.logger?.info({ serviceId }, 'service removed');
        return {};
      });
    });
  }

  private markTasksRemoved(tx: WriteTx, serviceId: string): number {
    let marked = 0;
    for (const task of tx.tasks.find('serviceId', serviceId)) {
      if (task.desiredState >= TaskState.TASK_STATE_REMOVE) continue;
      task.desiredState = TaskState.TASK_STATE_REMOVE;
      tx.tasks.update(task);
      if (++marked === REMOVE_TASKS_BATCH) break;
    }
    return marked;
  }

  // -------------------------------------------------------------------------------- tasks

  listTasks(request: ListTasksRequest): Promise<ListTasksResponse> {
    return settle(() => {
      const filters = parseFilters(request.filters, TASK_FILTERS);
      const desired = filters.has('desired-state')
        ? enumValues('desired-state', filters.get('desired-state') ?? [], {
            running: 'running',
            shutdown: 'shutdown',
            accepted: 'accepted',
          })
        : undefined;
      const tasks = this.store.view((tx) => {
        const serviceIds = filters.get('service')?.map((ref) => tx.services.lookup(ref).id);
        const nodeIds = filters.get('node')?.map((ref) => tx.nodes.lookup(ref).id);
        const names = new Map<string, string>();
        const nameOf = (t: DeepReadonly<Task>): string => {
          let service = names.get(t.serviceId);
          if (service === undefined) {
            service = serviceName(tx.services.get(t.serviceId) ?? {});
            names.set(t.serviceId, service);
          }
          return `${service}.${t.slot > 0 ? t.slot : t.nodeId}.${t.id}`;
        };
        const ids = filters.get('id');
        const namePrefixes = filters.get('name');
        const keep = (t: DeepReadonly<Task>): boolean =>
          (serviceIds === undefined || serviceIds.includes(t.serviceId)) &&
          (nodeIds === undefined || nodeIds.includes(t.nodeId)) &&
          (ids === undefined || anyPrefix(ids, t.id)) &&
          (namePrefixes === undefined ||
            anyPrefix(namePrefixes, nameOf(t)) ||
            anyPrefix(namePrefixes, t.annotations?.name ?? '\u0000')) &&
          (desired === undefined || desired.some((d) => desiredStateMatches(d, t.desiredState)));
        // The service index keeps `service ps` cheap on a large cluster.
        if (serviceIds !== undefined) {
          return serviceIds.flatMap((id) => tx.tasks.find('serviceId', id).filter((t) => keep(t)));
        }
        return tx.tasks.list(keep);
      });
      return { tasks };
    });
  }

  // ----------------------------------------------------------------------------- networks

  createNetwork(request: CreateNetworkRequest): Promise<CreateNetworkResponse> {
    return settle(() => {
      validateNetworkSpec(request.spec);
      const spec = NetworkSpec.fromPartial(request.spec);
      if (spec.driver === '') spec.driver = 'overlay';
      return this.serialize(async () => {
        const id = newId();
        const result = await this.store.update((tx) => {
          const name = spec.annotations?.name ?? '';
          if (tx.networks.find('name', name).length > 0) {
            throw new ClusterError(
              'ALREADY_EXISTS',
              `network '${name}' already exists: choose another name`,
              { name },
            );
          }
          if (spec.ingress) {
            const ingress = tx.networks.list((n) => n.spec?.ingress === true)[0];
            if (ingress) {
              throw new ClusterError(
                'ALREADY_EXISTS',
                `an ingress network already exists ('${ingress.spec?.annotations?.name ?? ingress.id}'): there can be only one`,
              );
            }
          }
          const subnetText = spec.ipam?.subnet ?? '';
          if (subnetText !== '') {
            const subnet = parseCidr('ipam.subnet', subnetText);
            for (const other of tx.networks.list((n) => (n.spec?.ipam?.subnet ?? '') !== '')) {
              const otherSubnet = other.spec?.ipam?.subnet ?? '';
              if (subnetsOverlap(subnet, parseCidr('subnet', otherSubnet))) {
                throw invalidArgument(
                  `ipam.subnet: ${subnetText} overlaps subnet ${otherSubnet} of network '${other.spec?.annotations?.name ?? other.id}'`,
                  { field: 'ipam.subnet', networkId: other.id },
                );
              }
            }
          }
          tx.networks.create(Network.fromPartial({ id, spec }));
        });
        this.logger?.info({ networkId: id, name: spec.annotations?.name }, 'network created');
        return { network: applied(result, 'networks', id) };
      });
    });
  }

  getNetwork(request: GetNetworkRequest): Promise<GetNetworkResponse> {
    return settle(() => {
      return { network: this.store.view((tx) => tx.networks.lookup(request.networkId)) };
    });
  }

  listNetworks(request: ListNetworksRequest): Promise<ListNetworksResponse> {
    return settle(() => {
      const filters: ParsedFilters = parseFilters(request.filters, NETWORK_FILTERS);
      const ids = filters.get('id');
      const names = filters.get('name');
      const labels = filters.get('label');
      const drivers = filters.get('driver');
      const networks = this.store.view((tx) =>
        tx.networks.list(
          (n) =>
            (ids === undefined || anyPrefix(ids, n.id)) &&
            (names === undefined || anyPrefix(names, n.spec?.annotations?.name ?? '')) &&
            (labels === undefined || labelsMatch(labels, n.spec?.annotations?.labels)) &&
            (drivers === undefined || drivers.includes(n.spec?.driver ?? '')),
        ),
      );
      return { networks };
    });
  }

  removeNetwork(request: RemoveNetworkRequest): Promise<RemoveNetworkResponse> {
    return settle(() => {
      return this.serialize(async () => {
        await this.store.update((tx) => {
          const network = tx.networks.lookup(request.networkId);
          const name = network.spec?.annotations?.name ?? network.id;
          if (network.spec?.ingress) {
            throw failedPrecondition(
              `network ${name} is the ingress network (the routing mesh) and cannot be removed`,
              {
                networkId: network.id,
              },
            );
          }
          const users = tx.services.list((s) =>
            (s.spec?.task?.networks ?? []).some((a) => a.target === network.id || a.target === name),
          );
          if (users.length > 0) {
            throw failedPrecondition(
              `network ${name} is in use by service${users.length > 1 ? 's' : ''} ${users.map((s) => `'${serviceName(s)}'`).join(', ')}: remove ${users.length > 1 ? 'them' : 'it'} or detach ${users.length > 1 ? 'them' : 'it'} first`,
              { networkId: network.id, serviceIds: users.map((s) => s.id) },
            );
          }
          tx.networks.delete(network.id);
        });
        return {};
      });
    });
  }

  // ------------------------------------------------------------------------------ cluster

  private theCluster(tx: ReadTx | WriteTx): Cluster {
    const cluster = tx.clusters.list()[0];
    if (cluster === undefined) {
      throw failedPrecondition("this manager has no cluster yet: run 'cluster init' or 'cluster join'");
    }
    return cluster;
  }

  getCluster(_request: GetClusterRequest): Promise<GetClusterResponse> {
    return settle(() => {
      return { cluster: redactCluster(this.store.view((tx) => this.theCluster(tx))) };
    });
  }

  updateCluster(request: UpdateClusterRequest): Promise<UpdateClusterResponse> {
    return settle(() => {
      requireVersion('cluster', request.version);
      validateClusterSpec(request.spec);
      const spec = ClusterSpec.fromPartial(request.spec);
      return this.serialize(async () => {
        const result = await this.store.update((tx) => {
          const cluster = this.theCluster(tx);
          const name = cluster.spec?.annotations?.name ?? '';
          const annotations = (spec.annotations ??= { name: '', labels: {} });
          if (annotations.name === '') annotations.name = name;
          if (annotations.name !== name) {
            throw invalidArgument(
              `name: the cluster's name cannot be changed ('${name}' to '${annotations.name}')`,
              { field: 'name' },
            );
          }
          if (annotations.name !== '') validateName('name', annotations.name);
          cluster.spec = spec;
          const tokens = (cluster.joinTokens ??= { worker: '', manager: '' });
          if (request.rotateWorkerToken) tokens.worker = makeJoinToken(cluster.rootCaCert);
          if (request.rotateManagerToken) tokens.manager = makeJoinToken(cluster.rootCaCert);
          cluster.meta = { ...cluster.meta, version: request.version };
          tx.clusters.update(cluster);
          return cluster.id;
        });
        this.logger?.info(
          { rotateWorkerToken: request.rotateWorkerToken, rotateManagerToken: request.rotateManagerToken },
          'cluster updated',
        );
        return { cluster: redactCluster(applied(result, 'clusters', result.value)) };
      });
    });
  }
}

/**
 * Docker's task filter: "running" and "accepted" are those desired states; "shutdown" is every
 * desired state past running (shutdown, remove, ...), the tasks on their way out.
 */
function desiredStateMatches(wanted: string, state: TaskState): boolean {
  switch (wanted) {
    case 'running':
      return state === TaskState.TASK_STATE_RUNNING;
    case 'accepted':
      return state === TaskState.TASK_STATE_ACCEPTED;
    default:
      return state > TaskState.TASK_STATE_RUNNING;
  }
}
