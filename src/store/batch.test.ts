// updateEach packs many items into few transactions, skips an item that throws without losing
// the rest, and retries a refused transaction item by item so only stale items fail.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { ClusterError } from '../common/errors';
import { MemoryStore } from './memory_store';
import { localStores, makeTask } from './testing';

test('updateEach writes 1,200 items as 3 transactions of at most 500 changes', async () => {
  const { stores, proposer } = localStores(2);
  const [a, b] = stores as [MemoryStore, MemoryStore];
  const slots = Array.from({ length: 1200 }, (_, i) => i + 1);
  const result = await a.updateEach(slots, (tx, slot) => tx.tasks.create(makeTask('svc', slot)), {
    maxActionsPerTransaction: 500,
  });
  assert.equal(result.transactions, 3);
  assert.equal(proposer.log.length, 3);
  assert.equal(result.index, 3);
  assert.equal(result.events.length, 1200);
  assert.deepEqual(result.failed, []);
  assert.equal(
    b.view((tx) => tx.tasks.find('serviceId', 'svc').length),
    1200,
  );
});

test('an item whose function throws is skipped with its partial writes undone; the others are written', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const result = await store.updateEach([1, 2, 3], (tx, slot) => {
    tx.tasks.create(makeTask('svc', slot, { id: `t${slot}` }));
    tx.tasks.create(makeTask('other', slot, { id: `o${slot}` }));
    if (slot === 2) throw new Error('slot 2 is cursed');
  });
  assert.equal(result.transactions, 1);
  assert.deepEqual(
    result.failed.map((f) => [f.item, f.error.message]),
    [[2, 'slot 2 is cursed']],
  );
  assert.deepEqual(store.view((tx) => tx.tasks.list().map((t) => t.id)).sort(), ['o1', 'o3', 't1', 't3']);
});

test('a transaction refused at apply is retried one item at a time: only the stale item fails', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  await store.update((tx) =>
    [1, 2, 3].forEach((slot) => tx.tasks.create(makeTask('svc', slot, { id: `t${slot}` }))),
  );
  const read = store.view((tx) => tx.tasks.list());
  // Another writer changes t2 first: its proposal is ahead of the batch's in the log.
  const other = store.update((tx) => {
    const t2 = tx.tasks.get('t2');
    assert.ok(t2);
    t2.slot = 20;
    tx.tasks.update(t2);
  });
  const batch = store.updateEach(read, (tx, task) => {
    task.nodeId = 'node-1';
    tx.tasks.update(task);
  });
  await other;
  const result = await batch;
  assert.equal(result.failed.length, 1);
  const [failure] = result.failed;
  assert.equal(failure?.item.id, 't2');
  assert.ok(failure?.error instanceof ClusterError && failure.error.code === 'CONFLICT');
  assert.equal(result.transactions, 2, 't1 and t3 alone');
  const nodes = store.view((tx) => Object.fromEntries(tx.tasks.list().map((t) => [t.id, t.nodeId])));
  assert.deepEqual(nodes, { t1: 'node-1', t2: '', t3: 'node-1' });
});

test('updateEach with nothing to write proposes nothing; a bad limit is refused', async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const result = await store.updateEach([1, 2], () => undefined);
  assert.deepEqual(result, { index: 0, transactions: 0, events: [], failed: [] });
  assert.equal(proposer.log.length, 0);
  await assert.rejects(
    store.updateEach([1], () => undefined, { maxActionsPerTransaction: 0 }),
    RangeError,
  );
});

test('linearizableView waits for the read barrier: a lagging manager then sees a write a local read misses', async () => {
  const { proposer, stores } = localStores(1);
  const leader = stores[0];
  const follower = new MemoryStore();
  let caughtUp = 0;
  // The follower applies the log only when asked: ReadIndex waits for it to catch up.
  follower.setProposer({
    propose: (data) => proposer.propose(data),
    readIndex: () => {
      for (const entry of proposer.log.slice(caughtUp)) follower.apply(entry.index, entry.data);
      caughtUp = proposer.log.length;
      return Promise.resolve();
    },
  });
  await leader.update((tx) => tx.tasks.create(makeTask('svc', 1)));
  assert.equal(
    follower.view((tx) => tx.tasks.list().length),
    0,
    'a local read may be stale',
  );
  assert.equal(await follower.linearizableView((tx) => tx.tasks.list().length), 1);
  // Without a barrier (LocalProposer applies at once) it is a local read.
  assert.equal(await leader.linearizableView((tx) => tx.appliedIndex), 1);
});
