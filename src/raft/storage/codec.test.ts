// Round trips and damage detection of each record kind, without LevelDB.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import fc from 'fast-check';

import { EntryType } from '../types';
import {
  DecodeError,
  checkSnapshotData,
  decodeCompaction,
  decodeEntry,
  decodeHardState,
  decodeSnapshotMeta,
  describeKey,
  encodeCompaction,
  encodeEntry,
  encodeHardState,
  encodeSnapshotMeta,
  entryKey,
  entryKeyIndex,
} from './codec';

const safeIndex = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });

test('entry keys sort by index as bytes (big-endian, fixed width)', () => {
  fc.assert(
    fc.property(safeIndex, safeIndex, (a, b) => {
      const order = Buffer.compare(entryKey(a), entryKey(b));
      assert.equal(Math.sign(order), Math.sign(a - b));
      assert.equal(entryKeyIndex(entryKey(a)), a);
    }),
  );
});

test('an entry round-trips, and any flipped bit of its value is caught', () => {
  fc.assert(
    fc.property(
      safeIndex,
      safeIndex,
      fc.constantFrom(EntryType.Normal, EntryType.ConfChange),
      fc.uint8Array({ maxLength: 40 }),
      fc.nat(),
      (index, term, type, data, bitSeed) => {
        const encoded = encodeEntry({ index, term, type, data });
        assert.deepEqual(decodeEntry(index, encoded), { index, term, type, data });
        const bit = bitSeed % (encoded.length * 8);
        const damaged = encoded.slice();
        damaged[bit >> 3] ^= 1 << (bit & 7);
        assert.throws(() => decodeEntry(index, damaged), DecodeError);
      },
    ),
  );
});

test('an entry value moved under another index is caught (the crc covers the key)', () => {
  const encoded = encodeEntry({ index: 7, term: 2, type: EntryType.Normal, data: Uint8Array.of(1, 2, 3) });
  assert.throws(() => decodeEntry(8, encoded), /checksum mismatch/);
});

test('a truncated entry value is reported as too short', () => {
  assert.throws(() => decodeEntry(1, new Uint8Array(5)), /shorter than its 13-byte header/);
});

test('hard state and compaction point round-trip; damage and wrong length are caught', () => {
  const hs = { term: 9, vote: 3, commit: 2 ** 40 + 5 };
  const encoded = encodeHardState(hs);
  assert.deepEqual(decodeHardState(encoded), hs);
  const damaged = encoded.slice();
  damaged[27] ^= 0x10;
  assert.throws(() => decodeHardState(damaged), /hard state checksum mismatch/);
  assert.throws(() => decodeHardState(encoded.subarray(0, 20)), /hard state is 20 bytes, expected 28/);

  const point = { index: 100, term: 4 };
  assert.deepEqual(decodeCompaction(encodeCompaction(point)), point);
});

test('snapshot metadata round-trips with its members, and its data is checked by length and crc', () => {
  const data = new TextEncoder().encode('state machine image');
  const metadata = { index: 50, term: 3, confState: { voters: [1, 2, 2 ** 50], learners: [7] } };
  const stored = decodeSnapshotMeta(encodeSnapshotMeta(metadata, data));
  assert.deepEqual(stored.metadata, metadata);
  checkSnapshotData(stored, data);
  const damaged = data.slice();
  damaged[3] ^= 1;
  assert.throws(() => checkSnapshotData(stored, damaged), /snapshot data checksum mismatch/);
  assert.throws(
    () => checkSnapshotData(stored, data.subarray(1)),
    /snapshot data is 18 bytes, its metadata says 19/,
  );
});

test('numbers beyond 2^53 are refused on write', () => {
  assert.throws(() => encodeHardState({ term: 2 ** 53, vote: 0, commit: 0 }), /not a safe integer/);
  assert.throws(() => entryKey(-1), /not a safe integer/);
});

test('keys are described for people: entries by index, others by their letter', () => {
  assert.equal(describeKey(entryKey(42)), 'entry 42');
  assert.equal(describeKey(Uint8Array.of(0x68)), "'h'");
  assert.equal(describeKey(Uint8Array.of(0x01, 0x02)), '0x0102');
});
