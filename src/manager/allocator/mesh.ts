// The routing mesh's leader side (issue 6): the ingress overlay network exists, every node and
// every task of a service with ingress-published ports holds an address on it, and each node
// learns what to program (remote endpoints, published ports and their running backends).
// Addresses come from an Ipam rebuilt from the store on every pass and are written by this one
// loop only, one pass at a time, so no address is handed out twice, across leader changes too.
import { MeshState, type MeshEndpoint, type MeshPort } from '../../gen/cluster/v1/dispatcher';
import {
  Network,
  NetworkAttachment,
  PortConfig_PublishMode,
  TaskState,
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import type { Logger } from '../../common/logger';
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
 * Holds back (NEW, not PENDING) the tasks of a service with ingress ports until the mesh loop
 * gave them an ingress address: a task must not run before it has one.
 */
export const ingressGate: TaskAllocator = {
  name: 'ingress',
  allocateTask(task, service) {
    if (ingressPorts(service).length === 0) return undefined;
    return task.networks.some((n) => n.addresses.length > 0) ? undefined : WAITING_FOR_INGRESS;
  },
};

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

interface Assignments {
  nodes: { id: string; address: string }[];
  tasks: { id: string; address: string }[];
}

/** Who still needs an ingress address, and which one (pure: reads only). */
export function planAddresses(
  network: R<Network>,
  services: readonly R<Service>[],
  tasks: readonly R<Task>[],
  nodes: readonly R<Node>[],
): Assignments {
  const ipam = Ipam.fromObjects([network], [], tasks, nodes);
  const out: Assignments = { nodes: [], tasks: [] };
  const meshed = new Set(services.filter((s) => ingressPorts(s).length > 0).map((s) => s.id));
  // Nodes get their address only once some service publishes a port: a node write races other
  // writers of the node (a join recording its manager status), so none is made before it is needed.
  for (const node of meshed.size === 0 ? [] : nodes) {
    if (attachmentOn(node.attachments, network.id)) continue;
    out.nodes.push({ id: node.id, address: ipam.allocateAddress(network.id, { kind: 'node', id: node.id }) });
  }
  for (const task of tasks) {
    if (!meshed.has(task.serviceId) || !isLive(task as Task)) continue;
    if (stateOf(task as Task) >= TaskState.TASK_STATE_COMPLETE) continue;
    if (attachmentOn(task.networks, network.id)) continue;
    out.tasks.push({ id: task.id, address: ipam.allocateAddress(network.id, { kind: 'task', id: task.id }) });
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
    const plan = store.view((tx) => {
      const network = ingressNetworkOf(tx);
      if (network === undefined) return undefined;
      return {
        network,
        wants: planAddresses(network, tx.services.list(), tx.tasks.list(), tx.nodes.list()),
      };
    });
    if (plan === undefined) return;
    const networkId = plan.network.id;
    const attach = (address: string) => NetworkAttachment.fromPartial({ networkId, addresses: [address] });
    // One item per object: a write refused because the object changed is retried next pass.
    await store.updateEach(plan.wants.nodes, (tx, want) => {
      const node = tx.nodes.get(want.id);
      if (node === undefined || attachmentOn(node.attachments, networkId)) return;
      const next = thaw<Node>(node);
      next.attachments = [...next.attachments.filter((a) => a.networkId !== networkId), attach(want.address)];
      tx.nodes.update(next);
    });
    await store.updateEach(plan.wants.tasks, (tx, want) => {
      const task = tx.tasks.get(want.id);
      if (task === undefined || attachmentOn(task.networks, networkId)) return;
      const next = thaw<Task>(task);
      next.networks = [...next.networks.filter((a) => a.networkId !== networkId), attach(want.address)];
      tx.tasks.update(next);
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
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, IDLE_PASS_MS);
    outer.addEventListener('abort', () => resolve(), { once: true });
  });
  try {
    await Promise.race([iterator.next(), idle]);
    if (!outer.aborted) await new Promise((resolve) => setTimeout(resolve, BATCH_MS));
  } finally {
    clearTimeout(timer);
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
  endpoints.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
  return MeshState.fromPartial({
    ingress: thaw<Network>(network),
    nodeAddress: attachmentOn(self?.attachments, network.id)?.addresses[0] ?? '',
    underlayAddr: self?.status?.addr ?? '',
    endpoints,
    ports,
  });
}
