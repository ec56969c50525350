// The agent against real dispatchers on 127.0.0.1 (insecure gRPC, identity injected) and an
// in-memory runtime: redirect to the leader, task life cycle through the store, fail-over to
// another manager, and adoption after a restart without duplicates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { credentials, Server } from '@grpc/grpc-js';
import { DispatcherService } from '../gen/cluster/v1/dispatcher';
import { NodeState, TaskState } from '../gen/cluster/v1/objects';
import { componentLogger } from '../common/logger';
import {
  createRootCA,
  generateNodeKey,
  serverCredentials,
  signNodeCertificate,
  type NodeTls,
} from '../manager/ca';
import { createDispatcher } from '../manager/dispatcher';
import type { MemoryStore } from '../store';
import { localStores, makeNode, makeTask } from '../store/testing';
import { Agent, backoffMs } from './index';
import { FakeRuntime, startTestDispatcher, type TestDispatcher } from './testing';

const logger = componentLogger('agent-test');
logger.level = 'silent';

interface Manager extends TestDispatcher {
  leading: boolean;
}

async function startManager(store: MemoryStore, leaderAddr: () => string): Promise<Manager> {
  const self = { leading: false };
  const served = await startTestDispatcher({
    store,
    nodeId: 'n1',
    logger,
    heartbeatPeriodMs: 100,
    batchMs: 10,
    isLeader: () => self.leading,
    leaderAddress: leaderAddr,
  });
  return Object.assign(self, served);
}

async function stopManager(m: Manager): Promise<void> {
  m.leading = false;
  await m.stop();
}

async function until(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const stateOf = (store: MemoryStore, id: string) => store.view((tx) => tx.tasks.get(id)?.status?.state);

test('backoff grows, is capped, and is jittered', () => {
  assert.equal(
    backoffMs(0, () => 0),
    50,
  );
  assert.equal(
    backoffMs(0, () => 1),
    100,
  );
  assert.equal(
    backoffMs(3, () => 1),
    800,
  );
  assert.equal(
    backoffMs(30, () => 1),
    5000,
  );
  assert.ok(backoffMs(30, () => 0) >= 2500);
});

test('agent: redirect to the leader, tasks run and shut down, fail-over, restart adopts', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  await store.update((tx) => tx.nodes.create(makeNode('h', { id: 'n1' })));
  let leaderAddr = '';
  const a = await startManager(store, () => leaderAddr);
  const b = await startManager(store, () => leaderAddr);
  a.leading = true;
  leaderAddr = a.addr;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-test-'));
  const runtime = new FakeRuntime();
  const agentOptions = {
    dataDir,
    credentials: credentials.createInsecure(),
    // Only the follower is known: the agent must follow its redirect.
    managers: [b.addr],
    nodeId: 'n1',
    runtime,
    logger,
  };
  let agent = await Agent.start(agentOptions);
  try {
    await agent.connected();
    const node = store.view((tx) => tx.nodes.get('n1'));
    assert.equal(node?.status?.state, NodeState.NODE_STATE_READY);
    assert.equal(node?.description?.runtimeName, 'fake');
    assert.equal(node?.description?.resources?.nanoCpus, 2e9);

    await store.update((tx) => {
      tx.tasks.create(makeTask('svc', 1, { id: 't1', nodeId: 'n1' }));
      tx.tasks.create(makeTask('svc', 2, { id: 't2', nodeId: 'n1' }));
    });
    await until('both tasks running', () =>
      ['t1', 't2'].every((id) => stateOf(store, id) === TaskState.TASK_STATE_RUNNING),
    );

    // Desired SHUTDOWN: stopped, reported, removed.
    await store.update((tx) => {
      const t = tx.tasks.get('t2');
      if (!t) throw new Error('t2 missing');
      t.desiredState = TaskState.TASK_STATE_SHUTDOWN;
      tx.tasks.update(t);
    });
    await until('t2 shut down', () => stateOf(store, 't2') === TaskState.TASK_STATE_SHUTDOWN);
    await until('t2 container removed', () => runtime.containerOf('t2') === undefined);

    // The leader dies; the other manager leads. The agent fails over without losing its task.
    await stopManager(a);
    b.leading = true;
    leaderAddr = b.addr;
    await store.update((tx) => tx.tasks.create(makeTask('svc', 3, { id: 't3', nodeId: 'n1' })));
    await until(
      't3 running via the new leader',
      () => stateOf(store, 't3') === TaskState.TASK_STATE_RUNNING,
      8000,
    );
    assert.equal(runtime.containerOf('t1')?.info.status, 'running');

    // The agent process dies (containers keep running); a new one adopts them.
    const preparesBefore = runtime.calls.filter((c) => c.startsWith('prepare')).length;
    await agent.stop();
    assert.equal(runtime.containerOf('t1')?.info.status, 'running');
    agent = await Agent.start(agentOptions);
    await agent.connected();
    await until('controllers back', () => agent.controller('t1') !== undefined);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(
      runtime.calls.filter((c) => c.startsWith('prepare')).length,
      preparesBefore,
      'no container was created again',
    );
    assert.equal([...runtime.containers.values()].filter((c) => c.info.taskId === 't1').length, 1);
    // The adopted container's true end is reported.
    runtime.containerOf('t1')?.exit(0);
    await until('t1 complete', () => stateOf(store, 't1') === TaskState.TASK_STATE_COMPLETE);

    // A task removed from the store is shut down and forgotten.
    await store.update((tx) => tx.tasks.delete('t3'));
    await until('t3 container removed', () => runtime.containerOf('t3') === undefined);
    assert.ok(!agent.assignedTaskIds().includes('t3'));
  } finally {
    await agent.stop();
    await stopManager(a).catch(() => undefined);
    await stopManager(b);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('a runtime that does not answer makes the node NOT_READY; its tasks wait and run once it answers', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  await store.update((tx) => tx.nodes.create(makeNode('h', { id: 'n1' })));
  const m = await startManager(store, () => m.addr);
  m.leading = true;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-test-'));
  const runtime = new FakeRuntime();
  runtime.down = true;
  const agent = await Agent.start({
    dataDir,
    credentials: credentials.createInsecure(),
    managers: [m.addr],
    nodeId: 'n1',
    runtime,
    logger,
  });
  const node = () => store.view((tx) => tx.nodes.get('n1'));
  try {
    // Down from the start: the node still connects, described from the host, and says why.
    await agent.connected();
    assert.equal(node()?.status?.state, NodeState.NODE_STATE_NOT_READY);
    assert.match(node()?.status?.message ?? '', /container runtime unavailable: the fake engine is down/);
    assert.equal(node()?.description?.runtimeName, 'fake');
    assert.equal(node()?.description?.hostname, os.hostname());

    await store.update((tx) => tx.tasks.create(makeTask('svc', 1, { id: 't1', nodeId: 'n1' })));
    await until('t1 accepted by the agent', () => agent.assignedTaskIds().includes('t1'));
    assert.notEqual(
      stateOf(store, 't1'),
      TaskState.TASK_STATE_FAILED,
      'the engine being down is not the task failing',
    );

    runtime.down = false;
    await until('node READY', () => node()?.status?.state === NodeState.NODE_STATE_READY, 10_000);
    await until('t1 running', () => stateOf(store, 't1') === TaskState.TASK_STATE_RUNNING, 10_000);

    runtime.down = true;
    await until(
      'node NOT_READY again',
      () => node()?.status?.state === NodeState.NODE_STATE_NOT_READY,
      10_000,
    );
    assert.ok(
      store.view((tx) => tx.tasks.get('t1')),
      'its task stays in the store',
    );
    runtime.down = false;
    await until('node READY again', () => node()?.status?.state === NodeState.NODE_STATE_READY, 10_000);
  } finally {
    await agent.stop();
    await stopManager(m);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('an agent restarted while its runtime is down fails none of its tasks and adopts their containers once it answers', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  await store.update((tx) => tx.nodes.create(makeNode('h', { id: 'n1' })));
  const m = await startManager(store, () => m.addr);
  m.leading = true;
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-test-'));
  const runtime = new FakeRuntime();
  const options = {
    dataDir,
    credentials: credentials.createInsecure(),
    managers: [m.addr],
    nodeId: 'n1',
    runtime,
    logger,
  };
  let agent = await Agent.start(options);
  const node = () => store.view((tx) => tx.nodes.get('n1'));
  try {
    await store.update((tx) => {
      tx.tasks.create(makeTask('svc', 1, { id: 't1', nodeId: 'n1' }));
      tx.tasks.create(makeTask('svc', 2, { id: 'gone', nodeId: 'n1' }));
    });
    await until('t1 running', () => stateOf(store, 't1') === TaskState.TASK_STATE_RUNNING);
    await until('gone running', () => stateOf(store, 'gone') === TaskState.TASK_STATE_RUNNING);
    const container = runtime.containerOf('t1');
    assert.ok(container);
    await agent.stop();
    runtime.down = true;
    // Removed from the store while the agent was away: its container is an orphan.
    await store.update((tx) => tx.tasks.delete('gone'));
    agent = await Agent.start(options);
    await agent.connected();
    await until('node NOT_READY', () => node()?.status?.state === NodeState.NODE_STATE_NOT_READY);
    await until('t1 held again', () => agent.assignedTaskIds().includes('t1'));
    assert.equal(agent.controller('t1'), undefined, 'no controller before its container can be seen');
    assert.equal(stateOf(store, 't1'), TaskState.TASK_STATE_RUNNING);

    runtime.down = false;
    await until('node READY', () => node()?.status?.state === NodeState.NODE_STATE_READY);
    await until('t1 adopted', () => agent.controller('t1')?.container === container.info.id);
    await until('the orphan removed', () => runtime.containerOf('gone') === undefined);
    assert.equal(runtime.calls.filter((c) => c === 'prepare t1').length, 1, 'no second container for t1');
    assert.equal(stateOf(store, 't1'), TaskState.TASK_STATE_RUNNING);
    container.exit(3);
    await until(
      't1 failed: its container is watched',
      () => stateOf(store, 't1') === TaskState.TASK_STATE_FAILED,
    );
  } finally {
    await agent.stop();
    await stopManager(m);
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

test('over mutual TLS the dispatcher knows the agent by its certificate', async () => {
  const ca = await createRootCA('c1');
  const issue = async (nodeId: string, role: 'manager' | 'worker'): Promise<NodeTls> => {
    const key = await generateNodeKey();
    const certPem = await signNodeCertificate(ca, key.csrPem, { nodeId, role, clusterId: 'c1' });
    return { caCertPem: ca.certPem, certPem, keyPem: key.keyPem };
  };
  const managerTls = await issue('m1', 'manager');
  const workerTls = await issue('w1', 'worker');
  const { stores } = localStores(1);
  const store = stores[0];
  if (!store) throw new Error('no store');
  await store.update((tx) => tx.nodes.create(makeNode('w', { id: 'w1' })));
  // No identify hook: the production path, nodeIdentityFromPeer on the TLS peer certificate.
  const dispatcher = createDispatcher({
    store,
    isLeader: () => true,
    leaderAddress: () => undefined,
    logger,
  });
  const server = new Server();
  server.addService(DispatcherService, dispatcher.server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', serverCredentials(managerTls), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-tls-'));
  const runtime = new FakeRuntime();
  const agent = await Agent.start({
    dataDir,
    tls: workerTls,
    managers: [`127.0.0.1:${port}`],
    nodeId: 'w1',
    runtime,
    logger,
  });
  try {
    await agent.connected();
    assert.equal(store.view((tx) => tx.nodes.get('w1'))?.status?.state, NodeState.NODE_STATE_READY);
    await store.update((tx) => tx.tasks.create(makeTask('svc', 1, { id: 'tt', nodeId: 'w1' })));
    await until('tt running', () => stateOf(store, 'tt') === TaskState.TASK_STATE_RUNNING);
  } finally {
    await agent.stop();
    dispatcher.close();
    server.forceShutdown();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});
