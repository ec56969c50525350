// Watchers see every applied change once, in apply order, and stop on abort, on break, or
// with an error when they fall further behind than their queue limit.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { ClusterError } from '../common/errors';
import { TaskState } from '../gen/cluster/v1/objects';
import type { MemoryStore } from './memory_store';
import { localStores, makeNode, makeService, makeTask } from './testing';
import type { StoreEvent } from './watch';

function oneStore(): MemoryStore {
  return localStores(1).stores[0];
}

/** Reads exactly `count` events (fails the test if the watcher ends first). */
async function take(iter: AsyncIterator<StoreEvent>, count: number): Promise<StoreEvent[]> {
  const events: StoreEvent[] = [];
  while (events.length < count) {
    const r = await iter.next();
    assert.equal(r.done, false, `watcher ended after ${events.length} of ${count} events`);
    if (!r.done) events.push(r.value);
  }
  return events;
}

test('events come in apply order with kind, table, version, and the old object of an update', async () => {
  const store = oneStore();
  const controller = new AbortController();
  const watcher = store.watch({ signal: controller.signal });
  const svc = makeService('web');
  const task = makeTask(svc.id, 1);
  await store.update((tx) => {
    tx.services.create(svc);
    tx.tasks.create(task);
  });
  const read = store.view((tx) => tx.tasks.get(task.id));
  assert.ok(read);
  read.nodeId = 'n1';
  await store.update((tx) => tx.tasks.update(read));
  await store.update((tx) => tx.tasks.delete(task.id));

  const events = await take(watcher, 4);
  assert.deepEqual(
    events.map((e) => [e.kind, e.table, e.object.id, e.version]),
    [
      ['create', 'services', svc.id, 1],
      ['create', 'tasks', task.id, 1],
      ['update', 'tasks', task.id, 2],
      ['delete', 'tasks', task.id, 3],
    ],
  );
  const [, , update, del] = events;
  assert.ok(update?.table === 'tasks' && del?.table === 'tasks');
  assert.equal(update.object.nodeId, 'n1');
  assert.equal(update.object.meta?.version, 2);
  assert.equal(update.oldObject?.nodeId, '');
  assert.equal(update.oldObject?.meta?.version, 1);
  assert.equal(del.object.nodeId, 'n1', 'a delete carries the object as it was');

  controller.abort();
  assert.deepEqual(await watcher.next(), { value: undefined, done: true });
});

test('a table filter keeps only that table; a refused transaction sends nothing', async () => {
  const store = oneStore();
  const controller = new AbortController();
  const watcher = store.watch({ tables: ['nodes'], signal: controller.signal });
  const node = makeNode('h1');
  await store.update((tx) => {
    tx.services.create(makeService('web'));
    tx.nodes.create(node);
  });
  // Two racing creates of one id: the second is refused when it applies (index 3).
  const again = makeNode('h9', { id: 'dup' });
  const racing = await Promise.allSettled([
    store.update((tx) => tx.nodes.create(again)),
    store.update((tx) => tx.nodes.create(again)),
  ]);
  assert.deepEqual(
    racing.map((r) => r.status),
    ['fulfilled', 'rejected'],
  );
  await store.update((tx) => tx.nodes.delete(node.id));
  const events = await take(watcher, 3);
  assert.deepEqual(
    events.map((e) => `${e.kind} ${e.table} ${e.version}`),
    ['create nodes 1', 'create nodes 2', 'delete nodes 4'],
  );
  controller.abort();
});

test('abort ends a pending read and a for-await loop; break removes the watcher', async () => {
  const store = oneStore();
  const controller = new AbortController();
  const watcher = store.watch({ signal: controller.signal });
  const pending = watcher.next();
  controller.abort();
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.equal(watcher.closed, true);

  const seen: string[] = [];
  const looping = (async () => {
    for await (const event of store.watch()) {
      seen.push(event.object.id);
      if (seen.length === 2) break;
    }
  })();
  await store.update((tx) => tx.services.create(makeService('a', { id: 'a' })));
  await store.update((tx) => tx.services.create(makeService('b', { id: 'b' })));
  await looping;
  await store.update((tx) => tx.services.create(makeService('c', { id: 'c' })));
  assert.deepEqual(seen, ['a', 'b']);
  // An already aborted signal gives a watcher that is over at once.
  const over = store.watch({ signal: AbortSignal.abort() });
  assert.deepEqual(await over.next(), { value: undefined, done: true });
});

test('a watcher that falls behind its queue limit is closed with RESOURCE_EXHAUSTED, others go on', async () => {
  const store = oneStore();
  const slow = store.watch({ queueLimit: 3 });
  const controller = new AbortController();
  const fine = store.watch({ signal: controller.signal });
  await store.update((tx) => {
    for (let slot = 1; slot <= 4; slot++) tx.tasks.create(makeTask('s', slot));
  });
  assert.equal(slow.closed, true);
  await assert.rejects(slow.next(), (err: unknown) => {
    assert.ok(err instanceof ClusterError);
    assert.equal(err.code, 'RESOURCE_EXHAUSTED');
    assert.match(err.message, /fell 3 events behind \(the queue limit\)/);
    return true;
  });
  assert.deepEqual(await slow.next(), { value: undefined, done: true }, 'the error is thrown once');
  assert.equal((await take(fine, 4)).length, 4);
  controller.abort();
  assert.throws(() => store.watch({ queueLimit: 0 }), RangeError);
});

test('a watcher that keeps up is never closed, however many events pass through it', async () => {
  const store = oneStore();
  const controller = new AbortController();
  const watcher = store.watch({ queueLimit: 2, signal: controller.signal });
  let received = 0;
  const reading = (async () => {
    for await (const event of watcher) {
      assert.equal(event.version, received + 1);
      if (++received === 500) break;
    }
  })();
  for (let i = 0; i < 500; i++) {
    await store.update((tx) =>
      tx.tasks.create(makeTask('s', i + 1, { desiredState: TaskState.TASK_STATE_RUNNING })),
    );
  }
  await reading;
  assert.equal(received, 500);
});

test('viewAndWatch: the state read and the first event watched meet with no transaction lost between', async () => {
  const store = oneStore();
  await store.update((tx) => tx.services.create(makeService('a')));
  const racing = store.update((tx) => tx.services.create(makeService('b')));
  const controller = new AbortController();
  const { value, watcher } = store.viewAndWatch((tx) => tx.services.list().length, {
    signal: controller.signal,
  });
  await racing;
  assert.equal(value, 1);
  const [event] = await take(watcher, 1);
  assert.equal(event?.version, 2);
  controller.abort();
});
