// Dispatcher over a real gRPC server on 127.0.0.1 with fake agents as clients. Identities come
// from a test hook (metadata `x-node-id`) instead of certificates; mTLS is the ca module's test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ClientReadableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  DispatcherClient,
  DispatcherService,
  SessionRequest,
  UpdateTaskStatusRequest,
  type AssignmentsMessage,
  type SessionMessage,
  type UpdateTaskStatusResponse,
} from '../../gen/cluster/v1/dispatcher';
import { NodeState, TaskState } from '../../gen/cluster/v1/objects';
import { componentLogger } from '../../common/logger';
import { localStores, makeNode, makeTask } from '../../store/testing';
import type { Manager } from '../../node/manager';
import {
  createDispatcher,
  HEARTBEAT_FAILURE_MESSAGE,
  LEADER_ADDR_METADATA,
  NODE_DOWN_AFTER_HEARTBEATS,
  SESSION_LOST_MESSAGE,
  type DispatcherHost,
} from './index';

// Compile-time: a Manager is what dispatcherFor() takes, so the daemon can wire it directly.
export const managerIsDispatcherHost = (m: Manager): DispatcherHost => m;

const logger = componentLogger('dispatcher-test');
logger.level = 'silent';

interface Harness {
  client: DispatcherClient;
  store: ReturnType<typeof localStores>['stores'][number];
  proposer: ReturnType<typeof localStores>['proposer'];
  leading: { value: boolean };
  close(): Promise<void>;
}

async function start(
  opts: { periodMs?: number; runLoop?: boolean; nowMs?: () => number } = {},
): Promise<Harness> {
  const { proposer, stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  const leading = { value: true };
  const dispatcher = createDispatcher({
    store,
    isLeader: () => leading.value,
    leaderAddress: () => '10.9.9.9:4242',
    heartbeatPeriodMs: opts.periodMs ?? 1000,
    batchMs: 20,
    logger,
    nowMs: opts.nowMs,
    identify: (call) => {
      const id = call.metadata.get('x-node-id')[0];
      if (typeof id !== 'string') throw new Error('test call without x-node-id');
      return { nodeId: id, role: 'worker', clusterId: 'c' };
    },
  });
  const server = new Server();
  server.addService(DispatcherService, dispatcher.server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  const client = new DispatcherClient(`127.0.0.1:${port}`, credentials.createInsecure());
  const loopAbort = new AbortController();
  const loopDone = opts.runLoop ? dispatcher.loop.run(loopAbort.signal) : Promise.resolve();
  return {
    client,
    store,
    proposer,
    leading,
    async close() {
      loopAbort.abort();
      await loopDone;
      dispatcher.close();
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}

function md(nodeId: string): Metadata {
  const m = new Metadata();
  m.set('x-node-id', nodeId);
  return m;
}

function firstMessage<T>(stream: ClientReadableStream<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    stream.once('data', (m: T) => resolve(m));
    stream.once('error', reject);
  });
}

/** Collects a stream's messages; `next()` waits for the next one. */
function collector<T>(stream: ClientReadableStream<T>) {
  const queue: T[] = [];
  const waiting: ((m: T) => void)[] = [];
  stream.on('data', (m: T) => {
    const w = waiting.shift();
    if (w) w(m);
    else queue.push(m);
  });
  stream.on('error', () => undefined);
  return {
    next(timeoutMs = 2000): Promise<T> {
      const m = queue.shift();
      if (m !== undefined) return Promise.resolve(m);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no message in time')), timeoutMs);
        waiting.push((msg) => {
          clearTimeout(timer);
          resolve(msg);
        });
      });
    },
  };
}

async function openSession(h: Harness, nodeId: string) {
  const stream = h.client.session(
    SessionRequest.fromPartial({ description: { hostname: `host-${nodeId}`, os: 'linux' } }),
    md(nodeId),
  );
  stream.on('error', () => undefined);
  const msg: SessionMessage = await firstMessage(stream);
  return { stream, sessionId: msg.sessionId };
}

function heartbeat(h: Harness, nodeId: string, sessionId: string, runtimeError = ''): Promise<number> {
  return new Promise((resolve, reject) =>
    h.client.heartbeat({ sessionId, runtimeError }, md(nodeId), (e, r) => {
      if (e || !r) reject(e ?? new Error('empty'));
      else resolve((r.period?.seconds ?? 0) * 1000 + (r.period?.nanos ?? 0) / 1e6);
    }),
  );
}

function report(
  h: Harness,
  nodeId: string,
  sessionId: string,
  updates: { taskId: string; state: TaskState; message?: string }[],
): Promise<UpdateTaskStatusResponse> {
  return new Promise((resolve, reject) =>
    h.client.updateTaskStatus(
      UpdateTaskStatusRequest.fromPartial({
        sessionId,
        updates: updates.map((u) => ({
          taskId: u.taskId,
          status: { state: u.state, message: u.message ?? '' },
        })),
      }),
      md(nodeId),
      (e, r) => (e || !r ? reject(e ?? new Error('empty')) : resolve(r)),
    ),
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a session marks the node READY with its description and address', async () => {
  const h = await start();
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('old-name', { id: 'n1' })));
    const { stream, sessionId } = await openSession(h, 'n1');
    assert.ok(sessionId.length > 0);
    const node = h.store.view((tx) => tx.nodes.get('n1'));
    assert.equal(node?.status?.state, NodeState.NODE_STATE_READY);
    assert.equal(node?.status?.addr, '127.0.0.1');
    assert.equal(node?.description?.hostname, 'host-n1');
    assert.equal(await heartbeat(h, 'n1', sessionId), 1000);
    await assert.rejects(
      heartbeat(h, 'n1', 'wrong-session'),
      (e: ServiceError) => e.code === GrpcStatus.NOT_FOUND,
    );
    stream.cancel();
  } finally {
    await h.close();
  }
});

test('a node whose runtime does not answer is NOT_READY, and READY again once it does', async () => {
  const h = await start();
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('n1', { id: 'n1' })));
    const status = () => h.store.view((tx) => tx.nodes.get('n1')?.status);
    const until = async (what: string, ok: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!ok()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await sleep(10);
      }
    };
    // Opened while the engine is down: connected, but no new tasks.
    const stream = h.client.session(
      SessionRequest.fromPartial({ description: { hostname: 'host-n1' }, runtimeError: 'engine gone' }),
      md('n1'),
    );
    stream.on('error', () => undefined);
    const { sessionId } = await firstMessage(stream);
    assert.equal(status()?.state, NodeState.NODE_STATE_NOT_READY);
    assert.match(status()?.message ?? '', /container runtime unavailable: engine gone/);
    await heartbeat(h, 'n1', sessionId);
    await until(
      'READY after a heartbeat with no error',
      () => status()?.state === NodeState.NODE_STATE_READY,
    );
    assert.equal(status()?.message, '');
    assert.equal(status()?.addr, '127.0.0.1');
    await heartbeat(h, 'n1', sessionId, 'the Docker engine does not answer');
    await until('NOT_READY again', () => status()?.state === NodeState.NODE_STATE_NOT_READY);
    assert.match(status()?.message ?? '', /the Docker engine does not answer/);
    // A node marked DOWN is not revived by a heartbeat's runtime news: only a session does that.
    await h.store.update((tx) => {
      const n = tx.nodes.get('n1');
      if (n) tx.nodes.update({ ...n, status: { state: NodeState.NODE_STATE_DOWN, message: 'x', addr: '' } });
    });
    await heartbeat(h, 'n1', sessionId);
    await sleep(50);
    assert.equal(status()?.state, NodeState.NODE_STATE_DOWN);
    stream.cancel();
  } finally {
    await h.close();
  }
});

test('a removed node (no record) cannot come back through a session, and nothing is written', async () => {
  const h = await start();
  try {
    await assert.rejects(
      openSession(h, 'removed'),
      (e: ServiceError) => e.code === GrpcStatus.PERMISSION_DENIED && /was removed/.test(e.details),
    );
    assert.equal(
      h.store.view((tx) => tx.nodes.get('removed')),
      undefined,
    );
  } finally {
    await h.close();
  }
});

test('a follower answers UNAVAILABLE naming the leader', async () => {
  const h = await start();
  try {
    h.leading.value = false;
    const stream = h.client.session(SessionRequest.fromPartial({}), md('n1'));
    const err = await new Promise<ServiceError>((resolve) => stream.on('error', resolve));
    assert.equal(err.code, GrpcStatus.UNAVAILABLE);
    assert.equal(err.metadata.get(LEADER_ADDR_METADATA)[0], '10.9.9.9:4242');
    await assert.rejects(heartbeat(h, 'n1', 'x'), (e: ServiceError) => e.code === GrpcStatus.UNAVAILABLE);
  } finally {
    await h.close();
  }
});

test('a node that stops heartbeating is marked DOWN after its missed periods, not before', async () => {
  const h = await start({ periodMs: 200, runLoop: true });
  try {
    await h.store.update((tx) => {
      tx.nodes.create(makeNode('a', { id: 'alive' }));
      tx.nodes.create(makeNode('b', { id: 'silent' }));
    });
    const alive = await openSession(h, 'alive');
    const silent = await openSession(h, 'silent');
    const openedAt = Date.now();
    const beats = setInterval(() => {
      heartbeat(h, 'alive', alive.sessionId).catch(() => undefined);
    }, 100);
    const stateOf = (id: string) => h.store.view((tx) => tx.nodes.get(id)?.status?.state);
    try {
      await sleep(250);
      assert.equal(stateOf('silent'), NodeState.NODE_STATE_READY, 'one missed period is no failure');
      while (stateOf('silent') !== NodeState.NODE_STATE_DOWN && Date.now() - openedAt < 5000) await sleep(20);
      const downAfterMs = Date.now() - openedAt;
      const down = h.store.view((tx) => tx.nodes.get('silent'));
      assert.equal(down?.status?.state, NodeState.NODE_STATE_DOWN);
      assert.equal(down?.status?.message, HEARTBEAT_FAILURE_MESSAGE);
      assert.ok(
        downAfterMs >= NODE_DOWN_AFTER_HEARTBEATS * 200,
        `marked down after ${downAfterMs} ms, before ${NODE_DOWN_AFTER_HEARTBEATS} periods`,
      );
      assert.equal(stateOf('alive'), NodeState.NODE_STATE_READY);
      // Its session is over: heartbeats on it are refused, so the agent opens a new one.
      await assert.rejects(
        heartbeat(h, 'silent', silent.sessionId),
        (e: ServiceError) => e.code === GrpcStatus.NOT_FOUND,
      );
    } finally {
      clearInterval(beats);
      alive.stream.cancel();
      silent.stream.cancel();
    }
  } finally {
    await h.close();
  }
});

test('assignments: the full set first, then batched changes', async () => {
  const h = await start();
  try {
    const t1 = makeTask('svc', 1, { id: 't1', nodeId: 'n1' });
    const t2 = makeTask('svc', 2, { id: 't2', nodeId: 'n1' });
    const other = makeTask('svc', 3, { id: 'other', nodeId: 'n2' });
    await h.store.update((tx) => {
      tx.nodes.create(makeNode('n1', { id: 'n1' }));
      for (const t of [t1, t2, other]) tx.tasks.create(t);
    });
    const { stream, sessionId } = await openSession(h, 'n1');
    const assignments = h.client.assignments({ sessionId }, md('n1'));
    const messages = collector<AssignmentsMessage>(assignments);
    const full = await messages.next();
    assert.equal(full.full, true);
    assert.deepEqual(full.updatedTasks.map((t) => t.id).sort(), ['t1', 't2']);

    // One batch: a new task, a desired-state change, a removal; other nodes' tasks are not sent.
    await h.store.update((tx) => tx.tasks.create(makeTask('svc', 4, { id: 't3', nodeId: 'n1' })));
    await h.store.update((tx) => {
      const t = tx.tasks.get('t1');
      if (!t) throw new Error('t1 missing');
      t.desiredState = TaskState.TASK_STATE_SHUTDOWN;
      tx.tasks.update(t);
      tx.tasks.delete('t2');
      tx.tasks.create(makeTask('svc', 5, { id: 'other2', nodeId: 'n2' }));
    });
    const change = await messages.next();
    assert.equal(change.full, false);
    assert.deepEqual(change.updatedTasks.map((t) => t.id).sort(), ['t1', 't3']);
    assert.equal(change.updatedTasks.find((t) => t.id === 't1')?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    assert.deepEqual(change.removedTaskIds, ['t2']);

    // A status change alone (the agent's own report) sends nothing; a move to another node removes.
    await report(h, 'n1', sessionId, [{ taskId: 't3', state: TaskState.TASK_STATE_RUNNING }]);
    await h.store.update((tx) => {
      const t = tx.tasks.get('t3');
      if (!t) throw new Error('t3 missing');
      t.nodeId = 'n2';
      tx.tasks.update(t);
    });
    const moved = await messages.next();
    assert.deepEqual(moved.updatedTasks, []);
    assert.deepEqual(moved.removedTaskIds, ['t3']);
    assignments.cancel();
    stream.cancel();
  } finally {
    await h.close();
  }
});

test('task status only moves forward, and reports are batched into one transaction', async () => {
  const h = await start();
  try {
    await h.store.update((tx) => {
      tx.nodes.create(makeNode('n1', { id: 'n1' }));
      for (const id of ['a', 'b', 'c']) tx.tasks.create(makeTask('svc', 1, { id, nodeId: 'n1' }));
    });
    const { stream, sessionId } = await openSession(h, 'n1');
    const before = h.proposer.log.length;
    await Promise.all([
      report(h, 'n1', sessionId, [
        { taskId: 'a', state: TaskState.TASK_STATE_ACCEPTED },
        { taskId: 'a', state: TaskState.TASK_STATE_RUNNING },
      ]),
      report(h, 'n1', sessionId, [{ taskId: 'b', state: TaskState.TASK_STATE_PREPARING }]),
      report(h, 'n1', sessionId, [{ taskId: 'c', state: TaskState.TASK_STATE_FAILED, message: 'exit 1' }]),
    ]);
    assert.equal(h.proposer.log.length - before, 1, 'three calls within the batch window: one transaction');
    const state = (id: string) => h.store.view((tx) => tx.tasks.get(id)?.status?.state);
    assert.equal(state('a'), TaskState.TASK_STATE_RUNNING);
    assert.equal(state('b'), TaskState.TASK_STATE_PREPARING);
    assert.equal(state('c'), TaskState.TASK_STATE_FAILED);
    await report(h, 'n1', sessionId, [
      { taskId: 'a', state: TaskState.TASK_STATE_STARTING },
      { taskId: 'c', state: TaskState.TASK_STATE_RUNNING },
    ]);
    assert.equal(state('a'), TaskState.TASK_STATE_RUNNING, 'RUNNING → STARTING is refused');
    assert.equal(state('c'), TaskState.TASK_STATE_FAILED, 'FAILED → RUNNING is refused');
    stream.cancel();
  } finally {
    await h.close();
  }
});

test("a worker cannot report another node's task, nor report without its session", async () => {
  const h = await start();
  try {
    await h.store.update((tx) => {
      tx.nodes.create(makeNode('n1', { id: 'n1' }));
      tx.nodes.create(makeNode('n2', { id: 'n2' }));
      tx.tasks.create(makeTask('svc', 1, { id: 'theirs', nodeId: 'n2' }));
    });
    const s1 = await openSession(h, 'n1');
    const s2 = await openSession(h, 'n2');
    await assert.rejects(
      report(h, 'n1', s1.sessionId, [{ taskId: 'theirs', state: TaskState.TASK_STATE_RUNNING }]),
      (e: ServiceError) => e.code === GrpcStatus.PERMISSION_DENIED,
    );
    await assert.rejects(
      report(h, 'n1', s2.sessionId, [{ taskId: 'theirs', state: TaskState.TASK_STATE_RUNNING }]),
      (e: ServiceError) => e.code === GrpcStatus.NOT_FOUND,
    );
    assert.equal(
      h.store.view((tx) => tx.tasks.get('theirs')?.status?.state),
      TaskState.TASK_STATE_NEW,
    );
    s1.stream.cancel();
    s2.stream.cancel();
  } finally {
    await h.close();
  }
});

test('a node whose session connection closes is marked DOWN after one period, before its heartbeats would miss', async () => {
  const h = await start({ periodMs: 1000, runLoop: true });
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('k', { id: 'killed' })));
    const killed = await openSession(h, 'killed');
    const stateOf = () => h.store.view((tx) => tx.nodes.get('killed'));
    await heartbeat(h, 'killed', killed.sessionId);
    killed.stream.cancel();
    // The heartbeat path would take 4 periods (4 s); the closed connection is what marks it.
    const deadline = Date.now() + 30_000;
    while (stateOf()?.status?.state !== NodeState.NODE_STATE_DOWN && Date.now() < deadline) await sleep(20);
    assert.equal(stateOf()?.status?.state, NodeState.NODE_STATE_DOWN);
    assert.equal(stateOf()?.status?.message, SESSION_LOST_MESSAGE);
  } finally {
    await h.close();
  }
});

test('a session closed and opened again (agent restarting its session) keeps the node READY', async () => {
  const h = await start({ periodMs: 100, runLoop: true });
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('r', { id: 'restarts' })));
    const first = await openSession(h, 'restarts');
    first.stream.cancel();
    const second = await openSession(h, 'restarts');
    const version = h.store.view((tx) => tx.nodes.get('restarts')?.meta?.version);
    // Several periods with heartbeats on the new session: no DOWN write happens in between.
    for (let i = 0; i < 8; i++) {
      await heartbeat(h, 'restarts', second.sessionId);
      await sleep(50);
    }
    const node = h.store.view((tx) => tx.nodes.get('restarts'));
    assert.equal(node?.status?.state, NodeState.NODE_STATE_READY);
    assert.equal(node?.meta?.version, version, 'the node record was not rewritten');
    second.stream.cancel();
  } finally {
    await h.close();
  }
});

test("a stall of the leader's own event loop is not taken as every node's silence", async () => {
  let offsetMs = 0;
  const h = await start({ periodMs: 100, runLoop: true, nowMs: () => Date.now() + offsetMs });
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('s', { id: 'steady' })));
    const s = await openSession(h, 'steady');
    await heartbeat(h, 'steady', s.sessionId);
    // The clock jumps 10 s as a stalled loop would see it: the grace starts again instead.
    offsetMs = 10_000;
    for (let i = 0; i < 3; i++) {
      await sleep(30);
      await heartbeat(h, 'steady', s.sessionId);
    }
    assert.equal(
      h.store.view((tx) => tx.nodes.get('steady')?.status?.state),
      NodeState.NODE_STATE_READY,
    );
    s.stream.cancel();
  } finally {
    await h.close();
  }
});

test('losing leadership ends the open sessions', async () => {
  const h = await start({ runLoop: true, periodMs: 1000 });
  try {
    await h.store.update((tx) => tx.nodes.create(makeNode('n1', { id: 'n1' })));
    const { stream } = await openSession(h, 'n1');
    const ended = new Promise<ServiceError>((resolve) => stream.on('error', resolve));
    h.leading.value = false;
    await h.close();
    const err = await ended;
    assert.equal(err.code, GrpcStatus.UNAVAILABLE);
    assert.equal(err.metadata.get(LEADER_ADDR_METADATA)[0], '10.9.9.9:4242');
  } finally {
    await h.close().catch(() => undefined);
  }
});
