// The Raft log as the core sees it: what storage holds (stable) followed by what was appended
// or received but not yet handed to the driver for persisting (unstable), plus the commit and
// applied cursors.

import {
  CompactedError,
  type Entry,
  RaftError,
  type Snapshot,
  type Storage,
  UnavailableError,
} from './types';
import { invariant, limitSize } from './util';

/**
 * Entries and a snapshot not yet persisted. `offset` is the index of entries[0]; a snapshot,
 * when present, ends at offset - 1.
 */
export class Unstable {
  snapshot: Snapshot | undefined;
  entries: Entry[] = [];

  constructor(public offset: number) {}

  maybeFirstIndex(): number | undefined {
    return this.snapshot ? this.snapshot.metadata.index + 1 : undefined;
  }

  maybeLastIndex(): number | undefined {
    if (this.entries.length > 0) return this.offset + this.entries.length - 1;
    return this.snapshot ? this.snapshot.metadata.index : undefined;
  }

  maybeTerm(index: number): number | undefined {
    if (index < this.offset) {
      if (this.snapshot && this.snapshot.metadata.index === index) return this.snapshot.metadata.term;
      return undefined;
    }
    const last = this.maybeLastIndex();
    if (last === undefined || index > last) return undefined;
    return this.entries[index - this.offset].term;
  }

  /** Entries up to (index, term) were persisted: drop them from here. */
  stableTo(index: number, term: number): void {
    const t = this.maybeTerm(index);
    // A different term means the entries were replaced since that Ready: they stay unstable.
    if (t === undefined || t !== term || index < this.offset) return;
    this.entries = this.entries.slice(index + 1 - this.offset);
    this.offset = index + 1;
  }

  stableSnapTo(index: number): void {
    if (this.snapshot && this.snapshot.metadata.index === index) this.snapshot = undefined;
  }

  restore(snapshot: Snapshot): void {
    this.offset = snapshot.metadata.index + 1;
    this.entries = [];
    this.snapshot = snapshot;
  }

  truncateAndAppend(entries: Entry[]): void {
    const after = entries[0].index;
    if (after === this.offset + this.entries.length) {
      for (const e of entries) this.entries.push(e);
    } else if (after <= this.offset) {
      // Replaces everything unstable; stable entries from `after` on are overwritten when
      // the driver persists these (storage truncates the conflicting suffix).
      this.offset = after;
      this.entries = entries.slice();
    } else {
      this.entries = this.entries.slice(0, after - this.offset).concat(entries);
    }
  }

  slice(lo: number, hi: number): Entry[] {
    invariant(
      lo >= this.offset && hi <= this.offset + this.entries.length && lo <= hi,
      () =>
        `unstable slice [${lo}, ${hi}) out of bounds [${this.offset}, ${this.offset + this.entries.length})`,
    );
    return this.entries.slice(lo - this.offset, hi - this.offset);
  }
}

export class RaftLog {
  readonly unstable: Unstable;
  private committedIndex: number;
  private appliedIndex: number;

  constructor(
    readonly storage: Storage,
    /** Most bytes of committed entries handed out in one Ready. */
    readonly maxCommittedSizePerReady: number = Infinity,
  ) {
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    // Everything up to the snapshot point is committed and applied by definition.
    this.committedIndex = first - 1;
    this.appliedIndex = first - 1;
  }

  get committed(): number {
    return this.committedIndex;
  }

  get applied(): number {
    return this.appliedIndex;
  }

  firstIndex(): number {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): number {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /** Term of the entry at index; throws CompactedError or UnavailableError outside the log. */
  term(index: number): number {
    const dummy = this.firstIndex() - 1;
    if (index < dummy) throw new CompactedError(index);
    if (index > this.lastIndex()) throw new UnavailableError(index);
    const t = this.unstable.maybeTerm(index);
    if (t !== undefined) return t;
    return this.storage.term(index);
  }

  /** term(index), or 0 when the entry is compacted or not there (it matches no real term). */
  termOrZero(index: number): number {
    // Bounds first: exceptions are slow, and a probe past the end is routine.
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return 0;
    try {
      return this.term(index);
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return 0;
      throw err;
    }
  }

  lastTerm(): number {
    return this.termOrZero(this.lastIndex());
  }

  matchTerm(index: number, term: number): boolean {
    if (index < this.firstIndex() - 1 || index > this.lastIndex()) return false;
    try {
      return this.term(index) === term;
    } catch (err) {
      if (err instanceof CompactedError || err instanceof UnavailableError) return false;
      throw err;
    }
  }

  /** Raft §5.4.1: a candidate's log is at least as up to date as ours. */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /**
   * The first index whose entry conflicts with ours (same index, different term), or the
   * first new index past our log, or 0 when all of `entries` are already there.
   */
  findConflict(entries: readonly Entry[]): number {
    for (const e of entries) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * The last index <= `index` whose term is <= `term`, and that term: a follower's hint that
   * lets the leader skip a whole term of mismatching entries per round trip. An unknown term
   * (compacted or missing) counts as a possible match, reported with term 0.
   */
  findConflictByTerm(index: number, term: number): { index: number; term: number } {
    for (; index > 0; index--) {
      let ours: number;
      try {
        ours = this.term(index);
      } catch (err) {
        if (err instanceof CompactedError || err instanceof UnavailableError) return { index, term: 0 };
        throw err;
      }
      if (ours <= term) return { index, term: ours };
    }
    return { index: 0, term: 0 };
  }

  /**
   * Appends a leader's entries following (prevIndex, prevTerm) if our log matches there,
   * deleting a conflicting suffix. Returns the last index the leader's message covers, or
   * undefined when our log does not contain (prevIndex, prevTerm).
   */
  maybeAppend(
    prevIndex: number,
    prevTerm: number,
    leaderCommit: number,
    entries: Entry[],
  ): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + entries.length;
    const conflict = this.findConflict(entries);
    if (conflict !== 0) {
      invariant(
        conflict > this.committedIndex,
        () => `entry ${conflict} conflicts with a committed entry (committed ${this.committedIndex})`,
      );
      this.append(entries.slice(conflict - (prevIndex + 1)));
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  append(entries: Entry[]): number {
    if (entries.length === 0) return this.lastIndex();
    const after = entries[0].index - 1;
    invariant(
      after >= this.committedIndex,
      () => `appending after ${after} would overwrite committed entries (committed ${this.committedIndex})`,
    );
    this.unstable.truncateAndAppend(entries);
    return this.lastIndex();
  }

  /** Moves the commit index forward; a smaller value is ignored (stale leader message). */
  commitTo(index: number): void {
    if (index <= this.committedIndex) return;
    invariant(
      index <= this.lastIndex(),
      () =>
        `commit ${index} is past the last index ${this.lastIndex()}: the log is corrupt, truncated or lost`,
    );
    this.committedIndex = index;
  }

  /** Commits up to maxIndex if that entry is from `term` (Raft §5.4.2: only the current term counts). */
  maybeCommit(maxIndex: number, term: number): boolean {
    if (maxIndex > this.committedIndex && this.termOrZero(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  appliedTo(index: number): void {
    if (index === 0) return;
    invariant(
      index <= this.committedIndex && index >= this.appliedIndex,
      () => `applied ${index} out of range [applied ${this.appliedIndex}, committed ${this.committedIndex}]`,
    );
    this.appliedIndex = index;
  }

  stableTo(index: number, term: number): void {
    this.unstable.stableTo(index, term);
  }

  stableSnapTo(index: number): void {
    this.unstable.stableSnapTo(index);
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries.slice();
  }

  hasNextCommittedEntries(): boolean {
    const off = Math.max(this.appliedIndex + 1, this.firstIndex());
    return this.committedIndex + 1 > off;
  }

  /** Committed entries not yet applied (bounded by maxCommittedSizePerReady). */
  nextCommittedEntries(): Entry[] {
    const off = Math.max(this.appliedIndex + 1, this.firstIndex());
    if (this.committedIndex + 1 <= off) return [];
    return this.slice(off, this.committedIndex + 1, this.maxCommittedSizePerReady);
  }

  /** Entries from `lo` to the end, at most maxBytes (at least one). Throws CompactedError. */
  entries(lo: number, maxBytes: number): Entry[] {
    if (lo > this.lastIndex()) return [];
    return this.slice(lo, this.lastIndex() + 1, maxBytes);
  }

  allEntries(): Entry[] {
    return this.entries(this.firstIndex(), Infinity);
  }

  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  hasPendingSnapshot(): boolean {
    return this.unstable.snapshot !== undefined;
  }

  /** Replaces the log by a snapshot received from the leader. */
  restore(snapshot: Snapshot): void {
    invariant(
      snapshot.metadata.index > this.committedIndex,
      () => `restoring snapshot ${snapshot.metadata.index} at or below commit ${this.committedIndex}`,
    );
    this.committedIndex = snapshot.metadata.index;
    this.unstable.restore(snapshot);
  }

  /** Entries in [lo, hi) at most maxBytes (at least one); throws CompactedError below firstIndex. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] {
    invariant(lo <= hi, () => `invalid slice ${lo} > ${hi}`);
    if (lo < this.firstIndex()) throw new CompactedError(lo);
    invariant(hi <= this.lastIndex() + 1, () => `slice [${lo}, ${hi}) past last index ${this.lastIndex()}`);
    if (lo === hi) return [];
    let result: Entry[] = [];
    const offset = this.unstable.offset;
    if (lo < offset) {
      const storedHi = Math.min(hi, offset);
      const stored = this.storage.entries(lo, storedHi, maxBytes);
      if (stored.length < storedHi - lo) return stored;
      result = stored;
    }
    if (hi > offset) {
      const fromUnstable = this.unstable.slice(Math.max(lo, offset), hi);
      result = result.length > 0 ? result.concat(fromUnstable) : fromUnstable;
    }
    return limitSize(result, maxBytes);
  }

  /** Used when loading the hard state at start. */
  loadCommit(commit: number): void {
    invariant(
      commit >= this.committedIndex && commit <= this.lastIndex(),
      () =>
        `stored commit ${commit} is outside [${this.committedIndex}, ${this.lastIndex()}]: the log is truncated or corrupt`,
    );
    this.committedIndex = commit;
  }
}

export function isRaftStorageError(err: unknown): err is RaftError {
  return err instanceof CompactedError || err instanceof UnavailableError;
}
