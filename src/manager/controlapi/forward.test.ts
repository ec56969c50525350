// Forwarding between two real gRPC servers on 127.0.0.1: a follower sends each call to the
// leader's Control service and relays the answer; without a known leader it says retry.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, test } from 'node:test';

import { credentials, Metadata, Server } from '@grpc/grpc-js';

import { ClusterError, type ErrorCode } from '../../common/errors';
import {
  ControlClient,
  ControlService,
  type CreateServiceResponse,
  type GetServiceResponse,
  type ListNodesResponse,
  type ListServicesResponse,
} from '../../gen/cluster/v1/control';
import { LocalProposer, MemoryStore } from '../../store';
import { forwardingControl, type LeaderRoute } from './forward';
import { createControlServer } from './server';
import { bindServer, shutdownServer, silentLogger, simpleSpec, unary } from './testing';

function isCode(code: ErrorCode, text?: RegExp) {
  return (e: unknown) =>
    e instanceof ClusterError && e.code === code && (text === undefined || text.test(e.message));
}

function newStore(): MemoryStore {
  const store = new MemoryStore();
  new LocalProposer().attach(store);
  return store;
}

describe('forwardingControl', () => {
  const leaderStore = newStore();
  const followerStore = newStore();
  const leaderServer = new Server();
  const followerServer = new Server();
  const clients: ControlClient[] = [];
  let followerRoute: LeaderRoute = { isLeader: false };
  let denied = false;
  let leaderClient: ControlClient | undefined;
  let followerClient: ControlClient | undefined;
  let deadClient: ControlClient | undefined;

  const connect = (port: number): ControlClient => {
    const client = new ControlClient(`127.0.0.1:${port}`, credentials.createInsecure());
    clients.push(client);
    return client;
  };
  const viaFollower = (): ControlClient => {
    assert.ok(followerClient);
    return followerClient;
  };

  before(async () => {
    leaderServer.addService(
      ControlService,
      forwardingControl(createControlServer({ store: leaderStore, logger: silentLogger }), () => ({
        isLeader: true,
      })),
    );
    followerServer.addService(
      ControlService,
      forwardingControl(
        createControlServer({ store: followerStore, logger: silentLogger }),
        () => followerRoute,
        {
          selfName: 'follower',
          authorize: () => {
            if (denied) throw new ClusterError('PERMISSION_DENIED', 'a manager certificate is required');
          },
        },
      ),
    );
    const leaderPort = await bindServer(leaderServer, '127.0.0.1:0');
    const followerPort = await bindServer(followerServer, '127.0.0.1:0');
    leaderClient = connect(leaderPort);
    followerClient = connect(followerPort);
    // A port that was bound and released: nothing listens there.
    const probe = new Server();
    const deadPort = await bindServer(probe, '127.0.0.1:0');
    await shutdownServer(probe);
    deadClient = connect(deadPort);
  });

  after(async () => {
    for (const client of clients) client.close();
    await shutdownServer(leaderServer);
    await shutdownServer(followerServer);
  });

  test('calls to a follower are served by the leader', async () => {
    followerRoute = { isLeader: false, leaderClient, leaderName: 'manager-1' };
    const { service } = await unary<CreateServiceResponse>((cb) =>
      viaFollower().createService({ spec: simpleSpec('web') }, cb),
    );
    assert.ok(service);
    assert.ok(leaderStore.view((tx) => tx.services.get(service.id)));
    assert.equal(
      followerStore.view((tx) => tx.services.list().length),
      0,
    );
    const { services } = await unary<ListServicesResponse>((cb) =>
      viaFollower().listServices({ filters: {} }, cb),
    );
    assert.deepEqual(
      services.map((s) => s.id),
      [service.id],
    );
    // The leader's errors come back with their code.
    await assert.rejects(
      unary<GetServiceResponse>((cb) => viaFollower().getService({ serviceId: 'nope' }, cb)),
      isCode('NOT_FOUND', /service 'nope' not found/),
    );
    await assert.rejects(
      unary<CreateServiceResponse>((cb) => viaFollower().createService({ spec: simpleSpec('web') }, cb)),
      isCode('ALREADY_EXISTS'),
    );
  });

  test('on the leader, calls are served locally', async () => {
    followerRoute = { isLeader: true };
    const { service } = await unary<CreateServiceResponse>((cb) =>
      viaFollower().createService({ spec: simpleSpec('local') }, cb),
    );
    assert.ok(service && followerStore.view((tx) => tx.services.get(service.id)));
  });

  test('no leader known: UNAVAILABLE, retry', async () => {
    followerRoute = { isLeader: false };
    await assert.rejects(
      unary<ListNodesResponse>((cb) => viaFollower().listNodes({ filters: {} }, cb)),
      isCode('UNAVAILABLE', /^this manager knows no leader: .*no quorum here/),
    );
  });

  test('an unreachable leader: UNAVAILABLE naming it', async () => {
    followerRoute = { isLeader: false, leaderClient: deadClient, leaderName: 'manager-9' };
    await assert.rejects(
      unary<ListNodesResponse>((cb) => viaFollower().listNodes({ filters: {} }, cb)),
      isCode('UNAVAILABLE', /leader \(manager-9\) could not be reached/),
    );
  });

  test("a leader that never answers: UNAVAILABLE saying so, before the caller's own deadline", async () => {
    // Accepts TCP and says nothing, as a leader behind a partition looks from a cut-off follower.
    const sockets: net.Socket[] = [];
    const silent = net.createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as net.AddressInfo;
      followerRoute = { isLeader: false, leaderClient: connect(port), leaderName: 'manager-7' };
      await assert.rejects(
        unary<ListNodesResponse>((cb) =>
          viaFollower().listNodes({ filters: {} }, new Metadata(), { deadline: Date.now() + 4000 }, cb),
        ),
        isCode('UNAVAILABLE', /leader \(manager-7\) did not answer in time: .*no quorum/),
      );
    } finally {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test('a forwarded call is never forwarded again', async () => {
    // The follower believes it is its own leader's follower: one hop, then UNAVAILABLE.
    followerRoute = { isLeader: false, leaderClient: followerClient };
    await assert.rejects(
      unary<ListNodesResponse>((cb) => viaFollower().listNodes({ filters: {} }, cb)),
      isCode('UNAVAILABLE', /no longer the leader/),
    );
  });

  test('authorization happens before forwarding', async () => {
    followerRoute = { isLeader: false, leaderClient };
    denied = true;
    const applied = leaderStore.appliedIndex;
    try {
      await assert.rejects(
        unary<CreateServiceResponse>((cb) => viaFollower().createService({ spec: simpleSpec('denied') }, cb)),
        isCode('PERMISSION_DENIED'),
      );
      assert.equal(leaderStore.appliedIndex, applied);
    } finally {
      denied = false;
    }
  });
});
