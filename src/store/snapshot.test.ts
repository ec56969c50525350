// Snapshots serialize the whole store and restore it exactly: objects, versions, timestamps,
// the applied index, and the indexes rebuilt from the objects. The codec refuses what it cannot read.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { TaskState } from '../gen/cluster/v1/objects';
import { decodeSnapshot, decodeTransaction, encodeTransaction } from './codec';
import { MemoryStore } from './memory_store';
import { TABLE_NAMES } from './tables';
import { localStores, makeCluster, makeNetwork, makeNode, makeService, makeTask } from './testing';
import type { StoreEvent } from './watch';

async function populated(): Promise<MemoryStore> {
  const { stores } = localStores(1, { nowMs: () => 1_700_000_000_123 });
  const store = stores[0];
  const svc = makeService('web', { replicas: 2 });
  await store.update((tx) => {
    tx.clusters.create(makeCluster());
    tx.networks.create(makeNetwork('backend'));
    tx.nodes.create(makeNode('h1', { id: 'node-1' }));
    tx.services.create(svc);
  });
  await store.update((tx) => {
    tx.tasks.create(makeTask(svc.id, 1, { nodeId: 'node-1' }));
    tx.tasks.create(makeTask(svc.id, 2, { desiredState: TaskState.TASK_STATE_SHUTDOWN }));
  });
  return store;
}

test('snapshot → restore gives an equal store: same objects, versions, timestamps, index, and working indexes', async () => {
  const store = await populated();
  const data = store.snapshot();
  const copy = new MemoryStore();
  copy.restore(data);
  assert.equal(copy.appliedIndex, store.appliedIndex);
  assert.deepEqual(Buffer.from(copy.snapshot()), Buffer.from(data));
  for (const table of TABLE_NAMES) {
    const sorted = (s: MemoryStore) =>
      s.view((tx) => tx[table].list()).sort((a, b) => a.id.localeCompare(b.id));
    assert.deepEqual(sorted(copy), sorted(store), table);
  }
  const svcId = store.view((tx) => tx.services.lookup('web').id);
  copy.view((tx) => {
    assert.equal(tx.tasks.find('serviceId', svcId).length, 2);
    assert.equal(tx.tasks.find('nodeId', 'node-1').length, 1);
    assert.equal(tx.tasks.find('desiredState', TaskState.TASK_STATE_SHUTDOWN).length, 1);
    assert.equal(tx.nodes.lookup('h1').id, 'node-1');
    assert.equal(tx.services.lookup('web').meta?.createdAt?.getTime(), 1_700_000_000_123);
  });
  // Name uniqueness holds after a restore too (the name index was rebuilt).
  const { proposer } = localStores(0);
  proposer.attach(copy);
  await assert.rejects(
    copy.update((tx) => tx.networks.create(makeNetwork('backend'))),
    /already exists/,
  );
});

test('an empty store round-trips, and a snapshot older than the store is refused', async () => {
  const empty = new MemoryStore();
  const restored = new MemoryStore();
  restored.restore(empty.snapshot());
  assert.equal(restored.appliedIndex, 0);
  const store = await populated();
  assert.throws(() => store.restore(empty.snapshot()), /snapshot at index 0 is older than applied index 2/);
});

test('restore replaces the state, and watchers receive the difference as events', async () => {
  const source = await populated();
  const target = await populated(); // different ids: everything differs
  const keptTask = source.view((tx) => tx.tasks.list()[0]);
  assert.ok(keptTask);
  // Make target's state older than source's by one more write to source.
  await source.update((tx) => tx.nodes.create(makeNode('h2')));
  const controller = new AbortController();
  const watcher = target.watch({ signal: controller.signal });
  target.restore(source.snapshot());
  const events: StoreEvent[] = [];
  const total = 2 * 5 + 1; // target's 5 objects deleted, source's 6 created
  while (events.length < total) {
    const r = await watcher.next();
    if (r.done) break;
    events.push(r.value);
  }
  assert.equal(events.filter((e) => e.kind === 'delete').length, 5);
  assert.equal(events.filter((e) => e.kind === 'create').length, 6);
  assert.ok(events.every((e) => e.version === 3));
  assert.equal(target.view((tx) => tx.tasks.get(keptTask.id))?.id, keptTask.id);
  controller.abort();
});

test('restore sends only what changed: an object at the same version sends nothing', async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const a = makeService('a');
  const b = makeService('b');
  await store.update((tx) => {
    tx.services.create(a);
    tx.services.create(b);
  });
  const behind = new MemoryStore();
  behind.restore(store.snapshot());
  const readA = store.view((tx) => tx.services.get(a.id));
  assert.ok(readA);
  readA.previousSpec = readA.spec;
  await store.update((tx) => tx.services.update(readA));
  const controller = new AbortController();
  const watcher = behind.watch({ signal: controller.signal });
  behind.restore(store.snapshot());
  const first = await watcher.next();
  assert.ok(!first.done);
  assert.equal(first.value.kind, 'update');
  assert.equal(first.value.object.id, a.id);
  assert.equal(first.value.oldObject?.meta?.version, 1);
  assert.equal(proposer.log.length, 2);
  // Nothing else is queued: the next read waits until abort ends it.
  const next = watcher.next();
  controller.abort();
  assert.deepEqual(await next, { value: undefined, done: true });
});

test('the codec round-trips transactions and refuses unknown formats and tables', () => {
  const svc = makeService('web');
  const data = encodeTransaction({
    timestampMs: 1_700_000_000_000,
    actions: [
      { kind: 'create', table: 'services', version: 0, object: svc },
      { kind: 'delete', table: 'tasks', id: 't1', version: 41 },
    ],
  });
  const back = decodeTransaction(data);
  assert.equal(back.timestampMs, 1_700_000_000_000);
  assert.deepEqual(back.actions, [
    { kind: 'create', table: 'services', version: 0, object: svc },
    { kind: 'delete', table: 'tasks', id: 't1', version: 41 },
  ]);
  // format = 2
  assert.throws(() => decodeTransaction(new Uint8Array([0x08, 0x02])), /transaction format 2/);
  // format 1 with one action naming table 9
  assert.throws(
    () => decodeTransaction(new Uint8Array([0x08, 0x01, 0x1a, 0x02, 0x10, 0x09])),
    /unknown table tag 9/,
  );
  assert.throws(() => decodeSnapshot(new Uint8Array([0x08, 0x07])), /snapshot format 7/);
  assert.throws(() => decodeSnapshot(new Uint8Array([])), /snapshot format 0/);
});
