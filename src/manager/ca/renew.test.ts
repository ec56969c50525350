// Role changes and certificate standing: the pure rules, and NodeCertificates.Renew over a real
// gRPC server on 127.0.0.1 (identities injected by a test hook instead of client certificates).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  NodeCertificatesClient,
  NodeCertificatesService,
  type RenewNodeCertificateResponse,
} from '../../gen/cluster/v1/ca';
import { NodeRole, type Node as ClusterNode } from '../../gen/cluster/v1/objects';
import { componentLogger } from '../../common/logger';
import { localStores, makeCluster, makeNode } from '../../store/testing';
import { createRootCA, generateNodeKey, nodeIdentityFromCert, type NodeRoleName } from './index';
import { createNodeCertificatesServer, roleChangeFor, standingRefusal } from './renew';

const logger = componentLogger('renew-test');
logger.level = 'silent';

function node(id: string, role: NodeRole, desiredRole: NodeRole): ClusterNode {
  const n = makeNode(id, { id, role });
  n.spec = {
    ...n.spec,
    annotations: n.spec?.annotations ?? { name: id, labels: {} },
    desiredRole,
    availability: 0,
  };
  return n;
}
const M = NodeRole.NODE_ROLE_MANAGER;
const W = NodeRole.NODE_ROLE_WORKER;

test('roleChangeFor: promotion at once, demotion only once recorded as a worker', () => {
  assert.equal(roleChangeFor(node('a', W, M), 'worker'), 'manager');
  assert.equal(roleChangeFor(node('a', W, W), 'worker'), undefined);
  assert.equal(roleChangeFor(node('a', M, M), 'manager'), undefined);
  assert.equal(roleChangeFor(node('a', M, W), 'manager'), undefined, 'still a Raft member: not yet');
  assert.equal(roleChangeFor(node('a', W, W), 'manager'), 'worker');
  assert.equal(
    roleChangeFor(node('a', W, M), 'manager'),
    undefined,
    'a join in progress keeps its certificate',
  );
});

test('standing: removed nodes are refused always, demoted managers where a manager is needed', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  assert.ok(store);
  const cluster = makeCluster('default', { id: 'c' });
  cluster.removedNodes = ['gone'];
  await store.update((tx) => {
    tx.clusters.create(cluster);
    tx.nodes.create(node('demoted', W, W));
    tx.nodes.create(node('leaving', M, W));
    tx.nodes.create(node('mgr', M, M));
  });
  const who = (nodeId: string, role: NodeRoleName) => ({ nodeId, role, clusterId: 'c' });
  assert.match(standingRefusal(store, who('gone', 'worker'), 'any') ?? '', /was removed/);
  assert.match(standingRefusal(store, who('gone', 'manager'), 'manager') ?? '', /was removed/);
  assert.match(standingRefusal(store, who('demoted', 'manager'), 'manager') ?? '', /was demoted/);
  assert.equal(standingRefusal(store, who('demoted', 'manager'), 'any'), undefined);
  assert.equal(
    standingRefusal(store, who('leaving', 'manager'), 'manager'),
    undefined,
    'until Raft let it go',
  );
  assert.equal(standingRefusal(store, who('mgr', 'manager'), 'manager'), undefined);
  assert.match(standingRefusal(store, who('mgr', 'worker'), 'manager') ?? '', /is a worker/);
  assert.equal(
    standingRefusal(store, who('unknown-yet', 'manager'), 'manager'),
    undefined,
    'a lagging store refuses nothing',
  );
});

async function harness() {
  const { stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  const ca = await createRootCA('c');
  const cluster = makeCluster('default', { id: 'c' });
  cluster.rootCaCert = ca.certPem;
  cluster.rootCaKey = ca.keyPem;
  await store.update((tx) => {
    tx.clusters.create(cluster);
    tx.nodes.create(node('w', W, W));
  });
  const leading = { value: true };
  const server = new Server();
  server.addService(
    NodeCertificatesService,
    createNodeCertificatesServer({
      store,
      logger,
      isLeader: () => leading.value,
      leaderAddress: () => '10.9.9.9:4242',
      identify: (call) => {
        const [id, role] = String(call.metadata.get('x-node')[0] ?? '').split('/');
        return { nodeId: id ?? '', role: role === 'manager' ? 'manager' : 'worker', clusterId: 'c' };
      },
    }),
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new NodeCertificatesClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const renew = async (who: string, waitMs: number) => {
    const key = await generateNodeKey();
    const md = new Metadata();
    md.set('x-node', who);
    return new Promise<RenewNodeCertificateResponse>((resolve, reject) =>
      client.renew({ csr: key.csrPem, waitMs }, md, (e, r) =>
        e || !r ? reject(e ?? new Error('empty')) : resolve(r),
      ),
    );
  };
  return {
    store,
    leading,
    renew,
    close: () => {
      client.close();
      server.forceShutdown();
    },
  };
}

test('Renew: nothing changed within the wait → the same role and no certificate', async () => {
  const h = await harness();
  try {
    const r = await h.renew('w/worker', 50);
    assert.equal(r.role, 'worker');
    assert.equal(r.certificate, '');
  } finally {
    h.close();
  }
});

test('Renew: a promotion while the call waits is answered with a manager certificate for that node', async () => {
  const h = await harness();
  try {
    const pending = h.renew('w/worker', 30_000);
    await new Promise((resolve) => setTimeout(resolve, 100));
    await h.store.update((tx) => {
      const n = tx.nodes.get('w');
      if (!n?.spec) throw new Error('no node');
      tx.nodes.update({ ...n, spec: { ...n.spec, desiredRole: M } });
    });
    const r = await pending;
    assert.equal(r.role, 'manager');
    assert.deepEqual(nodeIdentityFromCert(r.certificate), { nodeId: 'w', role: 'manager', clusterId: 'c' });
  } finally {
    h.close();
  }
});

test('Renew: refused for a removed node and on a follower', async () => {
  const h = await harness();
  try {
    await h.store.update((tx) => {
      const c = tx.clusters.list()[0];
      if (!c) throw new Error('no cluster');
      tx.clusters.update({ ...c, removedNodes: ['w'] });
    });
    await assert.rejects(
      h.renew('w/worker', 50),
      (e: ServiceError) => e.code === GrpcStatus.PERMISSION_DENIED && /removed/.test(e.details),
    );
    h.leading.value = false;
    await assert.rejects(
      h.renew('x/worker', 50),
      (e: ServiceError) => e.code === GrpcStatus.UNAVAILABLE && /10\.9\.9\.9/.test(e.details),
    );
  } finally {
    h.close();
  }
});
