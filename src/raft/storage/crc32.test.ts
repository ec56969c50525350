// CRC-32C against the published check value and a bit-at-a-time reference implementation.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import fc from 'fast-check';

import { crc32c } from './crc32';

/** The textbook definition, one bit at a time: slow, obviously right. */
function referenceCrc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return ~crc >>> 0;
}

test('crc32c matches the standard check value of "123456789"', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
});

test('crc32c of nothing is 0, and of 32 zero bytes is the RFC 3720 value', () => {
  assert.equal(crc32c(new Uint8Array(0)), 0);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
});

test('crc32c agrees with the bitwise reference on any input (all slicing remainders)', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 100 }), (bytes) => {
      assert.equal(crc32c(bytes), referenceCrc32c(bytes));
    }),
  );
});

test('crc32c continued over two pieces equals crc32c of the whole', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 64 }), (a, b) => {
      const whole = new Uint8Array(a.length + b.length);
      whole.set(a);
      whole.set(b, a.length);
      assert.equal(crc32c(b, crc32c(a)), crc32c(whole));
    }),
  );
});

test('crc32c detects every single-bit flip', () => {
  const bytes = new TextEncoder().encode('a raft log entry of modest length, 48 bytes long');
  const original = crc32c(bytes);
  for (let bit = 0; bit < bytes.length * 8; bit++) {
    const flipped = bytes.slice();
    flipped[bit >> 3] ^= 1 << (bit & 7);
    assert.notEqual(crc32c(flipped), original, `flip of bit ${bit} went unnoticed`);
  }
});
