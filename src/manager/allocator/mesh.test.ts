import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Endpoint,
  NetworkAttachment,
  PortConfig_PublishMode,
  TaskState,
  type Node,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import { componentLogger } from '../../common/logger';
import { LocalProposer, MemoryStore } from '../../store';
import { node, service, task } from '../orchestrator/testing';
import {
  INGRESS_GATEWAY,
  WAITING_FOR_INGRESS,
  defaultIngressNetwork,
  ingressGate,
  ingressNetworkOf,
  meshLoop,
  meshStateFor,
  planAddresses,
} from './mesh';

function published(svc: Service, port = 8080): Service {
  svc.endpoint = Endpoint.fromPartial({
    ports: [
      { targetPort: 80, publishedPort: port, publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS },
    ],
  });
  return svc;
}

const on = (networkId: string, address: string) => [
  NetworkAttachment.fromPartial({ networkId, addresses: [address] }),
];

test('planAddresses: nodes and live tasks of published services get distinct new addresses', () => {
  const network = defaultIngressNetwork();
  const web = published(service('web'));
  const plain = service('plain');
  const held = task(web, { state: TaskState.TASK_STATE_NEW });
  held.networks = on(network.id, '10.255.0.3/16');
  const fresh = [
    task(web, { state: TaskState.TASK_STATE_NEW }),
    task(web, { state: TaskState.TASK_STATE_NEW }),
  ];
  const ended = task(web, { state: TaskState.TASK_STATE_FAILED, desired: TaskState.TASK_STATE_SHUTDOWN });
  const other = task(plain, { state: TaskState.TASK_STATE_NEW });
  const a = node('a');
  a.attachments = on(network.id, '10.255.0.2/16');
  const plan = planAddresses(
    network,
    [web, plain],
    [held, ...fresh, ended, other],
    [a, node('b'), node('c')],
  );
  assert.deepEqual(
    plan.nodes.map((n) => n.id),
    ['b', 'c'],
  );
  assert.deepEqual(
    plan.tasks.map((t) => t.id),
    fresh.map((t) => t.id),
  );
  const given = [...plan.nodes, ...plan.tasks].map((x) => x.address.split('/')[0]);
  assert.equal(new Set(given).size, given.length, `distinct: ${given.join(', ')}`);
  for (const address of given) {
    assert.ok(!['10.255.0.2', '10.255.0.3', INGRESS_GATEWAY].includes(address ?? ''), address);
    assert.match(address ?? '', /^10\.255\./);
  }
});

test('ingressGate holds a published task back until it has an address', () => {
  const web = published(service('web'));
  const t = task(web, { state: TaskState.TASK_STATE_NEW });
  assert.equal(ingressGate.allocateTask(t, web, { services: [], tasks: [], nodes: [] }), WAITING_FOR_INGRESS);
  t.networks = on('n', '10.255.0.9/16');
  assert.equal(ingressGate.allocateTask(t, web, { services: [], tasks: [], nodes: [] }), undefined);
  const plain = service('plain');
  assert.equal(
    ingressGate.allocateTask(task(plain, { state: TaskState.TASK_STATE_NEW }), plain, {
      services: [],
      tasks: [],
      nodes: [],
    }),
    undefined,
  );
});

test('meshLoop creates the ingress network and addresses; meshStateFor lists what a node programs', async () => {
  const store = new MemoryStore();
  new LocalProposer(store.appliedIndex + 1).attach(store);
  const web = published(service('web'));
  const nodes: Node[] = ['a', 'b', 'c'].map((id, i) => {
    const n = node(id);
    n.meta = undefined;
    if (n.status) n.status.addr = `10.231.0.${11 + i}`;
    return n;
  });
  const tasks: Task[] = [
    task(web, { nodeId: 'a', state: TaskState.TASK_STATE_RUNNING }),
    task(web, { nodeId: 'b', state: TaskState.TASK_STATE_RUNNING }),
    task(web, { nodeId: 'b', state: TaskState.TASK_STATE_STARTING }),
  ];
  await store.update((tx) => {
    web.meta = undefined;
    tx.services.create(web);
    for (const n of nodes) tx.nodes.create(n);
    for (const t of tasks) {
      t.meta = undefined;
      tx.tasks.create(t);
    }
  });
  const controller = new AbortController();
  const loop = meshLoop(store, componentLogger('mesh-test')).run(controller.signal);
  const deadline = Date.now() + 5000;
  let done = false;
  while (!done && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    done = store.view(
      (tx) =>
        ingressNetworkOf(tx) !== undefined &&
        tx.nodes.list().every((n) => n.attachments.length === 1) &&
        tx.tasks.list().every((t) => t.networks.length === 1),
    );
  }
  controller.abort();
  await loop;
  assert.ok(done, 'every node and task got an ingress address');
  const addresses = store.view((tx) => [
    ...tx.nodes.list().flatMap((n) => n.attachments.flatMap((a) => a.addresses)),
    ...tx.tasks.list().flatMap((t) => t.networks.flatMap((a) => a.addresses)),
  ]);
  assert.equal(new Set(addresses).size, 6, addresses.join(', '));

  const state = store.view((tx) => meshStateFor(tx, 'a'));
  const addrOf = (id: string) =>
    store.view((tx) => (tx.tasks.get(id)?.networks[0]?.addresses[0] ?? '').split('/')[0] ?? '');
  assert.equal(state.ingress?.vni, 4096);
  assert.equal(state.underlayAddr, '10.231.0.11');
  assert.match(state.nodeAddress, /^10\.255\.\d+\.\d+\/16$/);
  // Remote: nodes b and c, and b's two tasks; not a's own task or a's own address.
  assert.equal(state.endpoints.length, 4);
  assert.ok(!state.endpoints.some((e) => e.host === '10.231.0.11'));
  assert.ok(state.endpoints.some((e) => e.ip === addrOf(tasks[1]?.id ?? '') && e.host === '10.231.0.12'));
  // Backends: the RUNNING tasks only.
  assert.equal(state.ports.length, 1);
  assert.equal(state.ports[0]?.publishedPort, 8080);
  assert.deepEqual(state.ports[0]?.backends, [addrOf(tasks[0]?.id ?? ''), addrOf(tasks[1]?.id ?? '')].sort());
});

test('planAddresses: no node address while no service publishes a port', () => {
  const network = defaultIngressNetwork();
  const plan = planAddresses(network, [service('plain')], [], [node('a'), node('b')]);
  assert.deepEqual(plan, { nodes: [], tasks: [] });
});
