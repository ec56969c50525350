// RawNode and whole-cluster behaviour over the in-memory network: election, replication,
// proposals on followers, restarts, and the Ready contract.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { RawNode } from './raw_node';
import { MemoryStorage } from './memory_storage';
import { seededRandom, TestNetwork } from './testing_network';
import { emptyMessage, MessageType, ProposalDroppedError, RaftError, StateRole } from './types';

describe('RawNode cluster', () => {
  it('elects a single leader and replicates proposals to every node', () => {
    const net = new TestNetwork([1, 2, 3]);
    assert.equal(net.elect(1), StateRole.Leader);
    assert.deepEqual(net.leaders(), [1]);
    const r = net.propose(1, 'a');
    assert.equal(r.forwarded, false);
    net.propose(1, 'b');
    for (const id of [1, 2, 3]) assert.deepEqual(net.appliedTexts(id), ['a', 'b']);
    // The leader's empty entry of its term, then a and b.
    assert.equal(net.node(1).status().commit, 3);
  });

  it('elects a leader from ticks alone with randomized timeouts', () => {
    const net = new TestNetwork([1, 2, 3, 4, 5], { seed: 7 });
    for (let i = 0; i < 40 && net.leaders().length === 0; i++) net.tickAll();
    assert.equal(net.leaders().length, 1);
  });

  it('forwards a follower proposal to the leader', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    const r = net.propose(2, 'from-follower');
    assert.deepEqual(r, { forwarded: true });
    for (const id of [1, 2, 3]) assert.deepEqual(net.appliedTexts(id), ['from-follower']);
  });

  it('drops a proposal when no leader is known', () => {
    const net = new TestNetwork([1, 2, 3]);
    assert.throws(() => net.node(2).propose(new Uint8Array([1])), ProposalDroppedError);
  });

  it('refuses local message types from the network', () => {
    const net = new TestNetwork([1, 2, 3]);
    assert.throws(
      () => net.node(1).step(emptyMessage(MessageType.Hup, 2, 1)),
      (err: unknown) => err instanceof RaftError && err.code === 'STEP_LOCAL_MSG',
    );
  });

  it('refuses ready() twice without advance()', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.node(1).campaign();
    net.node(1).ready();
    assert.throws(() => net.node(1).ready(), /before advance/);
  });

  it('sets mustSync when term or vote change, not for a pre-vote round', () => {
    const pre = new TestNetwork([1, 2, 3]);
    pre.node(1).campaign();
    const preRd = pre.node(1).ready();
    assert.equal(preRd.softState?.role, StateRole.PreCandidate);
    assert.equal(preRd.mustSync, false); // pre-vote touches neither term nor vote
    assert.equal(preRd.hardState, undefined);

    const net = new TestNetwork([1, 2, 3], { preVote: false });
    net.node(1).campaign();
    const rd = net.node(1).ready();
    assert.equal(rd.mustSync, true); // term and vote changed
    assert.deepEqual(rd.hardState, { term: 1, vote: 1, commit: 0 });
  });

  it('puts a vote grant in the same Ready as the vote it promises, with mustSync', () => {
    const net = new TestNetwork([1, 2, 3], { preVote: false });
    net.node(2).step({ ...emptyMessage(MessageType.Vote, 1, 2), term: 1 });
    const rd = net.node(2).ready();
    assert.deepEqual(rd.hardState, { term: 1, vote: 1, commit: 0 });
    assert.equal(rd.mustSync, true);
    assert.deepEqual(
      rd.messages.map((m) => [m.type, m.reject]),
      [[MessageType.VoteResp, false]],
    );
  });

  it('needs no sync for a commit index change alone, and syncs an installed snapshot', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.cutOneWay(1, 2);
    net.propose(1, 'a');
    net.heal();
    // The heartbeat carries only min(match, commit): first catch 2 up, then commit.
    net.cutOneWay(2, 1);
    net.node(2).step({
      ...emptyMessage(MessageType.App, 1, 2),
      term: 1,
      index: 1,
      logTerm: 1,
      entries: [...net.member(1).storage.entries(2, 3, Infinity)],
    });
    net.processReady(2);
    net.node(2).step({ ...emptyMessage(MessageType.Heartbeat, 1, 2), term: 1, commit: 2 });
    const rd = net.node(2).ready();
    assert.equal(rd.hardState?.commit, 2);
    assert.equal(rd.entries.length, 0);
    assert.equal(rd.mustSync, false);
    net.node(2).advance();

    const s = new MemoryStorage();
    const node = new RawNode({ id: 3, storage: s, random: seededRandom(3) });
    node.step({
      ...emptyMessage(MessageType.Snap, 1, 3),
      term: 2,
      snapshot: {
        metadata: { index: 5, term: 2, confState: { voters: [1, 2, 3], learners: [] } },
        data: new Uint8Array(0),
      },
    });
    const snapRd = node.ready();
    assert.equal(snapRd.snapshot?.metadata.index, 5);
    assert.equal(snapRd.mustSync, true);
  });

  it('restarts a node from its storage and catches it up', () => {
    const net = new TestNetwork([1, 2, 3]);
    net.elect(1);
    net.propose(1, 'a');
    net.isolate(3);
    net.propose(1, 'b');
    net.restart(3);
    net.heal();
    net.propose(1, 'c');
    assert.deepEqual(net.appliedTexts(3), ['a', 'b', 'c']);
  });

  it('reports Ready softState on role changes', () => {
    const storage = MemoryStorage.withConfState({ voters: [1], learners: [] });
    const node = new RawNode({ id: 1, storage, random: seededRandom(1) });
    node.campaign();
    const rd = node.ready();
    assert.deepEqual(rd.softState, { lead: 1, role: StateRole.Leader });
    assert.equal(rd.entries.length, 1);
    assert.equal(rd.committedEntries.length, 1);
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    node.advance();
    assert.equal(node.hasReady(), false);
    assert.equal(node.status().applied, 1);
  });
});
