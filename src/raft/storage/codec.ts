// The on-disk form of the Raft log in LevelDB: one key per record kind, compact binary values,
// and a CRC-32C in front of every value so that a flipped bit is caught at open, not applied.
//
// Keys (a prefix byte per kind; entry indexes big-endian and fixed-width so keys sort by index):
//   'v'                format version: u32
//   'h'                hard state:     crc u32 | term u64 | vote u64 | commit u64
//   'c'                compaction point (the entry just before the first one kept):
//                                      crc u32 | index u64 | term u64
//   's'                snapshot meta:  crc u32 | index u64 | term u64 | dataLength u64 |
//                                      dataCrc u32 | voterCount u32 | voters u64… |
//                                      learnerCount u32 | learners u64…
//   'd'                snapshot data:  the raw bytes (checked by dataLength and dataCrc in 's')
//   'e' index(u64 BE)  log entry:      crc u32 | term u64 | type u8 | data…
//   'x'                damage marker:  UTF-8 text; present only once LevelDB has reported
//                                      dropping data at open, so that every later open fails too
// Every crc covers the bytes after it; an entry's crc also covers its index (the key), so a
// value that ends up under the wrong key is caught as well. Numbers are JavaScript safe
// integers stored as u64, big-endian.

import { type ConfState, type Entry, EntryType, type HardState, type SnapshotMetadata } from '../types';
import { invariant } from '../util';
import { crc32c } from './crc32';

export const FORMAT_VERSION = 1;

export const PREFIX_ENTRY = 0x65; // 'e'
export const PREFIX_HARD_STATE = 0x68; // 'h'
export const PREFIX_COMPACTION = 0x63; // 'c'
export const PREFIX_SNAPSHOT_META = 0x73; // 's'
export const PREFIX_SNAPSHOT_DATA = 0x64; // 'd'
export const PREFIX_VERSION = 0x76; // 'v'
export const PREFIX_DAMAGE = 0x78; // 'x'

export const VERSION_KEY = Uint8Array.of(PREFIX_VERSION);
export const DAMAGE_KEY = Uint8Array.of(PREFIX_DAMAGE);
export const HARD_STATE_KEY = Uint8Array.of(PREFIX_HARD_STATE);
export const COMPACTION_KEY = Uint8Array.of(PREFIX_COMPACTION);
export const SNAPSHOT_META_KEY = Uint8Array.of(PREFIX_SNAPSHOT_META);
export const SNAPSHOT_DATA_KEY = Uint8Array.of(PREFIX_SNAPSHOT_DATA);

export const ENTRY_KEY_LENGTH = 9;
const CRC_BYTES = 4;
const ENTRY_HEADER_BYTES = CRC_BYTES + 8 + 1;
const HARD_STATE_BYTES = CRC_BYTES + 3 * 8;
const COMPACTION_BYTES = CRC_BYTES + 2 * 8;
const SNAPSHOT_META_FIXED_BYTES = CRC_BYTES + 8 + 8 + 8 + 4 + 4 + 4;
/** 2^53 - 1 split as u64: the high word of a safe integer never exceeds this. */
const MAX_SAFE_HIGH_WORD = 0x1fffff;
const TWO_POW_32 = 0x1_0000_0000;

/** A value that does not decode; the loader adds which key and which directory. */
export class DecodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DecodeError';
  }
}

/**
 * A plain Uint8Array copy: LevelDB hands back Buffers over its read buffer, and entries must
 * neither keep that alive nor differ in type from the ones the core created.
 */
export function plainCopy(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function putU64(view: DataView, offset: number, value: number): void {
  invariant(Number.isSafeInteger(value) && value >= 0, () => `cannot store ${value}: not a safe integer ≥ 0`);
  view.setUint32(offset, Math.floor(value / TWO_POW_32));
  view.setUint32(offset + 4, value >>> 0);
}

function getU64(view: DataView, offset: number): number {
  const high = view.getUint32(offset);
  if (high > MAX_SAFE_HIGH_WORD) throw new DecodeError(`number at byte ${offset} is beyond 2^53`);
  return high * TWO_POW_32 + view.getUint32(offset + 4);
}

/** Writes the crc of bytes[4..] into bytes[0..4) (after `seed`, for entries their key). */
function seal(bytes: Uint8Array, seed = 0): Uint8Array {
  viewOf(bytes).setUint32(0, crc32c(bytes.subarray(CRC_BYTES), seed));
  return bytes;
}

function checkSeal(bytes: Uint8Array, what: string, seed = 0): void {
  const stored = viewOf(bytes).getUint32(0);
  const actual = crc32c(bytes.subarray(CRC_BYTES), seed);
  if (stored !== actual) {
    throw new DecodeError(
      `${what} checksum mismatch (stored 0x${stored.toString(16).padStart(8, '0')}, ` +
        `computed 0x${actual.toString(16).padStart(8, '0')})`,
    );
  }
}

function checkLength(bytes: Uint8Array, expected: number, what: string): void {
  if (bytes.length !== expected) {
    throw new DecodeError(`${what} is ${bytes.length} bytes, expected ${expected}`);
  }
}

// ---- entries ----

export function entryKey(index: number): Uint8Array {
  const key = new Uint8Array(ENTRY_KEY_LENGTH);
  key[0] = PREFIX_ENTRY;
  putU64(viewOf(key), 1, index);
  return key;
}

/** The index in an entry key; the caller has checked the prefix and the length. */
export function entryKeyIndex(key: Uint8Array): number {
  return getU64(viewOf(key), 1);
}

/** The first key past every entry key: iterate entries with gte entryKey(0), lt this. */
export const ENTRY_KEY_END = Uint8Array.of(PREFIX_ENTRY + 1);

const ENTRY_TYPES: ReadonlySet<number> = new Set([EntryType.Normal, EntryType.ConfChange]);

function indexSeed(index: number): number {
  const bytes = new Uint8Array(8);
  putU64(viewOf(bytes), 0, index);
  return crc32c(bytes);
}

export function encodeEntry(entry: Entry): Uint8Array {
  const bytes = new Uint8Array(ENTRY_HEADER_BYTES + entry.data.length);
  const view = viewOf(bytes);
  putU64(view, 4, entry.term);
  bytes[12] = entry.type;
  bytes.set(entry.data, ENTRY_HEADER_BYTES);
  return seal(bytes, indexSeed(entry.index));
}

export function decodeEntry(index: number, bytes: Uint8Array): Entry {
  if (bytes.length < ENTRY_HEADER_BYTES) {
    throw new DecodeError(
      `entry value is ${bytes.length} bytes, shorter than its ${ENTRY_HEADER_BYTES}-byte header`,
    );
  }
  checkSeal(bytes, 'entry', indexSeed(index));
  const view = viewOf(bytes);
  const type = bytes[12];
  if (!ENTRY_TYPES.has(type)) throw new DecodeError(`entry type ${type} is unknown`);
  return {
    index,
    term: getU64(view, 4),
    type,
    data: plainCopy(bytes.subarray(ENTRY_HEADER_BYTES)),
  };
}

// ---- hard state ----

export function encodeHardState(hs: HardState): Uint8Array {
  const bytes = new Uint8Array(HARD_STATE_BYTES);
  const view = viewOf(bytes);
  putU64(view, 4, hs.term);
  putU64(view, 12, hs.vote);
  putU64(view, 20, hs.commit);
  return seal(bytes);
}

export function decodeHardState(bytes: Uint8Array): HardState {
  checkLength(bytes, HARD_STATE_BYTES, 'hard state');
  checkSeal(bytes, 'hard state');
  const view = viewOf(bytes);
  return { term: getU64(view, 4), vote: getU64(view, 12), commit: getU64(view, 20) };
}

// ---- compaction point ----

export interface LogPosition {
  index: number;
  term: number;
}

export function encodeCompaction(point: LogPosition): Uint8Array {
  const bytes = new Uint8Array(COMPACTION_BYTES);
  const view = viewOf(bytes);
  putU64(view, 4, point.index);
  putU64(view, 12, point.term);
  return seal(bytes);
}

export function decodeCompaction(bytes: Uint8Array): LogPosition {
  checkLength(bytes, COMPACTION_BYTES, 'compaction point');
  checkSeal(bytes, 'compaction point');
  const view = viewOf(bytes);
  return { index: getU64(view, 4), term: getU64(view, 12) };
}

// ---- snapshot ----

export interface StoredSnapshotMeta {
  metadata: SnapshotMetadata;
  dataLength: number;
  dataCrc: number;
}

export function encodeSnapshotMeta(metadata: SnapshotMetadata, data: Uint8Array): Uint8Array {
  const { voters, learners } = metadata.confState;
  const bytes = new Uint8Array(SNAPSHOT_META_FIXED_BYTES + 8 * (voters.length + learners.length));
  const view = viewOf(bytes);
  putU64(view, 4, metadata.index);
  putU64(view, 12, metadata.term);
  putU64(view, 20, data.length);
  view.setUint32(28, crc32c(data));
  let offset = 32;
  for (const ids of [voters, learners]) {
    view.setUint32(offset, ids.length);
    offset += 4;
    for (const id of ids) {
      putU64(view, offset, id);
      offset += 8;
    }
  }
  return seal(bytes);
}

export function decodeSnapshotMeta(bytes: Uint8Array): StoredSnapshotMeta {
  if (bytes.length < SNAPSHOT_META_FIXED_BYTES) {
    throw new DecodeError(
      `snapshot metadata is ${bytes.length} bytes, shorter than ${SNAPSHOT_META_FIXED_BYTES}`,
    );
  }
  checkSeal(bytes, 'snapshot metadata');
  const view = viewOf(bytes);
  const readIds = (offset: number): { ids: number[]; next: number } => {
    if (offset + 4 > bytes.length) throw new DecodeError('snapshot metadata ends inside its member list');
    const count = view.getUint32(offset);
    const next = offset + 4 + 8 * count;
    if (next > bytes.length) throw new DecodeError(`snapshot metadata is too short for ${count} member ids`);
    const ids: number[] = [];
    for (let i = 0; i < count; i++) ids.push(getU64(view, offset + 4 + 8 * i));
    return { ids, next };
  };
  const voters = readIds(32);
  const learners = readIds(voters.next);
  if (learners.next !== bytes.length) {
    throw new DecodeError(`snapshot metadata has ${bytes.length - learners.next} trailing bytes`);
  }
  const confState: ConfState = { voters: voters.ids, learners: learners.ids };
  return {
    metadata: { index: getU64(view, 4), term: getU64(view, 12), confState },
    dataLength: getU64(view, 20),
    dataCrc: view.getUint32(28),
  };
}

/** Checks snapshot data against the length and crc recorded in its metadata. */
export function checkSnapshotData(meta: StoredSnapshotMeta, data: Uint8Array): void {
  if (data.length !== meta.dataLength) {
    throw new DecodeError(`snapshot data is ${data.length} bytes, its metadata says ${meta.dataLength}`);
  }
  const actual = crc32c(data);
  if (actual !== meta.dataCrc) {
    throw new DecodeError(
      `snapshot data checksum mismatch (stored 0x${meta.dataCrc.toString(16).padStart(8, '0')}, ` +
        `computed 0x${actual.toString(16).padStart(8, '0')})`,
    );
  }
}

// ---- version ----

export function encodeVersion(version: number): Uint8Array {
  const bytes = new Uint8Array(4);
  viewOf(bytes).setUint32(0, version);
  return bytes;
}

export function decodeVersion(bytes: Uint8Array): number {
  checkLength(bytes, 4, 'format version');
  return viewOf(bytes).getUint32(0);
}

/** A key as a person can read it in an error message: 'e' keys show their index. */
export function describeKey(key: Uint8Array): string {
  if (key.length === ENTRY_KEY_LENGTH && key[0] === PREFIX_ENTRY) {
    try {
      return `entry ${entryKeyIndex(key)}`;
    } catch {
      // An unreadable index falls through to the raw form.
    }
  }
  if (key.length === 1 && key[0] >= 0x20 && key[0] < 0x7f) return `'${String.fromCharCode(key[0])}'`;
  return `0x${Buffer.from(key).toString('hex')}`;
}
