// Majority arithmetic, checked against brute-force definitions with fast-check.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { committedIndex, majority, voteResult, VoteResult } from './quorum';

describe('quorum', () => {
  it('majority of n is floor(n/2)+1', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(majority), [1, 2, 2, 3, 3, 4, 4]);
  });

  it('committed index is the largest index a majority has acknowledged', () => {
    fc.assert(
      fc.property(fc.array(fc.nat(1000), { minLength: 1, maxLength: 9 }), (acked) => {
        const voters = acked.map((_, i) => i + 1);
        const got = committedIndex(voters, (id) => acked[id - 1]);
        // Brute force: the largest candidate index that at least a majority has reached.
        let want = 0;
        for (const candidate of acked) {
          const count = acked.filter((a) => a >= candidate).length;
          if (count >= majority(acked.length) && candidate > want) want = candidate;
        }
        assert.equal(got, want);
      }),
    );
  });

  it('a voter that never acknowledged counts as 0', () => {
    assert.equal(
      committedIndex([1, 2, 3], (id) => (id === 1 ? 5 : undefined)),
      0,
    );
    assert.equal(
      committedIndex([1, 2, 3], (id) => (id === 3 ? undefined : 5)),
      5,
    );
  });

  it('vote result: won iff a majority granted, lost iff a majority can no longer grant', () => {
    const answer = fc.constantFrom<boolean | undefined>(true, false, undefined);
    fc.assert(
      fc.property(fc.array(answer, { minLength: 1, maxLength: 9 }), (answers) => {
        const voters = answers.map((_, i) => i + 1);
        const votes = new Map<number, boolean>();
        answers.forEach((a, i) => {
          if (a !== undefined) votes.set(i + 1, a);
        });
        const granted = answers.filter((a) => a === true).length;
        const pending = answers.filter((a) => a === undefined).length;
        const q = majority(answers.length);
        const want =
          granted >= q ? VoteResult.Won : granted + pending >= q ? VoteResult.Pending : VoteResult.Lost;
        assert.equal(voteResult(voters, votes), want);
      }),
    );
  });

  it('votes from non-voters (learners, removed nodes) do not count', () => {
    const votes = new Map([
      [4, true],
      [5, true],
      [1, true],
    ]);
    assert.equal(voteResult([1, 2, 3], votes), VoteResult.Pending);
  });
});
