// Reads a whole store at open and verifies it before the node trusts a single byte: record
// checksums, a contiguous log after the compaction point, non-decreasing terms, a snapshot
// that agrees with the log, and a commit index the log actually reaches.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

import type { ClassicLevel } from 'classic-level';

import type { Entry, HardState, Snapshot } from '../types';
import {
  DecodeError,
  ENTRY_KEY_LENGTH,
  FORMAT_VERSION,
  type LogPosition,
  PREFIX_COMPACTION,
  PREFIX_DAMAGE,
  PREFIX_ENTRY,
  PREFIX_HARD_STATE,
  PREFIX_SNAPSHOT_DATA,
  PREFIX_SNAPSHOT_META,
  PREFIX_VERSION,
  type StoredSnapshotMeta,
  checkSnapshotData,
  decodeCompaction,
  decodeEntry,
  decodeHardState,
  decodeSnapshotMeta,
  decodeVersion,
  describeKey,
  entryKeyIndex,
  plainCopy,
} from './codec';
import { StorageCorruptError, StorageIOError, StorageVersionError, causeMessage, levelCode } from './errors';

export type LevelDb = ClassicLevel<Uint8Array, Uint8Array>;

export interface LoadedStore {
  /** True when the store held no key at all: a brand-new member. */
  empty: boolean;
  hardState: HardState;
  /** Undefined when no snapshot (nor bootstrap membership) was ever stored. */
  snapshot: Snapshot | undefined;
  /** The entry just before the first one kept. */
  compaction: LogPosition;
  /** compaction.index + 1 … lastIndex, in order, verified. */
  entries: Entry[];
}

/** How many records to pull from LevelDB per native call while scanning. */
const SCAN_BATCH = 1000;

/**
 * LevelDB recovers its own write-ahead log at open and, without paranoid checks (which
 * classic-level does not expose), silently drops records that fail their checksum, along with
 * everything after them in the block: synced writes vanish without an error. It does write
 * what it dropped to its info log, which it starts afresh at every open, so that is where we
 * look. A torn tail from a crash is not reported there, so a crash alone never trips this.
 * Returns the offending lines, or [] when the recovery was clean.
 */
export async function recoveryDamage(dir: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(join(dir, 'LOG'), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => /dropping \d+ bytes|Corruption|Ignoring error/.test(line))
    .map((line) => line.trim());
}

export async function loadStore(dir: string, db: LevelDb): Promise<LoadedStore> {
  const corrupt = (key: string | undefined, index: number | undefined, problem: string) =>
    new StorageCorruptError(dir, key, index, problem);

  let version: number | undefined;
  let hardState: HardState | undefined;
  let compaction: LogPosition | undefined;
  let snapshotMeta: StoredSnapshotMeta | undefined;
  let snapshotData: Uint8Array | undefined;
  const entries: Entry[] = [];
  let keyCount = 0;

  const decode = <T>(key: Uint8Array, index: number | undefined, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof DecodeError) throw corrupt(describeKey(key), index, err.message);
      throw err;
    }
  };

  const iterator = db.iterator();
  try {
    for (;;) {
      let batch: [Uint8Array, Uint8Array][];
      try {
        batch = await iterator.nextv(SCAN_BATCH);
      } catch (err) {
        // LevelDB's own block checksums fail here when a table file is damaged.
        if (levelCode(err) === 'LEVEL_CORRUPTION') {
          throw corrupt(undefined, undefined, `LevelDB reports damaged files (${causeMessage(err)})`);
        }
        throw new StorageIOError(dir, 'read', err);
      }
      if (batch.length === 0) break;
      for (const [key, value] of batch) {
        keyCount++;
        if (key.length === ENTRY_KEY_LENGTH && key[0] === PREFIX_ENTRY) {
          const index = decode(key, undefined, () => entryKeyIndex(key));
          entries.push(decode(key, index, () => decodeEntry(index, value)));
          continue;
        }
        if (key.length !== 1)
          throw corrupt(describeKey(key), undefined, 'unexpected key (not written by this store)');
        switch (key[0]) {
          case PREFIX_VERSION:
            version = decode(key, undefined, () => decodeVersion(value));
            break;
          case PREFIX_HARD_STATE:
            hardState = decode(key, undefined, () => decodeHardState(value));
            break;
          case PREFIX_COMPACTION:
            compaction = decode(key, undefined, () => decodeCompaction(value));
            break;
          case PREFIX_SNAPSHOT_META:
            snapshotMeta = decode(key, undefined, () => decodeSnapshotMeta(value));
            break;
          case PREFIX_SNAPSHOT_DATA:
            snapshotData = value;
            break;
          case PREFIX_DAMAGE:
            throw corrupt(
              "'x'",
              undefined,
              `an earlier open found damage: ${new TextDecoder().decode(value)}`,
            );
          default:
            throw corrupt(describeKey(key), undefined, 'unexpected key (not written by this store)');
        }
      }
    }
  } finally {
    await iterator.close();
  }

  if (keyCount === 0) {
    return {
      empty: true,
      hardState: { term: 0, vote: 0, commit: 0 },
      snapshot: undefined,
      compaction: { index: 0, term: 0 },
      entries: [],
    };
  }
  if (version === undefined) throw corrupt("'v'", undefined, 'the format version key is missing');
  if (version !== FORMAT_VERSION) throw new StorageVersionError(dir, version, FORMAT_VERSION);

  let snapshot: Snapshot | undefined;
  if (snapshotMeta !== undefined) {
    const meta = snapshotMeta;
    if (snapshotData === undefined) throw corrupt("'d'", undefined, 'the snapshot data is missing');
    const data = snapshotData;
    decode(Uint8Array.of(PREFIX_SNAPSHOT_DATA), undefined, () => checkSnapshotData(meta, data));
    snapshot = { metadata: meta.metadata, data: plainCopy(data) };
  } else if (snapshotData !== undefined) {
    throw corrupt("'s'", undefined, 'snapshot data is stored but its metadata is missing');
  }

  const snapIndex = snapshot?.metadata.index ?? 0;
  if (compaction === undefined) {
    if (snapIndex > 0)
      throw corrupt(
        "'c'",
        undefined,
        `the compaction point is missing though a snapshot at ${snapIndex} exists`,
      );
    compaction = { index: 0, term: 0 };
  }
  if (snapshot !== undefined) {
    if (compaction.index > snapIndex) {
      throw corrupt(
        "'c'",
        compaction.index,
        `entries up to ${compaction.index} were compacted but the snapshot only reaches ${snapIndex}`,
      );
    }
    if (compaction.index === snapIndex && compaction.term !== snapshot.metadata.term) {
      throw corrupt(
        "'c'",
        compaction.index,
        `compaction term ${compaction.term} differs from snapshot term ${snapshot.metadata.term}`,
      );
    }
  }

  // The log: contiguous from compaction.index + 1, terms never decreasing.
  let expectedIndex = compaction.index + 1;
  let previousTerm = compaction.term;
  for (const entry of entries) {
    const key = `entry ${entry.index}`;
    if (entry.index < expectedIndex) {
      throw corrupt(
        key,
        entry.index,
        `entry is at or before the compaction point ${compaction.index} and should have been removed`,
      );
    }
    if (entry.index > expectedIndex) {
      const missing =
        entry.index - 1 === expectedIndex ? `${expectedIndex}` : `${expectedIndex}…${entry.index - 1}`;
      throw corrupt(
        `entry ${expectedIndex}`,
        expectedIndex,
        `log has a gap: entries ${missing} are missing before entry ${entry.index}`,
      );
    }
    if (entry.term < previousTerm) {
      throw corrupt(
        key,
        entry.index,
        `term ${entry.term} is lower than the previous entry's term ${previousTerm}`,
      );
    }
    previousTerm = entry.term;
    expectedIndex++;
  }
  const lastIndex = expectedIndex - 1;
  if (lastIndex < snapIndex) {
    throw corrupt(
      `entry ${lastIndex + 1}`,
      lastIndex + 1,
      `log ends at ${lastIndex}, before the snapshot at ${snapIndex}: the log was truncated`,
    );
  }
  if (snapshot !== undefined && snapIndex > compaction.index) {
    const atSnapshot = entries[snapIndex - compaction.index - 1];
    if (atSnapshot.term !== snapshot.metadata.term) {
      throw corrupt(
        `entry ${snapIndex}`,
        snapIndex,
        `term ${atSnapshot.term} differs from the snapshot's term ${snapshot.metadata.term} at that index`,
      );
    }
  }

  const hs = hardState ?? { term: 0, vote: 0, commit: 0 };
  // A member adopts a term (and persists it) before it stores any entry of that term.
  if (hs.term < previousTerm) {
    throw corrupt(
      "'h'",
      undefined,
      `hard state term ${hs.term} is older than the last entry's term ${previousTerm}: the hard state was lost or rolled back`,
    );
  }
  if (hs.commit > lastIndex) {
    throw corrupt(
      "'h'",
      hs.commit,
      `hard state commit index ${hs.commit} is beyond the last log entry ${lastIndex}: committed entries are missing (truncated log)`,
    );
  }
  return { empty: false, hardState: hs, snapshot, compaction, entries };
}
