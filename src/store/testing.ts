// Small object builders for tests of the store and of the components that read it.
import { Cluster, Network, Node, NodeRole, Service, Task, TaskState } from '../gen/cluster/v1/objects';
import { newId } from './ids';
import { LocalProposer } from './local_proposer';
import { MemoryStore, type MemoryStoreOptions } from './memory_store';

export function makeNode(hostname: string, opts: { id?: string; name?: string; role?: NodeRole } = {}): Node {
  return Node.fromPartial({
    id: opts.id ?? newId(),
    spec: { annotations: { name: opts.name ?? '' } },
    description: { hostname },
    role: opts.role ?? NodeRole.NODE_ROLE_WORKER,
  });
}

export function makeService(
  name: string,
  opts: { id?: string; replicas?: number; image?: string } = {},
): Service {
  return Service.fromPartial({
    id: opts.id ?? newId(),
    spec: {
      annotations: { name, labels: { app: name } },
      task: { container: { image: opts.image ?? 'busybox:latest', env: ['A=1'] } },
      mode: { $case: 'replicated', value: { replicas: opts.replicas ?? 1 } },
    },
  });
}

export function makeTask(
  serviceId: string,
  slot: number,
  opts: { id?: string; nodeId?: string; desiredState?: TaskState } = {},
): Task {
  return Task.fromPartial({
    id: opts.id ?? newId(),
    serviceId,
    slot,
    nodeId: opts.nodeId ?? '',
    desiredState: opts.desiredState ?? TaskState.TASK_STATE_RUNNING,
    status: { state: TaskState.TASK_STATE_NEW, message: 'created' },
  });
}

export function makeNetwork(name: string, opts: { id?: string; subnet?: string } = {}): Network {
  return Network.fromPartial({
    id: opts.id ?? newId(),
    spec: {
      annotations: { name },
      driver: 'overlay',
      ipam: { subnet: opts.subnet ?? '10.0.0.0/24', gateway: '' },
    },
  });
}

export function makeCluster(name = 'default', opts: { id?: string } = {}): Cluster {
  return Cluster.fromPartial({ id: opts.id ?? newId(), spec: { annotations: { name } }, rootCaCert: 'PEM' });
}

/** `count` stores fed by one LocalProposer: the first is the one whose update() results return. */
export function localStores(
  count: number,
  options?: MemoryStoreOptions,
): { proposer: LocalProposer; stores: MemoryStore[] } {
  const proposer = new LocalProposer();
  const stores: MemoryStore[] = [];
  for (let i = 0; i < count; i++) {
    const store = new MemoryStore(undefined, options);
    proposer.attach(store);
    stores.push(store);
  }
  return { proposer, stores };
}
