// The Raft state machine (after etcd-io/raft raft.go): synchronous, no I/O, no clock, no
// randomness of its own. The role is data: `stepRole` and `tick` are swapped on every role
// change. Outgoing messages accumulate in `msgs`; the RawNode hands them to the driver.

import {
  applyConfChangeToState,
  decodeConfChange,
  encodeConfChange,
  InvalidConfChangeError,
} from './confchange';
import { isRaftStorageError, RaftLog } from './log';
import { Progress, ProgressState, ProgressTracker } from './progress';
import { VoteResult } from './quorum';
import { ReadOnly } from './read_only';
import {
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  NONE,
  type NodeId,
  ProposalDroppedError,
  RaftError,
  type ReadState,
  type Snapshot,
  SnapshotTemporarilyUnavailableError,
  type SoftState,
  StateRole,
  type Storage,
  emptyMessage,
} from './types';
import { entriesSize, invariant } from './util';

/** Structured logger; a pino logger fits. */
export interface RaftLogger {
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  debug?(fields: Record<string, unknown>, message: string): void;
}

export interface Config {
  /** This node's id, non-zero. */
  id: NodeId;
  storage: Storage;
  /**
   * Initial members of a new cluster, used only when storage holds no ConfState (a brand-new
   * node). Once storage has a ConfState (from a snapshot), it wins.
   */
  voters?: NodeId[];
  learners?: NodeId[];
  /** Ticks without hearing from a leader before campaigning; randomized in [n, 2n). */
  electionTicks?: number;
  /** Ticks between leader heartbeats; must be below electionTicks. */
  heartbeatTicks?: number;
  /**
   * Last index the application has applied (on restart). Must not exceed the stored commit,
   * and must not skip ConfChange entries past the snapshot storage reports (raft learns
   * membership from that snapshot plus the changes the application applies again).
   */
  applied?: number;
  /** Most bytes of entries in one append message (at least one entry always goes). */
  maxSizePerMsg?: number;
  /** Most append messages in flight to one follower in Replicate state. */
  maxInflightMsgs?: number;
  /** Most bytes of entries in flight to one follower; 0 = no byte limit. */
  maxInflightBytes?: number;
  /** Most bytes of proposed but uncommitted entry data on a leader; beyond it proposals drop. */
  maxUncommittedEntriesSize?: number;
  /** Most bytes of committed entries handed out in one Ready. */
  maxCommittedSizePerReady?: number;
  /**
   * Leader ticks a follower may stay in Snapshot state without reportSnapshot() before the
   * send counts as failed and is retried. A safety net: transports should always report.
   * Default 20 election timeouts.
   */
  snapshotTimeoutTicks?: number;
  checkQuorum?: boolean;
  preVote?: boolean;
  /** Random source in [0, 1) for election timeouts; injected so a simulation replays exactly. */
  random: () => number;
  logger?: RaftLogger;
}

export const DEFAULT_ELECTION_TICKS = 10;
export const DEFAULT_HEARTBEAT_TICKS = 1;
export const DEFAULT_MAX_SIZE_PER_MSG = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT_MSGS = 256;
export const DEFAULT_MAX_INFLIGHT_BYTES = 0;

/** Marks vote requests of a leadership transfer, which bypass the leader lease. */
export const CAMPAIGN_TRANSFER_CONTEXT = new TextEncoder().encode('CampaignTransfer');

type CampaignType = 'preElection' | 'election' | 'transfer';

export type ProposeResult = { forwarded: false; index: number; term: number } | { forwarded: true };

export interface ProgressStatus {
  match: number;
  next: number;
  state: ProgressState;
  isLearner: boolean;
  recentActive: boolean;
  inflightMsgs: number;
  inflightBytes: number;
  pendingSnapshot: number;
}

export interface Status {
  id: NodeId;
  term: number;
  vote: NodeId;
  commit: number;
  applied: number;
  lead: NodeId;
  role: StateRole;
  leadTransferee: NodeId;
  confState: ConfState;
  /** Only on a leader. */
  progress?: Map<NodeId, ProgressStatus>;
}

const noopLogger: RaftLogger = { info: () => undefined, warn: () => undefined };

function isEmptyHardState(hs: HardState): boolean {
  return hs.term === 0 && hs.vote === NONE && hs.commit === 0;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function voteRespType(t: MessageType): MessageType {
  return t === MessageType.Vote ? MessageType.VoteResp : MessageType.PreVoteResp;
}

export class Raft {
  readonly id: NodeId;
  private currentTerm = 0;
  vote: NodeId = NONE;
  lead: NodeId = NONE;
  role: StateRole = StateRole.Follower;
  isLearner = false;
  readonly raftLog: RaftLog;
  readonly tracker: ProgressTracker;
  /** The hard state storage held at start: the RawNode's baseline for the first Ready. */
  readonly storedHardState: HardState;

  /** Messages to send once the Ready carrying them is persisted. */
  msgs: Message[] = [];
  readStates: ReadState[] = [];

  readonly electionTimeout: number;
  readonly heartbeatTimeout: number;
  readonly checkQuorum: boolean;
  readonly preVote: boolean;
  readonly maxSizePerMsg: number;
  readonly maxUncommittedSize: number;
  readonly snapshotTimeoutTicks: number;
  private readonly random: () => number;
  readonly logger: RaftLogger;

  /** Leader/candidate/follower: ticks since the last reset; leader: since the last quorum check. */
  electionElapsed = 0;
  heartbeatElapsed = 0;
  randomizedElectionTimeout = 0;

  leadTransferee: NodeId = NONE;
  /** Index of the last ConfChange proposed by this leader; a new one waits until it is applied. */
  pendingConfIndex = 0;
  /** Bytes of entry data appended by this leader but not yet committed and handed out. */
  uncommittedSize = 0;
  private readOnly = new ReadOnly();
  /** ReadIndex requests held until this leader commits an entry of its own term. */
  private pendingReadIndexMessages: Message[] = [];
  /** Proposals appended since the last broadcast; sent together so one append carries many. */
  private needBroadcast = false;

  private stepRole: (m: Message) => void = (m) => this.stepFollower(m);
  tick: () => void = () => this.tickElection();

  constructor(config: Config) {
    if (config.id === NONE || !Number.isSafeInteger(config.id) || config.id < 0) {
      throw new RaftError('INVALID_CONFIG', `node id must be a positive integer, got ${config.id}`);
    }
    this.id = config.id;
    this.electionTimeout = config.electionTicks ?? DEFAULT_ELECTION_TICKS;
    this.heartbeatTimeout = config.heartbeatTicks ?? DEFAULT_HEARTBEAT_TICKS;
    if (this.heartbeatTimeout <= 0)
      throw new RaftError('INVALID_CONFIG', 'heartbeatTicks must be greater than 0');
    if (this.electionTimeout <= this.heartbeatTimeout) {
      throw new RaftError(
        'INVALID_CONFIG',
        `electionTicks (${this.electionTimeout}) must be greater than heartbeatTicks (${this.heartbeatTimeout})`,
      );
    }
    const maxInflightMsgs = config.maxInflightMsgs ?? DEFAULT_MAX_INFLIGHT_MSGS;
    if (maxInflightMsgs <= 0) throw new RaftError('INVALID_CONFIG', 'maxInflightMsgs must be greater than 0');
    this.checkQuorum = config.checkQuorum ?? true;
    this.preVote = config.preVote ?? true;
    this.maxSizePerMsg = config.maxSizePerMsg ?? DEFAULT_MAX_SIZE_PER_MSG;
    this.maxUncommittedSize = config.maxUncommittedEntriesSize || Infinity;
    this.snapshotTimeoutTicks = config.snapshotTimeoutTicks ?? 20 * this.electionTimeout;
    this.random = config.random;
    this.logger = config.logger ?? noopLogger;
    this.raftLog = new RaftLog(config.storage, config.maxCommittedSizePerReady ?? Infinity);
    this.tracker = new ProgressTracker(
      maxInflightMsgs,
      config.maxInflightBytes ?? DEFAULT_MAX_INFLIGHT_BYTES,
    );

    const { hardState, confState } = config.storage.initialState();
    this.storedHardState = { ...hardState };
    const stored = confState.voters.length + confState.learners.length > 0;
    const brandNew = !stored && isEmptyHardState(hardState) && config.storage.lastIndex() === 0;
    if (stored) {
      this.setConfState(confState);
    } else if (brandNew && (config.voters?.length ?? 0) + (config.learners?.length ?? 0) > 0) {
      this.bootstrap(config.voters ?? [], config.learners ?? []);
    }
    if (!isEmptyHardState(hardState)) {
      this.raftLog.loadCommit(hardState.commit);
      this.currentTerm = hardState.term;
      this.vote = hardState.vote;
    }
    if (config.applied !== undefined && config.applied > 0) {
      this.checkAppliedSkipsNoConfChange(config.applied);
      this.raftLog.appliedTo(config.applied);
    }
    this.becomeFollower(this.currentTerm, NONE);
  }

  /**
   * A new cluster (after etcd's Bootstrap): the initial membership goes into the log as
   * committed ConfChange entries of term 1, identical on every founding member, so a member
   * added later learns the whole membership by replaying the log. Applying them again when
   * they come out of Ready changes nothing.
   */
  private bootstrap(voters: NodeId[], learners: NodeId[]): void {
    const changes: ConfChange[] = [
      ...voters.map((nodeId) => ({ type: ConfChangeType.AddVoter, nodeId, context: new Uint8Array(0) })),
      ...learners.map((nodeId) => ({ type: ConfChangeType.AddLearner, nodeId, context: new Uint8Array(0) })),
    ];
    const entries: Entry[] = changes.map((cc, i) => ({
      term: 1,
      index: i + 1,
      type: EntryType.ConfChange,
      data: encodeConfChange(cc),
    }));
    this.raftLog.append(entries);
    this.raftLog.commitTo(entries.length);
    this.currentTerm = 1;
    this.setConfState({ voters, learners });
  }

  /**
   * Raft learns membership from storage's snapshot plus the ConfChange entries the
   * application applies. Starting with `applied` past such an entry would lose it silently.
   */
  private checkAppliedSkipsNoConfChange(applied: number): void {
    let snapIndex: number;
    try {
      snapIndex = this.raftLog.snapshot().metadata.index;
    } catch (err) {
      if (err instanceof SnapshotTemporarilyUnavailableError) return;
      throw err;
    }
    const lo = Math.max(this.raftLog.firstIndex(), snapIndex + 1);
    const hi = Math.min(applied, this.raftLog.lastIndex());
    if (hi < lo) return;
    const skipped = this.raftLog.slice(lo, hi + 1, Infinity).filter((e) => e.type === EntryType.ConfChange);
    if (skipped.length > 0) {
      throw new RaftError(
        'INVALID_CONFIG',
        `applied index ${applied} skips configuration changes at ${skipped.map((e) => e.index).join(', ')} ` +
          `that are not in the snapshot (index ${snapIndex}); restart with applied <= ${snapIndex} and replay the log`,
      );
    }
  }

  get term(): number {
    return this.currentTerm;
  }

  /** A term never decreases: everything Raft guarantees rests on it. */
  private setTerm(term: number): void {
    invariant(term >= this.currentTerm, () => `term would go back from ${this.currentTerm} to ${term}`);
    this.currentTerm = term;
  }

  softState(): SoftState {
    return { lead: this.lead, role: this.role };
  }

  hardState(): HardState {
    return { term: this.currentTerm, vote: this.vote, commit: this.raftLog.committed };
  }

  // ---- sending -------------------------------------------------------------------------------

  private send(m: Message): void {
    if (m.from === NONE) m.from = this.id;
    if (
      m.type === MessageType.Vote ||
      m.type === MessageType.VoteResp ||
      m.type === MessageType.PreVote ||
      m.type === MessageType.PreVoteResp
    ) {
      // Vote messages carry the term they are about (a pre-vote's is in the future). Only a
      // pre-vote rejection from a node still in term 0 may carry 0.
      invariant(
        m.term !== 0 || (m.type === MessageType.PreVoteResp && m.reject),
        () => `term unset on ${MessageType[m.type]}`,
      );
    } else if (m.type !== MessageType.Prop && m.type !== MessageType.ReadIndex) {
      // Proposals and read requests are forwarded without a term: they are not tied to one.
      m.term = this.currentTerm;
    }
    this.msgs.push(m);
  }

  /** Appends to `to` what it lacks, or a snapshot when that is compacted. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.tracker.progress.get(to);
    if (!pr || to === this.id || pr.isPaused()) return false;
    let prevTerm: number | undefined;
    let entries: Entry[] | undefined;
    try {
      prevTerm = this.raftLog.term(pr.next - 1);
      entries = this.raftLog.entries(pr.next, this.maxSizePerMsg);
    } catch (err) {
      if (!isRaftStorageError(err)) throw err;
    }
    if (entries !== undefined && entries.length === 0 && !sendIfEmpty) return false;
    if (prevTerm === undefined || entries === undefined) return this.sendSnapshot(to, pr);

    const m = emptyMessage(MessageType.App, this.id, to);
    m.index = pr.next - 1;
    m.logTerm = prevTerm;
    m.entries = entries;
    m.commit = this.raftLog.committed;
    if (entries.length > 0) {
      if (pr.state === ProgressState.Replicate) {
        const last = entries[entries.length - 1].index;
        pr.optimisticUpdate(last);
        pr.inflights.add(last, entriesSize(entries));
      } else {
        pr.probeSent = true;
      }
    }
    this.send(m);
    return true;
  }

  private sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  private sendSnapshot(to: NodeId, pr: Progress): boolean {
    // A follower we have not heard from lately may be down: do not ship it a whole snapshot.
    if (!pr.recentActive) return false;
    let snapshot: Snapshot;
    try {
      snapshot = this.raftLog.snapshot();
    } catch (err) {
      if (err instanceof SnapshotTemporarilyUnavailableError) return false;
      throw err;
    }
    invariant(snapshot.metadata.index > 0, () => `follower ${to} needs a snapshot but storage has none`);
    pr.becomeSnapshot(snapshot.metadata.index);
    const m = emptyMessage(MessageType.Snap, this.id, to);
    m.snapshot = snapshot;
    this.send(m);
    this.logger.info(
      { id: this.id, to, snapshotIndex: snapshot.metadata.index, match: pr.match },
      'follower needs compacted entries: sending snapshot',
    );
    return true;
  }

  private sendHeartbeat(to: NodeId, ctx: Uint8Array | undefined): void {
    const pr = this.tracker.progress.get(to);
    const m = emptyMessage(MessageType.Heartbeat, this.id, to);
    // Never tell a follower to commit past what it is known to hold: its log may differ there.
    m.commit = Math.min(pr?.match ?? 0, this.raftLog.committed);
    if (ctx) m.context = ctx;
    this.send(m);
  }

  bcastAppend(): void {
    for (const id of this.tracker.ids()) if (id !== this.id) this.sendAppend(id);
  }

  private bcastHeartbeat(ctx?: Uint8Array): void {
    const context = ctx ?? this.readOnly.lastPendingContext();
    for (const id of this.tracker.ids()) if (id !== this.id) this.sendHeartbeat(id, context);
  }

  /** Sends the entries proposed since the last call, batched per follower. */
  flushBroadcast(): void {
    if (!this.needBroadcast) return;
    this.needBroadcast = false;
    if (this.role !== StateRole.Leader) return;
    for (const id of this.tracker.ids()) {
      if (id === this.id) continue;
      while (this.maybeSendAppend(id, false)) {
        // Keep sending while the window allows: each message is capped by maxSizePerMsg.
      }
    }
  }

  /** Messages accumulated so far, proposals included; clears them. */
  takeMessages(): Message[] {
    this.flushBroadcast();
    const out = this.msgs;
    this.msgs = [];
    return out;
  }

  // ---- role changes --------------------------------------------------------------------------

  private reset(term: number): void {
    if (this.currentTerm !== term) {
      this.setTerm(term);
      this.vote = NONE;
    }
    this.lead = NONE;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.tracker.resetVotes();
    const last = this.raftLog.lastIndex();
    for (const [id, pr] of this.tracker.progress) {
      const fresh = new Progress(
        last + 1,
        this.tracker.maxInflightMsgs,
        this.tracker.maxInflightBytes,
        pr.isLearner,
      );
      if (id === this.id) fresh.match = last;
      this.tracker.progress.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSize = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
    this.needBroadcast = false;
  }

  private resetRandomizedElectionTimeout(): void {
    const r = this.random();
    invariant(r >= 0 && r < 1, () => `random source returned ${r}, outside [0, 1)`);
    this.randomizedElectionTimeout = this.electionTimeout + Math.floor(r * this.electionTimeout);
  }

  becomeFollower(term: number, lead: NodeId): void {
    this.stepRole = (m) => this.stepFollower(m);
    this.reset(term);
    this.tick = () => this.tickElection();
    this.lead = lead;
    this.role = StateRole.Follower;
  }

  becomeCandidate(): void {
    invariant(this.role !== StateRole.Leader, 'a leader cannot become a candidate directly');
    this.stepRole = (m) => this.stepCandidate(m);
    this.reset(this.currentTerm + 1);
    this.tick = () => this.tickElection();
    this.vote = this.id;
    this.role = StateRole.Candidate;
    this.logger.info({ id: this.id, term: this.currentTerm }, 'became candidate');
  }

  /** Pre-vote (thesis §9.6): ask first whether we could win, without touching the term or vote. */
  becomePreCandidate(): void {
    invariant(this.role !== StateRole.Leader, 'a leader cannot become a pre-candidate directly');
    this.stepRole = (m) => this.stepCandidate(m);
    this.tracker.resetVotes();
    this.tick = () => this.tickElection();
    this.lead = NONE;
    this.role = StateRole.PreCandidate;
  }

  becomeLeader(): void {
    invariant(this.role !== StateRole.Follower, 'a follower cannot become leader without an election');
    this.stepRole = (m) => this.stepLeader(m);
    this.reset(this.currentTerm);
    this.tick = () => this.tickHeartbeat();
    this.lead = this.id;
    this.role = StateRole.Leader;
    const self = this.tracker.progress.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.recentActive = true;
    }
    // Entries of earlier terms may hide a ConfChange not yet applied: refuse new ones until
    // everything up to here is applied.
    this.pendingConfIndex = this.raftLog.lastIndex();
    // An entry of the new term, so earlier entries can commit (§5.4.2) and reads can be served.
    this.appendEntries([{ term: 0, index: 0, type: EntryType.Normal, data: new Uint8Array(0) }]);
    this.logger.info({ id: this.id, term: this.currentTerm }, 'became leader');
  }

  // ---- ticks ---------------------------------------------------------------------------------

  private promotable(): boolean {
    const pr = this.tracker.progress.get(this.id);
    return pr !== undefined && !pr.isLearner && !this.raftLog.hasPendingSnapshot();
  }

  private pastElectionTimeout(): boolean {
    return this.electionElapsed >= this.randomizedElectionTimeout;
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.pastElectionTimeout()) {
      this.electionElapsed = 0;
      this.step(emptyMessage(MessageType.Hup, this.id, this.id));
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) this.step(emptyMessage(MessageType.CheckQuorum, this.id, this.id));
      // A transfer that has not finished in an election timeout is abandoned.
      if (this.role === StateRole.Leader && this.leadTransferee !== NONE) this.abortLeaderTransfer();
    }
    if (this.role !== StateRole.Leader) return;
    this.expireSnapshotSends();
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.step(emptyMessage(MessageType.Beat, this.id, this.id));
    }
  }

  /** A snapshot send never reported is presumed lost: probe again, which resends it. */
  private expireSnapshotSends(): void {
    for (const [id, pr] of this.tracker.progress) {
      if (pr.state !== ProgressState.Snapshot) continue;
      pr.snapshotTicks++;
      if (pr.snapshotTicks < this.snapshotTimeoutTicks) continue;
      this.logger.warn(
        { id: this.id, to: id, pendingSnapshot: pr.pendingSnapshot, ticks: pr.snapshotTicks },
        'snapshot send not reported in time: presuming it failed',
      );
      pr.pendingSnapshot = 0;
      pr.becomeProbe();
    }
  }

  // ---- elections -----------------------------------------------------------------------------

  private hasUnappliedConfChanges(): boolean {
    if (this.raftLog.applied >= this.raftLog.committed) return false;
    const lo = Math.max(this.raftLog.applied + 1, this.raftLog.firstIndex());
    if (lo > this.raftLog.committed) return false;
    return this.raftLog
      .slice(lo, this.raftLog.committed + 1, Infinity)
      .some((e) => e.type === EntryType.ConfChange);
  }

  private hup(type: CampaignType): void {
    if (this.role === StateRole.Leader) return;
    if (!this.promotable()) return;
    // A committed membership change not yet applied could change who may vote: wait for it.
    if (this.hasUnappliedConfChanges()) {
      this.logger.warn(
        { id: this.id, term: this.currentTerm },
        'not campaigning: configuration change pending apply',
      );
      return;
    }
    this.campaign(type);
  }

  /** Starts an election now (tests and the driver's campaign()). */
  campaign(type: CampaignType): void {
    let voteType: MessageType;
    let term: number;
    if (type === 'preElection') {
      this.becomePreCandidate();
      voteType = MessageType.PreVote;
      // The term we would use; ours is untouched until the pre-vote succeeds.
      term = this.currentTerm + 1;
    } else {
      this.becomeCandidate();
      voteType = MessageType.Vote;
      term = this.currentTerm;
    }
    if (this.poll(this.id, true) === VoteResult.Won) {
      // Single voter: we win at once.
      if (type === 'preElection') this.campaign('election');
      else this.becomeLeader();
      return;
    }
    const lastIndex = this.raftLog.lastIndex();
    const lastTerm = this.raftLog.lastTerm();
    for (const id of this.tracker.sortedVoters()) {
      if (id === this.id) continue;
      const m = emptyMessage(voteType, this.id, id);
      m.term = term;
      m.index = lastIndex;
      m.logTerm = lastTerm;
      if (type === 'transfer') m.context = CAMPAIGN_TRANSFER_CONTEXT;
      this.send(m);
    }
  }

  private poll(id: NodeId, granted: boolean): VoteResult {
    this.tracker.recordVote(id, granted);
    return this.tracker.tallyVotes().result;
  }

  // ---- step ----------------------------------------------------------------------------------

  /** Feeds one message (from the network or local) to the state machine. */
  step(m: Message): void {
    if (m.term === 0) {
      // Local message, or a forwarded proposal / read request: no term to compare.
    } else if (m.term > this.currentTerm) {
      if (m.type === MessageType.Vote || m.type === MessageType.PreVote) {
        const force = sameBytes(m.context, CAMPAIGN_TRANSFER_CONTEXT);
        const inLease = this.checkQuorum && this.lead !== NONE && this.electionElapsed < this.electionTimeout;
        if (!force && inLease) {
          // We heard from a leader within the election timeout: a disruptive candidate (for
          // example one that was partitioned away) must not depose it (thesis §4.2.3).
          this.logger.debug?.(
            { id: this.id, term: this.currentTerm, from: m.from, msgTerm: m.term },
            'ignoring vote request within leader lease',
          );
          return;
        }
      }
      if (m.type === MessageType.PreVote) {
        // A pre-vote never changes our term.
      } else if (m.type === MessageType.PreVoteResp && !m.reject) {
        // A granted pre-vote carries the future term we asked with; we move to it only after
        // winning the pre-vote round.
      } else if (
        m.type === MessageType.App ||
        m.type === MessageType.Heartbeat ||
        m.type === MessageType.Snap
      ) {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, NONE);
      }
    } else if (m.term < this.currentTerm) {
      if (
        (this.checkQuorum || this.preVote) &&
        (m.type === MessageType.Heartbeat || m.type === MessageType.App)
      ) {
        // A leader from an older term (say, partitioned away): tell it our term so it steps
        // down. Without this, with check-quorum or pre-vote, it could never learn of it.
        this.send(emptyMessage(MessageType.AppResp, this.id, m.from));
      } else if (m.type === MessageType.PreVote) {
        // Reject so a pre-candidate with a stale term learns the current one.
        const resp = emptyMessage(MessageType.PreVoteResp, this.id, m.from);
        resp.term = this.currentTerm;
        resp.reject = true;
        this.send(resp);
      }
      return;
    }

    switch (m.type) {
      case MessageType.Hup:
        this.hup(this.preVote ? 'preElection' : 'election');
        return;
      case MessageType.Vote:
      case MessageType.PreVote: {
        // We may vote if we already voted for this candidate, or have not voted and know no
        // leader in this term, or this is a pre-vote for a later term...
        const canVote =
          this.vote === m.from ||
          (this.vote === NONE && this.lead === NONE) ||
          (m.type === MessageType.PreVote && m.term > this.currentTerm);
        // ...and the candidate's log is at least as up to date as ours (§5.4.1).
        const resp = emptyMessage(voteRespType(m.type), this.id, m.from);
        if (canVote && this.raftLog.isUpToDate(m.index, m.logTerm)) {
          resp.term = m.term;
          this.send(resp);
          if (m.type === MessageType.Vote) {
            this.electionElapsed = 0;
            this.vote = m.from;
          }
        } else {
          resp.term = this.currentTerm;
          resp.reject = true;
          this.send(resp);
        }
        return;
      }
      default:
        this.stepRole(m);
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case MessageType.Beat:
        this.bcastHeartbeat();
        return;
      case MessageType.CheckQuorum:
        if (!this.tracker.quorumActive(this.id)) {
          this.logger.warn(
            { id: this.id, term: this.currentTerm },
            'stepping down: no quorum heard within an election timeout',
          );
          this.becomeFollower(this.currentTerm, NONE);
        }
        for (const [id, pr] of this.tracker.progress) if (id !== this.id) pr.recentActive = false;
        return;
      case MessageType.Prop:
        this.leaderPropose(m.entries);
        return;
      case MessageType.ReadIndex:
        if (this.tracker.isSingleton()) {
          this.respondToReadIndex(m, this.raftLog.committed);
          return;
        }
        if (!this.committedEntryInCurrentTerm()) {
          // Our commit index may lag the real one until an entry of our term commits.
          this.pendingReadIndexMessages.push(m);
          return;
        }
        this.startReadIndex(m);
        return;
      default:
        break;
    }

    const pr = this.tracker.progress.get(m.from);
    if (!pr) return;
    switch (m.type) {
      case MessageType.AppResp:
        this.handleAppendResponse(m, pr);
        return;
      case MessageType.HeartbeatResp: {
        pr.recentActive = true;
        pr.probeSent = false;
        // The follower is alive: if its window is full (acks lost?), free a slot so the log
        // keeps flowing.
        if (pr.state === ProgressState.Replicate && pr.inflights.full()) pr.inflights.freeFirstOne();
        if (pr.match < this.raftLog.lastIndex()) this.sendAppend(m.from);
        if (m.context.length === 0) return;
        const acks = this.readOnly.recvAck(m.from, m.context);
        if (!acks || this.tracker.tallyVotesOf(acks) !== VoteResult.Won) return;
        for (const rs of this.readOnly.advance(m.context)) this.respondToReadIndex(rs.request, rs.index);
        return;
      }
      case MessageType.SnapStatus:
        if (pr.state !== ProgressState.Snapshot) return;
        if (m.reject) {
          // Failed: probe again from what the follower had, and resend later.
          pr.pendingSnapshot = 0;
        }
        pr.becomeProbe();
        // Success: wait for the follower's AppResp. Failure: wait a heartbeat before retrying.
        pr.probeSent = true;
        this.logger.info({ id: this.id, to: m.from, ok: !m.reject }, 'snapshot send finished');
        return;
      case MessageType.Unreachable:
        // In optimistic replication a lost append is likely: go back to probing.
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        return;
      case MessageType.TransferLeader: {
        if (pr.isLearner) {
          this.logger.warn({ id: this.id, to: m.from }, 'ignoring leadership transfer to a learner');
          return;
        }
        const transferee = m.from;
        if (this.leadTransferee !== NONE) {
          if (this.leadTransferee === transferee) return;
          this.abortLeaderTransfer();
        }
        if (transferee === this.id) return;
        // The transfer must finish within an election timeout.
        this.electionElapsed = 0;
        this.leadTransferee = transferee;
        if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(transferee);
        else this.sendAppend(transferee);
        return;
      }
      default:
        return;
    }
  }

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      let nextProbe = m.rejectHint;
      if (m.logTerm > 0) {
        // Skip every entry of ours whose term is above the follower's term at the hint.
        nextProbe = this.raftLog.findConflictByTerm(m.rejectHint, m.logTerm).index;
      }
      if (pr.maybeDecrTo(m.index, nextProbe)) {
        if (pr.state === ProgressState.Replicate) pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    const wasPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index) && !(pr.match === m.index && pr.state === ProgressState.Probe)) return;
    if (pr.state === ProgressState.Probe) {
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Snapshot && pr.match + 1 >= this.raftLog.firstIndex()) {
      // The snapshot (or anything else) brought the follower to where the log can take over.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === ProgressState.Replicate) {
      pr.inflights.freeLE(m.index);
    }
    if (this.maybeCommit()) {
      this.releasePendingReadIndexMessages();
      this.bcastAppend();
    } else if (wasPaused) {
      // It may be missing the latest commit index.
      this.sendAppend(m.from);
    }
    // The window may have opened for several messages at once.
    while (this.maybeSendAppend(m.from, false)) {
      // each call sends one message up to maxSizePerMsg
    }
    if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) {
      this.sendTimeoutNow(m.from);
    }
  }

  private stepCandidate(m: Message): void {
    const myVoteResp = this.role === StateRole.PreCandidate ? MessageType.PreVoteResp : MessageType.VoteResp;
    switch (m.type) {
      case MessageType.Prop:
        throw new ProposalDroppedError('an election is in progress; no leader to forward to');
      case MessageType.App:
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      case myVoteResp: {
        const result = this.poll(m.from, !m.reject);
        if (result === VoteResult.Won) {
          if (this.role === StateRole.PreCandidate) {
            this.campaign('election');
          } else {
            this.becomeLeader();
            this.bcastAppend();
          }
        } else if (result === VoteResult.Lost) {
          // A pre-vote response may carry a future term; stay in ours.
          this.becomeFollower(this.currentTerm, NONE);
        }
        return;
      }
      default:
        return;
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case MessageType.Prop:
        if (this.lead === NONE) throw new ProposalDroppedError('no leader is known to forward to');
        this.send({ ...m, to: this.lead });
        return;
      case MessageType.App:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case MessageType.Heartbeat:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case MessageType.Snap:
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case MessageType.TransferLeader:
        if (this.lead === NONE) {
          this.logger.warn({ id: this.id }, 'no leader: dropping leadership transfer request');
          return;
        }
        this.send({ ...m, to: this.lead });
        return;
      case MessageType.TimeoutNow:
        // The leader hands over: campaign at once, bypassing pre-vote and the lease.
        this.hup('transfer');
        return;
      case MessageType.ReadIndex:
        if (this.lead === NONE) throw new ProposalDroppedError('no leader is known to serve the read');
        this.send({ ...m, to: this.lead });
        return;
      case MessageType.ReadIndexResp:
        this.readStates.push({ index: m.index, requestCtx: m.context });
        return;
      default:
        return;
    }
  }

  // ---- followers' handlers -------------------------------------------------------------------

  private handleAppendEntries(m: Message): void {
    const resp = emptyMessage(MessageType.AppResp, this.id, m.from);
    if (m.index < this.raftLog.committed) {
      // Already committed here: tell the leader how far we are.
      resp.index = this.raftLog.committed;
      this.send(resp);
      return;
    }
    const lastNew = this.raftLog.maybeAppend(m.index, m.logTerm, m.commit, m.entries);
    if (lastNew !== undefined) {
      resp.index = lastNew;
      this.send(resp);
      return;
    }
    // Our log does not contain (m.index, m.logTerm). Hint at the last index whose term is at
    // most m.logTerm so the leader can skip the conflicting term in one step.
    const hint = this.raftLog.findConflictByTerm(Math.min(m.index, this.raftLog.lastIndex()), m.logTerm);
    resp.index = m.index;
    resp.reject = true;
    resp.rejectHint = hint.index;
    resp.logTerm = hint.term;
    this.send(resp);
  }

  private handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(m.commit);
    const resp = emptyMessage(MessageType.HeartbeatResp, this.id, m.from);
    resp.context = m.context;
    this.send(resp);
  }

  private handleSnapshot(m: Message): void {
    const resp = emptyMessage(MessageType.AppResp, this.id, m.from);
    if (m.snapshot && this.restore(m.snapshot)) {
      this.logger.info(
        { id: this.id, term: this.currentTerm, snapshotIndex: m.snapshot.metadata.index },
        'restored snapshot from leader',
      );
      resp.index = this.raftLog.lastIndex();
    } else {
      resp.index = this.raftLog.committed;
    }
    this.send(resp);
  }

  /** Installs a leader's snapshot; false when it brings nothing new. */
  private restore(s: Snapshot): boolean {
    if (s.metadata.index <= this.raftLog.committed) return false;
    if (this.role !== StateRole.Follower) {
      // Defensive: only a follower installs snapshots.
      this.becomeFollower(this.currentTerm + 1, NONE);
      return false;
    }
    if (this.raftLog.matchTerm(s.metadata.index, s.metadata.term)) {
      // We already have the entries: just move the commit index forward.
      this.raftLog.commitTo(s.metadata.index);
      return false;
    }
    this.raftLog.restore(s);
    this.tracker.progress.clear();
    this.tracker.voters.clear();
    this.tracker.learners.clear();
    this.setConfState(s.metadata.confState);
    return true;
  }

  // ---- leader's helpers ----------------------------------------------------------------------

  private committedEntryInCurrentTerm(): boolean {
    return this.raftLog.termOrZero(this.raftLog.committed) === this.currentTerm;
  }

  maybeCommit(): boolean {
    const index = this.tracker.committed();
    return this.raftLog.maybeCommit(Math.min(index, this.raftLog.lastIndex()), this.currentTerm);
  }

  private startReadIndex(m: Message): void {
    this.readOnly.addRequest(this.raftLog.committed, m);
    const acks = this.readOnly.recvAck(this.id, m.context);
    invariant(acks !== undefined, 'read request vanished right after being added');
    this.bcastHeartbeat(m.context);
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const pending = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of pending) this.startReadIndex(m);
  }

  private respondToReadIndex(req: Message, index: number): void {
    if (req.from === NONE || req.from === this.id) {
      this.readStates.push({ index, requestCtx: req.context });
      return;
    }
    const resp = emptyMessage(MessageType.ReadIndexResp, this.id, req.from);
    resp.index = index;
    resp.context = req.context;
    this.send(resp);
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send(emptyMessage(MessageType.TimeoutNow, this.id, to));
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = NONE;
  }

  /** Appends entries at the end of our log in the current term; false if over the size limit. */
  private appendEntries(entries: Entry[]): { lastIndex: number } | undefined {
    const last = this.raftLog.lastIndex();
    const stamped = entries.map((e, i) => ({ ...e, term: this.currentTerm, index: last + 1 + i }));
    let payload = 0;
    for (const e of stamped) payload += e.data.length;
    if (this.uncommittedSize > 0 && payload > 0 && this.uncommittedSize + payload > this.maxUncommittedSize) {
      return undefined;
    }
    this.uncommittedSize += payload;
    const newLast = this.raftLog.append(stamped);
    this.tracker.progress.get(this.id)?.maybeUpdate(newLast);
    this.maybeCommit();
    return { lastIndex: newLast };
  }

  /** Called when committed entries are handed out, so new proposals fit under the limit. */
  reduceUncommittedSize(entries: readonly Entry[]): void {
    if (this.role !== StateRole.Leader) return;
    let payload = 0;
    for (const e of entries) payload += e.data.length;
    this.uncommittedSize = payload > this.uncommittedSize ? 0 : this.uncommittedSize - payload;
  }

  private leaderPropose(entries: Entry[]): { index: number; term: number } {
    invariant(entries.length > 0, 'empty proposal');
    if (!this.tracker.progress.has(this.id)) {
      throw new ProposalDroppedError('this node was removed from the cluster');
    }
    if (this.leadTransferee !== NONE) {
      throw new ProposalDroppedError(`leadership transfer to ${this.leadTransferee} is in progress`);
    }
    let confIndexOffset = -1;
    for (let i = 0; i < entries.length; i++) {
      if (entries[i].type !== EntryType.ConfChange) continue;
      if (confIndexOffset >= 0) throw new ProposalDroppedError('only one configuration change per proposal');
      if (this.pendingConfIndex > this.raftLog.applied) {
        throw new ProposalDroppedError(
          `a configuration change may be pending at index ${this.pendingConfIndex} (applied ${this.raftLog.applied}); ` +
            'propose the next one after it is applied',
        );
      }
      const cc = decodeConfChange(entries[i].data);
      // Throws InvalidConfChangeError, e.g. when it would remove the last voter.
      applyConfChangeToState(this.tracker.confState(), cc);
      confIndexOffset = i;
    }
    const appended = this.appendEntries(entries);
    if (!appended) {
      throw new ProposalDroppedError(
        `too many uncommitted entries (${this.uncommittedSize} bytes pending, limit ${this.maxUncommittedSize})`,
      );
    }
    if (confIndexOffset >= 0)
      this.pendingConfIndex = appended.lastIndex - entries.length + 1 + confIndexOffset;
    this.needBroadcast = true;
    return { index: appended.lastIndex, term: this.currentTerm };
  }

  /** A proposal from the local application. */
  propose(entries: Entry[]): ProposeResult {
    switch (this.role) {
      case StateRole.Leader: {
        const r = this.leaderPropose(entries);
        return { forwarded: false, index: r.index, term: r.term };
      }
      case StateRole.Follower: {
        const m = emptyMessage(MessageType.Prop, this.id, NONE);
        m.entries = entries;
        this.stepFollower(m);
        return { forwarded: true };
      }
      default:
        throw new ProposalDroppedError('an election is in progress; no leader to forward to');
    }
  }

  // ---- membership ----------------------------------------------------------------------------

  /** Rebuilds the member set from `cs`, keeping the progress of members that stay. */
  private setConfState(cs: ConfState): void {
    const voters = new Set(cs.voters);
    const learners = new Set(cs.learners);
    for (const id of learners) {
      invariant(!voters.has(id), () => `node ${id} is both voter and learner`);
    }
    const last = this.raftLog.lastIndex();
    const added: NodeId[] = [];
    for (const id of [...this.tracker.progress.keys()]) {
      if (!voters.has(id) && !learners.has(id)) this.tracker.progress.delete(id);
    }
    for (const id of [...voters, ...learners]) {
      const isLearner = learners.has(id);
      const pr = this.tracker.progress.get(id);
      if (pr) {
        pr.isLearner = isLearner;
      } else {
        const fresh = new Progress(
          last + 1,
          this.tracker.maxInflightMsgs,
          this.tracker.maxInflightBytes,
          isLearner,
        );
        // A new member counts as active, or check-quorum could depose us before it answers.
        fresh.recentActive = true;
        if (id === this.id) fresh.match = last;
        this.tracker.progress.set(id, fresh);
        added.push(id);
      }
    }
    this.tracker.voters.clear();
    for (const id of voters) this.tracker.voters.add(id);
    this.tracker.learners.clear();
    for (const id of learners) this.tracker.learners.add(id);
    this.isLearner = learners.has(this.id);
    if (this.role === StateRole.Leader) {
      for (const id of added) this.sendAppend(id);
    }
  }

  /**
   * Applies a committed ConfChange (the application calls this when it applies the entry).
   * An invalid change (for example removing the last voter) is ignored the same way on every
   * node, so members never diverge.
   */
  applyConfChange(cc: ConfChange): ConfState {
    let next: ConfState;
    try {
      next = applyConfChangeToState(this.tracker.confState(), cc);
    } catch (err) {
      if (!(err instanceof InvalidConfChangeError)) throw err;
      this.logger.warn({ id: this.id, error: err.message }, 'ignoring invalid configuration change');
      return this.tracker.confState();
    }
    this.setConfState(next);
    if (this.role !== StateRole.Leader) return this.tracker.confState();

    if (!this.tracker.voters.has(this.id)) {
      this.stepDownAfterRemoval();
      return this.tracker.confState();
    }
    // Quorum may be smaller now: entries may commit.
    if (this.maybeCommit()) this.bcastAppend();
    else for (const id of this.tracker.ids()) this.maybeSendAppend(id, false);
    if (this.leadTransferee !== NONE && !this.tracker.voters.has(this.leadTransferee))
      this.abortLeaderTransfer();
    return this.tracker.confState();
  }

  /**
   * This leader was removed (or demoted): it hands leadership to the most caught-up voter with
   * TimeoutNow when one holds the whole log, so the cluster need not wait an election
   * timeout, then steps down.
   */
  private stepDownAfterRemoval(): void {
    this.bcastAppend();
    const last = this.raftLog.lastIndex();
    let best: NodeId = NONE;
    for (const id of this.tracker.sortedVoters()) {
      const pr = this.tracker.progress.get(id);
      if (pr && pr.match === last) {
        best = id;
        break;
      }
    }
    if (best !== NONE) this.sendTimeoutNow(best);
    this.logger.info(
      { id: this.id, term: this.currentTerm, handoverTo: best },
      'removed from the cluster: stepping down',
    );
    this.becomeFollower(this.currentTerm, NONE);
  }

  status(): Status {
    const s: Status = {
      id: this.id,
      term: this.currentTerm,
      vote: this.vote,
      commit: this.raftLog.committed,
      applied: this.raftLog.applied,
      lead: this.lead,
      role: this.role,
      leadTransferee: this.leadTransferee,
      confState: this.tracker.confState(),
    };
    if (this.role === StateRole.Leader) {
      s.progress = new Map();
      for (const [id, pr] of this.tracker.progress) {
        s.progress.set(id, {
          match: pr.match,
          next: pr.next,
          state: pr.state,
          isLearner: pr.isLearner,
          recentActive: pr.recentActive,
          inflightMsgs: pr.inflights.count,
          inflightBytes: pr.inflights.bytes,
          pendingSnapshot: pr.pendingSnapshot,
        });
      }
    }
    return s;
  }
}
