import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Endpoint,
  EndpointSpec_ResolutionMode,
  Network,
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
  WAITING_FOR_NETWORKS,
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
    [network],
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
  const plan = planAddresses([network], [service('plain')], [], [node('a'), node('b')]);
  assert.deepEqual(plan, { networks: [], nodes: [], tasks: [], vips: [] });
});

// ------------------------------------------------------------------ user overlay networks

function userNetwork(id: string, subnet = '', vni = 0): Network {
  return Network.fromPartial({
    id,
    spec: { annotations: { name: id }, driver: 'overlay', ipam: { subnet, gateway: '' } },
    vni,
  });
}

/** A service attached to networks (ids), with its endpoint allocated (as the allocator does). */
function attached(id: string, networks: string[], mode = EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP) {
  const svc = service(id);
  if (svc.spec?.task)
    svc.spec.task.networks = networks.map((target) => ({ target, aliases: [`${id}-alias`] }));
  if (svc.spec) svc.spec.endpoint = { mode, ports: [] };
  svc.endpoint = Endpoint.fromPartial({ spec: { mode, ports: [] } });
  return svc;
}

test('planAddresses: user networks get a subnet and VNI; tasks, VIPs and nodes get addresses', () => {
  const ingress = defaultIngressNetwork();
  const front = userNetwork('front');
  const back = userNetwork('back', '10.20.0.0/24', 5000);
  const web = attached('web', ['front', 'back']);
  const db = attached('db', ['back'], EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR);
  const t1 = task(web, { nodeId: 'a', state: TaskState.TASK_STATE_NEW });
  const t2 = task(db, { nodeId: 'b', state: TaskState.TASK_STATE_NEW });
  const plan = planAddresses([front, ingress, back], [web, db], [t1, t2], [node('a'), node('b'), node('c')]);

  assert.equal(plan.networks.length, 1, 'only the network without subnet and VNI is allocated');
  const allocated = plan.networks[0];
  assert.equal(allocated?.id, 'front');
  assert.ok(allocated !== undefined && ![4096, 5000].includes(allocated.vni), `vni ${allocated?.vni}`);
  assert.match(allocated?.subnet ?? '', /^10\.\d+\.\d+\.0\/24$/);
  assert.notEqual(allocated?.subnet, '10.20.0.0/24');

  const taskWrites = plan.tasks.map((w) => `${w.id}@${w.networkId}`).sort();
  assert.deepEqual(taskWrites, [`${t1.id}@back`, `${t1.id}@front`, `${t2.id}@back`].sort());
  assert.deepEqual(plan.tasks.find((w) => w.id === t1.id)?.aliases, ['web-alias']);
  // VIP mode: one VIP per network; dnsrr: none.
  assert.deepEqual(plan.vips.map((v) => `${v.id}@${v.networkId}`).sort(), ['web@back', 'web@front']);
  // Nodes running a task of a network get an address on it; c runs none; no ingress (no ports).
  assert.deepEqual(plan.nodes.map((n) => `${n.id}@${n.networkId}`).sort(), ['a@back', 'a@front', 'b@back']);
  const onBack = [...plan.tasks, ...plan.vips, ...plan.nodes]
    .filter((w) => w.networkId === 'back')
    .map((w) => w.address);
  assert.equal(new Set(onBack).size, onBack.length, `distinct on back: ${onBack.join(', ')}`);
  for (const address of onBack) assert.match(address, /^10\.20\.0\.\d+\/24$/);
  assert.ok(!onBack.includes('10.20.0.1/24'), 'the gateway is never handed out');
});

test('planAddresses: VIPs and node addresses no longer needed are released', () => {
  const back = userNetwork('back', '10.20.0.0/24', 5000);
  const web = attached('web', [], EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR);
  web.endpoint = Endpoint.fromPartial({ virtualIps: [{ networkId: 'back', addr: '10.20.0.7/24' }] });
  const a = node('a');
  a.attachments = on('back', '10.20.0.2/24');
  const gone = node('b');
  gone.attachments = on('removed-network', '10.99.0.2/24');
  const plan = planAddresses([back], [web], [], [a, gone]);
  assert.deepEqual(plan.vips, [{ id: 'web', networkId: 'back', address: '' }]);
  assert.deepEqual(plan.nodes.map((n) => `${n.id}@${n.networkId}=${n.address}`).sort(), [
    'a@back=',
    'b@removed-network=',
  ]);
});

test('planAddresses: an address a stored object holds is never handed out again', () => {
  const back = userNetwork('back', '10.20.0.0/29', 5000);
  const web = attached('web', ['back']);
  web.endpoint = Endpoint.fromPartial({ virtualIps: [{ networkId: 'back', addr: '10.20.0.2/29' }] });
  const held = task(web, { state: TaskState.TASK_STATE_RUNNING, nodeId: 'a' });
  held.networks = on('back', '10.20.0.3/29');
  const a = node('a');
  a.attachments = on('back', '10.20.0.4/29');
  // An ended task still holds its address until it is deleted.
  const ended = task(web, { state: TaskState.TASK_STATE_FAILED, desired: TaskState.TASK_STATE_SHUTDOWN });
  ended.networks = on('back', '10.20.0.5/29');
  const fresh = task(web, { state: TaskState.TASK_STATE_NEW });
  const plan = planAddresses([back], [web], [held, ended, fresh], [a]);
  assert.deepEqual(plan.tasks, [
    { id: fresh.id, networkId: 'back', address: '10.20.0.6/29', aliases: ['web-alias'] },
  ]);
  // The /29 is now full: another task cannot get an address, and the plan says so loudly.
  const another = task(web, { state: TaskState.TASK_STATE_NEW });
  fresh.networks = on('back', '10.20.0.6/29');
  assert.throws(() => planAddresses([back], [web], [held, ended, fresh, another], [a]), /no free address/);
});

test('the network gate holds a task until it has an address on each of its networks', () => {
  const web = attached('web', ['front', 'back']);
  const none = { services: [], tasks: [], nodes: [] };
  const t = task(web, { state: TaskState.TASK_STATE_NEW });
  assert.equal(ingressGate.allocateTask(t, web, none), WAITING_FOR_NETWORKS);
  t.networks = on('front', '10.0.1.2/24');
  assert.equal(ingressGate.allocateTask(t, web, none), WAITING_FOR_NETWORKS);
  t.networks.push(...on('back', '10.0.2.2/24'));
  assert.equal(ingressGate.allocateTask(t, web, none), undefined);
  // Publishing a port adds the ingress network to what it waits for.
  web.endpoint = Endpoint.fromPartial({
    ports: [
      { targetPort: 80, publishedPort: 8080, publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS },
    ],
  });
  assert.equal(ingressGate.allocateTask(t, web, none), WAITING_FOR_INGRESS);
  t.networks.push(...on('ingress-id', '10.255.0.9/16'));
  assert.equal(ingressGate.allocateTask(t, web, none), undefined);
});

async function runMeshUntil(store: MemoryStore, done: () => boolean): Promise<boolean> {
  const controller = new AbortController();
  const loop = meshLoop(store, componentLogger('mesh-test')).run(controller.signal);
  // A generous overall limit; the loop normally converges in a few passes.
  const deadline = Date.now() + 30_000;
  let reached = done();
  while (!reached && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    reached = done();
  }
  controller.abort();
  await loop;
  return reached;
}

test('meshLoop on user networks: no address handed out twice across a leader change', async () => {
  const store = new MemoryStore();
  new LocalProposer(store.appliedIndex + 1).attach(store);
  const web = attached('web', ['front']);
  const nodes: Node[] = ['a', 'b'].map((id, i) => {
    const n = node(id);
    n.meta = undefined;
    if (n.status) n.status.addr = `10.231.0.${11 + i}`;
    return n;
  });
  const first = [task(web, { nodeId: 'a' }), task(web, { nodeId: 'b' })];
  await store.update((tx) => {
    const front = userNetwork('front');
    front.meta = undefined;
    tx.networks.create(front);
    web.meta = undefined;
    tx.services.create(web);
    for (const n of nodes) tx.nodes.create(n);
    for (const t of first) {
      t.meta = undefined;
      tx.tasks.create(t);
    }
  });
  const allAddressed = () =>
    store.view(
      (tx) =>
        tx.tasks.list().every((t) => t.networks.length === 1) &&
        tx.nodes.list().every((n) => n.attachments.length === 1) &&
        tx.services.get('web')?.endpoint?.virtualIps.length === 1 &&
        (tx.networks.get('front')?.vni ?? 0) > 0,
    );
  assert.ok(await runMeshUntil(store, allAddressed), 'the first leader addressed everything');
  const subnet = store.view((tx) => tx.networks.get('front')?.spec?.ipam?.subnet);
  assert.match(subnet ?? '', /\/24$/);

  // A new leader: a fresh loop (and a fresh Ipam rebuilt from the store), one task gone, more new.
  const second = [task(web, { nodeId: 'a' }), task(web, { nodeId: 'b' }), task(web, { nodeId: 'b' })];
  await store.update((tx) => {
    tx.tasks.delete(first[0]?.id ?? '');
    for (const t of second) {
      t.meta = undefined;
      tx.tasks.create(t);
    }
  });
  assert.ok(await runMeshUntil(store, allAddressed), 'the second leader addressed the new tasks');
  const holders = store.view((tx) => [
    ...tx.tasks.list().flatMap((t) => t.networks.flatMap((a) => a.addresses)),
    ...tx.nodes.list().flatMap((n) => n.attachments.flatMap((a) => a.addresses)),
    ...(tx.services.get('web')?.endpoint?.virtualIps.map((v) => v.addr) ?? []),
  ]);
  assert.equal(holders.length, 4 + 2 + 1);
  assert.equal(new Set(holders).size, holders.length, `distinct: ${holders.join(', ')}`);
  const deleted = first[0]?.networks[0]?.addresses[0];
  assert.ok(deleted === undefined || !holders.includes(deleted));

  // What node a programs: the network, b as a remote host with its task, web's VIP and backends.
  const state = store.view((tx) => meshStateFor(tx, 'a'));
  assert.equal(state.networks.length, 1);
  const net = state.networks[0];
  assert.equal(net?.network?.id, 'front');
  assert.equal(net?.services[0]?.name, 'web');
  assert.equal(
    net?.services[0]?.vip,
    store.view((tx) => tx.services.get('web')?.endpoint?.virtualIps[0]?.addr),
  );
  assert.deepEqual(net?.services[0]?.aliases, ['web-alias']);
  const running = store.view((tx) =>
    tx.tasks
      .list()
      .map((t) => (t.networks[0]?.addresses[0] ?? '').split('/')[0] ?? '')
      .sort(),
  );
  assert.deepEqual(net?.services[0]?.backends, running);
  assert.ok(
    net?.endpoints.every((e) => e.host === '10.231.0.12'),
    "remote endpoints are b's",
  );
  assert.equal(net?.endpoints.length, 1 + 3, "b's node address and its three tasks");
});
