// Property: any sequence of saves (with conflicting rewrites and received snapshots),
// snapshots, compactions and reopens leaves LevelRaftStorage equal to a plain in-memory model
// of the log, both live and after every reopen from disk.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import fc from 'fast-check';

import { type ConfState, type Entry, EntryType, type HardState, type Snapshot } from '../types';
import { LevelRaftStorage } from './index';
import { withTempDir } from './test_util';

/** The obviously-right model: a compaction point and an array of the entries after it. */
interface Model {
  hardState: HardState;
  compacted: { index: number; term: number };
  log: Entry[];
  snapshot: Snapshot;
}

function lastIndex(m: Model): number {
  return m.compacted.index + m.log.length;
}

function termAt(m: Model, index: number): number {
  return index === m.compacted.index ? m.compacted.term : m.log[index - m.compacted.index - 1].term;
}

/** Abstract operations: the seeds are turned into valid arguments against the current state. */
type Op =
  | { kind: 'append'; back: number; count: number; bumpTerm: boolean; commitSeed: number }
  | { kind: 'commit'; seed: number }
  | { kind: 'snapshot'; seed: number; retain: number; voters: number[] }
  | { kind: 'compact'; seed: number }
  | { kind: 'receiveSnapshot'; jump: number; count: number; voters: number[] }
  | { kind: 'reopen' };

const voters = fc.uniqueArray(fc.integer({ min: 1, max: 9 }), { minLength: 1, maxLength: 5 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('append' as const),
      back: fc.nat(6),
      count: fc.integer({ min: 1, max: 4 }),
      bumpTerm: fc.boolean(),
      commitSeed: fc.nat(),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('commit' as const), seed: fc.nat() }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant('snapshot' as const),
      seed: fc.nat(),
      retain: fc.nat(6),
      voters,
    }),
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('compact' as const), seed: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('receiveSnapshot' as const),
      jump: fc.nat(5),
      count: fc.nat(3),
      voters,
    }),
  },
  { weight: 2, arbitrary: fc.constant({ kind: 'reopen' as const }) },
);

let nonce = 0;
/** Operations that did something, by kind: the generator must reach every kind. */
const executed = new Map<Op['kind'], number>();
function makeEntry(index: number, term: number): Entry {
  nonce++;
  return {
    index,
    term,
    type: nonce % 5 === 0 ? EntryType.ConfChange : EntryType.Normal,
    data: new TextEncoder().encode(`${index}/${term}/${nonce}`),
  };
}

function confState(ids: number[]): ConfState {
  return { voters: ids.slice(0, 3), learners: ids.slice(3) };
}

/** Applies `op` to both; returns the storage to use next (a reopen gives a new one). */
async function step(dir: string, storage: LevelRaftStorage, m: Model, op: Op): Promise<LevelRaftStorage> {
  const last = lastIndex(m);
  const commit = m.hardState.commit;
  switch (op.kind) {
    case 'append': {
      // Raft rewrites only uncommitted entries, and never leaves a gap.
      const start = Math.max(commit + 1, m.compacted.index + 1, last + 1 - op.back);
      const term = Math.max(termAt(m, start - 1), m.hardState.term) + (op.bumpTerm ? 1 : 0);
      const added = Array.from({ length: op.count }, (_, i) => makeEntry(start + i, term));
      const newLast = start + op.count - 1;
      const hardState = { term, vote: term % 3, commit: commit + (op.commitSeed % (newLast - commit + 1)) };
      await storage.save(hardState, added);
      m.log = m.log.slice(0, start - m.compacted.index - 1).concat(added);
      m.hardState = hardState;
      return storage;
    }
    case 'commit': {
      if (last === commit) return storage;
      const hardState = { ...m.hardState, commit: commit + 1 + (op.seed % (last - commit)) };
      await storage.save(hardState, []);
      m.hardState = hardState;
      return storage;
    }
    case 'snapshot': {
      const snapIndex = m.snapshot.metadata.index;
      if (commit <= snapIndex) return storage;
      const index = snapIndex + 1 + (op.seed % (commit - snapIndex));
      const data = new TextEncoder().encode(`image at ${index}`);
      const cs = confState(op.voters);
      await storage.createSnapshot(index, cs, data, op.retain);
      m.snapshot = { metadata: { index, term: termAt(m, index), confState: cs }, data };
      const compactTo = Math.max(m.compacted.index, index - op.retain);
      const compactTerm = termAt(m, compactTo);
      m.log = m.log.slice(compactTo - m.compacted.index);
      m.compacted = { index: compactTo, term: compactTerm };
      return storage;
    }
    case 'compact': {
      const snapIndex = m.snapshot.metadata.index;
      if (snapIndex <= m.compacted.index) return storage;
      const index = m.compacted.index + 1 + (op.seed % (snapIndex - m.compacted.index));
      const term = termAt(m, index);
      await storage.compact(index);
      m.log = m.log.slice(index - m.compacted.index);
      m.compacted = { index, term };
      return storage;
    }
    case 'receiveSnapshot': {
      const index = Math.max(m.snapshot.metadata.index + 1, commit + op.jump);
      const term = m.hardState.term + 1;
      const snapshot = {
        metadata: { index, term, confState: confState(op.voters) },
        data: new TextEncoder().encode(`received ${index}`),
      };
      const added = Array.from({ length: op.count }, (_, i) => makeEntry(index + 1 + i, term));
      const hardState = { term, vote: 0, commit: index };
      await storage.save(hardState, added, snapshot);
      m.snapshot = snapshot;
      m.compacted = { index, term };
      m.log = added;
      m.hardState = hardState;
      return storage;
    }
    case 'reopen': {
      await storage.close();
      return LevelRaftStorage.open(dir);
    }
  }
}

function assertMatches(storage: LevelRaftStorage, m: Model, context: string): void {
  assert.equal(storage.firstIndex(), m.compacted.index + 1, `${context}: firstIndex`);
  assert.equal(storage.lastIndex(), lastIndex(m), `${context}: lastIndex`);
  assert.equal(storage.term(m.compacted.index), m.compacted.term, `${context}: term at the compaction point`);
  assert.deepEqual(
    storage.entries(m.compacted.index + 1, lastIndex(m) + 1, Number.MAX_SAFE_INTEGER),
    m.log,
    `${context}: entries`,
  );
  assert.deepEqual(storage.snapshot(), m.snapshot, `${context}: snapshot`);
  assert.deepEqual(
    storage.initialState(),
    { hardState: m.hardState, confState: m.snapshot.metadata.confState },
    `${context}: initial state`,
  );
}

test('save/snapshot/compact/reopen sequences match an in-memory model, live and from disk', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40, size: 'medium' }), async (ops) => {
      await withTempDir(async (dir) => {
        const model: Model = {
          hardState: { term: 0, vote: 0, commit: 0 },
          compacted: { index: 0, term: 0 },
          log: [],
          snapshot: {
            metadata: { index: 0, term: 0, confState: { voters: [], learners: [] } },
            data: new Uint8Array(0),
          },
        };
        let storage = await LevelRaftStorage.open(dir);
        try {
          for (const [i, op] of ops.entries()) {
            const before = JSON.stringify([
              model.hardState,
              model.compacted,
              model.log.length,
              model.snapshot.metadata,
            ]);
            storage = await step(dir, storage, model, op);
            const after = JSON.stringify([
              model.hardState,
              model.compacted,
              model.log.length,
              model.snapshot.metadata,
            ]);
            if (op.kind === 'reopen' || before !== after)
              executed.set(op.kind, (executed.get(op.kind) ?? 0) + 1);
            assertMatches(storage, model, `after op ${i} (${op.kind})`);
          }
          await storage.close();
          storage = await LevelRaftStorage.open(dir);
          assertMatches(storage, model, 'after the final reopen');
        } finally {
          await storage.close();
        }
      });
    }),
    { numRuns: 40 },
  );
  if (process.env.STORAGE_PROPERTY_STATS) console.log(executed);
  for (const kind of ['append', 'commit', 'snapshot', 'compact', 'receiveSnapshot', 'reopen'] as const) {
    assert.ok(
      (executed.get(kind) ?? 0) >= 10,
      `operation '${kind}' ran only ${executed.get(kind) ?? 0} times`,
    );
  }
});
