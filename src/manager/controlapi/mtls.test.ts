// The control API on a mutual-TLS port: a manager's certificate is let in, a worker's is
// refused before anything runs, and so is a client without a certificate.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { ChannelCredentials, Server } from '@grpc/grpc-js';

import { ClusterError, type ErrorCode } from '../../common/errors';
import {
  ControlClient,
  ControlService,
  type CreateServiceResponse,
  type ListNodesResponse,
} from '../../gen/cluster/v1/control';
import { LocalProposer, MemoryStore } from '../../store';
import {
  clientCredentials,
  createRootCA,
  generateNodeKey,
  serverCredentials,
  signNodeCertificate,
  type NodeIdentity,
  type NodeTls,
  type RootCA,
} from '../ca';
import { createControlServer, requireManagerCertificate } from './server';
import { shutdownServer, silentLogger, simpleSpec, unary } from './testing';

async function nodeTls(ca: RootCA, identity: NodeIdentity): Promise<NodeTls> {
  const key = await generateNodeKey();
  const certPem = await signNodeCertificate(ca, key.csrPem, identity);
  return { caCertPem: ca.certPem, certPem, keyPem: key.keyPem };
}

function isCode(code: ErrorCode) {
  return (e: unknown) => e instanceof ClusterError && e.code === code;
}

describe('Control over mutual TLS', () => {
  const store = new MemoryStore();
  new LocalProposer().attach(store);
  const server = new Server();
  server.addService(
    ControlService,
    createControlServer({ store, logger: silentLogger, authorize: requireManagerCertificate }),
  );
  const clients: ControlClient[] = [];
  let port = 0;
  let ca: RootCA | undefined;
  let managerTls: NodeTls | undefined;

  const client = (creds: ChannelCredentials): ControlClient => {
    const c = new ControlClient(`127.0.0.1:${port}`, creds);
    clients.push(c);
    return c;
  };

  before(async () => {
    ca = await createRootCA('c1');
    managerTls = await nodeTls(ca, { nodeId: 'm1', role: 'manager', clusterId: 'c1' });
    const tls = managerTls;
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', serverCredentials(tls), (e, p) => (e ? reject(e) : resolve(p))),
    );
  });

  after(async () => {
    for (const c of clients) c.close();
    await shutdownServer(server);
  });

  test('a manager certificate may call; a worker certificate is PERMISSION_DENIED and writes nothing', async () => {
    assert.ok(ca && managerTls);
    const manager = client(
      clientCredentials(await nodeTls(ca, { nodeId: 'm2', role: 'manager', clusterId: 'c1' })),
    );
    const { service } = await unary<CreateServiceResponse>((cb) =>
      manager.createService({ spec: simpleSpec('web') }, cb),
    );
    assert.ok(service);

    const worker = client(
      clientCredentials(await nodeTls(ca, { nodeId: 'w1', role: 'worker', clusterId: 'c1' })),
    );
    const applied = store.appliedIndex;
    await assert.rejects(
      unary<CreateServiceResponse>((cb) => worker.createService({ spec: simpleSpec('evil') }, cb)),
      (e: unknown) =>
        isCode('PERMISSION_DENIED')(e) && /w1 holds a worker certificate/.test((e as Error).message),
    );
    await assert.rejects(
      unary<ListNodesResponse>((cb) => worker.listNodes({ filters: {} }, cb)),
      isCode('PERMISSION_DENIED'),
    );
    assert.equal(store.appliedIndex, applied);
  });

  test('a client without a certificate does not get through', async () => {
    assert.ok(ca);
    // The server's certificate is accepted as is, so only the missing client certificate can fail.
    const anonymous = client(
      ChannelCredentials.createSsl(Buffer.from(ca.certPem), null, null, {
        checkServerIdentity: () => undefined,
      }),
    );
    await assert.rejects(unary<ListNodesResponse>((cb) => anonymous.listNodes({ filters: {} }, cb)));
  });
});
