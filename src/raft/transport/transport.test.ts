// The gRPC raft transport over real mutual TLS on 127.0.0.1: delivery both ways, chunked
// snapshots, bounded queues toward a dead peer and reconnection, and refusal of strangers.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';

import { RaftTransportClient, type RaftFrame } from '../../gen/cluster/v1/raft';
import { EntryType, MessageType, emptyMessage, type Message, type NodeId } from '../types';
import { messageFromProto, messageToProto } from './convert';
import {
  MAX_DATA_BYTES_IN_FLIGHT,
  MAX_QUEUED_MESSAGES_PER_PEER,
  RaftTransport,
  type RaftTransportOptions,
  type TransportHandler,
} from './index';
import {
  TEST_CHANNEL_OPTIONS,
  channelCredentials,
  createTestPki,
  serverCredentials,
  type TestPki,
} from './testing_tls';
import { freePort } from '../../common/ports';

class Recorder implements TransportHandler {
  readonly received: Message[] = [];
  readonly unreachable: NodeId[] = [];
  readonly snapshotReports: Array<{ peerId: NodeId; ok: boolean }> = [];
  private waiters: Array<() => void> = [];
  onMessage(message: Message): void {
    this.received.push(message);
    this.notify();
  }
  reportUnreachable(peerId: NodeId): void {
    this.unreachable.push(peerId);
    this.notify();
  }
  reportSnapshot(peerId: NodeId, ok: boolean): void {
    this.snapshotReports.push({ peerId, ok });
    this.notify();
  }
  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
  /** Resolves once `condition` holds, failing after timeoutMs. */
  async until(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 50));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
}

function heartbeat(from: NodeId, to: NodeId, term: number): Message {
  return { ...emptyMessage(MessageType.Heartbeat, from, to), term, commit: 3 };
}

function append(from: NodeId, to: NodeId, index: number, bytes: number): Message {
  return {
    ...emptyMessage(MessageType.App, from, to),
    term: 2,
    index: index - 1,
    logTerm: 2,
    entries: [{ term: 2, index, type: EntryType.Normal, data: new Uint8Array(bytes).fill(index % 251) }],
  };
}

describe('raft transport over mutual TLS', () => {
  let pki: TestPki;
  const running: RaftTransport[] = [];

  before(() => {
    pki = createTestPki();
  });
  after(async () => {
    await Promise.all(running.map((t) => t.stop()));
    pki.cleanup();
  });

  function transport(
    nodeId: NodeId,
    handler: TransportHandler,
    peers: Array<[NodeId, string]> = [],
    opts: { clusterId?: string; port?: number; authorize?: RaftTransportOptions['authorize'] } = {},
  ): RaftTransport {
    const files = pki.node(`node-${nodeId}`);
    const t = new RaftTransport({
      nodeId,
      clusterId: opts.clusterId ?? 'test-cluster',
      listenAddress: `127.0.0.1:${opts.port ?? 0}`,
      serverCredentials: serverCredentials(files),
      channelCredentials: channelCredentials(files),
      channelOptions: TEST_CHANNEL_OPTIONS,
      peers: new Map(peers),
      authorize: opts.authorize,
      handler,
    });
    running.push(t);
    return t;
  }

  test('converts messages to the wire and back without loss', () => {
    const message: Message = {
      ...append(1, 2, 7, 5),
      commit: 6,
      reject: true,
      rejectHint: 4,
      context: new Uint8Array([9, 8, 7]),
    };
    const back = messageFromProto(messageToProto(message));
    assert.deepEqual(
      {
        ...back,
        context: [...back.context],
        entries: back.entries.map((e) => ({ ...e, data: [...e.data] })),
      },
      {
        ...message,
        context: [9, 8, 7],
        entries: message.entries.map((e) => ({ ...e, data: [...e.data] })),
      },
    );
    assert.throws(
      () => messageFromProto({ ...messageToProto(message), type: 99 }),
      /unknown message type 99/,
    );
  });

  test('messages flow both ways on the stream the lower id dials', async () => {
    const h1 = new Recorder();
    const h2 = new Recorder();
    const t2 = transport(2, h2);
    const port2 = await t2.start();
    const t1 = transport(1, h1, [[2, `127.0.0.1:${port2}`]]);
    await t1.start();
    t1.send([heartbeat(1, 2, 5), append(1, 2, 1, 100)]);
    await h2.until(() => h2.received.length === 2, 'node 2 to receive two messages');
    assert.deepEqual(
      h2.received.map((m) => m.type),
      [MessageType.Heartbeat, MessageType.App],
    );
    assert.equal(h2.received[1]?.entries[0]?.data.length, 100);
    // Node 2 does not know node 1's address: its reply can only travel on node 1's stream.
    t2.send([{ ...emptyMessage(MessageType.HeartbeatResp, 2, 1), term: 5 }]);
    await h1.until(() => h1.received.length === 1, 'node 1 to receive the reply');
    assert.equal(h1.received[0]?.type, MessageType.HeartbeatResp);
    assert.equal(h1.received[0]?.from, 2);
    assert.deepEqual(h1.unreachable, []);
  });

  test('a 10 MiB snapshot arrives intact in chunks and is reported sent', async () => {
    const h1 = new Recorder();
    const h3 = new Recorder();
    const t3 = transport(3, h3);
    const port3 = await t3.start();
    const t1 = transport(1, h1, [[3, `127.0.0.1:${port3}`]]);
    await t1.start();
    await h1.until(() => t1.isConnected(3), 'the stream to node 3');
    const data = new Uint8Array(10 * 1024 * 1024 + 17);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >>> 13)) & 0xff;
    const snap: Message = {
      ...emptyMessage(MessageType.Snap, 1, 3),
      term: 4,
      snapshot: { metadata: { index: 900, term: 3, confState: { voters: [1, 2, 3], learners: [] } }, data },
    };
    t1.send([snap, heartbeat(1, 3, 4)]);
    await h3.until(() => h3.received.some((m) => m.type === MessageType.Snap), 'the snapshot', 15000);
    const got = h3.received.find((m) => m.type === MessageType.Snap);
    assert.ok(got?.snapshot);
    assert.deepEqual(got.snapshot.metadata, snap.snapshot?.metadata);
    assert.equal(got.snapshot.data.length, data.length);
    assert.ok(Buffer.from(got.snapshot.data).equals(Buffer.from(data)), 'snapshot bytes differ');
    await h1.until(() => h1.snapshotReports.length > 0, 'the snapshot report');
    assert.deepEqual(h1.snapshotReports, [{ peerId: 3, ok: true }]);
  });

  test('heartbeats overtake queued appends', async () => {
    const h1 = new Recorder();
    const h4 = new Recorder();
    const t4 = transport(4, h4);
    const port4 = await t4.start();
    const t1 = transport(1, h1, [[4, `127.0.0.1:${port4}`]]);
    await t1.start();
    await h1.until(() => t1.isConnected(4), 'the stream to node 4');
    const appends = Array.from({ length: 48 }, (_, i) => append(1, 4, i + 1, 512 * 1024));
    t1.send(appends);
    t1.send([heartbeat(1, 4, 2)]);
    await h4.until(() => h4.received.length === 49, 'all 49 messages', 15000);
    const heartbeatAt = h4.received.findIndex((m) => m.type === MessageType.Heartbeat);
    // At most MAX_DATA_BYTES_IN_FLIGHT of appends (4 of 512 KiB) may be ahead of it.
    const allowedAhead = Math.ceil(MAX_DATA_BYTES_IN_FLIGHT / (512 * 1024)) + 2;
    assert.ok(
      heartbeatAt <= allowedAhead,
      `heartbeat arrived at position ${heartbeatAt} of 49, behind the appends`,
    );
    // Appends keep their order among themselves.
    const appendIndexes = h4.received
      .filter((m) => m.type === MessageType.App)
      .map((m) => m.entries[0]?.index);
    assert.deepEqual(
      appendIndexes,
      appends.map((m) => m.entries[0]?.index),
    );
  });

  test('toward a dead peer the queue stays bounded, unreachable is reported, and it reconnects', async () => {
    const port5 = await freePort();
    const h1 = new Recorder();
    const t1 = transport(1, h1, [[5, `127.0.0.1:${port5}`]]);
    await t1.start();
    const burst = Array.from({ length: MAX_QUEUED_MESSAGES_PER_PEER + 500 }, (_, i) =>
      heartbeat(1, 5, i + 1),
    );
    t1.send(burst);
    assert.equal(t1.queuedMessages(5), MAX_QUEUED_MESSAGES_PER_PEER);
    assert.ok(
      h1.unreachable.filter((id) => id === 5).length >= 500,
      'each dropped message reports node 5 unreachable',
    );

    const h5 = new Recorder();
    const t5 = transport(5, h5, [], { port: port5 });
    await t5.start();
    await h5.until(() => h5.received.length > 0, 'node 5 to receive after it came up', 10000);
    t1.send([heartbeat(1, 5, 99_999)]);
    await h5.until(() => h5.received.some((m) => m.term === 99_999), 'a fresh heartbeat after reconnect');
    assert.equal(t1.queuedMessages(5), 0);
  });

  test('a snapshot for a peer that is down is reported failed at once, not held', async () => {
    const h1 = new Recorder();
    const t1 = transport(1, h1, [[8, `127.0.0.1:${await freePort()}`]]);
    await t1.start();
    const snap: Message = {
      ...emptyMessage(MessageType.Snap, 1, 8),
      term: 2,
      snapshot: {
        metadata: { index: 10, term: 2, confState: { voters: [1, 8], learners: [] } },
        data: new Uint8Array(1024),
      },
    };
    t1.send([snap]);
    assert.deepEqual(h1.snapshotReports, [{ peerId: 8, ok: false }]);
    assert.equal(t1.queuedMessages(8), 0);
  });

  test('a stream that claims another cluster is refused', async () => {
    const h6 = new Recorder();
    const t6 = transport(6, h6);
    const port6 = await t6.start();
    const files = pki.node('node-1');
    const client = new RaftTransportClient(
      `127.0.0.1:${port6}`,
      channelCredentials(files),
      TEST_CHANNEL_OPTIONS,
    );
    try {
      const call = client.stream();
      const err = await new Promise<ServiceError>((resolve) => {
        call.on('error', resolve);
        call.on('data', () => undefined);
        const hello: RaftFrame = {
          body: { $case: 'hello', value: { from: 1, to: 6, clusterId: 'other-cluster' } },
        };
        call.write(hello);
      });
      assert.equal(err.code, GrpcStatus.PERMISSION_DENIED);
      assert.match(err.details, /cluster id mismatch/);

      // And a transport configured for the other cluster never delivers anything.
      const h1 = new Recorder();
      const t1 = transport(1, h1, [[6, `127.0.0.1:${port6}`]], { clusterId: 'other-cluster' });
      await t1.start();
      t1.send([heartbeat(1, 6, 1)]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(h6.received.length, 0);
      assert.equal(t1.isConnected(6), false);
    } finally {
      client.close();
    }
  });

  test('a stream the authorize hook refuses (a worker certificate) delivers nothing', async () => {
    const h7 = new Recorder();
    const t7 = transport(7, h7, [], { authorize: () => 'only managers take part in Raft' });
    const port7 = await t7.start();
    const h1 = new Recorder();
    const t1 = transport(1, h1, [[7, `127.0.0.1:${port7}`]]);
    await t1.start();
    try {
      t1.send([heartbeat(1, 7, 1)]);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(h7.received.length, 0);
      assert.equal(t1.isConnected(7), false);
    } finally {
      await t1.stop();
      await t7.stop();
    }
  });
});
