// Beyond the paper: pre-vote, check-quorum, leadership transfer, ReadIndex, snapshots,
// membership changes, flow control and dropped proposals, on clusters of RawNodes.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { encodeConfChange } from './confchange';
import { ProgressState } from './progress';
import { entriesWithTerms, msg, newTestRaft, storageWithTerms, TestNetwork } from './testing_network';
import {
  ConfChangeType,
  EntryType,
  MessageType,
  type NodeId,
  ProposalDroppedError,
  StateRole,
  type Message,
} from './types';

const text = (s: string): Uint8Array => new TextEncoder().encode(s);

function progressOf(net: TestNetwork, leader: NodeId, id: NodeId) {
  const p = net.node(leader).status().progress?.get(id);
  assert.ok(p, `no progress for ${id} on ${leader}`);
  return p;
}

/** Ticks only `ids`, settling after each tick. */
function tickNodes(net: TestNetwork, ids: NodeId[], times: number): void {
  for (let i = 0; i < times; i++) {
    for (const id of ids) net.node(id).tick();
    net.stabilize();
  }
}

describe('pre-vote', () => {
  it('a partitioned node does not raise its term, and on rejoining does not disrupt the leader', () => {
    const net = new TestNetwork([1, 2, 3], { preVote: true, checkQuorum: false });
    net.elect(1);
    net.isolate(3);
    tickNodes(net, [3], 100);
    assert.equal(net.node(3).status().term, 1, 'pre-votes fail without changing the term');
    net.heal();
    net.propose(1, 'after');
    assert.equal(net.node(1).status().role, StateRole.Leader);
    assert.equal(net.node(1).status().term, 1);
    assert.deepEqual(net.appliedTexts(3), ['after']);
  });

  it('without pre-vote and check-quorum the same node deposes the leader (why pre-vote matters)', () => {
    const net = new TestNetwork([1, 2, 3], { preVote: false, checkQuorum: false });
    net.elect(1);
    net.isolate(3);
    tickNodes(net, [3], 100);
    assert.ok(net.node(3).status().term > 1);
    net.heal();
    tickNodes(net, [3], 20);
    // Its vote requests carry a higher term: the leader steps down.
    assert.notEqual(net.node(1).status().term, 1);
  });

  it('a node with a stale log cannot win a pre-vote', () => {
    const r = newTestRaft(2, [1, 2, 3], { storage: storageWithTerms([1, 2, 3], [1, 1]) });
    r.step(msg(MessageType.PreVote, 3, 2, { term: 2, index: 1, logTerm: 1 }));
    const out = r.takeMessages();
    assert.equal(out.length, 1);
    assert.equal(out[0].type, MessageType.PreVoteResp);
    assert.equal(out[0].reject, true);
    assert.equal(r.term, 0, "a pre-vote never changes the voter's term");
    r.step(msg(MessageType.PreVote, 3, 2, { term: 2, index: 2, logTerm: 1 }));
    assert.equal(r.takeMessages()[0].reject, false);
    assert.equal(r.vote, 0, 'a pre-vote grant is not a vote');
  });
});

describe('check-quorum', () => {
  it('a leader that hears from no quorum for an election timeout steps down', () => {
    const net = new TestNetwork([1, 2, 3], { checkQuorum: true });
    net.elect(1);
    net.isolate(1);
    tickNodes(net, [1], 10);
    assert.equal(
      net.node(1).status().role,
      StateRole.Leader,
      'one timeout: the first check marks everyone inactive',
    );
    tickNodes(net, [1], 10);
    assert.equal(net.node(1).status().role, StateRole.Follower);
  });

  it('a leader that hears from a quorum stays leader', () => {
    const net = new TestNetwork([1, 2, 3], { checkQuorum: true });
    net.elect(1);
    net.isolate(3);
    tickNodes(net, [1, 2], 50);
    assert.equal(net.node(1).status().role, StateRole.Leader);
  });

  it('a follower that heard from a leader within the timeout ignores vote requests', () => {
    const r = newTestRaft(2, [1, 2, 3], { checkQuorum: true, preVote: false });
    r.step(msg(MessageType.Heartbeat, 1, 2, { term: 1 }));
    r.takeMessages();
    r.step(msg(MessageType.Vote, 3, 2, { term: 2, index: 5, logTerm: 1 }));
    assert.equal(r.term, 1);
    assert.deepEqual(r.takeMessages(), []);
    r.step(msg(MessageType.PreVote, 3, 2, { term: 2, index: 5, logTerm: 1 }));
    assert.deepEqual(r.takeMessages(), []);
    // After an election timeout without the leader, it answers.
    for (let i = 0; i < 10; i++) r.tick();
    r.step(msg(MessageType.PreVote, 3, 2, { term: 2, index: 5, logTerm: 1 }));
    const out = r.takeMessages();
    assert.equal(out.length, 1);
    assert.equal(out[0].reject, false);
  });

  it('a vote request of a leadership transfer bypasses the lease', () => {
    const net = new TestNetwork([1, 2, 3], { checkQuorum: true });
    net.elect(1);
    net.node(1).transferLeadership(2);
    net.stabilize();
    assert.deepEqual(net.leaders(), [2]);
  });
});

describe('leadership transfer', () => {
  it('transfers to an up-to-date follower, which leads the next term', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.propose(1, 'a');
    net.node(1).transferLeadership(3);
    net.stabilize();
    assert.deepEqual(net.leaders(), [3]);
    assert.equal(net.node(3).status().term, 2);
    net.propose(3, 'b');
    for (const id of [1, 2, 3]) assert.deepEqual(net.appliedTexts(id), ['a', 'b']);
  });

  it('catches a lagging transferee up before sending TimeoutNow', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.propose(1, 'a');
    net.propose(1, 'b');
    net.heal();
    net.node(1).transferLeadership(3);
    net.stabilize();
    assert.deepEqual(net.leaders(), [3]);
    assert.deepEqual(net.appliedTexts(3).slice(0, 2), ['a', 'b']);
  });

  it('drops proposals while a transfer is in progress, and aborts it after an election timeout', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    net.node(1).transferLeadership(3);
    net.stabilize();
    assert.equal(net.node(1).status().leadTransferee, 3);
    assert.throws(
      () => net.node(1).propose(text('x')),
      (e: unknown) => e instanceof ProposalDroppedError && /transfer/.test(e.message),
    );
    tickNodes(net, [1, 2], 10);
    assert.equal(net.node(1).status().leadTransferee, 0);
    assert.equal(net.node(1).status().role, StateRole.Leader);
    assert.equal(net.propose(1, 'y').forwarded, false);
  });

  it('a transfer asked of a follower is forwarded to the leader', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.node(2).transferLeadership(2);
    net.stabilize();
    assert.deepEqual(net.leaders(), [2]);
  });

  it('a transfer to a learner is ignored', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    addMember(net, 1, 4, ConfChangeType.AddLearner);
    net.node(1).transferLeadership(4);
    net.stabilize();
    assert.deepEqual(net.leaders(), [1]);
  });
});

describe('ReadIndex', () => {
  it('a leader answers after a heartbeat round with a quorum', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.propose(1, 'a');
    net.node(1).readIndex(text('r1'));
    net.stabilize();
    const rs = net.member(1).readStates;
    assert.equal(rs.length, 1);
    assert.equal(rs[0].index, 2);
    assert.deepEqual(rs[0].requestCtx, text('r1'));
  });

  it("a follower forwards the request and gets the leader's commit index", () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.propose(1, 'a');
    net.node(3).readIndex(text('r2'));
    net.stabilize();
    const rs = net.member(3).readStates;
    assert.equal(rs.length, 1);
    assert.equal(rs[0].index, 2);
    assert.deepEqual(rs[0].requestCtx, text('r2'));
  });

  it('a leader cut off from the quorum never answers', () => {
    const net = new TestNetwork([1, 2, 3], { checkQuorum: false });
    net.elect(1);
    net.isolate(1);
    net.node(1).readIndex(text('r3'));
    net.stabilize();
    tickNodes(net, [1], 5);
    assert.equal(net.member(1).readStates.length, 0);
  });

  it('a new leader holds reads until an entry of its term commits', () => {
    const r = newTestRaft(1, [1, 2, 3], { preVote: false });
    r.becomeCandidate();
    r.becomeLeader();
    r.takeMessages();
    r.step(msg(MessageType.ReadIndex, 0, 0, { context: text('early') }));
    assert.deepEqual(
      r.takeMessages().filter((m) => m.type === MessageType.Heartbeat),
      [],
      'no heartbeat round yet',
    );
    r.step(msg(MessageType.AppResp, 2, 1, { term: 1, index: 1 }));
    const beats = r.takeMessages().filter((m) => m.type === MessageType.Heartbeat);
    assert.equal(beats.length, 2);
    r.step(msg(MessageType.HeartbeatResp, 2, 1, { term: 1, context: beats[0].context }));
    assert.deepEqual(
      r.readStates.map((s) => s.index),
      [1],
    );
  });

  it('a single-node cluster answers at once', () => {
    const net = new TestNetwork([1]);
    net.elect(1);
    net.node(1).readIndex(text('solo'));
    net.stabilize();
    assert.equal(net.member(1).readStates.length, 1);
  });

  it('a follower with no known leader refuses the read clearly', () => {
    const net = new TestNetwork([1, 2, 3]);
    assert.throws(() => net.node(2).readIndex(text('x')), ProposalDroppedError);
  });
});

/** Compacts the leader's storage up to its applied index, snapshotting first. */
function compactLeader(net: TestNetwork, leader: NodeId): number {
  const m = net.member(leader);
  const applied = m.node.status().applied;
  m.storage.createSnapshot(applied, m.confState, text(`state@${applied}`));
  m.storage.compact(applied);
  return applied;
}

describe('snapshots', () => {
  it('a follower needing compacted entries gets a snapshot, then the rest of the log', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for (let i = 0; i < 5; i++) net.propose(1, `e${i}`);
    const snapIndex = compactLeader(net, 1);
    net.propose(1, 'after-snap');
    net.heal();
    tickNodes(net, [1], 2);
    const m3 = net.member(3);
    assert.equal(m3.storage.snapshot().metadata.index, snapIndex);
    assert.deepEqual(new TextDecoder().decode(m3.storage.snapshot().data), `state@${snapIndex}`);
    assert.deepEqual(net.appliedTexts(3), ['after-snap']);
    assert.equal(progressOf(net, 1, 3).state, ProgressState.Replicate);
    assert.ok(net.delivered.some((d) => d.type === MessageType.Snap && d.to === 3));
  });

  it('a failed snapshot send puts the follower back to probing and is retried', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.isolate(3);
    for (let i = 0; i < 3; i++) net.propose(1, `e${i}`);
    compactLeader(net, 1);
    net.heal();
    let snapsDropped = 0;
    net.filter = (m: Message) => {
      if (m.type === MessageType.Snap && snapsDropped < 2) {
        snapsDropped++;
        return false;
      }
      return true;
    };
    tickNodes(net, [1], 1);
    assert.equal(snapsDropped, 1);
    assert.equal(progressOf(net, 1, 3).state, ProgressState.Probe, 'failure → probe, wait a heartbeat');
    tickNodes(net, [1], 3);
    assert.equal(snapsDropped, 2);
    assert.ok(net.member(3).storage.snapshot().metadata.index > 0, 'a later attempt got through');
    assert.equal(progressOf(net, 1, 3).state, ProgressState.Replicate);
  });

  it('a follower ignores a snapshot older than its commit index', () => {
    const r = newTestRaft(2, [1, 2, 3], { storage: storageWithTerms([1, 2, 3], [1, 1, 1]) });
    r.step(msg(MessageType.App, 1, 2, { term: 1, index: 3, logTerm: 1, commit: 3 }));
    r.takeMessages();
    r.step(
      msg(MessageType.Snap, 1, 2, {
        term: 1,
        snapshot: {
          metadata: { index: 2, term: 1, confState: { voters: [1, 2, 3], learners: [] } },
          data: text('old'),
        },
      }),
    );
    assert.equal(r.raftLog.hasPendingSnapshot(), false);
    const out = r.takeMessages();
    assert.equal(out[0].type, MessageType.AppResp);
    assert.equal(out[0].index, 3);
  });

  it("a restored snapshot resets the follower's log and membership", () => {
    const r = newTestRaft(2, [1, 2, 3], { storage: storageWithTerms([1, 2, 3], [1]) });
    r.step(
      msg(MessageType.Snap, 1, 2, {
        term: 2,
        snapshot: {
          metadata: { index: 10, term: 2, confState: { voters: [1, 2], learners: [4] } },
          data: text('s'),
        },
      }),
    );
    assert.equal(r.raftLog.committed, 10);
    assert.equal(r.raftLog.lastIndex(), 10);
    assert.deepEqual(r.status().confState, { voters: [1, 2], learners: [4] });
  });
});

/** Proposes a membership change on `leader` and settles (applying it everywhere). */
function addMember(net: TestNetwork, leader: NodeId, id: NodeId, type: ConfChangeType): void {
  if (!net.members.has(id)) net.addMember(id, { voters: [], learners: [] });
  net.node(leader).proposeConfChange({ type, nodeId: id, context: new Uint8Array(0) });
  net.stabilize();
  tickNodes(net, [leader], 3);
}

describe('membership changes (one at a time)', () => {
  it('adds a voter that catches up and then counts in the quorum', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    net.propose(1, 'a');
    addMember(net, 1, 4, ConfChangeType.AddVoter);
    assert.deepEqual(net.node(1).status().confState.voters, [1, 2, 3, 4]);
    assert.deepEqual(net.appliedTexts(4), ['a']);
    assert.deepEqual(net.member(4).confState.voters, [1, 2, 3, 4]);
    // Four voters need three acks: the leader plus 4 alone cannot commit.
    net.isolate(2);
    net.isolate(3);
    const before = net.node(1).status().commit;
    net.propose(1, 'b');
    assert.equal(net.node(1).status().commit, before);
    net.heal();
    tickNodes(net, [1], 2);
    assert.deepEqual(net.appliedTexts(4), ['a', 'b']);
  });

  it('refuses a second change while the first is not yet applied', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    net.isolate(2);
    net.isolate(3);
    net.node(1).proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: 4, context: new Uint8Array(0) });
    assert.throws(
      () =>
        net
          .node(1)
          .proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: 5, context: new Uint8Array(0) }),
      (e: unknown) =>
        e instanceof ProposalDroppedError && /configuration change may be pending/.test(e.message),
    );
    net.heal();
    net.stabilize();
    net.node(1).proposeConfChange({ type: ConfChangeType.AddLearner, nodeId: 5, context: new Uint8Array(0) });
  });

  it('a new leader refuses changes until it has applied everything before its term', () => {
    const r = newTestRaft(1, [1, 2, 3], { preVote: false, storage: storageWithTerms([1, 2, 3], [1, 1]) });
    r.becomeCandidate();
    r.becomeLeader();
    assert.throws(
      () =>
        r.propose([
          {
            term: 0,
            index: 0,
            type: EntryType.ConfChange,
            data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: 4, context: new Uint8Array(0) }),
          },
        ]),
      ProposalDroppedError,
    );
  });

  it('removes a follower: the leader stops replicating to it and the quorum shrinks', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    addMember(net, 1, 3, ConfChangeType.RemoveVoter);
    assert.deepEqual(net.node(1).status().confState.voters, [1, 2]);
    net.isolate(2);
    const sent = net.delivered.length;
    net.propose(1, 'x');
    assert.ok(!net.delivered.slice(sent).some((m) => m.to === 3));
    assert.ok(net.node(1).status().commit < progressOf(net, 1, 1).match, 'two voters: 1 alone cannot commit');
  });

  it('removing the leader: it steps down after applying, and the rest elect and commit', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    net.propose(1, 'a');
    net
      .node(1)
      .proposeConfChange({ type: ConfChangeType.RemoveVoter, nodeId: 1, context: new Uint8Array(0) });
    net.stabilize();
    assert.notEqual(net.node(1).status().role, StateRole.Leader);
    // Handed over with TimeoutNow: no election timeout needed.
    const leaders = net.leaders();
    assert.equal(leaders.length, 1);
    assert.notEqual(leaders[0], 1);
    net.propose(leaders[0], 'b');
    for (const id of [2, 3]) assert.deepEqual(net.appliedTexts(id), ['a', 'b']);
    assert.deepEqual(net.node(leaders[0]).status().confState.voters, [2, 3]);
    // The removed node never campaigns again.
    tickNodes(net, [1], 50);
    assert.notEqual(net.node(1).status().role, StateRole.Candidate);
    assert.equal(net.leaders().length, 1);
  });

  it('refuses to remove the last voter', () => {
    const net = new TestNetwork([1], { bootstrap: 'log' });
    net.elect(1);
    assert.throws(
      () =>
        net
          .node(1)
          .proposeConfChange({ type: ConfChangeType.RemoveVoter, nodeId: 1, context: new Uint8Array(0) }),
      /last voter/,
    );
  });

  it('a learner receives the log but neither votes nor counts toward commit; promoted, it does', () => {
    const net = new TestNetwork([1, 2, 3], { bootstrap: 'log' });
    net.elect(1);
    addMember(net, 1, 4, ConfChangeType.AddLearner);
    net.propose(1, 'a');
    assert.deepEqual(net.appliedTexts(4), ['a']);
    assert.deepEqual(net.node(1).status().confState.learners, [4]);
    // Only the learner acks: nothing commits.
    net.isolate(2);
    net.isolate(3);
    const commit = net.node(1).status().commit;
    net.propose(1, 'b');
    assert.equal(net.node(1).status().commit, commit);
    // The learner never campaigns.
    tickNodes(net, [4], 50);
    assert.equal(net.node(4).status().role, StateRole.Follower);
    net.heal();
    net.stabilize();
    tickNodes(net, [1], 2);
    addMember(net, 1, 4, ConfChangeType.AddVoter);
    assert.deepEqual(net.node(1).status().confState, { voters: [1, 2, 3, 4], learners: [] });
    // Now 1, 4 and one more commit.
    net.isolate(3);
    net.propose(1, 'c');
    assert.deepEqual(net.appliedTexts(4), ['a', 'b', 'c']);
  });

  it('a node does not campaign while a committed membership change is unapplied', () => {
    const s = storageWithTerms([1, 2, 3], []);
    s.append([
      {
        term: 1,
        index: 1,
        type: EntryType.ConfChange,
        data: encodeConfChange({ type: ConfChangeType.AddVoter, nodeId: 4, context: new Uint8Array(0) }),
      },
    ]);
    s.setHardState({ term: 1, vote: 0, commit: 1 });
    const r = newTestRaft(1, [1, 2, 3], { storage: s, preVote: false });
    r.step(msg(MessageType.Hup, 1, 1));
    assert.equal(r.role, StateRole.Follower);
  });
});

describe('flow control', () => {
  it('batches proposals made before one Ready into one append per follower', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    for (let i = 0; i < 10; i++) net.node(1).propose(text(`p${i}`));
    const rd = net.node(1).ready();
    const apps = rd.messages.filter((m) => m.type === MessageType.App);
    assert.equal(apps.length, 2);
    for (const a of apps) assert.equal(a.entries.length, 10);
  });

  it('caps entries per append at maxSizePerMsg bytes', () => {
    const net = new TestNetwork([1, 2, 3], { maxSizePerMsg: 300 });
    net.elect(1);
    for (let i = 0; i < 10; i++) net.node(1).propose(new Uint8Array(100));
    const rd = net.node(1).ready();
    const apps = rd.messages.filter((m) => m.type === MessageType.App && m.to === 2);
    assert.ok(apps.length >= 4, `${apps.length} appends`);
    for (const a of apps) assert.ok(a.entries.length >= 1 && a.entries.length <= 2);
    assert.equal(
      apps.reduce((n, a) => n + a.entries.length, 0),
      10,
    );
  });

  it('in replicate state keeps at most maxInflightMsgs appends unacknowledged', () => {
    const net = new TestNetwork([1, 2, 3], { maxInflightMsgs: 3 });
    net.elect(1);
    net.filter = (m) => !(m.type === MessageType.AppResp && m.from === 2);
    const sentTo2 = (): number =>
      net.delivered.filter((m) => m.type === MessageType.App && m.to === 2 && m.entries.length > 0).length;
    const before = sentTo2();
    for (let i = 0; i < 10; i++) net.propose(1, `p${i}`);
    assert.equal(sentTo2() - before, 3);
    assert.equal(progressOf(net, 1, 2).inflightMsgs, 3);
    net.heal();
    tickNodes(net, [1], 1);
    assert.equal(net.appliedTexts(2).length, 10, 'the heartbeat answer reopens the window');
  });

  it('in replicate state keeps inflight bytes under maxInflightBytes (plus one message)', () => {
    const net = new TestNetwork([1, 2, 3], { maxInflightBytes: 1000 });
    net.elect(1);
    net.filter = (m) => !(m.type === MessageType.AppResp && m.from === 2);
    for (let i = 0; i < 20; i++) net.propose(1, 'x'.repeat(200));
    const p = progressOf(net, 1, 2);
    assert.ok(p.inflightBytes >= 1000 && p.inflightBytes < 1000 + 300, `${p.inflightBytes} bytes in flight`);
  });

  it('in probe state sends one append and waits', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.node(1).reportUnreachable(2);
    assert.equal(progressOf(net, 1, 2).state, ProgressState.Probe);
    net.cut(1, 2);
    const before = net.delivered.length;
    for (let i = 0; i < 5; i++) net.node(1).propose(text(`p${i}`));
    const rd = net.node(1).ready();
    assert.equal(rd.messages.filter((m) => m.type === MessageType.App && m.to === 2).length, 1);
    net.member(1).storage.append(rd.entries);
    net.node(1).advance();
    assert.equal(net.delivered.length, before);
  });

  it('backtracks a divergent follower a term at a time, not an entry at a time', () => {
    // Leader: 1 entry of term 1 then 50 of term 3. Follower: 1 of term 1 then 50 of term 2.
    const leaderLog = [1, ...Array<number>(50).fill(3)];
    const followerLog = [1, ...Array<number>(50).fill(2)];
    const lead = newTestRaft(1, [1, 2], { preVote: false, storage: storageWithTerms([1, 2], leaderLog) });
    const follower = newTestRaft(2, [1, 2], {
      preVote: false,
      storage: storageWithTerms([1, 2], followerLog),
    });
    lead.becomeFollower(3, 0);
    follower.becomeFollower(3, 0);
    lead.becomeCandidate();
    lead.becomeLeader();
    lead.bcastAppend();
    let rejections = 0;
    for (let round = 0; round < 100; round++) {
      const out = [...lead.takeMessages(), ...follower.takeMessages()];
      if (out.length === 0) break;
      for (const m of out) {
        if (m.type === MessageType.AppResp && m.reject) rejections++;
        (m.to === 1 ? lead : follower).step(m);
      }
    }
    assert.ok(rejections <= 2, `${rejections} rejections`);
    assert.deepEqual(
      follower.raftLog.allEntries().map((e) => e.term),
      lead.raftLog.allEntries().map((e) => e.term),
    );
  });

  it('drops proposals beyond maxUncommittedEntriesSize and accepts them after commit', () => {
    const net = new TestNetwork([1, 2, 3], { maxUncommittedEntriesSize: 1000 });
    net.elect(1);
    net.isolate(2);
    net.isolate(3);
    net.node(1).propose(new Uint8Array(600));
    net.node(1).propose(new Uint8Array(300));
    assert.throws(() => net.node(1).propose(new Uint8Array(200)), /too many uncommitted/);
    net.heal();
    net.stabilize();
    tickNodes(net, [1], 2);
    net.node(1).propose(new Uint8Array(200));
  });
});

describe('dropped proposals', () => {
  it('a candidate drops proposals with a clear error', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.isolate(1);
    net.elect(1);
    assert.throws(() => net.node(1).propose(text('x')), /election is in progress/);
  });

  it('a removed leader drops proposals', () => {
    const r = newTestRaft(1, [1, 2, 3], { preVote: false });
    r.becomeCandidate();
    r.becomeLeader();
    r.tracker.progress.delete(1);
    assert.throws(() => r.propose(entriesWithTerms([0])), /removed/);
  });

  it('a forwarded proposal that reaches a node without leader is dropped without an exception', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.node(2).step(msg(MessageType.Prop, 3, 2, { entries: entriesWithTerms([0]) }));
  });
});
