// A simulated disk for one node: what the running process reads (`live`, the page cache) and
// what survives a crash (`durable`). An honest disk syncs every write before acknowledging it;
// a lying disk (a mutant) acknowledges at once and syncs only when flush() is called, so a
// crash loses whatever it claimed was persisted.

import { type ConfState, type Entry, type HardState, MemoryStorage, type Snapshot } from '../index';

export type DiskWrite =
  | { kind: 'snapshot'; snapshot: Snapshot }
  | { kind: 'entries'; entries: Entry[] }
  | { kind: 'hardState'; hardState: HardState }
  | { kind: 'createSnapshot'; index: number; confState: ConfState; data: Uint8Array }
  | { kind: 'compact'; index: number };

export class SimDisk {
  private liveStorage: MemoryStorage;
  private readonly durable: MemoryStorage;
  private unsynced: DiskWrite[] = [];

  constructor(readonly honest: boolean) {
    this.liveStorage = new MemoryStorage();
    this.durable = new MemoryStorage();
  }

  /** The storage the running node reads. Replaced by a copy of the durable state on crash. */
  get live(): MemoryStorage {
    return this.liveStorage;
  }

  /** Writes not yet synced (always 0 on an honest disk). */
  get unsyncedWrites(): number {
    return this.unsynced.length;
  }

  /** The hard state a restart would see. */
  durableHardState(): HardState {
    return this.durable.initialState().hardState;
  }

  write(w: DiskWrite): void {
    applyWrite(this.liveStorage, w);
    // The durable copy gets its own objects, as bytes on a disk would be.
    if (this.honest) applyWrite(this.durable, cloneWrite(w));
    else this.unsynced.push(cloneWrite(w));
  }

  /** Syncs every acknowledged write (the lying disk does this only now and then). */
  flush(): void {
    for (const w of this.unsynced) applyWrite(this.durable, w);
    this.unsynced = [];
  }

  /** The process died: unsynced writes are gone, and the page cache is rebuilt from disk. */
  crash(): void {
    this.unsynced = [];
    this.liveStorage = cloneStorage(this.durable);
  }
}

function applyWrite(storage: MemoryStorage, w: DiskWrite): void {
  switch (w.kind) {
    case 'snapshot':
      storage.applySnapshot(w.snapshot);
      return;
    case 'entries':
      storage.append(w.entries);
      return;
    case 'hardState':
      storage.setHardState(w.hardState);
      return;
    case 'createSnapshot':
      storage.createSnapshot(w.index, w.confState, w.data);
      return;
    case 'compact':
      storage.compact(w.index);
      return;
  }
}

export function cloneEntry(e: Entry): Entry {
  return { term: e.term, index: e.index, type: e.type, data: e.data.slice() };
}

export function cloneSnapshot(s: Snapshot): Snapshot {
  return {
    metadata: {
      index: s.metadata.index,
      term: s.metadata.term,
      confState: { voters: [...s.metadata.confState.voters], learners: [...s.metadata.confState.learners] },
    },
    data: s.data.slice(),
  };
}

function cloneWrite(w: DiskWrite): DiskWrite {
  switch (w.kind) {
    case 'snapshot':
      return { kind: 'snapshot', snapshot: cloneSnapshot(w.snapshot) };
    case 'entries':
      return { kind: 'entries', entries: w.entries.map(cloneEntry) };
    case 'hardState':
      return { kind: 'hardState', hardState: { ...w.hardState } };
    case 'createSnapshot':
      return {
        kind: 'createSnapshot',
        index: w.index,
        confState: { voters: [...w.confState.voters], learners: [...w.confState.learners] },
        data: w.data.slice(),
      };
    case 'compact':
      return { kind: 'compact', index: w.index };
  }
}

/**
 * An independent copy of a MemoryStorage: same snapshot, same retained log (including entries
 * kept below the snapshot point for slow followers), same hard state.
 */
export function cloneStorage(src: MemoryStorage): MemoryStorage {
  const snap = src.snapshot();
  const base = src.firstIndex() - 1;
  const last = src.lastIndex();
  const dst = new MemoryStorage();
  if (base === snap.metadata.index) {
    dst.applySnapshot(cloneSnapshot(snap));
    if (last > base) dst.append(src.entries(base + 1, last + 1, Number.POSITIVE_INFINITY).map(cloneEntry));
  } else {
    // Entries were kept below the snapshot: rebuild the log from its compaction point, then
    // record the snapshot on top of it.
    dst.applySnapshot({
      metadata: { index: base, term: src.term(base), confState: snap.metadata.confState },
      data: new Uint8Array(0),
    });
    if (last > base) dst.append(src.entries(base + 1, last + 1, Number.POSITIVE_INFINITY).map(cloneEntry));
    const copy = cloneSnapshot(snap);
    dst.createSnapshot(copy.metadata.index, copy.metadata.confState, copy.data);
  }
  dst.setHardState(src.initialState().hardState);
  return dst;
}
