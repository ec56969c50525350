// An in-memory Storage: the log, hard state and latest snapshot kept in arrays. Used by tests
// and the simulator, and composed by the LevelDB storage as its read cache.

import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  type Storage,
  UnavailableError,
  RaftError,
} from './types';
import { entrySize, invariant } from './util';

export function emptySnapshot(): Snapshot {
  return {
    metadata: { index: 0, term: 0, confState: { voters: [], learners: [] } },
    data: new Uint8Array(0),
  };
}

export function cloneConfState(cs: ConfState): ConfState {
  return { voters: [...cs.voters], learners: [...cs.learners] };
}

/** A snapshot request older than the snapshot already held. */
export class SnapshotOutOfDateError extends RaftError {
  constructor(index: number, current: number) {
    super('SNAPSHOT_OUT_OF_DATE', `snapshot at index ${index} is older than the current one at ${current}`);
  }
}

export class MemoryStorage implements Storage {
  private hardState: HardState = { term: 0, vote: 0, commit: 0 };
  private snap: Snapshot = emptySnapshot();
  /**
   * ents[0] is a dummy entry carrying the index and term of the last compacted entry (the
   * snapshot point), so term(firstIndex - 1) is always answerable, as in etcd.
   */
  private ents: Entry[] = [{ term: 0, index: 0, type: 0, data: new Uint8Array(0) }];

  /** A storage for a brand-new node of a new cluster with the given members. */
  static withConfState(confState: ConfState): MemoryStorage {
    const s = new MemoryStorage();
    s.snap.metadata.confState = cloneConfState(confState);
    return s;
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: cloneConfState(this.snap.metadata.confState) };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  /** Sets the membership without a snapshot (bootstrapping a new cluster). */
  setConfState(cs: ConfState): void {
    this.snap.metadata.confState = cloneConfState(cs);
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    const offset = this.ents[0].index;
    if (lo <= offset) throw new CompactedError(lo);
    if (hi > this.lastIndex() + 1) throw new UnavailableError(hi - 1);
    invariant(lo <= hi, () => `entries: lo ${lo} > hi ${hi}`);
    if (lo === hi) return [];
    // Stop at the byte limit rather than copying the whole range first: a lagging follower
    // asks for everything from its next index.
    const out: Entry[] = [this.ents[lo - offset]];
    let size = entrySize(out[0]);
    for (let i = lo + 1; i < hi; i++) {
      const e = this.ents[i - offset];
      size += entrySize(e);
      if (size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  term(index: number): number {
    const offset = this.ents[0].index;
    if (index < offset) throw new CompactedError(index);
    if (index - offset >= this.ents.length) throw new UnavailableError(index);
    return this.ents[index - offset].term;
  }

  firstIndex(): number {
    return this.ents[0].index + 1;
  }

  lastIndex(): number {
    return this.ents[0].index + this.ents.length - 1;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole state with a received snapshot (a follower catching up). */
  applySnapshot(snap: Snapshot): void {
    const current = this.snap.metadata.index;
    if (snap.metadata.index < current) throw new SnapshotOutOfDateError(snap.metadata.index, current);
    this.snap = {
      metadata: { ...snap.metadata, confState: cloneConfState(snap.metadata.confState) },
      data: snap.data,
    };
    this.ents = [{ term: snap.metadata.term, index: snap.metadata.index, type: 0, data: new Uint8Array(0) }];
  }

  /**
   * Records a snapshot of the application state as of `index` (which must be applied, hence
   * stored). Does not compact the log: call compact() after, keeping some entries for slow
   * followers if wanted.
   */
  createSnapshot(index: number, confState: ConfState, data: Uint8Array): Snapshot {
    if (index <= this.snap.metadata.index) {
      throw new SnapshotOutOfDateError(index, this.snap.metadata.index);
    }
    invariant(index <= this.lastIndex(), () => `snapshot index ${index} > last index ${this.lastIndex()}`);
    const offset = this.ents[0].index;
    this.snap = {
      metadata: { index, term: this.ents[index - offset].term, confState: cloneConfState(confState) },
      data,
    };
    return this.snap;
  }

  /** Discards entries up to and including compactIndex (they must be in a snapshot). */
  compact(compactIndex: number): void {
    const offset = this.ents[0].index;
    if (compactIndex <= offset) throw new CompactedError(compactIndex);
    invariant(
      compactIndex <= this.lastIndex(),
      () => `compact ${compactIndex} > last index ${this.lastIndex()}`,
    );
    const i = compactIndex - offset;
    const rest = this.ents.slice(i + 1);
    this.ents = [
      { term: this.ents[i].term, index: this.ents[i].index, type: 0, data: new Uint8Array(0) },
      ...rest,
    ];
  }

  /**
   * Appends entries, replacing any stored suffix they conflict with (entries from a new leader
   * overwrite uncommitted ones). Entries already compacted are ignored.
   */
  append(entries: readonly Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[0].index + entries.length - 1;
    if (last < first) return;
    let toAdd = entries;
    if (first > entries[0].index) toAdd = entries.slice(first - entries[0].index);
    const offset = toAdd[0].index - this.ents[0].index;
    invariant(
      offset <= this.ents.length,
      () => `append leaves a gap: first new index ${toAdd[0].index}, last stored ${this.lastIndex()}`,
    );
    // In place: the common case (appending at the end) must not copy the whole log.
    this.ents.length = offset;
    for (const e of toAdd) this.ents.push(e);
  }
}
