// MemoryStorage: the reference Storage the LevelDB storage composes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { MemoryStorage, SnapshotOutOfDateError } from './memory_storage';
import { entriesWithTerms } from './testing_network';
import { CompactedError, UnavailableError } from './types';
import { RaftInvariantError } from './util';

describe('MemoryStorage', () => {
  it('starts empty with a dummy entry at 0', () => {
    const s = new MemoryStorage();
    assert.equal(s.firstIndex(), 1);
    assert.equal(s.lastIndex(), 0);
    assert.equal(s.term(0), 0);
    assert.deepEqual(s.entries(1, 1, Infinity), []);
  });

  it('append overwrites a conflicting suffix and refuses gaps', () => {
    const s = new MemoryStorage();
    s.append(entriesWithTerms([1, 1, 1]));
    s.append(entriesWithTerms([2], 2));
    assert.equal(s.lastIndex(), 2);
    assert.equal(s.term(2), 2);
    assert.throws(() => s.append(entriesWithTerms([2], 5)), RaftInvariantError);
  });

  it('entries honours maxBytes but returns at least one', () => {
    const s = new MemoryStorage();
    s.append(entriesWithTerms([1, 1, 1]).map((e) => ({ ...e, data: new Uint8Array(1000) })));
    assert.equal(s.entries(1, 4, 10).length, 1);
    assert.equal(s.entries(1, 4, 2100).length, 2);
    assert.throws(() => s.entries(1, 5, Infinity), UnavailableError);
  });

  it('snapshot, compact, then reads below the snapshot throw CompactedError', () => {
    const s = new MemoryStorage();
    s.append(entriesWithTerms([1, 1, 2, 2]));
    const snap = s.createSnapshot(3, { voters: [1, 2], learners: [] }, new Uint8Array([7]));
    assert.deepEqual(snap.metadata, { index: 3, term: 2, confState: { voters: [1, 2], learners: [] } });
    s.compact(3);
    assert.equal(s.firstIndex(), 4);
    assert.equal(s.term(3), 2);
    assert.throws(() => s.term(2), CompactedError);
    assert.throws(() => s.entries(3, 4, Infinity), CompactedError);
    assert.throws(
      () => s.createSnapshot(2, { voters: [], learners: [] }, new Uint8Array(0)),
      SnapshotOutOfDateError,
    );
    assert.deepEqual(s.initialState().confState, { voters: [1, 2], learners: [] });
  });

  it('applySnapshot replaces everything', () => {
    const s = new MemoryStorage();
    s.append(entriesWithTerms([1, 1]));
    s.applySnapshot({
      metadata: { index: 10, term: 4, confState: { voters: [3], learners: [] } },
      data: new Uint8Array(0),
    });
    assert.equal(s.firstIndex(), 11);
    assert.equal(s.lastIndex(), 10);
    assert.equal(s.term(10), 4);
    assert.throws(
      () =>
        s.applySnapshot({
          metadata: { index: 5, term: 4, confState: { voters: [3], learners: [] } },
          data: new Uint8Array(0),
        }),
      SnapshotOutOfDateError,
    );
  });

  it('agrees with a plain array model under random appends and compactions (property)', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              kind: fc.constant('append' as const),
              back: fc.nat(5),
              count: fc.integer({ min: 1, max: 4 }),
              term: fc.integer({ min: 1, max: 9 }),
            }),
            fc.record({ kind: fc.constant('compact' as const), back: fc.nat(5) }),
          ),
          { maxLength: 60 },
        ),
        (ops) => {
          const s = new MemoryStorage();
          const model: number[] = [0]; // model[i] = term of index i
          let first = 1;
          for (const op of ops) {
            const last = model.length - 1;
            if (op.kind === 'append') {
              const start = Math.max(first, last + 1 - op.back);
              const terms = Array<number>(op.count).fill(op.term);
              s.append(entriesWithTerms(terms, start));
              model.length = start;
              model.push(...terms);
            } else {
              const at = last - op.back;
              if (at < first) continue;
              s.compact(at);
              first = at + 1;
            }
            assert.equal(s.lastIndex(), model.length - 1);
            assert.equal(s.firstIndex(), first);
            for (let i = first; i < model.length; i++) assert.equal(s.term(i), model[i]);
          }
        },
      ),
    );
  });
});
