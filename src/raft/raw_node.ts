// The driver-facing API (after etcd-io/raft rawnode.go, classic Ready): the application
// ticks, steps messages from peers, proposes, and loops over ready()/advance().
//
// The Ready contract. For every Ready, in this order:
//   1. persist `snapshot` (if any), `entries` and `hardState` in one write, synced to disk
//      when `mustSync` is true; entries overwrite any stored suffix from their first index;
//   2. only then send `messages`: votes, vote grants and append acknowledgements promise
//      state that must survive a crash, so they may not leave before it is durable;
//   3. apply `snapshot` data to the state machine, then `committedEntries` in order, calling
//      applyConfChange() for entries of type ConfChange; serve `readStates` once applied
//      reaches their index;
//   4. call advance().
// Messages may be stepped between ready() and advance() (the persist may be asynchronous), but
// ready() must not be called again before advance().

import { encodeConfChange } from './confchange';
import { type Config, type ProposeResult, Raft, type Status } from './raft';
import {
  type ConfChange,
  type ConfState,
  EntryType,
  emptyMessage,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  ProposalDroppedError,
  RaftError,
  type Ready,
  type SoftState,
  StateRole,
} from './types';
import { invariant } from './util';

/** Message types the core creates for itself; never accepted from the network. */
const LOCAL_MESSAGE_TYPES = new Set<MessageType>([
  MessageType.Hup,
  MessageType.Beat,
  MessageType.Unreachable,
  MessageType.SnapStatus,
  MessageType.CheckQuorum,
]);

/** Answers to requests we sent; dropped when the sender is not a member. */
const RESPONSE_MESSAGE_TYPES = new Set<MessageType>([
  MessageType.AppResp,
  MessageType.VoteResp,
  MessageType.PreVoteResp,
  MessageType.HeartbeatResp,
]);

function hardStateEqual(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export class RawNode {
  readonly raft: Raft;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  /** The Ready handed out and not yet advanced. */
  private pending: Ready | undefined;

  constructor(config: Config) {
    this.raft = new Raft(config);
    this.prevSoftState = this.raft.softState();
    this.prevHardState = this.raft.storedHardState;
  }

  /** One logical clock tick (the driver's timer; DESIGN: 100 ms). */
  tick(): void {
    this.raft.tick();
  }

  /** Starts an election now (respects pre-vote). */
  campaign(): void {
    this.raft.step(emptyMessage(MessageType.Hup, this.raft.id, this.raft.id));
  }

  /**
   * Feeds a message received from a peer. Local-only types are refused. A forwarded proposal
   * or read that cannot be handled here is dropped silently: its sender times out.
   */
  step(m: Message): void {
    if (LOCAL_MESSAGE_TYPES.has(m.type)) {
      throw new RaftError(
        'STEP_LOCAL_MSG',
        `message type ${MessageType[m.type]} is local and cannot come from a peer`,
      );
    }
    if (RESPONSE_MESSAGE_TYPES.has(m.type) && !this.raft.tracker.progress.has(m.from)) return;
    try {
      this.raft.step(m);
    } catch (err) {
      if (
        err instanceof ProposalDroppedError &&
        (m.type === MessageType.Prop || m.type === MessageType.ReadIndex)
      ) {
        return;
      }
      throw err;
    }
  }

  /**
   * Proposes data to append to the log. On the leader, returns the index and term it got: the
   * proposal succeeded if and only if the entry committed at that index has that term. On a
   * follower, forwards to the leader and returns { forwarded: true }. Throws
   * ProposalDroppedError when no leader is known, an election or a leadership transfer is in
   * progress, the node was removed, or too much is uncommitted.
   */
  propose(data: Uint8Array): ProposeResult {
    return this.raft.propose([{ term: 0, index: 0, type: EntryType.Normal, data }]);
  }

  /**
   * Proposes a membership change. One at a time: while an earlier change is not yet applied
   * on the leader, a new one is refused with ProposalDroppedError.
   */
  proposeConfChange(cc: ConfChange): ProposeResult {
    return this.raft.propose([{ term: 0, index: 0, type: EntryType.ConfChange, data: encodeConfChange(cc) }]);
  }

  /** Applies a committed ConfChange entry; membership changes now. Returns the new membership. */
  applyConfChange(cc: ConfChange): ConfState {
    return this.raft.applyConfChange(cc);
  }

  /** Asks the leader to hand leadership to `to` (forwarded when called on a follower). */
  transferLeadership(to: NodeId): void {
    const m = emptyMessage(MessageType.TransferLeader, to, this.raft.id);
    this.raft.step(m);
  }

  /**
   * Requests a linearizable read. When the leader confirms it still leads, a ReadState with
   * this ctx (which must be unique) and the index to wait for appears in Ready.readStates.
   */
  readIndex(ctx: Uint8Array): void {
    if (this.raft.role === StateRole.Candidate || this.raft.role === StateRole.PreCandidate) {
      throw new ProposalDroppedError('an election is in progress; no leader to serve the read');
    }
    const m = emptyMessage(MessageType.ReadIndex, NONE, NONE);
    m.context = ctx;
    this.raft.step(m);
  }

  /** The transport could not deliver to `id`; the leader stops optimistic sending to it. */
  reportUnreachable(id: NodeId): void {
    this.raft.step(emptyMessage(MessageType.Unreachable, id, this.raft.id));
  }

  /** Outcome of sending a snapshot to `id`; on failure the leader probes again and retries. */
  reportSnapshot(id: NodeId, ok: boolean): void {
    const m = emptyMessage(MessageType.SnapStatus, id, this.raft.id);
    m.reject = !ok;
    this.raft.step(m);
  }

  hasReady(): boolean {
    if (this.pending) return false;
    const r = this.raft;
    r.flushBroadcast();
    const soft = r.softState();
    if (soft.lead !== this.prevSoftState.lead || soft.role !== this.prevSoftState.role) return true;
    if (!hardStateEqual(r.hardState(), this.prevHardState)) return true;
    return (
      r.raftLog.hasPendingSnapshot() ||
      r.msgs.length > 0 ||
      r.raftLog.unstable.entries.length > 0 ||
      r.raftLog.hasNextCommittedEntries() ||
      r.readStates.length > 0
    );
  }

  ready(): Ready {
    invariant(this.pending === undefined, 'ready() called again before advance()');
    const r = this.raft;
    const messages = r.takeMessages();
    const rd: Ready = {
      entries: r.raftLog.unstableEntries(),
      committedEntries: r.raftLog.nextCommittedEntries(),
      messages,
      readStates: r.readStates,
      mustSync: false,
    };
    r.readStates = [];
    const soft = r.softState();
    if (soft.lead !== this.prevSoftState.lead || soft.role !== this.prevSoftState.role) {
      rd.softState = soft;
      this.prevSoftState = soft;
    }
    const hard = r.hardState();
    if (!hardStateEqual(hard, this.prevHardState)) {
      invariant(
        hard.term >= this.prevHardState.term,
        () => `term went back from ${this.prevHardState.term} to ${hard.term}`,
      );
      invariant(
        hard.commit >= this.prevHardState.commit,
        () => `commit went back from ${this.prevHardState.commit} to ${hard.commit}`,
      );
      rd.hardState = hard;
    }
    const snap = r.raftLog.unstable.snapshot;
    if (snap) rd.snapshot = snap;
    // A new term or vote, new entries and an installed snapshot are all promised to peers by
    // the messages of this Ready; the commit index alone can be recovered, so needs no sync.
    rd.mustSync =
      rd.entries.length > 0 ||
      rd.snapshot !== undefined ||
      hard.vote !== this.prevHardState.vote ||
      hard.term !== this.prevHardState.term;
    this.pending = rd;
    return rd;
  }

  /** The driver finished the last Ready: its entries are persisted and committed entries applied. */
  advance(handled?: Ready): void {
    const rd = this.pending;
    invariant(rd !== undefined, 'advance() called without a ready()');
    invariant(handled === undefined || handled === rd, 'advance() given a Ready other than the last one');
    this.pending = undefined;
    const r = this.raft;
    if (rd.hardState) this.prevHardState = rd.hardState;
    r.reduceUncommittedSize(rd.committedEntries);
    if (rd.committedEntries.length > 0) {
      r.raftLog.appliedTo(rd.committedEntries[rd.committedEntries.length - 1].index);
    } else if (rd.snapshot && rd.snapshot.metadata.index > r.raftLog.applied) {
      r.raftLog.appliedTo(rd.snapshot.metadata.index);
    }
    if (rd.entries.length > 0) {
      const last = rd.entries[rd.entries.length - 1];
      r.raftLog.stableTo(last.index, last.term);
    }
    if (rd.snapshot) r.raftLog.stableSnapTo(rd.snapshot.metadata.index);
  }

  status(): Status {
    return this.raft.status();
  }
}
