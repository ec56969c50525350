import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  ChannelCredentials,
  Metadata,
  Server,
  status,
  type sendUnaryData,
  type ServerUnaryCall,
} from '@grpc/grpc-js';
import {
  ControlClient,
  ControlService,
  type GetClusterRequest,
  type GetClusterResponse,
} from '../../gen/cluster/v1/control';
import { ClusterError } from '../../common/errors';
import {
  caDigest,
  clientCredentials,
  createRootCA,
  generateNodeKey,
  makeJoinToken,
  nodeIdentityFromCert,
  nodeIdentityFromPeer,
  parseJoinToken,
  roleForToken,
  serverCredentials,
  signNodeCertificate,
  verifyCaAgainstToken,
  type NodeIdentity,
  type NodeTls,
  type RootCA,
} from './index';

async function nodeTls(ca: RootCA, identity: NodeIdentity): Promise<NodeTls> {
  const key = await generateNodeKey();
  const certPem = await signNodeCertificate(ca, key.csrPem, identity);
  return { caCertPem: ca.certPem, certPem, keyPem: key.keyPem };
}

test('a node certificate carries the id, role and cluster the CA chose', async () => {
  const ca = await createRootCA('c1');
  const tls = await nodeTls(ca, { nodeId: 'node-a', role: 'worker', clusterId: 'c1' });
  assert.deepEqual(nodeIdentityFromCert(tls.certPem), { nodeId: 'node-a', role: 'worker', clusterId: 'c1' });
});

test('a certificate request with a bad signature or garbage is refused', async () => {
  const ca = await createRootCA('c1');
  await assert.rejects(
    signNodeCertificate(ca, 'not a csr', { nodeId: 'n', role: 'worker', clusterId: 'c1' }),
    (e: unknown) => e instanceof ClusterError && e.code === 'INVALID_ARGUMENT',
  );
  const { csrPem } = await generateNodeKey();
  await assert.rejects(
    signNodeCertificate(ca, csrPem, { nodeId: 'bad id with spaces', role: 'worker', clusterId: 'c1' }),
    /node id must be/,
  );
});

test('join tokens pin the CA digest and carry a secret', async () => {
  const ca = await createRootCA('c1');
  const token = makeJoinToken(ca.certPem);
  const parsed = parseJoinToken(token);
  assert.equal(parsed.caDigest, caDigest(ca.certPem));
  assert.equal(parsed.secret.length, 25);
  assert.notEqual(makeJoinToken(ca.certPem), token, 'each token has its own secret');
  verifyCaAgainstToken(ca.certPem, token);
  const other = await createRootCA('c1');
  assert.throws(() => verifyCaAgainstToken(other.certPem, token), /does not match the join token/);
});

test('a malformed token is refused with the expected shape in the message', () => {
  assert.throws(() => parseJoinToken('SWMTKN-1-abc'), /expected 'SWMTKN-1-/);
  assert.throws(
    () => parseJoinToken(''),
    (e: unknown) => e instanceof ClusterError && e.exitCode === 1,
  );
});

test('tokens grant their role; a rotated token no longer works', async () => {
  const ca = await createRootCA('c1');
  const tokens = { worker: makeJoinToken(ca.certPem), manager: makeJoinToken(ca.certPem) };
  assert.equal(roleForToken(tokens.worker, tokens), 'worker');
  assert.equal(roleForToken(tokens.manager, tokens), 'manager');
  const rotated = { ...tokens, worker: makeJoinToken(ca.certPem) };
  assert.throws(() => roleForToken(tokens.worker, rotated), /rotated/);
});

// A real gRPC server over mutual TLS on loopback: the handler learns who called from the
// verified client certificate.
async function startServer(tls: NodeTls): Promise<{ port: number; server: Server; callers: NodeIdentity[] }> {
  const server = new Server();
  const callers: NodeIdentity[] = [];
  server.addService(ControlService, {
    getCluster: (
      call: ServerUnaryCall<GetClusterRequest, GetClusterResponse>,
      callback: sendUnaryData<GetClusterResponse>,
    ) => {
      try {
        callers.push(nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate));
        callback(null, {});
      } catch (e) {
        callback({ code: status.UNAUTHENTICATED, details: String(e) });
      }
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials(tls), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { port, server, callers };
}

function callGetCluster(port: number, creds: ChannelCredentials): Promise<void> {
  const client = new ControlClient(`127.0.0.1:${port}`, creds);
  return new Promise<void>((resolve, reject) => {
    client.getCluster({}, new Metadata(), { deadline: Date.now() + 5000 }, (e) => {
      client.close();
      if (e) reject(e);
      else resolve();
    });
  });
}

test('mutual TLS: a node of the cluster is let in and identified; strangers are not', async (t) => {
  const ca = await createRootCA('c1');
  const manager = await nodeTls(ca, { nodeId: 'm1', role: 'manager', clusterId: 'c1' });
  const worker = await nodeTls(ca, { nodeId: 'w1', role: 'worker', clusterId: 'c1' });
  const { port, server, callers } = await startServer(manager);
  t.after(() => server.forceShutdown());

  await callGetCluster(port, clientCredentials(worker, 'manager'));
  assert.deepEqual(callers, [{ nodeId: 'w1', role: 'worker', clusterId: 'c1' }]);

  // A certificate from another CA is refused by the handshake.
  const otherCa = await createRootCA('c2');
  const stranger = await nodeTls(otherCa, { nodeId: 'x1', role: 'manager', clusterId: 'c2' });
  await assert.rejects(callGetCluster(port, clientCredentials({ ...stranger, caCertPem: ca.certPem })));
  // No client certificate at all is refused too.
  await assert.rejects(callGetCluster(port, ChannelCredentials.createSsl(Buffer.from(ca.certPem))));
  assert.equal(callers.length, 1);
});

test('a client expecting a manager refuses a worker posing as one', async (t) => {
  const ca = await createRootCA('c1');
  const worker = await nodeTls(ca, { nodeId: 'w1', role: 'worker', clusterId: 'c1' });
  const other = await nodeTls(ca, { nodeId: 'w2', role: 'worker', clusterId: 'c1' });
  const { port, server, callers } = await startServer(worker);
  t.after(() => server.forceShutdown());
  await assert.rejects(callGetCluster(port, clientCredentials(other, 'manager')));
  assert.equal(callers.length, 0);
});
