// The log: stable (storage) plus unstable parts, conflict search, commit and applied cursors.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { RaftLog } from './log';
import { MemoryStorage } from './memory_storage';
import { entriesWithTerms, storageWithTerms } from './testing_network';
import { CompactedError, UnavailableError } from './types';
import { RaftInvariantError } from './util';

const terms = (log: RaftLog): number[] => log.allEntries().map((e) => e.term);

describe('RaftLog', () => {
  it('reads across storage and unstable entries, and stableTo moves the boundary', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 1, 2]));
    log.append(entriesWithTerms([3, 3], 4));
    assert.deepEqual(terms(log), [1, 1, 2, 3, 3]);
    assert.equal(log.lastIndex(), 5);
    assert.deepEqual(
      log.unstableEntries().map((e) => e.index),
      [4, 5],
    );
    log.stableTo(4, 3);
    assert.deepEqual(
      log.unstableEntries().map((e) => e.index),
      [5],
    );
    log.stableTo(5, 9);
    assert.deepEqual(
      log.unstableEntries().map((e) => e.index),
      [5],
      'a term mismatch means the entry was replaced',
    );
  });

  it('term() throws for compacted and missing indexes', () => {
    const s = storageWithTerms([1], [1, 1, 2, 2]);
    s.createSnapshot(2, { voters: [1], learners: [] }, new Uint8Array(0));
    s.compact(2);
    const log = new RaftLog(s);
    assert.equal(log.term(2), 1, 'the snapshot point keeps its term');
    assert.throws(() => log.term(1), CompactedError);
    assert.throws(() => log.term(5), UnavailableError);
    assert.throws(() => log.entries(2, Infinity), CompactedError);
  });

  it('findConflictByTerm returns the last index at or below a term', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 1, 2, 2, 5, 5]));
    assert.deepEqual(log.findConflictByTerm(6, 4), { index: 4, term: 2 });
    assert.deepEqual(log.findConflictByTerm(6, 5), { index: 6, term: 5 });
    assert.deepEqual(log.findConflictByTerm(6, 0), { index: 0, term: 0 });
    assert.deepEqual(log.findConflictByTerm(3, 1), { index: 2, term: 1 });
  });

  it('maybeAppend truncates a conflicting suffix and commits up to the last new entry', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 2, 2]));
    assert.equal(log.maybeAppend(1, 1, 10, entriesWithTerms([3], 2)), 2);
    assert.deepEqual(terms(log), [1, 3]);
    assert.equal(log.committed, 2);
    assert.equal(log.maybeAppend(2, 2, 10, []), undefined, 'prev term mismatch');
  });

  it('refuses to overwrite committed entries (loudly)', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 1, 1]));
    log.commitTo(2);
    assert.throws(() => log.maybeAppend(0, 0, 2, entriesWithTerms([2])), RaftInvariantError);
  });

  it('commit never moves back and never passes the last index; applied never passes commit', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 1, 1]));
    log.commitTo(2);
    log.commitTo(1);
    assert.equal(log.committed, 2);
    assert.throws(() => log.commitTo(9), RaftInvariantError);
    assert.throws(() => log.appliedTo(3), RaftInvariantError);
    log.appliedTo(2);
    assert.throws(() => log.appliedTo(1), RaftInvariantError);
  });

  it('only entries of the given term are committed by count', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 2]));
    assert.equal(log.maybeCommit(2, 3), false);
    assert.equal(log.maybeCommit(2, 2), true);
    assert.equal(log.committed, 2);
  });

  it('hands out committed entries up to the size limit, from applied+1', () => {
    const s = new MemoryStorage();
    s.append(entriesWithTerms([1, 1, 1, 1]).map((e) => ({ ...e, data: new Uint8Array(100) })));
    const log = new RaftLog(s, 250);
    log.commitTo(4);
    assert.equal(log.nextCommittedEntries().length, 2);
    log.appliedTo(2);
    assert.deepEqual(
      log.nextCommittedEntries().map((e) => e.index),
      [3, 4],
    );
    log.appliedTo(4);
    assert.equal(log.hasNextCommittedEntries(), false);
  });

  it('a restored snapshot replaces the log', () => {
    const log = new RaftLog(storageWithTerms([1], [1, 1]));
    log.restore({
      metadata: { index: 10, term: 3, confState: { voters: [1], learners: [] } },
      data: new Uint8Array(0),
    });
    assert.equal(log.committed, 10);
    assert.equal(log.lastIndex(), 10);
    assert.equal(log.firstIndex(), 11);
    assert.equal(log.term(10), 3);
    assert.equal(log.hasPendingSnapshot(), true);
    log.stableSnapTo(10);
    assert.equal(log.hasPendingSnapshot(), false);
  });
});
