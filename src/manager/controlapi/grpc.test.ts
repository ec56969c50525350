// The handlers served by a real gRPC server on a unix socket, called with the generated client:
// a service spec with every field set survives the round trip, errors keep their code, and the
// authorize hook runs before any logic.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { credentials, Server } from '@grpc/grpc-js';

import { ClusterError } from '../../common/errors';
import {
  ControlClient,
  ControlService,
  type CreateServiceResponse,
  type GetServiceResponse,
  type ListServicesResponse,
  type UpdateServiceResponse,
} from '../../gen/cluster/v1/control';
import { ServiceSpec } from '../../gen/cluster/v1/objects';
import { LocalProposer, MemoryStore } from '../../store';
import { createControlServer } from './server';
import { bindServer, fullServiceSpec, shutdownServer, silentLogger, unary } from './testing';

describe('Control over a unix socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'controlapi-'));
  const address = `unix://${join(dir, 'cluster.sock')}`;
  const store = new MemoryStore();
  new LocalProposer().attach(store);
  let allowed = true;
  const server = new Server();
  server.addService(
    ControlService,
    createControlServer({
      store,
      logger: silentLogger,
      authorize: () => {
        if (!allowed) throw new ClusterError('PERMISSION_DENIED', 'a manager certificate is required');
      },
    }),
  );
  let client: ControlClient | undefined;
  const control = (): ControlClient => {
    assert.ok(client);
    return client;
  };

  before(async () => {
    await bindServer(server, address);
    client = new ControlClient(address, credentials.createInsecure());
  });

  after(async () => {
    client?.close();
    await shutdownServer(server);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a ServiceSpec with every field set round-trips', async () => {
    const { network } = await unary<{ network?: { id: string } }>((cb) =>
      control().createNetwork(
        {
          spec: {
            annotations: { name: 'backend', labels: {} },
            driver: '',
            ipam: undefined,
            attachable: false,
            ingress: false,
          },
        },
        cb,
      ),
    );
    assert.ok(network);
    const spec = fullServiceSpec('web', 'backend');
    const created = await unary<CreateServiceResponse>((cb) => control().createService({ spec }, cb));
    const id = created.service?.id ?? '';
    const { service } = await unary<GetServiceResponse>((cb) =>
      control().getService({ serviceId: 'web' }, cb),
    );
    assert.equal(service?.id, id);
    // Everything comes back as sent, except the network name, which is stored as its id.
    const expected = ServiceSpec.fromPartial(spec);
    const attachment = expected.task?.networks[0];
    assert.ok(attachment);
    attachment.target = network.id;
    assert.deepEqual(service?.spec, expected);
    assert.ok((service?.meta?.version ?? 0) > 0);
    assert.ok(service?.meta?.createdAt instanceof Date);

    const { services } = await unary<ListServicesResponse>((cb) =>
      control().listServices({ filters: { name: 'we' } }, cb),
    );
    assert.deepEqual(
      services.map((s) => s.id),
      [id],
    );
  });

  test('errors keep their code and message across the wire', async () => {
    const spec = fullServiceSpec('bad', 'backend');
    if (spec.task?.container) spec.task.container.image = 'Nginx';
    await assert.rejects(
      unary<CreateServiceResponse>((cb) => control().createService({ spec }, cb)),
      (e: unknown) =>
        e instanceof ClusterError && e.code === 'INVALID_ARGUMENT' && /must be lowercase/.test(e.message),
    );
    await assert.rejects(
      unary<GetServiceResponse>((cb) => control().getService({ serviceId: 'nope' }, cb)),
      (e: unknown) => e instanceof ClusterError && e.code === 'NOT_FOUND',
    );
    const web = (await unary<GetServiceResponse>((cb) => control().getService({ serviceId: 'web' }, cb)))
      .service;
    await assert.rejects(
      unary<UpdateServiceResponse>((cb) =>
        control().updateService(
          { serviceId: 'web', version: (web?.meta?.version ?? 0) - 1, spec: web?.spec, rollback: '' },
          cb,
        ),
      ),
      (e: unknown) => e instanceof ClusterError && e.code === 'CONFLICT',
    );
  });

  test('the authorize hook refuses before anything runs', async () => {
    allowed = false;
    const applied = store.appliedIndex;
    try {
      await assert.rejects(
        unary<CreateServiceResponse>((cb) =>
          control().createService({ spec: fullServiceSpec('denied', 'backend') }, cb),
        ),
        (e: unknown) => e instanceof ClusterError && e.code === 'PERMISSION_DENIED',
      );
      assert.equal(store.appliedIndex, applied);
    } finally {
      allowed = true;
    }
  });
});
