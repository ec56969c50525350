// Durable Raft storage: the log, hard state and snapshot in LevelDB, with an in-memory copy of
// the retained log (a MemoryStorage) that serves the core's synchronous reads, as etcd does.
//
// API (used by the RaftNode driver):
//   const storage = await LevelRaftStorage.open(dir)
//       Creates `dir` (mode 0700) if missing, opens LevelDB, loads everything and verifies it:
//       record checksums (CRC-32C), a contiguous log, non-decreasing terms, a snapshot that
//       agrees with the log, commit ≤ last index, the format version, and that LevelDB's own
//       recovery dropped nothing (see recoveryDamage in load.ts). Throws
//       StorageCorruptError (code STORAGE_CORRUPT), StorageVersionError, StorageLockedError
//       or StorageIOError (not writable, disk full), each naming the directory and the remedy.
//   storage.isNew                     true when the directory held no store (a new member)
//   storage implements Storage        initialState, entries, term, firstIndex, lastIndex,
//                                     snapshot: synchronous, from memory
//   await storage.save(ready.hardState, ready.entries, ready.snapshot)
//       Once per Ready, before sending its messages: ONE synced LevelDB batch with the snapshot,
//       the entries, the hard state and the deletion of any conflicting suffix. The in-memory
//       copy changes only after the batch is on disk. Throws RaftInvariantError (and writes
//       nothing) when asked to store what Raft never produces: a log gap, decreasing terms, a
//       term or commit going backwards, a commit beyond the log, a committed entry rewritten.
//   await storage.createSnapshot(index, confState, data, retainEntries = 0)
//       Records the application's snapshot as of `index` (≤ commit) and compacts the log up to
//       index - retainEntries, in one batch. Returns the snapshot.
//   await storage.compact(index)     drops entries ≤ index (index ≤ snapshot index)
//   await storage.close()
// Writes are queued and run one at a time, in call order. A failed write leaves the store
// refusing further writes (StorageFailedError): LevelDB may or may not hold it, so only a
// reopen, which verifies, can tell; reads keep serving the last state known to be on disk.

import { access, constants as fsConstants, mkdir, readdir } from 'node:fs/promises';

import { ClassicLevel } from 'classic-level';

import { MemoryStorage, SnapshotOutOfDateError, cloneConfState } from '../memory_storage';
import {
  CompactedError,
  type ConfState,
  type Entry,
  type HardState,
  type Snapshot,
  type Storage,
} from '../types';
import { invariant } from '../util';
import {
  COMPACTION_KEY,
  DAMAGE_KEY,
  FORMAT_VERSION,
  HARD_STATE_KEY,
  SNAPSHOT_DATA_KEY,
  SNAPSHOT_META_KEY,
  VERSION_KEY,
  encodeCompaction,
  encodeEntry,
  encodeHardState,
  encodeSnapshotMeta,
  encodeVersion,
  entryKey,
} from './codec';
import {
  StorageClosedError,
  StorageCorruptError,
  StorageFailedError,
  StorageIOError,
  StorageLockedError,
  causeMessage,
  levelCode,
} from './errors';
import { type LevelDb, loadStore, recoveryDamage } from './load';

export {
  StorageClosedError,
  StorageCorruptError,
  StorageFailedError,
  StorageIOError,
  StorageLockedError,
  StorageVersionError,
} from './errors';
export { FORMAT_VERSION } from './codec';

type BatchOp = { type: 'put'; key: Uint8Array; value: Uint8Array } | { type: 'del'; key: Uint8Array };

/** Data directories hold the cluster's secrets and state: owner only. */
const DATA_DIR_MODE = 0o700;

/** Files LevelDB writes that hold data (its LOCK and info LOG hold none). */
const LEVELDB_DATA_FILE = /^(MANIFEST-\d+|\d+\.(ldb|sst|log))$/;

/**
 * LevelDB finds its files through CURRENT; without it, open with createIfMissing would start an
 * empty store and delete the old files as obsolete, and the member would forget its term, vote
 * and log without a word. Data files without CURRENT are refused instead.
 */
async function refuseHeadlessStore(dir: string): Promise<void> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new StorageIOError(dir, 'list the directory of', err);
  }
  if (names.includes('CURRENT')) return;
  const orphans = names.filter((name) => LEVELDB_DATA_FILE.test(name));
  if (orphans.length > 0) {
    throw new StorageCorruptError(
      dir,
      'CURRENT',
      undefined,
      `LevelDB's CURRENT file is missing but its data files are present (${orphans.slice(0, 5).join(', ')})`,
    );
  }
}

export class LevelRaftStorage implements Storage {
  private writeQueue: Promise<void> = Promise.resolve();
  private failure: StorageFailedError | undefined;
  private closed = false;

  private constructor(
    readonly dir: string,
    private readonly db: LevelDb,
    private readonly mem: MemoryStorage,
    /** True when the directory held no store: the member starts from nothing. */
    readonly isNew: boolean,
  ) {}

  static async open(dir: string): Promise<LevelRaftStorage> {
    try {
      await mkdir(dir, { recursive: true, mode: DATA_DIR_MODE });
    } catch (err) {
      throw new StorageIOError(dir, 'create the directory for', err);
    }
    try {
      await access(dir, fsConstants.W_OK);
    } catch (err) {
      throw new StorageIOError(dir, 'write to the directory of', err);
    }
    await refuseHeadlessStore(dir);
    const db: LevelDb = new ClassicLevel<Uint8Array, Uint8Array>(dir, {
      keyEncoding: 'view',
      valueEncoding: 'view',
    });
    try {
      await db.open({ createIfMissing: true });
    } catch (err) {
      const code = levelCode(err);
      if (code === 'LEVEL_LOCKED') throw new StorageLockedError(dir, err);
      if (code === 'LEVEL_CORRUPTION') {
        throw new StorageCorruptError(
          dir,
          undefined,
          undefined,
          `LevelDB cannot open its files (${causeMessage(err)})`,
        );
      }
      throw new StorageIOError(dir, 'open', err);
    }
    try {
      const damage = await recoveryDamage(dir);
      if (damage.length > 0) {
        const problem = `LevelDB dropped damaged records of its write-ahead log while opening: ${damage.join(' | ')}`;
        // LevelDB has already rewritten its files without the dropped records, so the next
        // open would look clean: the marker makes every later open refuse as well.
        await db.put(DAMAGE_KEY, new TextEncoder().encode(problem), { sync: true }).catch(() => undefined);
        throw new StorageCorruptError(dir, undefined, undefined, problem);
      }
      const loaded = await loadStore(dir, db);
      if (loaded.empty) {
        try {
          await db.put(VERSION_KEY, encodeVersion(FORMAT_VERSION), { sync: true });
        } catch (err) {
          throw new StorageIOError(dir, 'initialise', err);
        }
      }
      // Rebuild the memory copy as it was built live: the compaction point (the snapshot
      // itself when they coincide), the retained entries, then a snapshot that lies inside
      // the retained log (one taken with retainEntries > 0).
      const mem = new MemoryStorage();
      const { snapshot, compaction } = loaded;
      const snapshotInLog = snapshot !== undefined && snapshot.metadata.index > compaction.index;
      if (snapshot !== undefined && !snapshotInLog) {
        mem.applySnapshot(snapshot);
      } else {
        const confState = snapshot?.metadata.confState ?? { voters: [], learners: [] };
        mem.applySnapshot({ metadata: { ...compaction, confState }, data: new Uint8Array(0) });
      }
      mem.append(loaded.entries);
      if (snapshot !== undefined && snapshotInLog) {
        mem.createSnapshot(snapshot.metadata.index, snapshot.metadata.confState, snapshot.data);
      }
      mem.setHardState(loaded.hardState);
      return new LevelRaftStorage(dir, db, mem, loaded.empty);
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  // ---- Storage: synchronous reads from the memory copy ----

  initialState(): { hardState: HardState; confState: ConfState } {
    return this.mem.initialState();
  }

  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    return this.mem.entries(lo, hi, maxBytes);
  }

  term(index: number): number {
    return this.mem.term(index);
  }

  firstIndex(): number {
    return this.mem.firstIndex();
  }

  lastIndex(): number {
    return this.mem.lastIndex();
  }

  snapshot(): Snapshot {
    return this.mem.snapshot();
  }

  // ---- writes ----

  /**
   * Persists one Ready: snapshot, entries and hard state in one synced batch, then updates
   * the memory copy. Entries before firstIndex (already compacted) are ignored, as in etcd.
   */
  save(hardState: HardState | undefined, entries: readonly Entry[], snapshot?: Snapshot): Promise<void> {
    if (hardState === undefined && entries.length === 0 && snapshot === undefined)
      return this.enqueue(async () => {});
    return this.enqueue(async () => {
      const ops = this.planSave(hardState, entries, snapshot);
      await this.write(ops);
      if (snapshot !== undefined) this.mem.applySnapshot(snapshot);
      if (entries.length > 0) this.mem.append(entries);
      if (hardState !== undefined) this.mem.setHardState(hardState);
    });
  }

  /**
   * Records the application's snapshot as of `index` and compacts the log up to
   * index - retainEntries (keeping a tail lets slow followers catch up without a snapshot).
   */
  createSnapshot(
    index: number,
    confState: ConfState,
    data: Uint8Array,
    retainEntries = 0,
  ): Promise<Snapshot> {
    return this.enqueue(async () => {
      const current = this.mem.snapshot().metadata.index;
      if (index <= current) throw new SnapshotOutOfDateError(index, current);
      invariant(
        index <= this.mem.lastIndex(),
        () => `snapshot index ${index} > last index ${this.mem.lastIndex()}`,
      );
      const commit = this.mem.initialState().hardState.commit;
      invariant(
        index <= commit,
        () => `snapshot index ${index} is beyond the durable commit index ${commit}`,
      );
      invariant(
        Number.isSafeInteger(retainEntries) && retainEntries >= 0,
        () => `retainEntries ${retainEntries} < 0`,
      );
      const metadata = { index, term: this.mem.term(index), confState: cloneConfState(confState) };
      const ops: BatchOp[] = [
        { type: 'put', key: SNAPSHOT_META_KEY, value: encodeSnapshotMeta(metadata, data) },
        { type: 'put', key: SNAPSHOT_DATA_KEY, value: data },
      ];
      const compacted = this.mem.firstIndex() - 1;
      const compactTo = Math.max(compacted, index - retainEntries);
      if (compactTo > compacted) {
        ops.push(...this.planCompact(compactTo));
      } else {
        // The compaction point goes with every snapshot: open() requires it once one exists.
        ops.push({
          type: 'put',
          key: COMPACTION_KEY,
          value: encodeCompaction({ index: compacted, term: this.mem.term(compacted) }),
        });
      }
      await this.write(ops);
      const snap = this.mem.createSnapshot(index, confState, data);
      if (compactTo >= this.mem.firstIndex()) this.mem.compact(compactTo);
      return snap;
    });
  }

  /** Drops entries up to and including `index`, which must be covered by the snapshot. */
  compact(index: number): Promise<void> {
    return this.enqueue(async () => {
      const compacted = this.mem.firstIndex() - 1;
      if (index <= compacted) throw new CompactedError(index);
      const snapIndex = this.mem.snapshot().metadata.index;
      invariant(
        index <= snapIndex,
        () => `compact ${index} beyond the snapshot at ${snapIndex} would lose entries`,
      );
      await this.write(this.planCompact(index));
      this.mem.compact(index);
    });
  }

  /** Waits for queued writes, then closes LevelDB. Reads keep working from memory. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.writeQueue;
    await this.db.close();
  }

  // ---- internals ----

  /** Runs writes one at a time: each plans against the state the previous one left. */
  private enqueue<T>(write: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StorageClosedError(this.dir));
    const run = this.writeQueue.then(() => {
      if (this.failure !== undefined) throw this.failure;
      return write();
    });
    this.writeQueue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async write(ops: BatchOp[]): Promise<void> {
    if (ops.length === 0) return;
    // A chained batch rather than db.batch(array): it hands each operation to LevelDB's
    // WriteBatch as it is added, which costs a third of the CPU for a Ready of many entries.
    const batch = this.db.batch();
    try {
      for (const op of ops) {
        if (op.type === 'put') batch.put(op.key, op.value);
        else batch.del(op.key);
      }
      await batch.write({ sync: true });
    } catch (err) {
      await batch.close(); // already closed when write() itself failed; this covers put/del
      const ioError = new StorageIOError(this.dir, 'write', err);
      this.failure = new StorageFailedError(this.dir, ioError);
      throw ioError;
    }
  }

  /** Deletes entries up to `index` and records the new compaction point (no-op if none). */
  private planCompact(index: number): BatchOp[] {
    const first = this.mem.firstIndex();
    if (index < first) return [];
    const ops: BatchOp[] = [];
    for (let i = first; i <= index; i++) ops.push({ type: 'del', key: entryKey(i) });
    ops.push({
      type: 'put',
      key: COMPACTION_KEY,
      value: encodeCompaction({ index, term: this.mem.term(index) }),
    });
    return ops;
  }

  /**
   * The batch for one Ready, after checking it against what is stored. The memory copy
   * mirrors the disk exactly, so the keys of a conflicting suffix are known without a scan.
   */
  private planSave(
    hardState: HardState | undefined,
    entries: readonly Entry[],
    snapshot: Snapshot | undefined,
  ): BatchOp[] {
    const ops: BatchOp[] = [];
    const stored = this.mem.initialState().hardState;
    let compacted = this.mem.firstIndex() - 1;
    let last = this.mem.lastIndex();
    let termAt = (index: number): number => this.mem.term(index);
    const oldFirst = this.mem.firstIndex();
    const oldLast = last;

    if (snapshot !== undefined) {
      const { metadata } = snapshot;
      const current = this.mem.snapshot().metadata.index;
      if (metadata.index <= current) throw new SnapshotOutOfDateError(metadata.index, current);
      ops.push(
        { type: 'put', key: SNAPSHOT_META_KEY, value: encodeSnapshotMeta(metadata, snapshot.data) },
        { type: 'put', key: SNAPSHOT_DATA_KEY, value: snapshot.data },
        {
          type: 'put',
          key: COMPACTION_KEY,
          value: encodeCompaction({ index: metadata.index, term: metadata.term }),
        },
      );
      compacted = metadata.index;
      last = metadata.index;
      termAt = (index: number): number => {
        invariant(
          index === metadata.index,
          () => `no term at ${index} right after a snapshot at ${metadata.index}`,
        );
        return metadata.term;
      };
    }

    // Entries already compacted are ignored; the rest must continue the log without a gap.
    const toAdd = entries.filter((e) => e.index > compacted);
    let newLast = last;
    if (toAdd.length > 0) {
      const start = toAdd[0].index;
      invariant(
        start <= last + 1,
        () => `append leaves a gap: first new index ${start}, last stored ${last}`,
      );
      let previousTerm = termAt(start - 1);
      for (let i = 0; i < toAdd.length; i++) {
        const entry = toAdd[i];
        invariant(
          entry.index === start + i,
          () => `entries not contiguous: ${entry.index} after ${start + i - 1}`,
        );
        invariant(
          entry.term >= previousTerm,
          () => `entry ${entry.index} has term ${entry.term} < previous term ${previousTerm}`,
        );
        if (snapshot === undefined && entry.index <= Math.min(stored.commit, last)) {
          const existing = this.mem.term(entry.index);
          invariant(
            existing === entry.term,
            () =>
              `entry ${entry.index} is committed with term ${existing}; refusing to overwrite it with term ${entry.term}`,
          );
        }
        previousTerm = entry.term;
        ops.push({ type: 'put', key: entryKey(entry.index), value: encodeEntry(entry) });
      }
      newLast = start + toAdd.length - 1;
    }

    // Remove what the memory copy will no longer hold: the old log entirely when a snapshot
    // replaces it, else the conflicting suffix past the new last entry.
    const deleteFrom = snapshot !== undefined ? oldFirst : newLast + 1;
    for (let i = deleteFrom; i <= oldLast; i++) {
      if (i < (toAdd[0]?.index ?? Infinity) || i > newLast) ops.push({ type: 'del', key: entryKey(i) });
    }

    if (hardState !== undefined) {
      invariant(
        hardState.term >= stored.term,
        () => `hard state term ${hardState.term} < stored term ${stored.term}`,
      );
      invariant(
        hardState.commit >= stored.commit,
        () => `hard state commit ${hardState.commit} < stored ${stored.commit}`,
      );
      invariant(
        hardState.commit <= newLast,
        () => `hard state commit ${hardState.commit} > last index ${newLast}`,
      );
      ops.push({ type: 'put', key: HARD_STATE_KEY, value: encodeHardState(hardState) });
    } else {
      invariant(
        stored.commit <= newLast,
        () => `stored commit ${stored.commit} would be beyond last index ${newLast}`,
      );
    }
    // A member adopts a term (and persists it) before it stores any entry of that term;
    // open() checks the same, so a save that broke it would leave a store that cannot open.
    const lastTerm = toAdd.length > 0 ? toAdd[toAdd.length - 1].term : termAt(last);
    const durableTerm = hardState?.term ?? stored.term;
    invariant(
      lastTerm <= durableTerm,
      () => `entries of term ${lastTerm} saved with hard state term ${durableTerm}`,
    );
    return ops;
  }
}
