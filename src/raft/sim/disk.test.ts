// Tests of the simulator's building blocks: the simulated disk (what survives a crash), the
// seeded random source (same seed, same stream) and the KV state machine's snapshots.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type Entry, EntryType, MemoryStorage } from '../index';
import { cloneStorage, SimDisk } from './disk';
import { KvStateMachine } from './kv';
import { Rng } from './rng';

function entry(index: number, term: number, text = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: new TextEncoder().encode(text) };
}

function logOf(s: MemoryStorage): string[] {
  return s.entries(s.firstIndex(), s.lastIndex() + 1, Infinity).map((e) => `${e.index}/${e.term}`);
}

test('an honest disk keeps every acknowledged write across a crash', () => {
  const disk = new SimDisk(true);
  disk.write({ kind: 'entries', entries: [entry(1, 1), entry(2, 1)] });
  disk.write({ kind: 'hardState', hardState: { term: 1, vote: 2, commit: 2 } });
  disk.crash();
  assert.deepEqual(logOf(disk.live), ['1/1', '2/1']);
  assert.deepEqual(disk.live.initialState().hardState, { term: 1, vote: 2, commit: 2 });
});

test('a lying disk loses what it acknowledged but did not sync', () => {
  const disk = new SimDisk(false);
  disk.write({ kind: 'entries', entries: [entry(1, 1)] });
  disk.write({ kind: 'hardState', hardState: { term: 1, vote: 0, commit: 1 } });
  disk.flush();
  disk.write({ kind: 'entries', entries: [entry(2, 2)] });
  disk.write({ kind: 'hardState', hardState: { term: 2, vote: 3, commit: 1 } });
  // Before the crash the process reads what it wrote...
  assert.deepEqual(logOf(disk.live), ['1/1', '2/2']);
  assert.equal(disk.unsyncedWrites, 2);
  disk.crash();
  // ...after it, only what was synced.
  assert.deepEqual(logOf(disk.live), ['1/1']);
  assert.deepEqual(disk.live.initialState().hardState, { term: 1, vote: 0, commit: 1 });
  assert.equal(disk.unsyncedWrites, 0);
});

test('the durable copy does not share entry objects with the running process', () => {
  const disk = new SimDisk(true);
  const e = entry(1, 1, 'original');
  disk.write({ kind: 'entries', entries: [e] });
  e.data[0] = 0; // a bug that scribbles on an entry after handing it over
  disk.crash();
  assert.equal(new TextDecoder().decode(disk.live.entries(1, 2, Infinity)[0].data), 'original');
});

test('cloneStorage keeps the snapshot, the retained log below it and the hard state', () => {
  const src = new MemoryStorage();
  src.append([1, 2, 3, 4, 5, 6].map((i) => entry(i, i < 4 ? 1 : 2)));
  src.setHardState({ term: 2, vote: 1, commit: 6 });
  src.createSnapshot(5, { voters: [1, 2, 3], learners: [4] }, new TextEncoder().encode('state@5'));
  src.compact(3); // entries 4 and 5 stay below the snapshot for slow followers
  const copy = cloneStorage(src);
  assert.equal(copy.firstIndex(), 4);
  assert.deepEqual(logOf(copy), ['4/2', '5/2', '6/2']);
  assert.equal(copy.term(3), 1);
  assert.deepEqual(copy.snapshot().metadata, src.snapshot().metadata);
  assert.deepEqual(copy.snapshot().data, src.snapshot().data);
  assert.deepEqual(copy.initialState(), src.initialState());
  // Independent: appending to the copy leaves the source alone.
  copy.append([entry(7, 2)]);
  assert.equal(src.lastIndex(), 6);
});

test('cloneStorage of a log compacted exactly at its snapshot', () => {
  const src = new MemoryStorage();
  src.append([entry(1, 1), entry(2, 1), entry(3, 2)]);
  src.createSnapshot(2, { voters: [1], learners: [] }, new Uint8Array([7]));
  src.compact(2);
  const copy = cloneStorage(src);
  assert.equal(copy.firstIndex(), 3);
  assert.equal(copy.snapshot().metadata.index, 2);
  assert.deepEqual(logOf(copy), ['3/2']);
});

test('the random source is a function of its seed', () => {
  const a = new Rng(99);
  const b = new Rng(99);
  const c = new Rng(100);
  const seqA = Array.from({ length: 50 }, () => a.nextU32());
  const seqB = Array.from({ length: 50 }, () => b.nextU32());
  const seqC = Array.from({ length: 50 }, () => c.nextU32());
  assert.deepEqual(seqA, seqB);
  assert.notDeepEqual(seqA, seqC);
});

test('random helpers stay in range and cover it', () => {
  const rng = new Rng(1);
  const seen = new Set<number>();
  for (let i = 0; i < 2000; i++) {
    const n = rng.int(3, 7);
    assert.ok(n >= 3 && n <= 7 && Number.isInteger(n));
    seen.add(n);
    const f = rng.float();
    assert.ok(f >= 0 && f < 1);
  }
  assert.deepEqual([...seen].sort(), [3, 4, 5, 6, 7]);
  assert.throws(() => rng.int(2, 1), RangeError);
  assert.throws(() => rng.pick([]), RangeError);
  // weighted never picks a zero weight.
  for (let i = 0; i < 500; i++) assert.notEqual(rng.weighted([1, 0, 3]), 1);
  let heads = 0;
  for (let i = 0; i < 10_000; i++) if (rng.chance(0.3)) heads++;
  assert.ok(heads > 2700 && heads < 3300, `chance(0.3) came up ${heads} times in 10000`);
});

test('the KV state machine applies a request once and snapshots canonically', () => {
  const a = new KvStateMachine();
  assert.equal(a.apply({ id: 'w1', op: 'put', key: 'x', value: '1' }), true);
  assert.equal(a.apply({ id: 'w1', op: 'put', key: 'x', value: '1' }), false);
  a.apply({ id: 'w2', op: 'append', key: 'x', value: '2' });
  a.apply({ id: 'w3', op: 'put', key: 'b', value: 'z' });
  assert.equal(a.get('x'), '12');
  assert.equal(a.get('missing'), null);
  // Same state reached in another order of keys gives the same bytes.
  const b = new KvStateMachine();
  b.apply({ id: 'w3', op: 'put', key: 'b', value: 'z' });
  b.apply({ id: 'w1', op: 'put', key: 'x', value: '1' });
  b.apply({ id: 'w2', op: 'append', key: 'x', value: '2' });
  assert.deepEqual(a.serialize(), b.serialize());
  const restored = KvStateMachine.restore(a.serialize());
  assert.equal(restored.get('x'), '12');
  assert.equal(restored.hasApplied('w2'), true);
  assert.equal(restored.apply({ id: 'w2', op: 'append', key: 'x', value: '2' }), false);
});
