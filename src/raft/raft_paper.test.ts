// The Raft paper (Ongaro & Ousterhout, 2014), rule by rule, in the spirit of etcd's
// raft_paper_test.go. Pre-vote and check-quorum are off here: these are the paper's rules.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { MemoryStorage } from './memory_storage';
import { Raft } from './raft';
import { entriesWithTerms, msg, newTestRaft, storageWithTerms } from './testing_network';
import { type Entry, EntryType, type Message, MessageType, type NodeId, StateRole } from './types';

function paperRaft(id: NodeId, voters: NodeId[], storage?: MemoryStorage, electionTicks = 10): Raft {
  return newTestRaft(id, voters, { preVote: false, checkQuorum: false, storage, electionTicks });
}

function storageWithState(
  voters: NodeId[],
  terms: number[],
  term: number,
  vote: NodeId,
  commit = 0,
): MemoryStorage {
  const s = storageWithTerms(voters, terms);
  s.setHardState({ term, vote, commit });
  return s;
}

/** Delivers messages among bare Rafts until none are left. */
function settle(rafts: Raft[], drop: (m: Message) => boolean = () => false): void {
  const byId = new Map(rafts.map((r) => [r.id, r]));
  for (let round = 0; round < 10_000; round++) {
    let any = false;
    for (const r of rafts) {
      for (const m of r.takeMessages()) {
        any = true;
        if (!drop(m)) byId.get(m.to)?.step(m);
      }
    }
    if (!any) return;
  }
  throw new Error('did not settle');
}

function makeLeader(r: Raft): void {
  r.becomeCandidate();
  r.becomeLeader();
  r.takeMessages();
}

/** Acks the leader's empty entry of its term from `from`, so later commits are by count. */
function commitNoop(r: Raft, ...from: NodeId[]): void {
  for (const id of from)
    r.step(msg(MessageType.AppResp, id, r.id, { term: r.term, index: r.raftLog.lastIndex() }));
  r.takeMessages();
}

function propose(r: Raft, text: string): void {
  r.step(
    msg(MessageType.Prop, r.id, r.id, {
      entries: [{ term: 0, index: 0, type: EntryType.Normal, data: new TextEncoder().encode(text) }],
    }),
  );
}

function termsOf(entries: Entry[]): number[] {
  return entries.map((e) => e.term);
}

describe('§5.1 terms', () => {
  for (const [name, prepare] of [
    ['follower', (r: Raft) => r.becomeFollower(1, 2)],
    ['candidate', (r: Raft) => r.becomeCandidate()],
    ['leader', (r: Raft) => makeLeader(r)],
  ] as const) {
    it(`a ${name} seeing a larger term updates its term and becomes follower`, () => {
      const r = paperRaft(1, [1, 2, 3]);
      prepare(r);
      r.step(msg(MessageType.App, 2, 1, { term: 5 }));
      assert.equal(r.term, 5);
      assert.equal(r.role, StateRole.Follower);
      assert.equal(r.lead, 2, 'an append proves who leads the new term');
    });
  }

  it('a node ignores a request with a stale term', () => {
    const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [1, 1], 2, 0));
    r.step(
      msg(MessageType.App, 2, 1, {
        term: 1,
        index: 2,
        logTerm: 1,
        entries: entriesWithTerms([1], 3),
        commit: 3,
      }),
    );
    assert.equal(r.raftLog.lastIndex(), 2);
    assert.equal(r.raftLog.committed, 0);
    assert.deepEqual(r.takeMessages(), [], 'without pre-vote or check-quorum the paper says: ignore');
  });

  it('with check-quorum, a stale leader is told the current term so it steps down', () => {
    const r = newTestRaft(1, [1, 2, 3], { storage: storageWithState([1, 2, 3], [], 2, 0) });
    r.step(msg(MessageType.Heartbeat, 2, 1, { term: 1 }));
    const out = r.takeMessages();
    assert.equal(out.length, 1);
    assert.equal(out[0].type, MessageType.AppResp);
    assert.equal(out[0].term, 2);
  });

  it('a node starts as a follower in term 0', () => {
    const r = paperRaft(1, [1, 2, 3]);
    assert.equal(r.role, StateRole.Follower);
    assert.equal(r.term, 0);
  });
});

describe('§5.2 leader election', () => {
  it('a leader sends heartbeats to all followers every heartbeat timeout', () => {
    const r = newTestRaft(1, [1, 2, 3], { preVote: false, checkQuorum: false, heartbeatTicks: 1 });
    makeLeader(r);
    r.tick();
    const out = r.takeMessages().sort((a, b) => a.to - b.to);
    assert.deepEqual(
      out.map((m) => [m.type, m.to, m.term]),
      [
        [MessageType.Heartbeat, 2, 1],
        [MessageType.Heartbeat, 3, 1],
      ],
    );
  });

  for (const [name, prepare] of [
    ['follower', (r: Raft) => r.becomeFollower(1, 2)],
    ['candidate', (r: Raft) => r.becomeCandidate()],
  ] as const) {
    it(`a ${name} that hears nothing for an election timeout starts an election`, () => {
      const r = paperRaft(1, [1, 2, 3]);
      prepare(r);
      const before = r.term;
      for (let i = 0; i < 2 * r.electionTimeout; i++) r.tick();
      assert.equal(r.role, StateRole.Candidate);
      assert.equal(r.term, before + 1, 'increments its term');
      assert.equal(r.vote, 1, 'votes for itself');
      const out = r.takeMessages().sort((a, b) => a.to - b.to);
      assert.deepEqual(
        out.map((m) => [m.type, m.to, m.term]),
        [
          [MessageType.Vote, 2, before + 1],
          [MessageType.Vote, 3, before + 1],
        ],
        'asks every other server for its vote',
      );
    });
  }

  const oneRound: Array<[number, Record<number, boolean>, StateRole]> = [
    [1, {}, StateRole.Leader],
    [3, { 2: true, 3: true }, StateRole.Leader],
    [3, { 2: true }, StateRole.Leader],
    [5, { 2: true, 3: true, 4: true, 5: true }, StateRole.Leader],
    [5, { 2: true, 3: true, 4: true }, StateRole.Leader],
    [5, { 2: true, 3: true }, StateRole.Leader],
    [3, { 2: false, 3: false }, StateRole.Follower],
    [5, { 2: false, 3: false, 4: false, 5: false }, StateRole.Follower],
    [5, { 2: true, 3: false, 4: false, 5: false }, StateRole.Follower],
    [3, {}, StateRole.Candidate],
    [5, { 2: true }, StateRole.Candidate],
    [5, { 2: false, 3: false }, StateRole.Candidate],
    [5, {}, StateRole.Candidate],
  ];
  for (const [size, votes, want] of oneRound) {
    it(`a candidate of ${size} with votes ${JSON.stringify(votes)} ends ${StateRole[want]}`, () => {
      const ids = Array.from({ length: size }, (_, i) => i + 1);
      const r = paperRaft(1, ids);
      r.step(msg(MessageType.Hup, 1, 1));
      for (const [id, granted] of Object.entries(votes)) {
        r.step(msg(MessageType.VoteResp, Number(id), 1, { term: r.term, reject: !granted }));
      }
      assert.equal(r.role, want);
      assert.equal(r.term, 1);
    });
  }

  const voteOnce: Array<[NodeId, NodeId, boolean]> = [
    [0, 2, false],
    [0, 3, false],
    [2, 2, false],
    [3, 3, false],
    [2, 3, true],
    [3, 2, true],
  ];
  for (const [voted, candidate, reject] of voteOnce) {
    it(`a follower that voted for ${voted} ${reject ? 'rejects' : 'grants'} ${candidate} in the same term`, () => {
      const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [], 1, voted));
      r.step(msg(MessageType.Vote, candidate, 1, { term: 1 }));
      const out = r.takeMessages();
      assert.equal(out.length, 1);
      assert.equal(out[0].type, MessageType.VoteResp);
      assert.equal(out[0].reject, reject);
    });
  }

  for (const term of [1, 2]) {
    it(`a candidate receiving an append of term ${term} from a leader (its term 1) becomes follower`, () => {
      const r = paperRaft(1, [1, 2, 3]);
      r.step(msg(MessageType.Hup, 1, 1));
      assert.equal(r.role, StateRole.Candidate);
      r.step(msg(MessageType.App, 2, 1, { term }));
      assert.equal(r.role, StateRole.Follower);
      assert.equal(r.term, term);
      assert.equal(r.lead, 2);
    });
  }

  for (const [name, prepare] of [
    ['follower', (r: Raft) => r.becomeFollower(r.term + 1, 2)],
    ['candidate', (r: Raft) => r.becomeCandidate()],
  ] as const) {
    it(`a ${name}'s election timeout is random in [et, 2et)`, () => {
      const seen = new Set<number>();
      for (let i = 0; i < 200; i++) {
        const r = newTestRaft(1, [1, 2, 3], {
          preVote: false,
          checkQuorum: false,
          random: () => (i % 50) / 50,
        });
        prepare(r);
        let ticks = 0;
        const startTerm = r.term;
        while (r.term === startTerm) {
          r.tick();
          ticks++;
        }
        seen.add(ticks);
      }
      for (const t of seen) assert.ok(t >= 10 && t < 20, `timeout ${t} outside [10, 20)`);
      assert.equal(seen.size, 10, 'every value in the range occurs');
    });
  }

  it('randomized timeouts make simultaneous elections rare among five followers', () => {
    let rng = 42;
    const random = (): number => {
      rng = (rng * 1103515245 + 12345) % 2 ** 31;
      return rng / 2 ** 31;
    };
    let conflicts = 0;
    const rounds = 500;
    for (let round = 0; round < rounds; round++) {
      const rs = [1, 2, 3, 4, 5].map((id) =>
        newTestRaft(id, [1, 2, 3, 4, 5], { preVote: false, checkQuorum: false, random }),
      );
      let timedOut = 0;
      while (timedOut === 0) {
        for (const r of rs) {
          r.tick();
          if (r.role === StateRole.Candidate) timedOut++;
        }
      }
      if (timedOut > 1) conflicts++;
    }
    assert.ok(conflicts / rounds < 0.3, `conflict rate ${conflicts / rounds}`);
  });

  it('a candidate sends its last index and term in vote requests', () => {
    const r = paperRaft(1, [1, 2, 3], storageWithTerms([1, 2, 3], [1, 1, 2]));
    r.step(msg(MessageType.Hup, 1, 1));
    for (const m of r.takeMessages()) {
      assert.equal(m.type, MessageType.Vote);
      assert.equal(m.index, 3);
      assert.equal(m.logTerm, 2);
    }
  });

  // §5.4.1: the voter denies its vote if its own log is more up to date than the candidate's.
  const upToDate: Array<[number[], number, number, boolean]> = [
    [[1], 1, 1, false], // same log
    [[1], 1, 2, false],
    [[1, 1], 1, 1, true], // candidate's log shorter in the same last term
    [[1], 2, 1, false], // candidate's last term higher
    [[1], 2, 2, false],
    [[1, 1], 2, 1, false],
    [[2], 1, 1, true], // candidate's last term lower
    [[2], 1, 2, true],
    [[2, 1], 1, 1, true],
  ];
  for (const [terms, logTerm, index, reject] of upToDate) {
    it(`a voter with log terms ${JSON.stringify(terms)} ${reject ? 'denies' : 'grants'} (index ${index}, term ${logTerm})`, () => {
      const r = paperRaft(1, [1, 2], storageWithTerms([1, 2], terms));
      r.step(msg(MessageType.Vote, 2, 1, { term: 3, logTerm, index }));
      const out = r.takeMessages();
      assert.equal(out.length, 1);
      assert.equal(out[0].type, MessageType.VoteResp);
      assert.equal(out[0].reject, reject);
    });
  }
});

describe('§5.3 log replication', () => {
  it('a leader appends a proposal to its log and sends it to every follower', () => {
    const r = paperRaft(1, [1, 2, 3]);
    makeLeader(r);
    commitNoop(r, 2, 3);
    propose(r, 'some data');
    assert.equal(r.raftLog.lastIndex(), 2);
    const out = r.takeMessages().sort((a, b) => a.to - b.to);
    assert.equal(out.length, 2);
    for (const [i, m] of out.entries()) {
      assert.equal(m.type, MessageType.App);
      assert.equal(m.to, i + 2);
      assert.equal(m.index, 1, 'preceding index');
      assert.equal(m.logTerm, 1, 'preceding term');
      assert.equal(m.commit, 1);
      assert.equal(m.entries.length, 1);
      assert.equal(new TextDecoder().decode(m.entries[0].data), 'some data');
      assert.equal(m.entries[0].term, 1);
      assert.equal(m.entries[0].index, 2);
    }
  });

  it('a leader commits an entry once a majority holds it, and followers learn of it', () => {
    const r = paperRaft(1, [1, 2, 3]);
    makeLeader(r);
    commitNoop(r, 2, 3);
    propose(r, 'x');
    r.takeMessages();
    assert.equal(r.raftLog.committed, 1);
    r.step(msg(MessageType.AppResp, 2, 1, { term: 1, index: 2 }));
    assert.equal(r.raftLog.committed, 2, 'leader plus one of three is a majority');
    const out = r.takeMessages();
    assert.ok(out.length > 0 && out.every((m) => m.type === MessageType.App && m.commit === 2));
  });

  const acks: Array<[number, NodeId[], boolean]> = [
    [1, [], true],
    [3, [], false],
    [3, [2], true],
    [3, [2, 3], true],
    [5, [], false],
    [5, [2], false],
    [5, [2, 3], true],
    [5, [2, 3, 4], true],
  ];
  for (const [size, ackers, committed] of acks) {
    it(`with ${size} voters and acks from ${JSON.stringify(ackers)} the entry is ${committed ? '' : 'not '}committed`, () => {
      const ids = Array.from({ length: size }, (_, i) => i + 1);
      const r = paperRaft(1, ids);
      makeLeader(r);
      commitNoop(r, ...ids.slice(1));
      propose(r, 'x');
      r.takeMessages();
      for (const id of ackers)
        r.step(msg(MessageType.AppResp, id, 1, { term: 1, index: r.raftLog.lastIndex() }));
      assert.equal(r.raftLog.committed === r.raftLog.lastIndex(), committed);
    });
  }

  it('committing an entry commits all preceding entries, including those of earlier terms', () => {
    for (const terms of [[], [2], [1, 1], [1, 2]]) {
      const s = storageWithState([1, 2, 3], terms, 2, 0);
      const r = paperRaft(1, [1, 2, 3], s);
      makeLeader(r);
      propose(r, 'x');
      r.takeMessages();
      r.step(msg(MessageType.AppResp, 2, 1, { term: r.term, index: r.raftLog.lastIndex() }));
      assert.equal(r.raftLog.committed, terms.length + 2, `log ${JSON.stringify(terms)}`);
    }
  });

  it('a follower commits what the leader says is committed, up to what it holds', () => {
    const r = paperRaft(1, [1, 2, 3]);
    r.becomeFollower(1, 2);
    r.step(
      msg(MessageType.App, 2, 1, {
        term: 1,
        index: 0,
        logTerm: 0,
        entries: entriesWithTerms([1, 1]),
        commit: 1,
      }),
    );
    assert.equal(r.raftLog.committed, 1);
    r.step(msg(MessageType.App, 2, 1, { term: 1, index: 2, logTerm: 1, entries: [], commit: 5 }));
    assert.equal(r.raftLog.committed, 2, 'never past its last new entry');
  });

  // The consistency check: a follower refuses an append whose preceding entry it lacks, and
  // hints where the leader should look next.
  const consistency: Array<[number, number, boolean, number, number]> = [
    // index, logTerm, reject, rejectHint, hint logTerm
    [0, 0, false, 0, 0],
    [1, 1, false, 0, 0],
    [2, 2, false, 0, 0],
    [1, 2, true, 1, 1], // term mismatch at 1
    [3, 3, true, 2, 2], // past our log
  ];
  for (const [index, logTerm, reject, hint, hintTerm] of consistency) {
    it(`a follower with log [1,2] ${reject ? 'rejects' : 'accepts'} an append after (${index}, ${logTerm})`, () => {
      const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [1, 2], 2, 0, 1));
      r.becomeFollower(2, 2);
      r.step(msg(MessageType.App, 2, 1, { term: 2, index, logTerm, commit: 1 }));
      const out = r.takeMessages();
      assert.equal(out.length, 1);
      assert.equal(out[0].type, MessageType.AppResp);
      assert.equal(out[0].reject, reject);
      if (reject) {
        assert.equal(out[0].rejectHint, hint);
        assert.equal(out[0].logTerm, hintTerm);
      }
    });
  }

  // If an existing entry conflicts with a new one (same index, different terms), delete it
  // and all that follow; append any new entries not already in the log.
  const appends: Array<[number, number, number[], number[]]> = [
    // prevIndex, prevTerm, new entry terms (from prevIndex+1), resulting log terms
    [2, 2, [3], [1, 2, 3]],
    [1, 1, [3, 4], [1, 3, 4]], // entry 2 (term 2) conflicts: replaced
    [0, 0, [1], [1, 2]], // already there: nothing changes
    [0, 0, [3], [3]], // conflict at 1: everything after goes
  ];
  for (const [prevIndex, prevTerm, newTerms, want] of appends) {
    it(`appending terms ${JSON.stringify(newTerms)} after (${prevIndex}, ${prevTerm}) to [1,2] gives ${JSON.stringify(want)}`, () => {
      const r = paperRaft(1, [1, 2, 3], storageWithTerms([1, 2, 3], [1, 2]));
      r.becomeFollower(2, 2);
      r.step(
        msg(MessageType.App, 2, 1, {
          term: 2,
          index: prevIndex,
          logTerm: prevTerm,
          entries: entriesWithTerms(newTerms, prevIndex + 1),
        }),
      );
      assert.deepEqual(termsOf(r.raftLog.allEntries()), want);
    });
  }

  // Figure 7: whatever a follower's log looks like, the leader brings it to match its own.
  const leaderTerms = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
  const followers: number[][] = [
    [1, 1, 1, 4, 4, 5, 5, 6, 6], // (a) missing one
    [1, 1, 1, 4], // (b) missing many
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], // (c) one extra uncommitted
    [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], // (d) extra of a later term
    [1, 1, 1, 4, 4, 4, 4], // (e) extra of term 4
    [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], // (f) many of terms 2 and 3
  ];
  for (const [i, followerTerms] of followers.entries()) {
    it(`figure 7 (${'abcdef'[i]}): the leader makes the follower's log identical to its own`, () => {
      const lead = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], leaderTerms, 8, 0, 0));
      const follower = paperRaft(2, [1, 2, 3], storageWithState([1, 2, 3], followerTerms, 7, 0, 0));
      const third = paperRaft(3, [1, 2, 3], storageWithState([1, 2, 3], leaderTerms, 7, 0, 0));
      // Node 3 votes for 1, so 1 leads whatever 2 says.
      lead.step(msg(MessageType.Hup, 1, 1));
      settle([lead, follower, third], (m) => m.from === 2 && m.type === MessageType.VoteResp);
      assert.equal(lead.role, StateRole.Leader);
      settle([lead, follower, third]);
      assert.deepEqual(termsOf(follower.raftLog.allEntries()), termsOf(lead.raftLog.allEntries()));
    });
  }
});

describe('§5.4.2 committing entries from previous terms', () => {
  // A leader counts replicas only for entries of its own term.
  const cases: Array<[number, number]> = [
    [1, 0],
    [2, 0],
    [3, 3],
  ];
  for (const [ackIndex, wantCommit] of cases) {
    it(`a term-3 leader with log [1,2] acked at ${ackIndex} commits ${wantCommit}`, () => {
      const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [1, 2], 2, 0));
      makeLeader(r);
      assert.equal(r.term, 3);
      r.step(msg(MessageType.AppResp, 2, 1, { term: 3, index: ackIndex }));
      assert.equal(r.raftLog.committed, wantCommit);
    });
  }

  it('a leader appends an empty entry of its term on election', () => {
    const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [1, 2], 2, 0));
    makeLeader(r);
    const last = r.raftLog.allEntries().at(-1);
    assert.equal(last?.term, 3);
    assert.equal(last?.data.length, 0);
  });
});

describe('persisted state drives restart', () => {
  it('a node restarts with the term, vote and commit it stored', () => {
    const s = storageWithState([1, 2, 3], [1, 1, 2], 2, 3, 2);
    const r = paperRaft(1, [1, 2, 3], s);
    assert.equal(r.term, 2);
    assert.equal(r.vote, 3);
    assert.equal(r.raftLog.committed, 2);
    assert.throws(
      () => paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [1], 2, 3, 5)),
      /stored commit 5/,
      'a commit past the stored log means lost writes: refuse to start',
    );
  });

  it('a term never goes backwards', () => {
    const r = paperRaft(1, [1, 2, 3], storageWithState([1, 2, 3], [], 5, 0));
    assert.throws(() => r.becomeFollower(4, 2), /term would go back/);
  });
});
