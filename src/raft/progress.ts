// What the leader knows of each follower: how far its log matches (match), what to send next
// (next), and the flow-control state that decides whether more may be sent now.

import { committedIndex, voteResult, VoteResult } from './quorum';
import type { ConfState, NodeId } from './types';
import { invariant } from './util';

export enum ProgressState {
  /** Unknown match: send one append per heartbeat round until an answer tells where we are. */
  Probe = 0,
  /** Known match: send optimistically, bounded by the inflight window. */
  Replicate = 1,
  /** The follower needs a snapshot; nothing else is sent until it reports back. */
  Snapshot = 2,
}

/**
 * A bounded window of appends sent but not yet acknowledged, each recorded by its last index
 * and size. Full when either the message count or the byte total reaches its limit, so a
 * slow follower never has more than maxCount messages or (roughly) maxBytes in flight.
 */
export class Inflights {
  private readonly indexes: number[];
  private readonly sizes: number[];
  private start = 0;
  private countNow = 0;
  private bytesNow = 0;

  constructor(
    readonly maxCount: number,
    /** 0 means no byte limit. */
    readonly maxBytes: number,
  ) {
    invariant(maxCount > 0, `inflights need a positive count limit, got ${maxCount}`);
    this.indexes = new Array<number>(maxCount).fill(0);
    this.sizes = new Array<number>(maxCount).fill(0);
  }

  get count(): number {
    return this.countNow;
  }

  get bytes(): number {
    return this.bytesNow;
  }

  full(): boolean {
    return this.countNow === this.maxCount || (this.maxBytes > 0 && this.bytesNow >= this.maxBytes);
  }

  /** Records an append whose last entry is `index`; indexes must be added in increasing order. */
  add(index: number, bytes: number): void {
    invariant(!this.full(), 'cannot add to a full inflights window');
    if (this.countNow > 0) {
      const last = this.indexes[(this.start + this.countNow - 1) % this.maxCount];
      invariant(index > last, () => `inflight index ${index} not above the last one ${last}`);
    }
    const slot = (this.start + this.countNow) % this.maxCount;
    this.indexes[slot] = index;
    this.sizes[slot] = bytes;
    this.countNow++;
    this.bytesNow += bytes;
  }

  /** Frees every append whose last index is <= `index` (they were acknowledged). */
  freeLE(index: number): void {
    while (this.countNow > 0 && this.indexes[this.start] <= index) {
      this.bytesNow -= this.sizes[this.start];
      this.start = (this.start + 1) % this.maxCount;
      this.countNow--;
    }
    if (this.countNow === 0) this.start = 0;
  }

  /** Frees the oldest append: a heartbeat answer shows the follower is alive though its acks may be lost. */
  freeFirstOne(): void {
    if (this.countNow === 0) return;
    this.freeLE(this.indexes[this.start]);
  }

  reset(): void {
    this.start = 0;
    this.countNow = 0;
    this.bytesNow = 0;
  }
}

export class Progress {
  match = 0;
  next: number;
  state = ProgressState.Probe;
  /** In Snapshot state: the index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Heard from since the last check-quorum round. */
  recentActive = false;
  /** In Snapshot state: leader ticks since the snapshot went out (see snapshotTimeoutTicks). */
  snapshotTicks = 0;
  /** In Probe state: an append went out and we wait for its answer (or the next heartbeat). */
  probeSent = false;
  readonly inflights: Inflights;

  constructor(
    next: number,
    maxInflightMsgs: number,
    maxInflightBytes: number,
    public isLearner: boolean,
  ) {
    this.next = next;
    this.inflights = new Inflights(maxInflightMsgs, maxInflightBytes);
  }

  private resetState(state: ProgressState): void {
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // Coming back from a snapshot, the follower has at least the snapshot (if it succeeded;
    // a failed one has pendingSnapshot cleared first).
    if (this.state === ProgressState.Snapshot) {
      const pending = this.pendingSnapshot;
      this.resetState(ProgressState.Probe);
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState(ProgressState.Probe);
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState(ProgressState.Replicate);
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: number): void {
    this.resetState(ProgressState.Snapshot);
    this.pendingSnapshot = snapshotIndex;
    this.snapshotTicks = 0;
  }

  /** An ack for `index`; false when it tells nothing new (stale or duplicate). */
  maybeUpdate(index: number): boolean {
    let updated = false;
    if (this.match < index) {
      this.match = index;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, index + 1);
    return updated;
  }

  /** In Replicate state the leader assumes the append will succeed and moves on. */
  optimisticUpdate(lastSent: number): void {
    this.next = lastSent + 1;
  }

  /**
   * A rejection of the append at `rejected`; `matchHint` is where the follower says we
   * should try next. Returns false for stale rejections (the window has moved on).
   */
  maybeDecrTo(rejected: number, matchHint: number): boolean {
    if (this.state === ProgressState.Replicate) {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.probeSent = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case ProgressState.Probe:
        return this.probeSent;
      case ProgressState.Replicate:
        return this.inflights.full();
      case ProgressState.Snapshot:
        return true;
    }
  }
}

/** The membership (voters, learners) and a Progress for each member, plus vote tallies. */
export class ProgressTracker {
  readonly voters = new Set<NodeId>();
  readonly learners = new Set<NodeId>();
  readonly progress = new Map<NodeId, Progress>();
  readonly votes = new Map<NodeId, boolean>();

  constructor(
    readonly maxInflightMsgs: number,
    readonly maxInflightBytes: number,
  ) {}

  confState(): ConfState {
    return {
      voters: [...this.voters].sort((a, b) => a - b),
      learners: [...this.learners].sort((a, b) => a - b),
    };
  }

  /** Member ids in increasing order, so message order never depends on insertion order. */
  ids(): NodeId[] {
    return [...this.progress.keys()].sort((a, b) => a - b);
  }

  sortedVoters(): NodeId[] {
    return [...this.voters].sort((a, b) => a - b);
  }

  isSingleton(): boolean {
    return this.voters.size === 1;
  }

  committed(): number {
    return committedIndex(this.voters, (id) => this.progress.get(id)?.match);
  }

  resetVotes(): void {
    this.votes.clear();
  }

  recordVote(id: NodeId, granted: boolean): void {
    if (!this.votes.has(id)) this.votes.set(id, granted);
  }

  tallyVotes(): { granted: number; rejected: number; result: VoteResult } {
    let granted = 0;
    let rejected = 0;
    for (const id of this.voters) {
      const v = this.votes.get(id);
      if (v === true) granted++;
      else if (v === false) rejected++;
    }
    return { granted, rejected, result: voteResult(this.voters, this.votes) };
  }

  /** Outcome of a tally over arbitrary answers (for example ReadIndex heartbeat acks). */
  tallyVotesOf(answers: ReadonlyMap<NodeId, boolean>): VoteResult {
    return voteResult(this.voters, answers);
  }

  /** True when a majority of voters (the leader counts itself) were heard from recently. */
  quorumActive(self: NodeId): boolean {
    const active = new Map<NodeId, boolean>();
    for (const id of this.voters) {
      const pr = this.progress.get(id);
      active.set(id, id === self || (pr?.recentActive ?? false));
    }
    return voteResult(this.voters, active) === VoteResult.Won;
  }
}
