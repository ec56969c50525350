// RaftNode: the driver that turns the pure core into a running member. It owns the ticker,
// the LevelDB storage, the gRPC transport and the application's state machine, and runs the
// Ready loop: persist (one synced batch) → send → apply → serve reads → advance.
//
// Batching comes from the loop itself: while one Ready is being written to disk, proposals and
// messages keep stepping into the core, and all of them leave together in the next Ready.

import type { ChannelCredentials, ChannelOptions, Server, ServerCredentials } from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';

import { decodeConfChange, encodeConfChange } from '../confchange';
import type { ProposeResult } from '../raft';
import { RawNode } from '../raw_node';
import { RaftInvariantError } from '../util';
import { LevelRaftStorage } from '../storage';
import { RaftTransport, type RaftTransportOptions } from '../transport';
import {
  ConfChangeType,
  EntryType,
  MessageType,
  NONE,
  StateRole,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type NodeId,
  type Ready,
  type Snapshot,
} from '../types';
import {
  NodeRemovedError,
  NodeStoppedError,
  NotLeaderError,
  ProposalLostError,
  ProposalTimeoutError,
} from './errors';
import { decodeEnvelope, encodeEnvelope } from './snapshot_envelope';

export {
  NodeRemovedError,
  NodeStoppedError,
  NotLeaderError,
  ProposalLostError,
  ProposalTimeoutError,
} from './errors';

/** The application's replicated state machine. */
export interface StateMachine<Result> {
  /** Applies one committed normal entry (never an empty one); runs on every member in log order. */
  apply(entry: Entry): Result;
  /** The whole state, for a snapshot. */
  snapshot(): Uint8Array;
  /** Replaces the whole state with a snapshot's. */
  restore(data: Uint8Array): void;
}

export interface RaftNodeOptions<Result> {
  id: NodeId;
  clusterId: string;
  dataDir: string;
  /** host:port for the raft transport; port 0 picks a free one. */
  listenAddress: string;
  /** The address peers reach this node at (kept in snapshots); listenAddress by default. */
  advertiseAddress?: string;
  /** Raft addresses of the other members (this node's own entry, if present, is ignored). */
  peers: ReadonlyMap<NodeId, string>;
  /**
   * The voters of a brand-new cluster, used only when the data directory is empty. A node that
   * joins an existing cluster (after addMember on the leader) leaves this out and waits to be
   * contacted by the leader.
   */
  bootstrapVoters?: NodeId[];
  serverCredentials: ServerCredentials;
  channelCredentials: ChannelCredentials;
  /** A gRPC server to share with other services on the same port (see RaftTransportOptions.server). */
  server?: Server;
  /** See RaftTransportOptions.authorize. */
  authorizeStream?: RaftTransportOptions['authorize'];
  channelOptions?: ChannelOptions;
  stateMachine: StateMachine<Result>;
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  /** Take a snapshot and compact the log every this many applied entries. */
  snapshotEveryEntries?: number;
  /** Entries kept behind a snapshot so a slightly lagging follower needs no snapshot. */
  snapshotRetainEntries?: number;
  /** A proposal or read that neither completes nor fails within this fails with TIMEOUT. */
  requestTimeoutMs?: number;
  logger?: Logger;
  /** Deterministic election jitter for tests; Math.random by default. */
  random?: () => number;
}

export const DEFAULT_TICK_MS = 100;
/** With the core's randomization in [n, 2n): an election 0.5-1 s after the leader falls silent. */
export const DEFAULT_ELECTION_TICKS = 5;
export const DEFAULT_HEARTBEAT_TICKS = 1;
/**
 * etcd's default since 3.2. A snapshot serializes the whole state and compacts the log behind
 * it while the loop waits, so frequent ones show in tail latency; the price of rare ones is
 * memory (the retained log is also held in memory by the storage).
 */
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 100_000;
export const DEFAULT_SNAPSHOT_RETAIN_ENTRIES = 5_000;
export const DEFAULT_REQUEST_TIMEOUT_MS = 10_000;

/** Messages a leader may send before its own write of the same Ready finishes. */
const LEADER_EARLY_TYPES = new Set<MessageType>([MessageType.App, MessageType.Heartbeat, MessageType.Snap]);

export interface RaftNodeStatus {
  id: NodeId;
  leaderId: NodeId;
  role: StateRole;
  term: number;
  commit: number;
  applied: number;
  removed: boolean;
  voters: NodeId[];
  learners: NodeId[];
}

// Deadlines are checked on each tick rather than with a timer per request: at thousands of
// proposals a second, creating and clearing a timer each is measurable. A request therefore
// fails between requestTimeoutMs and requestTimeoutMs + tickMs after it was made.
interface PendingProposal<Result> {
  term: number;
  resolve(result: Result | undefined): void;
  reject(err: Error): void;
  deadline: number;
}

interface PendingRead {
  /** Known once the core hands back the read state. */
  index?: number;
  resolve(): void;
  reject(err: Error): void;
  deadline: number;
}

export class RaftNode<Result = unknown> {
  private readonly logger: Logger;
  private readonly tickMs: number;
  private readonly snapshotEveryEntries: number;
  private readonly snapshotRetainEntries: number;
  private readonly requestTimeoutMs: number;
  private readonly members = new Map<NodeId, string>();
  private readonly proposals = new Map<number, PendingProposal<Result>>();
  private readonly reads = new Map<string, PendingRead>();
  private readSeq = 0;
  private ticker?: NodeJS.Timeout;
  private loopRunning = false;
  private loopDone: Promise<void> = Promise.resolve();
  private stopped = false;
  private fatal?: Error;
  private removed = false;
  private leaderId: NodeId = NONE;
  private role: StateRole = StateRole.Follower;
  private term = 0;
  private commit = 0;
  private applied = 0;
  private lastSnapshotIndex = 0;
  private snapshotInProgress = false;
  private confState: ConfState;
  /** The newest hard state the core handed out, and the newest one known to be on disk. */
  private latestHardState?: HardState;
  private durableHardState?: HardState;

  private constructor(
    private readonly options: RaftNodeOptions<Result>,
    private readonly storage: LevelRaftStorage,
    private readonly raw: RawNode,
    private readonly transport: RaftTransport,
  ) {
    this.logger = (options.logger ?? pino({ level: 'warn' })).child({
      component: 'raft-node',
      nodeId: options.id,
    });
    this.tickMs = options.tickMs ?? DEFAULT_TICK_MS;
    this.snapshotEveryEntries = options.snapshotEveryEntries ?? DEFAULT_SNAPSHOT_EVERY_ENTRIES;
    this.snapshotRetainEntries = options.snapshotRetainEntries ?? DEFAULT_SNAPSHOT_RETAIN_ENTRIES;
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    const initial = storage.initialState();
    this.confState = initial.confState;
    this.term = initial.hardState.term;
    this.commit = initial.hardState.commit;
    for (const [id, address] of options.peers) if (id !== options.id) this.members.set(id, address);
  }

  /**
   * Opens (or creates) the data directory, restores the state machine from the latest
   * snapshot, starts the transport and the ticker. Committed entries after the snapshot are
   * re-applied through the normal loop.
   */
  static async start<Result>(options: RaftNodeOptions<Result>): Promise<RaftNode<Result>> {
    const storage = await LevelRaftStorage.open(options.dataDir);
    try {
      // A brand-new cluster's membership goes into the log (committed ConfChange entries of term
      // 1, written by the core), not only into the conf state: a member added later learns the
      // founders by replaying the log, and could otherwise believe itself alone and elect itself.
      const bootstrapVoters =
        storage.isNew && options.bootstrapVoters && options.bootstrapVoters.length > 0
          ? [...options.bootstrapVoters]
          : undefined;
      const snapshot = storage.snapshot();
      const envelope = decodeEnvelope(snapshot.data);
      if (snapshot.metadata.index > 0) options.stateMachine.restore(envelope.app);
      // The transport is made before the node it delivers to; messages before then are dropped.
      const target: { node?: RaftNode<Result> } = {};
      const transport = new RaftTransport({
        nodeId: options.id,
        clusterId: options.clusterId,
        listenAddress: options.listenAddress,
        serverCredentials: options.serverCredentials,
        channelCredentials: options.channelCredentials,
        channelOptions: options.channelOptions,
        server: options.server,
        authorize: options.authorizeStream,
        logger: options.logger,
        handler: {
          onMessage: (message) => target.node?.onMessage(message),
          reportUnreachable: (peerId) => target.node?.onUnreachable(peerId),
          reportSnapshot: (peerId, ok) => target.node?.onSnapshotStatus(peerId, ok),
        },
      });
      const raw = new RawNode({
        id: options.id,
        storage,
        electionTicks: options.electionTicks ?? DEFAULT_ELECTION_TICKS,
        heartbeatTicks: options.heartbeatTicks ?? DEFAULT_HEARTBEAT_TICKS,
        applied: snapshot.metadata.index,
        voters: bootstrapVoters,
        preVote: true,
        checkQuorum: true,
        random: options.random ?? Math.random,
      });
      const node = new RaftNode(options, storage, raw, transport);
      target.node = node;
      node.applied = snapshot.metadata.index;
      node.lastSnapshotIndex = snapshot.metadata.index;
      for (const [id, address] of envelope.members) if (id !== options.id) node.members.set(id, address);
      for (const [id, address] of node.members) transport.addPeer(id, address);
      try {
        await transport.start();
      } catch (err) {
        await transport.stop();
        throw err;
      }
      node.ticker = setInterval(() => node.onTick(), node.tickMs);
      node.kick();
      return node;
    } catch (err) {
      await storage.close();
      throw err;
    }
  }

  get id(): NodeId {
    return this.options.id;
  }

  /** The port the raft transport listens on (useful with port 0). */
  get port(): number {
    return this.transport.port;
  }

  isLeader(): boolean {
    return this.role === StateRole.Leader;
  }

  status(): RaftNodeStatus {
    return {
      id: this.options.id,
      leaderId: this.leaderId,
      role: this.role,
      term: this.term,
      commit: this.commit,
      applied: this.applied,
      removed: this.removed,
      voters: [...this.confState.voters],
      learners: [...this.confState.learners],
    };
  }

  /** Whether a stream to this peer is up now (the leader's view of a member's reachability). */
  peerConnected(id: NodeId): boolean {
    return id === this.options.id || this.transport.isConnected(id);
  }

  /**
   * Replicates `data` and resolves with the state machine's result once this node has applied
   * it. Only the leader accepts proposals; elsewhere this rejects with NotLeaderError naming
   * the leader, for the caller to forward to.
   */
  propose(data: Uint8Array): Promise<Result | undefined> {
    return this.proposeWith((raw) => raw.propose(data));
  }

  /** Adds a voter; `address` is its raft host:port, replicated in the change so all members learn it. */
  addMember(id: NodeId, address: string): Promise<Result | undefined> {
    return this.proposeConfChange({
      type: ConfChangeType.AddVoter,
      nodeId: id,
      context: Buffer.from(address),
    });
  }

  addLearner(id: NodeId, address: string): Promise<Result | undefined> {
    return this.proposeConfChange({
      type: ConfChangeType.AddLearner,
      nodeId: id,
      context: Buffer.from(address),
    });
  }

  removeMember(id: NodeId): Promise<Result | undefined> {
    return this.proposeConfChange({
      type: ConfChangeType.RemoveVoter,
      nodeId: id,
      context: new Uint8Array(0),
    });
  }

  proposeConfChange(cc: ConfChange): Promise<Result | undefined> {
    // Validate the encoding here so a bad id fails the caller, not the apply loop.
    encodeConfChange(cc);
    return this.proposeWith((raw) => raw.proposeConfChange(cc));
  }

  /** Asks the leader to hand leadership to `to` (best effort; watch status()). */
  transferLeadership(to: NodeId): void {
    this.raw.transferLeadership(to);
    this.kick();
  }

  /**
   * Resolves once this node's state machine reflects every write committed before the call
   * (ReadIndex): a local read after it is linearizable.
   */
  readIndex(): Promise<void> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    if (this.leaderId === NONE) return Promise.reject(new NotLeaderError(this.options.id, NONE));
    const ctx = Buffer.alloc(12);
    ctx.writeUInt32BE(this.options.id >>> 0, 0);
    ctx.writeDoubleBE(++this.readSeq, 4);
    const key = ctx.toString('hex');
    return new Promise<void>((resolve, reject) => {
      this.reads.set(key, { resolve, reject, deadline: performance.now() + this.requestTimeoutMs });
      try {
        this.raw.readIndex(ctx);
      } catch (err) {
        this.reads.delete(key);
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      this.kick();
    });
  }

  /** Stops the ticker and the loop, fails what is pending, closes the transport and the store. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
    this.failPending(new NodeStoppedError(this.options.id));
    await this.loopDone;
    await this.transport.stop();
    await this.storage.close();
  }

  // --- inputs ---

  private refusal(): Error | undefined {
    if (this.fatal) return this.fatal;
    if (this.stopped) return new NodeStoppedError(this.options.id);
    if (this.removed) return new NodeRemovedError(this.options.id);
    return undefined;
  }

  private proposeWith(submit: (raw: RawNode) => ProposeResult): Promise<Result | undefined> {
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    // The core's own role, not the last Ready's: a proposal must not be forwarded by the core
    // (forwarded proposals have no index to wait for; the caller forwards instead).
    const lead = this.raw.raft.lead;
    if (this.raw.raft.role !== StateRole.Leader) {
      return Promise.reject(new NotLeaderError(this.options.id, lead, this.members.get(lead)));
    }
    let result: ProposeResult;
    try {
      result = submit(this.raw);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
    if (result.forwarded)
      return Promise.reject(new NotLeaderError(this.options.id, lead, this.members.get(lead)));
    const placed = { index: result.index, term: result.term };
    this.kick();
    return new Promise<Result | undefined>((resolve, reject) => {
      // A proposal still waiting at this index belongs to an older term whose entry our own
      // log has just replaced: it can never apply.
      const previous = this.proposals.get(placed.index);
      if (previous) {
        this.proposals.delete(placed.index);
        previous.reject(new ProposalLostError(placed.index, previous.term, undefined));
      }
      this.proposals.set(placed.index, {
        term: placed.term,
        resolve,
        reject,
        deadline: performance.now() + this.requestTimeoutMs,
      });
    });
  }

  private onTick(): void {
    if (this.stopped || this.fatal) return;
    this.raw.tick();
    this.kick();
    this.expireRequests();
  }

  private expireRequests(): void {
    const now = performance.now();
    // Proposals are kept in the order they were made, so their deadlines ascend.
    for (const [index, pending] of this.proposals) {
      if (pending.deadline > now) break;
      this.proposals.delete(index);
      pending.reject(new ProposalTimeoutError(`proposal at index ${index}`, this.requestTimeoutMs));
    }
    for (const [key, pending] of this.reads) {
      if (pending.deadline > now) break;
      this.reads.delete(key);
      pending.reject(new ProposalTimeoutError('read index', this.requestTimeoutMs));
    }
  }

  private onMessage(message: Message): void {
    if (this.stopped || this.fatal) return;
    try {
      this.raw.step(message);
    } catch (err) {
      // A broken invariant means this member's state can no longer be trusted.
      if (err instanceof RaftInvariantError) {
        this.fail(err);
        return;
      }
      // A message the core refuses (a local type from the network, say) is the sender's fault.
      this.logger.warn({ err, from: message.from, type: message.type }, 'message refused by the core');
      return;
    }
    this.kick();
  }

  private onUnreachable(peerId: NodeId): void {
    if (this.stopped || this.fatal) return;
    this.raw.reportUnreachable(peerId);
  }

  private onSnapshotStatus(peerId: NodeId, ok: boolean): void {
    if (this.stopped || this.fatal) return;
    this.raw.reportSnapshot(peerId, ok);
    this.kick();
  }

  // --- the Ready loop ---

  /** Starts the loop unless it is running; it drains every Ready before it stops. */
  private kick(): void {
    if (this.loopRunning || this.stopped || this.fatal) return;
    this.loopRunning = true;
    this.loopDone = this.runLoop();
  }

  private async runLoop(): Promise<void> {
    try {
      while (!this.stopped && !this.fatal && this.raw.hasReady()) {
        const ready = this.raw.ready();
        await this.handleReady(ready);
        if (this.stopped) return;
        this.raw.advance(ready);
      }
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    } finally {
      this.loopRunning = false;
    }
  }

  private async handleReady(ready: Ready): Promise<void> {
    if (ready.softState) this.onSoftState(ready.softState.lead, ready.softState.role);
    if (ready.hardState) {
      this.term = ready.hardState.term;
      this.commit = ready.hardState.commit;
      this.latestHardState = ready.hardState;
    }
    // A leader may send its appends while it writes the same entries (Raft thesis 10.2.1):
    // commit can only cover them in a later Ready, which starts after this write completes.
    // Every other message (vote grants, append acknowledgements) waits for the disk.
    let later = ready.messages;
    if (this.role === StateRole.Leader && ready.messages.length > 0) {
      later = [];
      const early: Message[] = [];
      for (const message of ready.messages)
        (LEADER_EARLY_TYPES.has(message.type) ? early : later).push(message);
      this.transport.send(early);
    }
    // A Ready that only moves the commit index needs no fsync (mustSync false): commit can
    // be learned again from the leader. It is written before a snapshot (see startSnapshot).
    if (ready.mustSync || ready.snapshot || ready.entries.length > 0) {
      await this.storage.save(ready.hardState, ready.entries, ready.snapshot);
      this.durableHardState = ready.hardState ?? this.durableHardState;
      if (this.stopped) return;
    }
    if (ready.snapshot && ready.snapshot.metadata.index > this.applied) this.restoreSnapshot(ready.snapshot);
    this.transport.send(later);
    for (const entry of ready.committedEntries) this.applyEntry(entry);
    for (const readState of ready.readStates) {
      const pending = this.reads.get(Buffer.from(readState.requestCtx).toString('hex'));
      if (pending) pending.index = readState.index;
    }
    this.serveReads();
    if (this.applied - this.lastSnapshotIndex >= this.snapshotEveryEntries) this.startSnapshot();
  }

  private onSoftState(leaderId: NodeId, role: StateRole): void {
    if (leaderId !== this.leaderId || role !== this.role) {
      this.logger.info({ leaderId, role: StateRole[role] }, 'raft role changed');
    }
    this.leaderId = leaderId;
    this.role = role;
  }

  private applyEntry(entry: Entry): void {
    if (entry.index <= this.applied) return;
    let result: Result | undefined;
    if (entry.type === EntryType.ConfChange) {
      this.applyConfChange(entry);
    } else if (entry.data.length > 0) {
      result = this.options.stateMachine.apply(entry);
    }
    this.applied = entry.index;
    const pending = this.proposals.get(entry.index);
    if (pending) {
      this.proposals.delete(entry.index);
      if (pending.term === entry.term) pending.resolve(result);
      else pending.reject(new ProposalLostError(entry.index, pending.term, entry.term));
    }
  }

  private applyConfChange(entry: Entry): void {
    const cc = decodeConfChange(entry.data);
    this.confState = this.raw.applyConfChange(cc);
    const address = Buffer.from(cc.context).toString('utf8');
    if (cc.type === ConfChangeType.RemoveVoter) {
      if (cc.nodeId === this.options.id) {
        this.removed = true;
        this.logger.warn('this node was removed from the cluster');
      } else {
        this.members.delete(cc.nodeId);
        this.transport.removePeer(cc.nodeId);
      }
    } else if (cc.nodeId !== this.options.id && address.length > 0) {
      this.members.set(cc.nodeId, address);
      this.transport.addPeer(cc.nodeId, address);
    }
    this.logger.info(
      { change: ConfChangeType[cc.type], member: cc.nodeId, confState: this.confState },
      'membership changed',
    );
  }

  private restoreSnapshot(snapshot: Snapshot): void {
    const envelope = decodeEnvelope(snapshot.data);
    this.options.stateMachine.restore(envelope.app);
    this.applied = snapshot.metadata.index;
    this.lastSnapshotIndex = snapshot.metadata.index;
    this.confState = snapshot.metadata.confState;
    for (const [id, address] of envelope.members) {
      if (id === this.options.id) continue;
      this.members.set(id, address);
      this.transport.addPeer(id, address);
    }
    // Proposals at or below the snapshot can no longer be matched to their entries.
    for (const [index, pending] of this.proposals) {
      if (index > snapshot.metadata.index) continue;
      this.proposals.delete(index);
      pending.reject(new ProposalLostError(index, pending.term, undefined));
    }
    this.logger.info({ index: snapshot.metadata.index }, 'restored from a snapshot');
  }

  private serveReads(): void {
    for (const [key, pending] of this.reads) {
      if (pending.index === undefined || pending.index > this.applied) continue;
      this.reads.delete(key);
      pending.resolve();
    }
  }

  /**
   * Snapshots the state machine as of `applied` and compacts the log behind it. Runs in the
   * storage's write queue, after the saves already queued, so it never overtakes the commit.
   */
  private startSnapshot(): void {
    if (this.snapshotInProgress) return;
    this.snapshotInProgress = true;
    const index = this.applied;
    const startedAt = performance.now();
    const members: Array<[NodeId, string]> = [...this.members];
    members.push([this.options.id, this.advertiseAddress()]);
    const data = encodeEnvelope({ members, app: this.options.stateMachine.snapshot() });
    const serializeMs = performance.now() - startedAt;
    const confState = { voters: [...this.confState.voters], learners: [...this.confState.learners] };
    // The store only snapshots at or below its durable commit; commit-only Readies were not
    // written, so write the newest hard state first (same write queue, so in order).
    const hardState = this.latestHardState;
    const commitWrite =
      hardState && hardState !== this.durableHardState ? this.storage.save(hardState, []) : Promise.resolve();
    void commitWrite
      .then(() => this.storage.createSnapshot(index, confState, data, this.snapshotRetainEntries))
      .then(
        () => {
          this.lastSnapshotIndex = index;
          this.logger.info(
            { index, bytes: data.length, serializeMs, totalMs: performance.now() - startedAt },
            'snapshot taken, log compacted',
          );
        },
        (err: unknown) => {
          if (!this.stopped) this.logger.warn({ err, index }, 'snapshot failed; will retry later');
          this.lastSnapshotIndex = index;
        },
      )
      .finally(() => {
        this.snapshotInProgress = false;
      });
  }

  private advertiseAddress(): string {
    if (this.options.advertiseAddress) return this.options.advertiseAddress;
    const host = this.options.listenAddress.slice(0, this.options.listenAddress.lastIndexOf(':'));
    return `${host}:${this.transport.port}`;
  }

  private failPending(err: Error): void {
    for (const pending of this.proposals.values()) {
      pending.reject(err);
    }
    this.proposals.clear();
    for (const pending of this.reads.values()) {
      pending.reject(err);
    }
    this.reads.clear();
  }

  /** A storage failure or a state machine that throws: this member can no longer be trusted. */
  private fail(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.logger.error({ err }, 'raft node failed; it stops taking part');
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = undefined;
    this.failPending(err);
  }
}
