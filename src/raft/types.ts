// The data the Raft core exchanges with its driver: entries, hard state, messages, snapshots,
// and the Ready batch. Plain data only, so the core, the simulator and the transport share it.

/** A member's id. Non-zero; 0 (NONE) means "nobody" (no vote, no known leader). */
export type NodeId = number;
export const NONE: NodeId = 0;

export enum EntryType {
  Normal = 0,
  /** data holds an encoded ConfChange (see encodeConfChange). */
  ConfChange = 1,
}

export interface Entry {
  term: number;
  index: number;
  type: EntryType;
  data: Uint8Array;
}

/** What must be on disk before any message that depends on it is sent. */
export interface HardState {
  term: number;
  vote: NodeId;
  commit: number;
}

export interface ConfState {
  voters: NodeId[];
  learners: NodeId[];
}

export enum ConfChangeType {
  AddVoter = 0,
  RemoveVoter = 1,
  AddLearner = 2,
}

/** One-at-a-time membership change; takes effect when the application applies the entry. */
export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to Raft: for example the new member's address. */
  context: Uint8Array;
}

export interface SnapshotMetadata {
  index: number;
  term: number;
  confState: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  data: Uint8Array;
}

export enum MessageType {
  /** Local: start an election (sent to self by tick or by the driver). */
  Hup = 0,
  /** Local: leader sends heartbeats. */
  Beat = 1,
  /** A proposal: local, or forwarded from a follower to the leader. */
  Prop = 2,
  App = 3,
  AppResp = 4,
  Vote = 5,
  VoteResp = 6,
  PreVote = 7,
  PreVoteResp = 8,
  Snap = 9,
  Heartbeat = 10,
  HeartbeatResp = 11,
  /** Local: the transport could not reach `from`. */
  Unreachable = 12,
  /** Local: outcome of sending a snapshot to `from` (reject = failed). */
  SnapStatus = 13,
  /** Local: leader checks it still hears from a quorum. */
  CheckQuorum = 14,
  TransferLeader = 15,
  TimeoutNow = 16,
  ReadIndex = 17,
  ReadIndexResp = 18,
}

export interface Message {
  type: MessageType;
  to: NodeId;
  from: NodeId;
  term: number;
  /** Term of the entry at `index` (App: of the entry preceding `entries`). */
  logTerm: number;
  index: number;
  entries: Entry[];
  commit: number;
  snapshot?: Snapshot;
  reject: boolean;
  /** On a rejected AppResp: the follower's hint where the leader should probe next. */
  rejectHint: number;
  /** Opaque request context (ReadIndex request ids, transfer markers). */
  context: Uint8Array;
}

export enum StateRole {
  Follower = 0,
  Candidate = 1,
  Leader = 2,
  PreCandidate = 3,
}

/** Volatile state the driver may want to observe; not persisted. */
export interface SoftState {
  lead: NodeId;
  role: StateRole;
}

/** A linearizable read may be served once the applied index reaches `index`. */
export interface ReadState {
  index: number;
  requestCtx: Uint8Array;
}

/**
 * Everything the driver must do before calling advance(), in this order: persist `snapshot`,
 * `entries` and `hardState` in one synced write (when `mustSync`), then send `messages`, then
 * apply `committedEntries` and serve `readStates`.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  messages: Message[];
  readStates: ReadState[];
  mustSync: boolean;
}

/**
 * What the core reads from durable storage. Writes are the driver's job (it persists what
 * Ready hands it); the core only reads through this interface.
 */
export interface Storage {
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at most maxBytes in total but always at least one when lo < hi. */
  entries(lo: number, hi: number, maxBytes: number): Entry[];
  /** Term of the entry at index; throws CompactedError / UnavailableError. */
  term(index: number): number;
  firstIndex(): number;
  lastIndex(): number;
  /** Latest snapshot; throws SnapshotTemporarilyUnavailableError when it is being made. */
  snapshot(): Snapshot;
}

export class RaftError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'RaftError';
  }
}

/** The requested index is older than the first entry still kept (compacted into a snapshot). */
export class CompactedError extends RaftError {
  constructor(index: number) {
    super('COMPACTED', `log index ${index} has been compacted into a snapshot`);
  }
}

/** The requested index is past the last entry stored. */
export class UnavailableError extends RaftError {
  constructor(index: number) {
    super('UNAVAILABLE', `log index ${index} is not available yet`);
  }
}

export class SnapshotTemporarilyUnavailableError extends RaftError {
  constructor() {
    super('SNAPSHOT_UNAVAILABLE', 'snapshot is temporarily unavailable');
  }
}

/** A proposal was not accepted: no leader known, a transfer in progress, or the node was removed. */
export class ProposalDroppedError extends RaftError {
  constructor(reason: string) {
    super('PROPOSAL_DROPPED', `proposal dropped: ${reason}`);
  }
}

export function emptyMessage(type: MessageType, from: NodeId, to: NodeId): Message {
  return {
    type,
    to,
    from,
    term: 0,
    logTerm: 0,
    index: 0,
    entries: [],
    commit: 0,
    reject: false,
    rejectHint: 0,
    context: new Uint8Array(0),
  };
}
