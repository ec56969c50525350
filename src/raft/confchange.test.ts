// ConfChange bytes and the one-at-a-time membership rule.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import {
  applyConfChangeToState,
  decodeConfChange,
  encodeConfChange,
  InvalidConfChangeError,
} from './confchange';
import { ConfChangeType } from './types';

describe('ConfChange encoding', () => {
  it('round-trips any change (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(ConfChangeType.AddVoter, ConfChangeType.RemoveVoter, ConfChangeType.AddLearner),
        fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
        fc.uint8Array({ maxLength: 64 }),
        (type, nodeId, context) => {
          const cc = decodeConfChange(encodeConfChange({ type, nodeId, context }));
          assert.deepEqual(cc, { type, nodeId, context });
        },
      ),
    );
  });

  it('rejects garbage with a clear error', () => {
    assert.throws(() => decodeConfChange(new Uint8Array(3)), /need at least/);
    assert.throws(() => decodeConfChange(new Uint8Array(10)), /unknown encoding version 0/);
    const bad = encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: 1, context: new Uint8Array(0) });
    bad[1] = 9;
    assert.throws(() => decodeConfChange(bad), /unknown change type 9/);
    assert.throws(
      () => encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: 0, context: new Uint8Array(0) }),
      InvalidConfChangeError,
    );
  });
});

describe('applyConfChangeToState', () => {
  const cs = { voters: [1, 2, 3], learners: [4] };
  const change = (type: ConfChangeType, nodeId: number) => ({ type, nodeId, context: new Uint8Array(0) });

  it('adds, promotes, demotes and removes', () => {
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.AddVoter, 5)), {
      voters: [1, 2, 3, 5],
      learners: [4],
    });
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.AddVoter, 4)), {
      voters: [1, 2, 3, 4],
      learners: [],
    });
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.AddLearner, 3)), {
      voters: [1, 2],
      learners: [3, 4],
    });
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.RemoveVoter, 4)), {
      voters: [1, 2, 3],
      learners: [],
    });
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.RemoveVoter, 2)), {
      voters: [1, 3],
      learners: [4],
    });
  });

  it('is idempotent for a member already in place (bootstrap entries are applied twice)', () => {
    assert.deepEqual(applyConfChangeToState(cs, change(ConfChangeType.AddVoter, 2)), cs);
  });

  it('refuses to remove the last voter', () => {
    assert.throws(
      () => applyConfChangeToState({ voters: [1], learners: [] }, change(ConfChangeType.RemoveVoter, 1)),
      /last voter/,
    );
  });
});
