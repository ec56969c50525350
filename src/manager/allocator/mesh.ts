// The routing mesh's leader side (issue 6): the ingress overlay network exists, every node and
// every task of a service with ingress-published ports holds an address on it, and each node
// learns what to program (remote endpoints, published ports and their running backends).
// Addresses come from an Ipam rebuilt from the store on every pass and are written by this one
// loop only, one pass at a time, so no address is handed out twice, across leader changes too.
import {
  MeshState,
  type MeshEndpoint,
  type MeshNetwork,
  type MeshPort,
  type MeshService,
} from '../../gen/cluster/v1/dispatcher';
import {
  Endpoint,
  EndpointSpec_ResolutionMode,
  Network,
  NetworkAttachment,
  NetworkSpec,
  PortConfig_PublishMode,
  TaskState,
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import type { Logger } from '../../common/logger';
import { abortableSleep } from '../../common/sleep';
import type { LeaderLoop } from '../../node/leader_loops';
import { newId, thaw, type DeepReadonly, type MemoryStore, type ReadTx, type WriteTx } from '../../store';
import { isLive, stateOf, takesTraffic } from '../orchestrator/tasks';
import type { TaskAllocator } from './allocator';
import { Ipam } from './ipam';

export const INGRESS_NETWORK_NAME = 'ingress';
export const INGRESS_SUBNET = '10.255.0.0/16';
export const INGRESS_GATEWAY = '10.255.0.1';
export const INGRESS_VNI = 4096;
/** Longest wait between passes with no store change: a safety net against a missed event. */
const IDLE_PASS_MS = 5000;
/** Changes gathered before a pass. */
const BATCH_MS = 20;

export const WAITING_FOR_INGRESS = 'waiting for an address on the ingress network';
export const WAITING_FOR_NETWORKS = 'waiting for addresses on its networks';

type R<T> = DeepReadonly<T>;

/** The published ingress ports of a service, once the allocator gave them numbers. */
export function ingressPorts(service: R<Service>) {
  return (service.endpoint?.ports ?? []).filter(
    (p) => p.publishMode === PortConfig_PublishMode.PUBLISH_MODE_INGRESS && p.publishedPort > 0,
  );
}

const attachmentOn = (attachments: readonly R<NetworkAttachment>[] | undefined, networkId: string) =>
  (attachments ?? []).find((a) => a.networkId === networkId && a.addresses.length > 0);

/**
 * Holds back (NEW, not PENDING) a task until the mesh loop gave it an address on each of its
 * networks (and on the ingress network when its service publishes ports): a task must not run
 * before it has them.
 */
export const ingressGate: TaskAllocator = {
  name: 'networks',
  allocateTask(task, service) {
    const own = new Set((task.spec?.networks ?? []).map((n) => n.target));
    for (const networkId of own) {
      if (attachmentOn(task.networks, networkId) === undefined) return WAITING_FOR_NETWORKS;
    }
    if (ingressPorts(service).length === 0) return undefined;
    return task.networks.some((n) => !own.has(n.networkId) && n.addresses.length > 0)
      ? undefined
      : WAITING_FOR_INGRESS;
  },
};
/** The same gate under the name that says what it does now. */
export const networkGate = ingressGate;

export function ingressNetworkOf(tx: ReadTx | WriteTx): R<Network> | undefined {
  return tx.networks.list((n) => n.spec?.ingress === true)[0];
}

export function defaultIngressNetwork(): Network {
  return Network.fromPartial({
    id: newId(),
    spec: {
      annotations: { name: INGRESS_NETWORK_NAME },
      driver: 'overlay',
      ingress: true,
      ipam: { subnet: INGRESS_SUBNET, gateway: INGRESS_GATEWAY },
    },
    vni: INGRESS_VNI,
  });
}

/** A write the mesh loop makes: an address given to (or taken from) an object on a network. */
export interface AddressWrite {
  id: string;
  networkId: string;
  /** CIDR; '' releases the object's address on the network. */
  address: string;
  aliases?: string[];
}

export interface NetworkWrite {
  id: string;
  subnet: string;
  gateway: string;
  vni: number;
}

export interface Assignments {
  /** User networks created without a subnet or VNI get them (kept in the network's object). */
  networks: NetworkWrite[];
  nodes: AddressWrite[];
  tasks: AddressWrite[];
  /** Service VIPs; '' removes the VIP on that network (dnsrr, or the network detached). */
  vips: AddressWrite[];
}

/** The networks a task needs an address on: the ingress first when its service publishes, then its own. */
export function wantedNetworks(
  task: R<Task>,
  service: R<Service> | undefined,
  ingressId: string | undefined,
): { networkId: string; aliases: string[] }[] {
  const wanted = (task.spec?.networks ?? []).map((n) => ({ networkId: n.target, aliases: [...n.aliases] }));
  if (ingressId !== undefined && service !== undefined && ingressPorts(service).length > 0) {
    wanted.unshift({ networkId: ingressId, aliases: [] });
  }
  return wanted;
}

/** Whether the service gets a VIP on its networks (the default), rather than DNS round robin. */
export const usesVip = (service: R<Service>) =>
  (service.spec?.endpoint?.mode ?? EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP) ===
  EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP;

const stillRuns = (task: R<Task>) =>
  isLive(task as Task) && stateOf(task as Task) < TaskState.TASK_STATE_COMPLETE;

/**
 * Who needs an address on which network, and which one (pure: reads only). One Ipam rebuilt
 * from every stored object, so nothing a stored object holds is handed out again.
 */
export function planAddresses(
  networks: readonly R<Network>[],
  services: readonly R<Service>[],
  tasks: readonly R<Task>[],
  nodes: readonly R<Node>[],
): Assignments {
  // Networks with a VNI and subnet first, so one without cannot take theirs.
  const complete = (n: R<Network>) => n.vni > 0 && (n.spec?.ipam?.subnet ?? '') !== '';
  const ordered = [...networks].sort((a, b) => Number(complete(b)) - Number(complete(a)));
  const ipam = Ipam.fromObjects(ordered, services, tasks, nodes);
  const out: Assignments = { networks: [], nodes: [], tasks: [], vips: [] };
  const known = new Set(networks.map((n) => n.id));
  for (const network of networks) {
    if (complete(network)) continue;
    const allocation = ipam.network(network.id);
    if (allocation === undefined) continue;
    out.networks.push({
      id: network.id,
      subnet: allocation.subnet,
      gateway: allocation.gateway,
      vni: allocation.vni,
    });
  }
  const ingress = networks.find((n) => n.spec?.ingress === true);
  const servicesById = new Map(services.map((s) => [s.id, s]));
  const meshed = services.some((s) => ingressPorts(s).length > 0);

  // Tasks first: a node's networks follow from the tasks it runs.
  const nodeNetworks = new Map<string, Set<string>>();
  for (const task of tasks) {
    if (!stillRuns(task)) continue;
    const wanted = wantedNetworks(task, servicesById.get(task.serviceId), ingress?.id).filter((w) =>
      known.has(w.networkId),
    );
    for (const want of wanted) {
      if (task.nodeId !== '' && want.networkId !== ingress?.id) {
        const set = nodeNetworks.get(task.nodeId) ?? new Set<string>();
        set.add(want.networkId);
        nodeNetworks.set(task.nodeId, set);
      }
      if (attachmentOn(task.networks, want.networkId)) continue;
      const address = ipam.allocateAddress(want.networkId, { kind: 'task', id: task.id });
      out.tasks.push({ id: task.id, networkId: want.networkId, address, aliases: want.aliases });
    }
  }
  // Nodes get an ingress address only once some service publishes a port (a node write races
  // other writers of the node, a join recording its manager status, so none is made before it is
  // needed), and an address on a user network while they run a task on it.
  for (const node of nodes) {
    const wanted = new Set(nodeNetworks.get(node.id) ?? []);
    if (meshed && ingress !== undefined) wanted.add(ingress.id);
    for (const networkId of wanted) {
      if (attachmentOn(node.attachments, networkId)) continue;
      const address = ipam.allocateAddress(networkId, { kind: 'node', id: node.id });
      out.nodes.push({ id: node.id, networkId, address });
    }
    for (const attachment of node.attachments ?? []) {
      if (attachment.networkId === ingress?.id && known.has(attachment.networkId)) continue;
      if (!wanted.has(attachment.networkId))
        out.nodes.push({ id: node.id, networkId: attachment.networkId, address: '' });
    }
  }
  for (const service of services) {
    // VIPs once the allocator gave the service its endpoint (it writes virtualIps through).
    if (service.endpoint === undefined) continue;
    const wanted = new Set(
      usesVip(service)
        ? (service.spec?.task?.networks ?? []).map((n) => n.target).filter((id) => known.has(id))
        : [],
    );
    const held = new Set(service.endpoint.virtualIps.map((v) => v.networkId));
    for (const networkId of wanted) {
      if (held.has(networkId)) continue;
      const address = ipam.allocateAddress(networkId, { kind: 'vip', id: service.id });
      out.vips.push({ id: service.id, networkId, address });
    }
    for (const networkId of held) {
      if (!wanted.has(networkId)) out.vips.push({ id: service.id, networkId, address: '' });
    }
  }
  return out;
}

/** The leader loop that creates the ingress network and hands out its addresses. */
export function meshLoop(store: MemoryStore, logger: Logger): LeaderLoop {
  const pass = async () => {
    if (store.view((tx) => ingressNetworkOf(tx)) === undefined) {
      await store.update((tx) => {
        if (ingressNetworkOf(tx) === undefined) tx.networks.create(defaultIngressNetwork());
      });
      logger.info({ subnet: INGRESS_SUBNET, vni: INGRESS_VNI }, 'mesh: created the ingress network');
    }
    const plan = store.view((tx) =>
      planAddresses(tx.networks.list(), tx.services.list(), tx.tasks.list(), tx.nodes.list()),
    );
    const attach = (want: AddressWrite) =>
      NetworkAttachment.fromPartial({
        networkId: want.networkId,
        addresses: [want.address],
        aliases: want.aliases ?? [],
      });
    // One item per object: a write refused because the object changed is retried next pass.
    await store.updateEach(plan.networks, (tx, want) => {
      const network = tx.networks.get(want.id);
      if (network === undefined || (network.vni > 0 && (network.spec?.ipam?.subnet ?? '') !== '')) return;
      const next = thaw<Network>(network);
      next.spec = NetworkSpec.fromPartial({
        ...next.spec,
        ipam: { subnet: want.subnet, gateway: want.gateway },
      });
      next.vni = want.vni;
      tx.networks.update(next);
      logger.info({ networkId: want.id, subnet: want.subnet, vni: want.vni }, 'mesh: network allocated');
    });
    await store.updateEach(plan.nodes, (tx, want) => {
      const node = tx.nodes.get(want.id);
      if (node === undefined) return;
      const held = attachmentOn(node.attachments, want.networkId);
      if (want.address !== '' ? held !== undefined : held === undefined) return;
      const next = thaw<Node>(node);
      next.attachments = next.attachments.filter((a) => a.networkId !== want.networkId);
      if (want.address !== '') next.attachments.push(attach(want));
      tx.nodes.update(next);
    });
    await store.updateEach(plan.tasks, (tx, want) => {
      const task = tx.tasks.get(want.id);
      if (task === undefined || attachmentOn(task.networks, want.networkId)) return;
      const next = thaw<Task>(task);
      next.networks = [...next.networks.filter((a) => a.networkId !== want.networkId), attach(want)];
      tx.tasks.update(next);
    });
    await store.updateEach(plan.vips, (tx, want) => {
      const service = tx.services.get(want.id);
      if (service?.endpoint === undefined) return;
      const held = service.endpoint.virtualIps.some((v) => v.networkId === want.networkId);
      if (want.address !== '' ? held : !held) return;
      const next = thaw<Service>(service);
      const endpoint = next.endpoint ?? Endpoint.fromPartial({});
      endpoint.virtualIps = endpoint.virtualIps.filter((v) => v.networkId !== want.networkId);
      if (want.address !== '') endpoint.virtualIps.push({ networkId: want.networkId, addr: want.address });
      next.endpoint = endpoint;
      tx.services.update(next);
    });
  };
  return {
    name: 'mesh',
    async run(signal: AbortSignal): Promise<void> {
      while (!signal.aborted) {
        const watcher = store.watch({ tables: ['nodes', 'tasks', 'services', 'networks'], signal });
        await pass();
        await nextChange(watcher, signal);
      }
    },
  };
}

/** Resolves at the first change (plus a short batch window), after IDLE_PASS_MS, or on abort. */
async function nextChange(watcher: AsyncIterable<unknown>, outer: AbortSignal): Promise<void> {
  const iterator = watcher[Symbol.asyncIterator]();
  // A signal of this wait's own, so that no listener is left on the loop's signal per pass.
  const idle = new AbortController();
  const onAbort = () => idle.abort();
  outer.addEventListener('abort', onAbort, { once: true });
  try {
    await Promise.race([iterator.next(), abortableSleep(IDLE_PASS_MS, idle.signal)]);
    if (!outer.aborted) await abortableSleep(BATCH_MS, idle.signal);
  } finally {
    idle.abort();
    outer.removeEventListener('abort', onAbort);
    await iterator.return?.();
  }
}

/** What node `nodeId` must program for the mesh, from the store as it is now. */
export function meshStateFor(tx: ReadTx, nodeId: string): MeshState {
  const network = ingressNetworkOf(tx);
  if (network === undefined) return MeshState.fromPartial({});
  const nodes = new Map(tx.nodes.list().map((n) => [n.id, n]));
  const self = nodes.get(nodeId);
  const endpoints: MeshEndpoint[] = [];
  const bare = (cidr: string) => cidr.split('/')[0] ?? cidr;
  for (const node of nodes.values()) {
    const address = attachmentOn(node.attachments, network.id)?.addresses[0];
    if (node.id === nodeId || address === undefined || !node.status?.addr) continue;
    endpoints.push({ ip: bare(address), host: node.status.addr });
  }
  const ports: MeshPort[] = [];
  const services = tx.services.list((s) => ingressPorts(s).length > 0);
  const byService = new Map<string, R<Task>[]>();
  for (const task of tx.tasks.list((t) => services.some((s) => s.id === t.serviceId))) {
    const address = attachmentOn(task.networks, network.id)?.addresses[0];
    const host = nodes.get(task.nodeId)?.status?.addr;
    if (address === undefined) continue;
    if (task.nodeId !== nodeId && host && stateOf(task) < TaskState.TASK_STATE_COMPLETE) {
      endpoints.push({ ip: bare(address), host });
    }
    if (takesTraffic(task)) {
      const list = byService.get(task.serviceId) ?? [];
      list.push(task);
      byService.set(task.serviceId, list);
    }
  }
  for (const service of services) {
    const running = byService.get(service.id) ?? [];
    for (const port of ingressPorts(service)) {
      ports.push({
        serviceId: service.id,
        protocol: port.protocol,
        publishedPort: port.publishedPort,
        targetPort: port.targetPort,
        backends: running.map((t) => bare(attachmentOn(t.networks, network.id)?.addresses[0] ?? '')).sort(),
      });
    }
  }
  endpoints.sort(byIp);
  return MeshState.fromPartial({
    ingress: thaw<Network>(network),
    nodeAddress: attachmentOn(self?.attachments, network.id)?.addresses[0] ?? '',
    underlayAddr: self?.status?.addr ?? '',
    endpoints,
    ports,
    networks: userNetworksFor(tx, nodeId),
  });
}

const byIp = (a: { ip: string }, b: { ip: string }) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0);

/**
 * The user networks node `nodeId` holds an address on (it runs a task on them): remote
 * endpoints, and every service on the network with its VIP and the tasks that take traffic.
 */
export function userNetworksFor(tx: ReadTx, nodeId: string): MeshNetwork[] {
  const nodes = new Map(tx.nodes.list().map((n) => [n.id, n]));
  const self = nodes.get(nodeId);
  const bare = (cidr: string) => cidr.split('/')[0] ?? cidr;
  const out: MeshNetwork[] = [];
  for (const attachment of self?.attachments ?? []) {
    const network = tx.networks.get(attachment.networkId);
    const nodeAddress = attachment.addresses[0];
    if (network === undefined || network.spec?.ingress === true || nodeAddress === undefined) continue;
    if (network.vni === 0 || (network.spec?.ipam?.subnet ?? '') === '') continue;
    const endpoints: MeshEndpoint[] = [];
    for (const node of nodes.values()) {
      const address = attachmentOn(node.attachments, network.id)?.addresses[0];
      if (node.id === nodeId || address === undefined || !node.status?.addr) continue;
      endpoints.push({ ip: bare(address), host: node.status.addr });
    }
    const services: MeshService[] = [];
    const users = tx.services.list((s) =>
      (s.spec?.task?.networks ?? []).some((n) => n.target === network.id),
    );
    for (const service of users) {
      const backends: string[] = [];
      for (const task of tx.tasks.find('serviceId', service.id)) {
        const address = attachmentOn(task.networks, network.id)?.addresses[0];
        if (address === undefined) continue;
        const host = nodes.get(task.nodeId)?.status?.addr;
        if (task.nodeId !== nodeId && host && stateOf(task) < TaskState.TASK_STATE_COMPLETE) {
          endpoints.push({ ip: bare(address), host });
        }
        if (takesTraffic(task)) backends.push(bare(address));
      }
      const spec = (service.spec?.task?.networks ?? []).find((n) => n.target === network.id);
      services.push({
        serviceId: service.id,
        name: service.spec?.annotations?.name ?? service.id,
        vip: service.endpoint?.virtualIps.find((v) => v.networkId === network.id)?.addr ?? '',
        backends: backends.sort(),
        ports: (service.endpoint?.ports ?? service.spec?.endpoint?.ports ?? []).map((p) => ({
          serviceId: service.id,
          protocol: p.protocol,
          publishedPort: 0,
          targetPort: p.targetPort,
          backends: [],
        })),
        aliases: [...(spec?.aliases ?? [])],
      });
    }
    services.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    endpoints.sort(byIp);
    out.push({ network: thaw<Network>(network), nodeAddress, endpoints, services });
  }
  out.sort((a, b) => (a.network?.vni ?? 0) - (b.network?.vni ?? 0));
  return out;
}
