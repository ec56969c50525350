// The log broker over real gRPC (insecure, on loopback) with two agents' log publishers on fake
// runtimes: lines of both nodes reach the reader with their context, tail applies per task, the
// stream ends when both nodes are done, follow lasts until the reader leaves (and the agents
// stop), unknown targets are NOT_FOUND, and a node without a listener is a warning.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  credentials,
  InterceptingCall,
  Metadata,
  Server,
  type Interceptor,
  type ServerReadableStream,
  type ServerWritableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  LogsClient,
  LogsService,
  type LogEntry,
  type ServiceLogsMessage,
  type ServiceLogsRequest,
} from '../../gen/cluster/v1/control';
import { LogBrokerClient, LogBrokerService } from '../../gen/cluster/v1/dispatcher';
import { Service, Task, TaskState } from '../../gen/cluster/v1/objects';
import { toClusterError } from '../../common/errors';
import { LocalProposer, MemoryStore } from '../../store';
import { LogPublisher } from '../../agent/logs';
import { FakeRuntime } from '../../agent/testing';
import type { LogLine, LogOptions } from '../../agent/runtime';
import { bindServer, seed, shutdownServer, silentLogger, simpleSpec, testNode } from '../controlapi/testing';
import { createLogBroker } from './broker';

/** A runtime whose containers have the lines the test gives; followed streams wait for more. */
class LoggingRuntime extends FakeRuntime {
  readonly lines = new Map<string, LogLine[]>();
  readonly followers = new Set<string>();
  private wake: (() => void)[] = [];

  add(containerId: string, text: string): void {
    const list = this.lines.get(containerId) ?? [];
    list.push({ stream: 'stdout', timeMs: 1000 + list.length, text });
    this.lines.set(containerId, list);
    for (const w of this.wake.splice(0)) w();
  }

  async *logs(containerId: string, options: LogOptions): AsyncIterable<LogLine> {
    const all = this.lines.get(containerId) ?? [];
    let next = options.tail === undefined ? 0 : Math.max(0, all.length - options.tail);
    const signal = options.signal;
    for (;;) {
      const list = this.lines.get(containerId) ?? [];
      while (next < list.length) {
        const line = list[next++];
        if (line) yield line;
      }
      if (!options.follow || signal?.aborted) return;
      this.followers.add(containerId);
      try {
        await new Promise<void>((resolve) => {
          this.wake.push(resolve);
          signal?.addEventListener('abort', () => resolve(), { once: true });
        });
      } finally {
        this.followers.delete(containerId);
      }
    }
  }
}

const asNode =
  (nodeId: string): Interceptor =>
  (options, nextCall) =>
    new InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set('test-node', nodeId);
        next(metadata, listener);
      },
    });

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 30_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(cond(), 'condition not reached');
}

async function harness(t: { after(fn: () => Promise<void> | void): void }) {
  const store = new MemoryStore();
  new LocalProposer().attach(store);
  const n1 = testNode('node-1', { id: 'n1n1n1n1n1n1n1n1n1n1n1n1n' });
  const n2 = testNode('node-2', { id: 'n2n2n2n2n2n2n2n2n2n2n2n2n' });
  const n3 = testNode('node-3', { id: 'n3n3n3n3n3n3n3n3n3n3n3n3n' });
  const service = Service.fromPartial({
    id: 'svcwebsvcwebsvcwebsvcweb',
    spec: simpleSpec('web', { replicas: 2 }),
  });
  const task = (id: string, slot: number, nodeId: string) =>
    Task.fromPartial({
      id,
      serviceId: service.id,
      slot,
      nodeId,
      desiredState: TaskState.TASK_STATE_RUNNING,
      status: { state: TaskState.TASK_STATE_RUNNING },
    });
  const t1 = task('task1task1task1task1task1', 1, n1.id);
  const t2 = task('task2task2task2task2task2', 2, n2.id);
  await store.update((tx) => tx.services.create(service));
  await seed(store, { nodes: [n1, n2, n3], tasks: [t1, t2] });

  const broker = createLogBroker({
    store,
    isLeader: () => true,
    leaderAddress: () => undefined,
    logger: silentLogger,
    identify: (call: ServerWritableStream<unknown, unknown> | ServerReadableStream<unknown, unknown>) => ({
      nodeId: String(call.metadata.get('test-node')[0] ?? ''),
      role: 'worker',
      clusterId: 'c',
    }),
  });
  const server = new Server();
  server.addService(LogBrokerService, broker.agents);
  server.addService(LogsService, broker.readers);
  const port = await bindServer(server, '127.0.0.1:0');
  const addr = `127.0.0.1:${port}`;

  const agents = [n1.id, n2.id].map((nodeId, i) => {
    const runtime = new LoggingRuntime();
    const containers = new Map<string, string>();
    const publisher = new LogPublisher({
      runtime,
      containerOf: (taskId) => containers.get(taskId),
      logger: silentLogger,
    });
    const client = new LogBrokerClient(addr, credentials.createInsecure(), {
      interceptors: [asNode(nodeId)],
    });
    const stop = publisher.listen(client, `session-${i}`);
    return { nodeId, runtime, containers, client, stop };
  });
  const reader = new LogsClient(addr, credentials.createInsecure());
  t.after(async () => {
    for (const a of agents) {
      a.stop();
      a.client.close();
    }
    reader.close();
    broker.close();
    await shutdownServer(server);
  });
  return { store, broker, agents, reader, t1, t2, service, n3 };
}

function read(
  reader: LogsClient,
  request: Partial<ServiceLogsRequest>,
  onMessage?: (m: ServiceLogsMessage, cancel: () => void) => void,
): Promise<{ entries: LogEntry[]; warnings: string[] }> {
  return new Promise((resolve, reject) => {
    const entries: LogEntry[] = [];
    const warnings: string[] = [];
    const call = reader.serviceLogs(
      { target: '', follow: false, tail: -1, sinceMs: 0, ...request },
      new Metadata(),
    );
    let cancelled = false;
    call.on('data', (m: ServiceLogsMessage) => {
      entries.push(...m.entries);
      warnings.push(...m.warnings);
      onMessage?.(m, () => {
        cancelled = true;
        call.cancel();
      });
    });
    call.on('end', () => resolve({ entries, warnings }));
    call.on('error', (err: ServiceError) =>
      cancelled ? resolve({ entries, warnings }) : reject(toClusterError(err)),
    );
  });
}

/** Both agents connected: a subscription reaches both. */
async function prepared(h: Awaited<ReturnType<typeof harness>>) {
  const [a1, a2] = h.agents;
  assert.ok(a1 && a2);
  a1.containers.set(h.t1.id, await a1.runtime.prepare(h.t1, a1.nodeId));
  a2.containers.set(h.t2.id, await a2.runtime.prepare(h.t2, a2.nodeId));
  for (const text of ['a', 'b', 'c']) a1.runtime.add('c1', `one-${text}`);
  for (const text of ['x', 'y']) a2.runtime.add('c1', `two-${text}`);
  return { a1, a2 };
}

test('lines of every node reach the reader with their context, and the stream ends', async (t) => {
  const h = await harness(t);
  await prepared(h);
  // The listeners connect asynchronously: read until both nodes answered (no warning).
  let result = await read(h.reader, { target: 'web' });
  for (let i = 0; i < 200 && result.warnings.length > 0; i++) {
    await new Promise((r) => setTimeout(r, 10));
    result = await read(h.reader, { target: 'web' });
  }
  assert.deepEqual(result.warnings, []);
  const texts = result.entries.map((e) => `${e.context?.nodeName}:${e.context?.slot}:${e.text}`).sort();
  assert.deepEqual(texts, [
    'node-1:1:one-a',
    'node-1:1:one-b',
    'node-1:1:one-c',
    'node-2:2:two-x',
    'node-2:2:two-y',
  ]);
  assert.ok(result.entries.every((e) => e.context?.serviceName === 'web'));

  const tailed = await read(h.reader, { target: 'web', tail: 1 });
  assert.deepEqual(tailed.entries.map((e) => e.text).sort(), ['one-c', 'two-y']);

  const oneTask = await read(h.reader, { target: h.t2.id.slice(0, 8) });
  assert.deepEqual(
    oneTask.entries.map((e) => e.text),
    ['two-x', 'two-y'],
  );
});

test('follow streams new lines and new tasks until the reader leaves, and the agents stop reading', async (t) => {
  const h = await harness(t);
  const { a1, a2 } = await prepared(h);
  let seen: string[] = [];
  let cancelReader: (() => void) | undefined;
  const done = read(h.reader, { target: 'web', follow: true, tail: 0 }, (m, cancel) => {
    cancelReader = cancel;
    seen = [...seen, ...m.entries.map((e) => e.text)];
  });
  await until(() => a1.runtime.followers.has('c1') && a2.runtime.followers.has('c1'));
  a1.runtime.add('c1', 'late-1');
  a2.runtime.add('c1', 'late-2');
  await until(() => seen.includes('late-1') && seen.includes('late-2'));
  assert.ok(!seen.includes('one-a'), 'tail 0 sends no old lines');

  // A task that starts while the reader follows (a replacement): all its lines come too.
  const t3 = Task.fromPartial({
    id: 'task3task3task3task3task3',
    serviceId: h.service.id,
    slot: 3,
    nodeId: a1.nodeId,
    desiredState: TaskState.TASK_STATE_RUNNING,
    status: { state: TaskState.TASK_STATE_RUNNING },
  });
  const c3 = await a1.runtime.prepare(t3, a1.nodeId);
  a1.containers.set(t3.id, c3);
  a1.runtime.add(c3, 'three-a');
  await h.store.update((tx) => tx.tasks.create(t3));
  await until(() => seen.includes('three-a'));
  cancelReader?.();
  await done;
  await until(() => a1.runtime.followers.size === 0 && a2.runtime.followers.size === 0);
});

test('an unknown target is NOT_FOUND; a node without a listener is a warning', async (t) => {
  const h = await harness(t);
  await assert.rejects(
    read(h.reader, { target: 'nope' }),
    (err: Error) => toClusterError(err).code === 'NOT_FOUND',
  );
  await h.store.update((tx) =>
    tx.tasks.create(
      Task.fromPartial({
        id: 'task3task3task3task3task3',
        serviceId: h.service.id,
        slot: 3,
        nodeId: h.n3.id,
        desiredState: TaskState.TASK_STATE_RUNNING,
        status: { state: TaskState.TASK_STATE_RUNNING },
      }),
    ),
  );
  const r = await read(h.reader, { target: 'task3task3task3task3task3' });
  assert.deepEqual(r.entries, []);
  assert.match(r.warnings.join('\n'), /node-3 is not connected/);
});
