// Networks, tasks and the cluster object through the control API.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClusterError, type ErrorCode } from '../../common/errors';
import { Cluster, NetworkSpec, TaskState } from '../../gen/cluster/v1/objects';
import { createRootCA, makeJoinToken, roleForToken } from '../ca';
import { newId } from '../../store';
import {
  fullServiceSpec,
  newTestApi,
  seed,
  simpleSpec,
  storeBytes,
  testNode,
  testTask,
  type TestApi,
} from './testing';
import { parseCidr, subnetsOverlap, ipInSubnet } from './subnet';

function isCode(code: ErrorCode, text?: RegExp) {
  return (e: unknown) =>
    e instanceof ClusterError && e.code === code && (text === undefined || text.test(e.message));
}

function netSpec(name: string, subnet = '', gateway = '', extra: Partial<NetworkSpec> = {}): NetworkSpec {
  return NetworkSpec.fromPartial({ annotations: { name, labels: {} }, ipam: { subnet, gateway }, ...extra });
}

async function createNet(t: TestApi, spec: NetworkSpec) {
  const { network } = await t.api.createNetwork({ spec });
  assert.ok(network);
  return network;
}

describe('subnet arithmetic', () => {
  test('parses IPv4 and IPv6, refuses host bits, detects overlap and containment', () => {
    const a = parseCidr('s', '10.0.0.0/16');
    const b = parseCidr('s', '10.0.5.0/24');
    const c = parseCidr('s', '10.1.0.0/24');
    assert.ok(subnetsOverlap(a, b) && subnetsOverlap(b, a));
    assert.ok(!subnetsOverlap(a, c));
    assert.ok(!subnetsOverlap(a, parseCidr('s', 'fd00::/64')));
    assert.ok(subnetsOverlap(parseCidr('s', 'fd00::/64'), parseCidr('s', 'fd00:0:0:0:1::/80')));
    assert.ok(ipInSubnet('10.0.255.254', a));
    assert.ok(!ipInSubnet('10.0.255.255', a), 'broadcast');
    assert.ok(!ipInSubnet('10.0.0.0', a), 'network address');
    assert.ok(!ipInSubnet('10.1.0.1', a));
    assert.ok(ipInSubnet('::ffff:10.0.0.1', parseCidr('s', '::ffff:10.0.0.0/120')));
    assert.throws(
      () => parseCidr('ipam.subnet', '10.0.0.1/24'),
      /host bits set: it should be 10\.0\.0\.0\/24/,
    );
    assert.throws(() => parseCidr('ipam.subnet', '10.0.0.0/33'), /prefix length/);
    assert.throws(() => parseCidr('ipam.subnet', '10.0.0.0'), /CIDR/);
    assert.throws(() => parseCidr('ipam.subnet', 'ten/8'), /IP address/);
  });
});

describe('networks', () => {
  test('create: overlay by default, subnet and gateway kept, subnet left empty for the allocator', async () => {
    const t = newTestApi();
    const backend = await createNet(t, netSpec('backend', '10.10.0.0/24', '10.10.0.1', { attachable: true }));
    assert.equal(backend.spec?.driver, 'overlay');
    assert.deepEqual(backend.spec?.ipam, { subnet: '10.10.0.0/24', gateway: '10.10.0.1' });
    assert.equal(backend.spec?.attachable, true);
    const auto = await createNet(t, netSpec('auto'));
    assert.equal(auto.spec?.ipam?.subnet, '');
  });

  test('bad specs, taken names and overlapping subnets are refused and write nothing', async () => {
    const t = newTestApi();
    await createNet(t, netSpec('backend', '10.10.0.0/16'));
    const before = storeBytes(t.store);
    const refused: [NetworkSpec, ErrorCode, RegExp][] = [
      [netSpec('backend', '10.20.0.0/24'), 'ALREADY_EXISTS', /network 'backend' already exists/],
      [
        netSpec('front', '10.10.3.0/24'),
        'INVALID_ARGUMENT',
        /ipam\.subnet: 10\.10\.3\.0\/24 overlaps subnet 10\.10\.0\.0\/16 of network 'backend'/,
      ],
      [netSpec('front', '10.0.0.0/8'), 'INVALID_ARGUMENT', /overlaps/],
      [
        netSpec('front', '10.20.0.0/24', '10.21.0.1'),
        'INVALID_ARGUMENT',
        /ipam\.gateway: gateway 10\.21\.0\.1 is outside subnet/,
      ],
      [netSpec('front', '10.20.0.0/24', '10.20.0.255'), 'INVALID_ARGUMENT', /outside subnet/],
      [netSpec('front', '10.20.0.0/24', 'gw'), 'INVALID_ARGUMENT', /not an IP address/],
      [netSpec('front', '', '10.20.0.1'), 'INVALID_ARGUMENT', /a gateway needs a subnet/],
      [netSpec('front', '10.20.0.7/24'), 'INVALID_ARGUMENT', /host bits/],
      [netSpec('-front'), 'INVALID_ARGUMENT', /name/],
      [netSpec(''), 'INVALID_ARGUMENT', /name: a name is required/],
      [
        netSpec('front', '', '', { driver: 'macvlan' }),
        'INVALID_ARGUMENT',
        /driver 'macvlan' is not supported/,
      ],
    ];
    for (const [spec, code, text] of refused) {
      await assert.rejects(t.api.createNetwork({ spec }), isCode(code, text), spec.annotations?.name);
    }
    assert.deepEqual(storeBytes(t.store), before);
    await createNet(t, netSpec('front', '10.11.0.0/16'));
  });

  test('only one ingress network, and it cannot be removed', async () => {
    const t = newTestApi();
    await createNet(t, netSpec('ingress', '10.0.0.0/24', '', { ingress: true }));
    await assert.rejects(
      t.api.createNetwork({ spec: netSpec('ingress2', '', '', { ingress: true }) }),
      isCode('ALREADY_EXISTS', /only one/),
    );
    await assert.rejects(
      t.api.removeNetwork({ networkId: 'ingress' }),
      isCode('FAILED_PRECONDITION', /ingress network/),
    );
  });

  test('a network in use by services cannot be removed: the message names them', async () => {
    const t = newTestApi();
    const backend = await createNet(t, netSpec('backend'));
    await t.api.createService({ spec: fullServiceSpec('web', 'backend') });
    await t.api.createService({ spec: withoutPorts(fullServiceSpec('api', backend.id)) });
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.removeNetwork({ networkId: 'backend' }),
      isCode('FAILED_PRECONDITION', /network backend is in use by services ('web', 'api'|'api', 'web')/),
    );
    assert.deepEqual(storeBytes(t.store), before);
    await t.api.removeService({ serviceId: 'web' });
    await t.api.removeService({ serviceId: 'api' });
    await t.api.removeNetwork({ networkId: backend.id.slice(0, 10) });
    await assert.rejects(t.api.getNetwork({ networkId: 'backend' }), isCode('NOT_FOUND'));
  });

  test('get by name or prefix; list filters', async () => {
    const t = newTestApi();
    const a = await createNet(
      t,
      NetworkSpec.fromPartial({ annotations: { name: 'front', labels: { tier: 'web' } } }),
    );
    await createNet(t, netSpec('frontier'));
    await createNet(t, netSpec('back'));
    assert.equal((await t.api.getNetwork({ networkId: 'front' })).network?.id, a.id);
    assert.equal((await t.api.getNetwork({ networkId: a.id.slice(0, 8) })).network?.id, a.id);
    const names = async (filters: Record<string, string>) =>
      (await t.api.listNetworks({ filters })).networks.map((n) => n.spec?.annotations?.name).sort();
    assert.deepEqual(await names({ name: 'front' }), ['front', 'frontier']);
    assert.deepEqual(await names({ label: 'tier=web' }), ['front']);
    assert.deepEqual(await names({ driver: 'overlay' }), ['back', 'front', 'frontier']);
    assert.deepEqual(await names({ id: a.id }), ['front']);
    await assert.rejects(
      t.api.listNetworks({ filters: { scope: 'swarm' } }),
      isCode('INVALID_ARGUMENT', /invalid filter 'scope'/),
    );
  });
});

function withoutPorts(spec: ReturnType<typeof fullServiceSpec>) {
  if (spec.endpoint) spec.endpoint.ports = [];
  return spec;
}

describe('listTasks', () => {
  test("filters: service by name or id, node, desired state, id, name as 'svc.slot'", async () => {
    const t = newTestApi();
    const web = (await t.api.createService({ spec: simpleSpec('web', { replicas: 2 }) })).service;
    const agent = (await t.api.createService({ spec: simpleSpec('agent', { global: true }) })).service;
    assert.ok(web && agent);
    const n1 = testNode('node-1');
    const n2 = testNode('node-2');
    const w1 = testTask(web.id, 1, { nodeId: n1.id });
    const w2 = testTask(web.id, 2, { nodeId: n2.id });
    const w1old = testTask(web.id, 1, { nodeId: n2.id, desiredState: TaskState.TASK_STATE_SHUTDOWN });
    const a1 = testTask(agent.id, 0, { nodeId: n1.id });
    await seed(t.store, { nodes: [n1, n2], tasks: [w1, w2, w1old, a1] });
    const ids = async (filters: Record<string, string>) =>
      (await t.api.listTasks({ filters })).tasks.map((task) => task.id).sort();
    const sorted = (...xs: string[]) => xs.sort();
    assert.deepEqual(await ids({}), sorted(w1.id, w2.id, w1old.id, a1.id));
    assert.deepEqual(await ids({ service: 'web' }), sorted(w1.id, w2.id, w1old.id));
    assert.deepEqual(await ids({ service: agent.id }), [a1.id]);
    assert.deepEqual(await ids({ node: 'node-1' }), sorted(w1.id, a1.id));
    assert.deepEqual(await ids({ service: 'web', 'desired-state': 'running' }), sorted(w1.id, w2.id));
    assert.deepEqual(await ids({ 'desired-state': 'shutdown' }), [w1old.id]);
    assert.deepEqual(await ids({ 'desired-state': 'accepted' }), []);
    assert.deepEqual(await ids({ name: 'web.1' }), sorted(w1.id, w1old.id));
    assert.deepEqual(await ids({ name: `agent.${n1.id}` }), [a1.id]);
    assert.deepEqual(await ids({ id: w2.id.slice(0, 10) }), [w2.id]);
    await assert.rejects(
      t.api.listTasks({ filters: { service: 'nope' } }),
      isCode('NOT_FOUND', /service 'nope'/),
    );
    await assert.rejects(
      t.api.listTasks({ filters: { 'desired-state': 'sleeping' } }),
      isCode('INVALID_ARGUMENT'),
    );
  });
});

describe('cluster', () => {
  async function withCluster(): Promise<{ t: TestApi; cluster: Cluster }> {
    const t = newTestApi();
    const id = newId();
    const ca = await createRootCA(id);
    const cluster = Cluster.fromPartial({
      id,
      spec: { annotations: { name: 'default' }, raft: { tickMs: 100, electionTicks: 10, heartbeatTicks: 1 } },
      rootCaCert: ca.certPem,
      rootCaKey: ca.keyPem,
      joinTokens: { worker: makeJoinToken(ca.certPem), manager: makeJoinToken(ca.certPem) },
    });
    await seed(t.store, { clusters: [cluster] });
    return { t, cluster };
  }

  test('get never returns the CA key', async () => {
    const { t, cluster } = await withCluster();
    const got = (await t.api.getCluster({})).cluster;
    assert.equal(got?.rootCaKey, '');
    assert.equal(got?.rootCaCert, cluster.rootCaCert);
    assert.deepEqual(got?.joinTokens, cluster.joinTokens);
    assert.match(t.store.view((tx) => tx.clusters.get(cluster.id)?.rootCaKey) ?? '', /PRIVATE KEY/);
  });

  test('rotating a token invalidates the old one; the other token still works', async () => {
    const { t, cluster } = await withCluster();
    const old = cluster.joinTokens ?? { worker: '', manager: '' };
    const version = (await t.api.getCluster({})).cluster?.meta?.version ?? 0;
    const { cluster: updated } = await t.api.updateCluster({
      version,
      spec: cluster.spec,
      rotateWorkerToken: true,
      rotateManagerToken: false,
    });
    assert.equal(updated?.rootCaKey, '');
    const tokens = updated?.joinTokens ?? { worker: '', manager: '' };
    assert.notEqual(tokens.worker, old.worker);
    assert.equal(tokens.manager, old.manager);
    assert.throws(() => roleForToken(old.worker, tokens), isCode('PERMISSION_DENIED'));
    assert.equal(roleForToken(tokens.worker, tokens), 'worker');
    assert.equal(roleForToken(old.manager, tokens), 'manager');
    // The stored key survived the update (the response had it blanked).
    assert.match(t.store.view((tx) => tx.clusters.get(cluster.id)?.rootCaKey) ?? '', /PRIVATE KEY/);

    await assert.rejects(
      t.api.updateCluster({
        version: updated?.meta?.version ?? 0,
        spec: undefined,
        rotateWorkerToken: false,
        rotateManagerToken: true,
      }),
      isCode('INVALID_ARGUMENT', /spec/),
    );
    const rotated = (
      await t.api.updateCluster({
        version: updated?.meta?.version ?? 0,
        spec: cluster.spec,
        rotateWorkerToken: false,
        rotateManagerToken: true,
      })
    ).cluster;
    assert.throws(
      () => roleForToken(old.manager, rotated?.joinTokens ?? tokens),
      isCode('PERMISSION_DENIED'),
    );
  });

  test('stale versions, renames and bad raft settings are refused and write nothing', async () => {
    const { t, cluster } = await withCluster();
    const version =
      cluster.meta?.version ?? t.store.view((tx) => tx.clusters.get(cluster.id)?.meta?.version ?? 0);
    await t.api.updateCluster({
      version,
      spec: cluster.spec,
      rotateWorkerToken: false,
      rotateManagerToken: false,
    });
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.updateCluster({
        version,
        spec: cluster.spec,
        rotateWorkerToken: true,
        rotateManagerToken: false,
      }),
      isCode('CONFLICT'),
    );
    const current = (await t.api.getCluster({})).cluster?.meta?.version ?? 0;
    await assert.rejects(
      t.api.updateCluster({
        version: current,
        spec: {
          ...cluster.spec,
          annotations: { name: 'other', labels: {} },
          raft: undefined,
          dispatcher: undefined,
        },
        rotateWorkerToken: false,
        rotateManagerToken: false,
      }),
      isCode('INVALID_ARGUMENT', /cannot be changed/),
    );
    await assert.rejects(
      t.api.updateCluster({
        version: current,
        spec: {
          annotations: undefined,
          raft: { tickMs: 100, electionTicks: 1, heartbeatTicks: 1, snapshotInterval: 0 },
          dispatcher: undefined,
        },
        rotateWorkerToken: false,
        rotateManagerToken: false,
      }),
      isCode('INVALID_ARGUMENT', /raft\.election_ticks/),
    );
    await assert.rejects(
      t.api.updateCluster({
        version: current,
        spec: {
          annotations: undefined,
          raft: undefined,
          dispatcher: { heartbeatPeriod: { seconds: 0, nanos: 0 } },
        },
        rotateWorkerToken: false,
        rotateManagerToken: false,
      }),
      isCode('INVALID_ARGUMENT', /heartbeat_period/),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('no cluster yet is a precondition failure', async () => {
    const t = newTestApi();
    await assert.rejects(t.api.getCluster({}), isCode('FAILED_PRECONDITION', /cluster init/));
  });
});
