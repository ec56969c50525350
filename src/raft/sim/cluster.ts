// The deterministic Raft simulator: N RawNodes in one process over simulated disks and a
// simulated network, driven by one seeded random source and a virtual clock. Each step picks
// one event (a tick, a Ready handled, a message delivered, dropped or duplicated, a client
// operation, a partition, a crash or restart, a membership change, a leadership transfer);
// the safety invariants are checked as the driver observes each effect; at the end faults
// heal and the run must make progress, and the client history must be linearizable.
// The same seed replays the same run: nothing here reads a clock or Math.random.

import {
  type Config,
  decodeConfChange,
  RawNode,
  type ConfChange,
  ConfChangeType,
  type ConfState,
  type Entry,
  EntryType,
  type HardState,
  type Message,
  MessageType,
  type NodeId,
  RaftError,
  type Ready,
  type Snapshot,
  StateRole,
  type Storage,
  emptyMessage,
} from '../index';
import { cloneEntry, cloneSnapshot, SimDisk } from './disk';
import {
  ALL_INVARIANTS,
  type Fail,
  fingerprint,
  type InvariantName,
  InvariantViolation,
  SafetyChecker,
} from './invariants';
import { encodeCommand, decodeCommand, KvStateMachine } from './kv';
import { checkKvHistory, type KvOperation } from './linearizability';
import { Rng } from './rng';

/** What the simulator needs of the core: the RawNode surface. */
export interface RaftCore {
  tick(): void;
  step(m: Message): void;
  propose(data: Uint8Array): unknown;
  proposeConfChange(cc: ConfChange): unknown;
  applyConfChange(cc: ConfChange): ConfState;
  hasReady(): boolean;
  ready(): Ready;
  advance(): void;
  transferLeadership(to: NodeId): void;
  readIndex(ctx: Uint8Array): void;
  reportUnreachable(id: NodeId): void;
  reportSnapshot(id: NodeId, ok: boolean): void;
}

export type CoreFactory = (config: Config) => RaftCore;

/**
 * Deliberate breakage on the driver/storage side, to show the checker catches real bugs:
 * - lying-disk: writes are acknowledged before they are synced; a crash loses them.
 * - forget-vote: on restart the storage reports no vote for the current term.
 * - forge-vote: the driver hands a candidate a granted vote its peer never cast (a vote
 *   counted twice).
 * - local-read: the driver answers reads from its own state machine at once, skipping
 *   ReadIndex (a follower read, or a deposed leader's).
 */
export type Mutation = 'none' | 'lying-disk' | 'forget-vote' | 'forge-vote' | 'local-read';

/** Relative weights of the events of the fault phase. */
export interface EventWeights {
  tick: number;
  ready: number;
  deliver: number;
  drop: number;
  duplicate: number;
  write: number;
  read: number;
  partition: number;
  heal: number;
  crash: number;
  restart: number;
  confChange: number;
  transfer: number;
  /** Lying disk only: sync what was acknowledged. */
  flush: number;
}

export const DEFAULT_WEIGHTS: EventWeights = {
  tick: 12,
  ready: 14,
  deliver: 30,
  drop: 1,
  duplicate: 0.5,
  write: 4,
  read: 3,
  partition: 0.2,
  heal: 0.4,
  crash: 0.15,
  restart: 1.5,
  confChange: 0.15,
  transfer: 0.15,
  flush: 1,
};

export interface SimOptions {
  seed: number;
  /** Initial voters; chosen from the seed (3 or 5) when not given. */
  nodes?: 3 | 5;
  /** Steps of the fault phase (the healing phase that follows is bounded separately). */
  steps?: number;
  mutation?: Mutation;
  /** Invariants to check; all by default. */
  checks?: readonly InvariantName[];
  weights?: Partial<EventWeights>;
  /** Events kept for the report of a violation. */
  traceLength?: number;
  /** Applied entries between state machine snapshots; chosen from the seed when not given. */
  snapshotEvery?: number;
  /** Share of messages that take a slow path (arrive up to MAX_SLOW_DELAY_STEPS late). */
  slowMessageChance?: number;
  /** Chance that a node crashes right after persisting a Ready and sending its messages. */
  crashAfterSendChance?: number;
  /** Core options; chosen from the seed when not given. */
  electionTicks?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  /** Builds the core of each node (the real RawNode by default). */
  createCore?: CoreFactory;
}

export interface SimStats {
  steps: number;
  ticks: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  crashes: number;
  partitions: number;
  confChanges: number;
  /** Membership changes that committed and were applied. */
  confChangesApplied: number;
  transfers: number;
  leaders: number;
  committed: number;
  snapshots: number;
  /** Snapshots sent to a lagging follower and delivered. */
  snapshotsDelivered: number;
  writesAcked: number;
  readsAcked: number;
  unknownOutcomes: number;
  healRounds: number;
  /** Histories the linearizability search could not settle within its budget. */
  linearizabilityTimeouts: number;
}

export interface SimResult {
  seed: number;
  nodes: number;
  stats: SimStats;
  /** A hash of every event of the run: equal for equal runs. */
  traceHash: string;
  /** The last events of the run (SimOptions.traceLength of them). */
  trace: readonly string[];
  violation?: InvariantViolation;
}

// ---- Limits -------------------------------------------------------------------------------

const DEFAULT_STEPS = 2500;
/** Election timeouts a run may use (in ticks; the core randomizes within [n, 2n)). */
const ELECTION_TICKS_CHOICES = [3, 5, 10];
const HEARTBEAT_TICKS = 1;
/** Messages in flight beyond this are dropped, oldest first (a congested network). */
const MAX_IN_FLIGHT = 400;
/** Chance of a crash at the end of a Ready's sends (a crash point between I/O steps). */
const CRASH_AFTER_SEND_CHANCE = 0.002;
/** Share of messages that take a slow path, and how many steps late they may arrive. */
const SLOW_MESSAGE_CHANCE = 0.05;
const MAX_SLOW_DELAY_STEPS = 200;
/** Most entries kept below a new snapshot when compacting, so slow followers catch up from the log. */
const COMPACTION_KEEP_MAX = 4;
/** Concurrent clients, each with at most one outstanding operation. */
const CLIENTS = 5;
const KEYS = 3;
/** Steps after which a client gives up on an operation (its outcome becomes unknown). */
const CLIENT_TIMEOUT_STEPS = 300;
/** Nodes beyond the initial voters that membership changes may add. */
const MAX_EXTRA_NODES = 2;
/** Healing phase: rounds (one tick of every node, then the network drained) before liveness fails. */
const HEAL_ROUNDS_PER_ELECTION_TIMEOUT = 30;
/** Deliveries and Readies per drain of the network within one healing round. */
const MAX_DRAIN_ITERATIONS = 200;
/** Linearizability search budget per key. */
const MAX_CHECK_STEPS = 2_000_000;

// ---- Nodes and clients --------------------------------------------------------------------

type NodeState = 'running' | 'crashed' | 'stopped';

class SimNode {
  state: NodeState = 'stopped';
  core: RaftCore | undefined;
  incarnation = 0;
  // The driver's view, updated from each Ready.
  hardState: HardState = { term: 0, vote: 0, commit: 0 };
  role: StateRole = StateRole.Follower;
  lead: NodeId = 0;
  /** The term this node led when its last Ready was handled, 0 when it did not lead. */
  leaderTerm = 0;
  applied = 0;
  confState: ConfState = { voters: [], learners: [] };
  kv = new KvStateMachine();
  snapshotIndex = 0;
  /** The commit index on disk when this incarnation started (what it replays). */
  commitAtStart = 0;
  pendingReads: { index: number; reqId: string }[] = [];

  constructor(
    readonly id: NodeId,
    readonly disk: SimDisk,
    readonly rng: Rng,
  ) {}

  isMember(): boolean {
    return this.confState.voters.includes(this.id) || this.confState.learners.includes(this.id);
  }
}

interface PendingOp {
  reqId: string;
  clientId: number;
  kind: 'put' | 'get';
  key: string;
  value: string;
  node: NodeId;
  incarnation: number;
  call: number;
  deadline: number;
}

interface InFlight {
  msg: Message;
  /** A slow path: the message cannot arrive before this step. */
  notBefore: number;
}

/** Fails a storage-reading call of the core the way a forgetful disk would: no vote. */
class ForgetfulStorage implements Storage {
  constructor(private readonly inner: Storage) {}
  initialState(): { hardState: HardState; confState: ConfState } {
    const s = this.inner.initialState();
    return { hardState: { ...s.hardState, vote: 0 }, confState: s.confState };
  }
  entries(lo: number, hi: number, maxBytes: number): Entry[] {
    return this.inner.entries(lo, hi, maxBytes);
  }
  term(index: number): number {
    return this.inner.term(index);
  }
  firstIndex(): number {
    return this.inner.firstIndex();
  }
  lastIndex(): number {
    return this.inner.lastIndex();
  }
  snapshot(): Snapshot {
    return this.inner.snapshot();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function cloneMessage(m: Message): Message {
  return {
    ...m,
    entries: m.entries.map(cloneEntry),
    context: m.context.slice(),
    snapshot: m.snapshot === undefined ? undefined : cloneSnapshot(m.snapshot),
  };
}

function describeMessage(m: Message): string {
  const parts = [`${MessageType[m.type]} ${m.from}->${m.to} t${m.term}`];
  if (m.index !== 0 || m.logTerm !== 0) parts.push(`i${m.index} lt${m.logTerm}`);
  if (m.entries.length > 0) parts.push(`n${m.entries.length}`);
  if (m.commit !== 0) parts.push(`c${m.commit}`);
  if (m.reject) parts.push(`reject(hint ${m.rejectHint})`);
  if (m.snapshot !== undefined) parts.push(`snap@${m.snapshot.metadata.index}`);
  return parts.join(' ');
}

/** FNV-1a, two lanes: a cheap fingerprint of the whole trace for replay checks. */
class TraceHash {
  private h1 = 0x811c9dc5;
  private h2 = 0x01000193;
  add(line: string): void {
    for (let i = 0; i < line.length; i++) {
      const c = line.charCodeAt(i);
      this.h1 = Math.imul(this.h1 ^ c, 0x01000193);
      this.h2 = Math.imul(this.h2 ^ c, 0x5bd1e995);
    }
    this.h1 = Math.imul(this.h1 ^ 10, 0x01000193);
  }
  hex(): string {
    return (this.h1 >>> 0).toString(16).padStart(8, '0') + (this.h2 >>> 0).toString(16).padStart(8, '0');
  }
}

// ---- The simulation -----------------------------------------------------------------------

export class Simulation {
  readonly seed: number;
  readonly initialVoters: number;
  private readonly rng: Rng;
  private readonly mutation: Mutation;
  private readonly weights: EventWeights;
  private readonly faultSteps: number;
  private readonly slowMessageChance: number;
  private readonly crashAfterSendChance: number;
  private faultPhase = true;
  private readonly snapshotEvery: number;
  private readonly preVote: boolean;
  private readonly electionTicks: number;
  private readonly checkQuorum: boolean;
  private readonly createCore: CoreFactory;
  private readonly enabled: ReadonlySet<InvariantName>;
  private readonly checker: SafetyChecker;

  private readonly nodes = new Map<NodeId, SimNode>();
  private network: InFlight[] = [];
  private readonly blocked = new Set<string>();
  private readonly pending = new Map<string, PendingOp>();
  private readonly busyClients = new Set<number>();
  private readonly history: KvOperation[] = [];
  /** Writes whose client never heard back; settled against firstApplied at the end. */
  private readonly unknownWrites: KvOperation[] = [];
  private readonly answeredReads = new Set<string>();
  /** The step at which each write was first applied by any node (it was committed by then). */
  private readonly firstApplied = new Map<string, number>();
  private readonly forged: Message[] = [];

  private readonly traceLength: number;
  private readonly trace: string[] = [];
  private readonly traceHash = new TraceHash();
  private stepNo = 0;
  private nextReqId = 1;
  readonly stats: SimStats = {
    steps: 0,
    ticks: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    crashes: 0,
    partitions: 0,
    confChanges: 0,
    confChangesApplied: 0,
    transfers: 0,
    leaders: 0,
    committed: 0,
    snapshots: 0,
    snapshotsDelivered: 0,
    writesAcked: 0,
    readsAcked: 0,
    unknownOutcomes: 0,
    healRounds: 0,
    linearizabilityTimeouts: 0,
  };

  constructor(options: SimOptions) {
    this.seed = options.seed;
    this.rng = new Rng(options.seed);
    // Choices of the run's shape come first, from the seed, so they never shift with options.
    const shapeNodes = this.rng.chance(0.5) ? 3 : 5;
    const shapeSnapshotEvery = this.rng.int(4, 40);
    const shapePreVote = this.rng.chance(0.75);
    const shapeCheckQuorum = this.rng.chance(0.75);
    const shapeElectionTicks = this.rng.pick(ELECTION_TICKS_CHOICES);
    this.preVote = options.preVote ?? shapePreVote;
    this.electionTicks = options.electionTicks ?? shapeElectionTicks;
    this.checkQuorum = options.checkQuorum ?? shapeCheckQuorum;
    this.initialVoters = options.nodes ?? shapeNodes;
    this.snapshotEvery = options.snapshotEvery ?? shapeSnapshotEvery;
    this.mutation = options.mutation ?? 'none';
    this.weights = { ...DEFAULT_WEIGHTS, ...options.weights };
    this.faultSteps = options.steps ?? DEFAULT_STEPS;
    this.slowMessageChance = options.slowMessageChance ?? SLOW_MESSAGE_CHANCE;
    this.crashAfterSendChance = options.crashAfterSendChance ?? CRASH_AFTER_SEND_CHANCE;
    this.traceLength = options.traceLength ?? 40;
    this.createCore = options.createCore ?? ((config) => new RawNode(config));
    this.enabled = new Set(options.checks ?? ALL_INVARIANTS);
    this.checker = new SafetyChecker(this.enabled, this.fail);
  }

  /** Runs the whole simulation; throws InvariantViolation on the first violation. */
  run(): void {
    this.note(
      `seed ${this.seed}: ${this.initialVoters} voters, election ticks ${this.electionTicks}, preVote ${this.preVote}, checkQuorum ${this.checkQuorum}, snapshot every ${this.snapshotEvery}, mutation ${this.mutation}`,
    );
    try {
      this.bootstrap();
      for (let i = 0; i < this.faultSteps; i++) this.faultStep();
      this.heal();
      this.checkHistory();
    } catch (err) {
      if (err instanceof InvariantViolation) throw err;
      const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
      this.fail('core-error', text.split('\n').slice(0, 6).join('\n'));
    }
  }

  get hash(): string {
    return this.traceHash.hex();
  }

  get lastEvents(): readonly string[] {
    return [...this.trace];
  }

  get leadersSeen(): number {
    return this.checker.leaderCount;
  }

  private readonly fail: Fail = (invariant, detail) => {
    throw new InvariantViolation(invariant, detail, this.seed, this.stepNo, [...this.trace]);
  };

  private check(invariant: InvariantName, ok: boolean, detail: () => string): void {
    if (!ok && this.enabled.has(invariant)) this.fail(invariant, detail());
  }

  private note(line: string): void {
    const entry = `#${this.stepNo} ${line}`;
    this.traceHash.add(entry);
    this.trace.push(entry);
    if (this.trace.length > this.traceLength) this.trace.shift();
  }

  // ---- Setup ------------------------------------------------------------------------------

  private bootstrap(): void {
    const voters: NodeId[] = [];
    for (let id = 1; id <= this.initialVoters; id++) voters.push(id);
    for (const id of voters) {
      const node = this.addNode(id);
      // Every initial member starts from the same snapshot at index 1 holding the membership,
      // so a member added later learns the initial voters from a snapshot, as a joiner would.
      node.disk.write({
        kind: 'snapshot',
        snapshot: {
          metadata: { index: 1, term: 1, confState: { voters: [...voters], learners: [] } },
          data: new KvStateMachine().serialize(),
        },
      });
      node.disk.write({ kind: 'hardState', hardState: { term: 1, vote: 0, commit: 1 } });
      node.disk.flush();
      this.start(node);
    }
  }

  private addNode(id: NodeId): SimNode {
    const node = new SimNode(id, new SimDisk(this.mutation !== 'lying-disk'), this.rng.fork());
    this.nodes.set(id, node);
    return node;
  }

  /** Starts (or restarts) a node's process from what its disk holds. */
  private start(node: SimNode): void {
    const live = node.disk.live;
    const { hardState, confState } = live.initialState();
    const snap = live.snapshot();
    node.hardState = { ...hardState };
    node.commitAtStart = hardState.commit;
    node.role = StateRole.Follower;
    node.lead = 0;
    node.leaderTerm = 0;
    node.applied = snap.metadata.index;
    node.snapshotIndex = snap.metadata.index;
    node.confState = { voters: [...confState.voters], learners: [...confState.learners] };
    node.kv = KvStateMachine.restore(snap.data);
    node.pendingReads = [];
    const storage: Storage =
      this.mutation === 'forget-vote' && node.incarnation > 0 ? new ForgetfulStorage(live) : live;
    node.core = this.createCore({
      id: node.id,
      storage,
      electionTicks: this.electionTicks,
      heartbeatTicks: HEARTBEAT_TICKS,
      applied: node.applied,
      checkQuorum: this.checkQuorum,
      preVote: this.preVote,
      random: () => node.rng.float(),
    });
    node.incarnation++;
    node.state = 'running';
  }

  // ---- Scripted control: for tests that need one exact interleaving -------------------------

  /** Boots the cluster without running the random schedule; drive it with the calls below. */
  begin(): void {
    this.bootstrap();
  }

  /** Ticks node `id` until it has a Ready (or maxTicks pass); handles that Ready. */
  tickUntilReady(id: NodeId, maxTicks: number): boolean {
    const node = this.nodeOf(id);
    for (let i = 0; i < maxTicks; i++) {
      this.stepNo++;
      this.tick(node);
      if (this.coreOf(node).hasReady()) {
        this.handleReady(node);
        return true;
      }
    }
    return false;
  }

  /** Delivers, in order, every message in flight that `which` selects; handles the Readies. */
  deliverWhere(which: (m: Message) => boolean): number {
    const chosen = this.network.filter((f) => which(f.msg));
    this.network = this.network.filter((f) => !which(f.msg));
    for (const f of chosen) {
      this.stepNo++;
      this.deliver(f);
      for (const n of this.running()) if (this.coreOf(n).hasReady()) this.handleReady(n);
    }
    return chosen.length;
  }

  /** Loses every message in flight that `which` selects. */
  dropWhere(which: (m: Message) => boolean): void {
    for (const f of this.network.filter((x) => which(x.msg))) this.drop(f, 'scripted');
    this.network = this.network.filter((f) => !which(f.msg));
  }

  crashNode(id: NodeId): void {
    this.stepNo++;
    this.crash(this.nodeOf(id));
  }

  restartNode(id: NodeId): void {
    this.stepNo++;
    this.restart(this.nodeOf(id));
  }

  /** Two nodes can no longer talk to each other. */
  cutLink(a: NodeId, b: NodeId): void {
    this.blocked.add(`${a}>${b}`);
    this.blocked.add(`${b}>${a}`);
    this.note(`partition: cut link ${a}<>${b}`);
  }

  roleOf(id: NodeId): StateRole {
    return this.nodeOf(id).role;
  }

  private nodeOf(id: NodeId): SimNode {
    const node = this.nodes.get(id);
    if (node === undefined) throw new Error(`no node ${id}`);
    return node;
  }

  // ---- The fault phase --------------------------------------------------------------------

  private running(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (n.state === 'running') out.push(n);
    return out;
  }

  private faultStep(): void {
    this.stepNo++;
    this.stats.steps++;
    const w = this.weights;
    const running = this.running();
    const withReady = running.filter((n) => n.core !== undefined && n.core.hasReady());
    const crashed = [...this.nodes.values()].filter((n) => n.state === 'crashed');
    const unsynced = running.filter((n) => n.disk.unsyncedWrites > 0);
    const idleClients = CLIENTS - this.busyClients.size;
    const deliverable: number[] = [];
    for (let i = 0; i < this.network.length; i++)
      if (this.network[i].notBefore <= this.stepNo) deliverable.push(i);
    const actions: [number, () => void][] = [
      [running.length > 0 ? w.tick : 0, () => this.tick(this.rng.pick(running))],
      [withReady.length > 0 ? w.ready : 0, () => this.handleReady(this.rng.pick(withReady))],
      [deliverable.length > 0 ? w.deliver : 0, () => this.deliver(this.takeMessage(deliverable))],
      [deliverable.length > 0 ? w.drop : 0, () => this.drop(this.takeMessage(deliverable), 'dropped')],
      [this.network.length > 0 ? w.duplicate : 0, () => this.duplicate()],
      [idleClients > 0 && running.length > 0 ? w.write : 0, () => this.clientWrite()],
      [idleClients > 0 && running.length > 0 ? w.read : 0, () => this.clientRead()],
      [w.partition, () => this.partition()],
      [this.blocked.size > 0 ? w.heal : 0, () => this.healPartitions()],
      [running.length > 0 ? w.crash : 0, () => this.crash(this.rng.pick(running))],
      [crashed.length > 0 ? w.restart : 0, () => this.restart(this.rng.pick(crashed))],
      [w.confChange, () => this.changeMembership()],
      [w.transfer, () => this.transferLeadership()],
      [unsynced.length > 0 ? w.flush : 0, () => this.flush(this.rng.pick(unsynced))],
    ];
    const choice = this.rng.weighted(actions.map((a) => a[0]));
    actions[choice][1]();
    this.expireClientOps();
  }

  private tick(node: SimNode): void {
    this.stats.ticks++;
    this.note(`tick ${node.id}`);
    this.coreOf(node).tick();
  }

  private coreOf(node: SimNode): RaftCore {
    if (node.core === undefined) throw new Error(`node ${node.id} has no running core`);
    return node.core;
  }

  /** Mostly near the head of the queue (roughly in order), sometimes any message (reordering). */
  private takeMessage(deliverable: readonly number[]): InFlight {
    const n = deliverable.length;
    const i = this.rng.chance(0.8) ? this.rng.int(0, Math.min(3, n - 1)) : this.rng.int(0, n - 1);
    return this.network.splice(deliverable[i], 1)[0];
  }

  private send(m: Message): void {
    // Now and then a message takes a slow path and arrives long after later ones.
    const notBefore = this.rng.chance(this.slowMessageChance)
      ? this.stepNo + this.rng.int(10, MAX_SLOW_DELAY_STEPS)
      : 0;
    this.network.push({ msg: cloneMessage(m), notBefore });
    if (this.network.length > MAX_IN_FLIGHT) {
      const oldest = this.network.shift();
      if (oldest !== undefined) this.drop(oldest, 'overflow');
    }
  }

  private deliver(f: InFlight): void {
    const m = f.msg;
    const to = this.nodes.get(m.to);
    if (this.blocked.has(`${m.from}>${m.to}`)) {
      this.drop(f, 'partitioned');
      // The transport notices a broken connection now and then and tells raft.
      const from = this.nodes.get(m.from);
      if (from !== undefined && from.state === 'running' && this.rng.chance(0.3)) {
        this.coreOf(from).reportUnreachable(m.to);
      }
      return;
    }
    if (to === undefined || to.state !== 'running') {
      this.drop(f, 'to a down node');
      return;
    }
    this.stats.delivered++;
    this.note(`deliver ${describeMessage(m)}`);
    this.coreOf(to).step(m);
    if (m.type === MessageType.Snap) {
      this.stats.snapshotsDelivered++;
      this.reportSnapshot(m, true);
    }
  }

  private drop(f: InFlight, why: string): void {
    this.stats.dropped++;
    this.note(`drop (${why}) ${describeMessage(f.msg)}`);
    if (f.msg.type === MessageType.Snap) this.reportSnapshot(f.msg, false);
  }

  /** The transport tells the leader how sending a snapshot went. */
  private reportSnapshot(m: Message, ok: boolean): void {
    const from = this.nodes.get(m.from);
    if (from !== undefined && from.state === 'running') this.coreOf(from).reportSnapshot(m.to, ok);
  }

  private duplicate(): void {
    const f = this.rng.pick(this.network);
    this.stats.duplicated++;
    this.note(`duplicate ${describeMessage(f.msg)}`);
    this.network.push({ msg: cloneMessage(f.msg), notBefore: f.notBefore });
  }

  private partition(): void {
    const ids = [...this.nodes.keys()];
    const kind = this.rng.int(0, 3);
    this.stats.partitions++;
    if (kind === 0) {
      const isolated = this.rng.pick(ids);
      for (const other of ids) {
        if (other === isolated) continue;
        this.blocked.add(`${isolated}>${other}`);
        this.blocked.add(`${other}>${isolated}`);
      }
      this.note(`partition: isolate ${isolated}`);
    } else if (kind === 1) {
      const side = ids.filter(() => this.rng.chance(0.5));
      for (const a of ids) {
        for (const b of ids) {
          if (side.includes(a) !== side.includes(b)) this.blocked.add(`${a}>${b}`);
        }
      }
      this.note(`partition: split [${side.join(',')}] from the rest`);
    } else if (kind === 2) {
      const from = this.rng.pick(ids);
      const to = this.rng.pick(ids);
      if (from !== to) this.blocked.add(`${from}>${to}`);
      this.note(`partition: one-way ${from}>${to}`);
    } else {
      // A partial partition: two nodes cannot talk, both still reach everyone else.
      const a = this.rng.pick(ids);
      const b = this.rng.pick(ids);
      if (a !== b) {
        this.blocked.add(`${a}>${b}`);
        this.blocked.add(`${b}>${a}`);
      }
      this.note(`partition: cut link ${a}<>${b}`);
    }
  }

  private healPartitions(): void {
    this.blocked.clear();
    this.note('heal partitions');
  }

  private crash(node: SimNode): void {
    this.stats.crashes++;
    this.note(`crash ${node.id} (unsynced writes lost: ${node.disk.unsyncedWrites})`);
    node.core = undefined;
    node.state = 'crashed';
    node.disk.crash();
    this.abandonOpsAt(node);
  }

  private restart(node: SimNode): void {
    const before = { ...node.hardState };
    this.start(node);
    this.note(`restart ${node.id} (term ${node.hardState.term}, commit ${node.hardState.commit})`);
    const after = node.hardState;
    this.check(
      'durability',
      before.term === after.term && before.vote === after.vote && before.commit === after.commit,
      () =>
        `node ${node.id} restarts with hard state ${JSON.stringify(after)}, it had synced ${JSON.stringify(before)}`,
    );
    this.check(
      'monotonic',
      after.term >= before.term,
      () => `node ${node.id} restarts in term ${after.term} after term ${before.term}`,
    );
    this.checker.restarted(node.id, node.disk.live);
  }

  private flush(node: SimNode): void {
    this.note(`flush disk of ${node.id}`);
    node.disk.flush();
  }

  /** The running node that leads the highest term, if any. */
  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.nodes.values()) {
      if (n.state !== 'running' || n.role !== StateRole.Leader) continue;
      if (best === undefined || n.hardState.term > best.hardState.term) best = n;
    }
    return best;
  }

  private changeMembership(): void {
    const leader = this.leader();
    if (leader === undefined) return;
    const cs = leader.confState;
    const options: (() => void)[] = [];
    // Keep two voters at least, so a remove always leaves a working cluster.
    if (cs.voters.length >= 3) {
      options.push(() =>
        this.proposeConfChange(leader, ConfChangeType.RemoveVoter, this.rng.pick(cs.voters)),
      );
    }
    const outside = [...this.nodes.values()].filter(
      (n) => !cs.voters.includes(n.id) && !cs.learners.includes(n.id),
    );
    if (outside.length > 0) {
      options.push(() => {
        // Re-add a former member from its own disk, as an operator restarting it would.
        const node = this.rng.pick(outside);
        if (node.state !== 'running') this.start(node);
        this.proposeConfChange(leader, ConfChangeType.AddVoter, node.id);
      });
    }
    if (cs.learners.length > 0) {
      options.push(() => this.proposeConfChange(leader, ConfChangeType.AddVoter, this.rng.pick(cs.learners)));
    }
    if (this.nodes.size < this.initialVoters + MAX_EXTRA_NODES) {
      options.push(() => {
        // A brand-new machine: empty disk, no membership; it learns everything from the leader.
        const node = this.addNode(this.nodes.size + 1);
        this.start(node);
        this.proposeConfChange(leader, ConfChangeType.AddLearner, node.id);
      });
    }
    if (options.length > 0) this.rng.pick(options)();
  }

  private proposeConfChange(leader: SimNode, type: ConfChangeType, nodeId: NodeId): void {
    this.stats.confChanges++;
    this.note(`propose ${ConfChangeType[type]} ${nodeId} at leader ${leader.id}`);
    try {
      this.coreOf(leader).proposeConfChange({ type, nodeId, context: new Uint8Array(0) });
    } catch (err) {
      if (!(err instanceof RaftError)) throw err;
      this.note(`  refused: ${err.message}`);
    }
  }

  private transferLeadership(): void {
    const leader = this.leader();
    if (leader === undefined) return;
    const targets = leader.confState.voters.filter((id) => id !== leader.id);
    if (targets.length === 0) return;
    const to = this.rng.pick(targets);
    this.stats.transfers++;
    this.note(`transfer leadership ${leader.id} -> ${to}`);
    try {
      this.coreOf(leader).transferLeadership(to);
    } catch (err) {
      if (!(err instanceof RaftError)) throw err;
      this.note(`  refused: ${err.message}`);
    }
  }

  // ---- Ready handling: what a real driver does --------------------------------------------

  private handleReady(node: SimNode): void {
    const core = this.coreOf(node);
    const rd = core.ready();
    const log = node.disk.live;
    const id = node.id;
    this.note(
      `ready ${id}: ${rd.entries.length} entries, ${rd.committedEntries.length} committed, ${rd.messages.length} msgs` +
        (rd.hardState ? `, hs t${rd.hardState.term} v${rd.hardState.vote} c${rd.hardState.commit}` : '') +
        (rd.softState ? `, ${StateRole[rd.softState.role]} lead ${rd.softState.lead}` : '') +
        (rd.snapshot ? `, snapshot@${rd.snapshot.metadata.index}` : ''),
    );

    // Leader append-only: if it led this term at its last Ready and still does, nothing it
    // persists may replace or remove what it already holds.
    const ledBefore = node.leaderTerm;
    const stillLeads =
      ledBefore !== 0 &&
      (rd.softState === undefined || rd.softState.role === StateRole.Leader) &&
      (rd.hardState === undefined || rd.hardState.term === ledBefore);
    if (stillLeads) {
      this.check(
        'leader-append-only',
        rd.snapshot === undefined,
        () => `leader ${id} of term ${ledBefore} installs a snapshot`,
      );
      const last = log.lastIndex();
      for (const e of rd.entries) {
        if (e.index > last) break;
        const same =
          e.index < log.firstIndex() ||
          fingerprint(log.entries(e.index, e.index + 1, Infinity)[0]) === fingerprint(e);
        this.check(
          'leader-append-only',
          same,
          () => `leader ${id} of term ${ledBefore} overwrites its entry at index ${e.index}`,
        );
      }
    }

    // 1. Persist snapshot, entries and hard state as one synced write.
    if (rd.snapshot !== undefined) {
      this.check(
        'monotonic',
        rd.snapshot.metadata.index > node.applied,
        () => `node ${id} is handed a snapshot at ${rd.snapshot?.metadata.index} but applied ${node.applied}`,
      );
      node.disk.write({ kind: 'snapshot', snapshot: rd.snapshot });
      this.checker.snapshot(id, rd.snapshot.metadata.index, rd.snapshot.data);
    }
    if (rd.entries.length > 0) {
      node.disk.write({ kind: 'entries', entries: rd.entries });
      this.checker.appended(id, rd.entries, log);
    }
    const before = node.hardState;
    if (rd.hardState !== undefined) {
      const hs = rd.hardState;
      this.check(
        'monotonic',
        hs.term >= before.term,
        () => `node ${id} term goes from ${before.term} to ${hs.term}`,
      );
      this.check(
        'monotonic',
        hs.commit >= before.commit,
        () => `node ${id} commit goes from ${before.commit} to ${hs.commit}`,
      );
      this.check('vote-once', hs.term !== before.term || before.vote === 0 || hs.vote === before.vote, () =>
        hs.vote === 0
          ? `node ${id} forgets its vote for ${before.vote} in term ${hs.term}`
          : `node ${id} votes for ${hs.vote} in term ${hs.term} after voting for ${before.vote}`,
      );
      node.disk.write({ kind: 'hardState', hardState: hs });
      node.hardState = { ...hs };
      if (hs.commit > before.commit) {
        this.checker.committedUpTo(id, hs.term, before.commit + 1, hs.commit, log);
        this.stats.committed = Math.max(this.stats.committed, hs.commit);
      }
    }
    if (rd.softState !== undefined) {
      node.role = rd.softState.role;
      node.lead = rd.softState.lead;
    }
    if (node.role === StateRole.Leader) {
      this.checker.leader(id, node.hardState.term, log);
      node.leaderTerm = node.hardState.term;
    } else {
      node.leaderTerm = 0;
    }

    // 2. Send.
    for (const m of rd.messages) {
      this.send(m);
      if (this.mutation === 'forge-vote' && m.type === MessageType.Vote) {
        // Counts the vote of the first peer asked as if it had been granted.
        const forged = emptyMessage(MessageType.VoteResp, m.to, id);
        forged.term = m.term;
        this.forged.push(forged);
      }
    }

    // A crash point: the Ready's writes are durable and its messages left, nothing applied.
    if (this.faultPhase && this.rng.chance(this.crashAfterSendChance)) {
      this.note(`  ${id} crashes right after sending`);
      this.crash(node);
      return;
    }

    // 3. Apply.
    if (rd.snapshot !== undefined) {
      const meta = rd.snapshot.metadata;
      node.kv = KvStateMachine.restore(rd.snapshot.data);
      node.applied = meta.index;
      node.snapshotIndex = meta.index;
      node.confState = { voters: [...meta.confState.voters], learners: [...meta.confState.learners] };
      this.note(`  ${id} restores snapshot at ${meta.index}`);
      this.answerWritesSeenIn(node);
    }
    let removedSelf = false;
    for (const e of rd.committedEntries) {
      this.check(
        'monotonic',
        e.index === node.applied + 1,
        () => `node ${id} applies index ${e.index} after ${node.applied}`,
      );
      this.check(
        'monotonic',
        e.index <= node.hardState.commit,
        () => `node ${id} applies ${e.index} beyond commit ${node.hardState.commit}`,
      );
      const firstTime = this.checker.appliedEntry(id, e);
      node.applied = e.index;
      if (e.type === EntryType.ConfChange) {
        if (firstTime) this.stats.confChangesApplied++;
        const cc = decodeConfChange(e.data);
        node.confState = core.applyConfChange(cc);
        // Replaying its own old removal after a restart is not news: it may have been added
        // back since. Only a removal newer than what it knew at start stops the process.
        if (cc.nodeId === id)
          removedSelf = cc.type === ConfChangeType.RemoveVoter && e.index > node.commitAtStart;
        this.note(
          `  ${id} applies ${ConfChangeType[cc.type]} ${cc.nodeId} at ${e.index}: voters [${node.confState.voters.join(',')}] learners [${node.confState.learners.join(',')}]`,
        );
      } else {
        const cmd = decodeCommand(e.data);
        if (cmd !== undefined) {
          if (!this.firstApplied.has(cmd.id)) this.firstApplied.set(cmd.id, this.stepNo);
          node.kv.apply(cmd);
          this.answerWrite(node, cmd.id);
        }
      }
    }
    for (const rs of rd.readStates) {
      node.pendingReads.push({ index: rs.index, reqId: decoder.decode(rs.requestCtx) });
    }
    this.answerReads(node);
    core.advance();

    this.maybeSnapshot(node);
    if (removedSelf) {
      // A removed member shuts down, as the application would; its disk stays.
      this.note(`  ${id} was removed: stopping`);
      node.state = 'stopped';
      node.core = undefined;
      node.disk.flush();
      this.abandonOpsAt(node);
    }
    while (this.forged.length > 0 && node.core !== undefined) {
      const m = this.forged.shift();
      if (m === undefined) break;
      this.note(`forge ${describeMessage(m)}`);
      node.core.step(m);
    }
    this.forged.length = 0;
  }

  /** Every snapshotEvery applied entries: snapshot the state machine and compact the log. */
  private maybeSnapshot(node: SimNode): void {
    if (node.applied - node.snapshotIndex < this.snapshotEvery) return;
    const log = node.disk.live;
    if (node.applied <= log.snapshot().metadata.index) return;
    const data = node.kv.serialize();
    node.disk.write({ kind: 'createSnapshot', index: node.applied, confState: node.confState, data });
    this.checker.snapshot(node.id, node.applied, data);
    node.snapshotIndex = node.applied;
    this.stats.snapshots++;
    const compactTo = node.applied - this.rng.int(0, COMPACTION_KEEP_MAX);
    if (compactTo >= log.firstIndex()) node.disk.write({ kind: 'compact', index: compactTo });
  }

  // ---- Clients ----------------------------------------------------------------------------

  private pickClient(): number {
    const idle: number[] = [];
    for (let c = 0; c < CLIENTS; c++) if (!this.busyClients.has(c)) idle.push(c);
    return this.rng.pick(idle);
  }

  /** Clients usually talk to the leader they know of, sometimes to any node (which forwards). */
  private pickContact(): SimNode {
    const leader = this.leader();
    if (leader !== undefined && this.rng.chance(0.6)) return leader;
    return this.rng.pick(this.running());
  }

  private clientWrite(): void {
    const clientId = this.pickClient();
    const node = this.pickContact();
    const reqId = `w${this.nextReqId++}`;
    const key = `k${this.rng.int(0, KEYS - 1)}`;
    const op = this.openOp(reqId, clientId, 'put', key, reqId, node);
    this.note(`client ${clientId} put ${key}=${reqId} via ${node.id}`);
    try {
      this.coreOf(node).propose(encodeCommand({ id: reqId, op: 'put', key, value: op.value }));
    } catch (err) {
      if (!(err instanceof RaftError)) throw err;
      // Refused outright: it never reached any log, so it is not part of the history.
      this.note(`  refused: ${err.message}`);
      this.closeOp(op);
    }
  }

  private clientRead(): void {
    const clientId = this.pickClient();
    const node = this.pickContact();
    const reqId = `r${this.nextReqId++}`;
    const key = `k${this.rng.int(0, KEYS - 1)}`;
    const op = this.openOp(reqId, clientId, 'get', key, '', node);
    this.note(`client ${clientId} get ${key} via ${node.id} (${reqId})`);
    if (this.mutation === 'local-read') {
      node.pendingReads.push({ index: 0, reqId });
      this.answerReads(node);
      return;
    }
    try {
      this.coreOf(node).readIndex(encoder.encode(reqId));
    } catch (err) {
      if (!(err instanceof RaftError)) throw err;
      this.note(`  refused: ${err.message}`);
      this.closeOp(op);
    }
  }

  private openOp(
    reqId: string,
    clientId: number,
    kind: 'put' | 'get',
    key: string,
    value: string,
    node: SimNode,
  ): PendingOp {
    const op: PendingOp = {
      reqId,
      clientId,
      kind,
      key,
      value,
      node: node.id,
      incarnation: node.incarnation,
      call: this.stepNo,
      deadline: this.stepNo + CLIENT_TIMEOUT_STEPS,
    };
    this.pending.set(reqId, op);
    this.busyClients.add(clientId);
    return op;
  }

  private closeOp(op: PendingOp): void {
    this.pending.delete(op.reqId);
    this.busyClients.delete(op.clientId);
  }

  /** The client stops waiting: a write may or may not have happened; a read tells nothing. */
  private giveUp(op: PendingOp): void {
    this.closeOp(op);
    if (op.kind === 'put') {
      this.stats.unknownOutcomes++;
      this.unknownWrites.push({
        clientId: op.clientId,
        input: { op: 'put', key: op.key, value: op.value },
        call: op.call,
      });
    }
  }

  private answerWrite(node: SimNode, reqId: string): void {
    const op = this.pending.get(reqId);
    if (op === undefined || op.node !== node.id || op.incarnation !== node.incarnation) return;
    this.closeOp(op);
    this.stats.writesAcked++;
    this.note(`  ack ${reqId} to client ${op.clientId}`);
    this.history.push({
      clientId: op.clientId,
      input: { op: 'put', key: op.key, value: op.value },
      call: op.call,
      return: this.stepNo,
      output: {},
    });
  }

  /** After a snapshot install, writes it contains are done as far as this node can tell. */
  private answerWritesSeenIn(node: SimNode): void {
    for (const op of [...this.pending.values()]) {
      if (op.kind === 'put' && node.kv.hasApplied(op.reqId)) this.answerWrite(node, op.reqId);
    }
  }

  private answerReads(node: SimNode): void {
    const waiting: { index: number; reqId: string }[] = [];
    for (const r of node.pendingReads) {
      if (r.index > node.applied) {
        waiting.push(r);
        continue;
      }
      const op = this.pending.get(r.reqId);
      if (op === undefined || op.node !== node.id || op.incarnation !== node.incarnation) continue;
      this.closeOp(op);
      const value = node.kv.get(op.key);
      this.stats.readsAcked++;
      this.answeredReads.add(op.reqId);
      this.note(`  read ${op.reqId} at ${node.id}: ${op.key}=${String(value)} (read index ${r.index})`);
      this.history.push({
        clientId: op.clientId,
        input: { op: 'get', key: op.key },
        call: op.call,
        return: this.stepNo,
        output: { value },
      });
    }
    node.pendingReads = waiting;
  }

  private abandonOpsAt(node: SimNode): void {
    for (const op of [...this.pending.values()]) if (op.node === node.id) this.giveUp(op);
  }

  private expireClientOps(): void {
    if (this.pending.size === 0) return;
    for (const op of [...this.pending.values()]) {
      if (op.deadline <= this.stepNo) {
        this.note(`client ${op.clientId} gives up on ${op.reqId}`);
        this.giveUp(op);
      }
    }
  }

  // ---- Healing and liveness -----------------------------------------------------------------

  /**
   * Faults end: partitions heal, crashed nodes restart, removed members stay down. Then the
   * cluster must elect a leader and commit a new write on every member within a bound, and
   * answer a linearizable read of every key.
   */
  private heal(): void {
    this.stepNo++;
    this.faultPhase = false;
    this.blocked.clear();
    for (const n of this.nodes.values()) if (n.state === 'crashed') this.restart(n);
    // Nodes outside the membership the most advanced node applied are shut down by the
    // operator; a member that is down is started by the rounds below.
    let reference: SimNode | undefined;
    for (const n of this.running())
      if (reference === undefined || n.applied > reference.applied) reference = n;
    if (reference !== undefined) {
      const cs = reference.confState;
      for (const n of this.nodes.values()) {
        const member = cs.voters.includes(n.id) || cs.learners.includes(n.id);
        if (!member && n.state === 'running') {
          n.state = 'stopped';
          n.core = undefined;
          this.abandonOpsAt(n);
        } else if (member && n.state !== 'running') {
          // A member that stopped on its removal before it was added back.
          this.note(`heal: start member ${n.id}`);
          this.start(n);
        }
      }
    }
    this.note('heal: all faults end');

    const sentinel = `sentinel-${this.seed}`;
    let proposedAtRound = -1;
    const finalReads = new Map<string, string | undefined>();
    for (let k = 0; k < KEYS; k++) finalReads.set(`k${k}`, undefined);
    const maxRounds = HEAL_ROUNDS_PER_ELECTION_TIMEOUT * this.electionTicks;
    for (let round = 0; round < maxRounds; round++) {
      this.stats.healRounds = round + 1;
      this.stepNo++;
      for (const n of this.running()) this.coreOf(n).tick();
      this.drain();
      this.expireClientOps();
      const leader = this.leader();
      if (leader === undefined) continue;
      const members = [...leader.confState.voters, ...leader.confState.learners];
      for (const id of members) {
        const n = this.nodes.get(id);
        if (n !== undefined && n.state !== 'running') {
          this.note(`heal: start member ${id}`);
          this.start(n);
        }
      }
      if (!leader.kv.hasApplied(sentinel)) {
        // Proposed again now and then: a proposal can be lost with a leadership change.
        if (proposedAtRound < 0 || round - proposedAtRound >= 2 * this.electionTicks) {
          proposedAtRound = round;
          this.note(`heal: propose sentinel at leader ${leader.id}`);
          try {
            this.coreOf(leader).propose(
              encodeCommand({ id: sentinel, op: 'put', key: 'sentinel', value: 'done' }),
            );
          } catch (err) {
            if (!(err instanceof RaftError)) throw err;
          }
        }
        continue;
      }
      const everywhere = members.every((id) => {
        const n = this.nodes.get(id);
        return n !== undefined && n.state === 'running' && n.kv.hasApplied(sentinel);
      });
      if (!everywhere) continue;
      // Progress made; now one linearizable read of every key through ReadIndex.
      let readsDone = true;
      for (const [key, reqId] of finalReads) {
        if (reqId !== undefined && this.answeredReads.has(reqId)) continue;
        readsDone = false;
        if (reqId !== undefined && this.pending.has(reqId)) continue;
        const contact = this.nodes.get(this.rng.pick(members));
        if (contact === undefined || contact.core === undefined) continue;
        const newId = `r${this.nextReqId++}`;
        const read = this.openOp(newId, CLIENTS + 1 + Number(key.slice(1)), 'get', key, '', contact);
        finalReads.set(key, newId);
        this.note(`heal: final read of ${key} via ${contact.id} (${newId})`);
        try {
          contact.core.readIndex(encoder.encode(newId));
        } catch (err) {
          if (!(err instanceof RaftError)) throw err;
          this.closeOp(read);
        }
      }
      if (readsDone) {
        this.note(`heal: done after ${round + 1} rounds`);
        return;
      }
    }
    const leader = this.leader();
    this.fail(
      'liveness',
      leader === undefined
        ? `no leader ${maxRounds} rounds after faults healed`
        : `leader ${leader.id} (term ${leader.hardState.term}) but the new write or the final reads did not complete within ${maxRounds} rounds`,
    );
  }

  /** Handles every Ready and delivers every message, in order, until the cluster is quiet. */
  private drain(): void {
    for (let i = 0; i < MAX_DRAIN_ITERATIONS; i++) {
      let busy = false;
      for (const n of this.running()) {
        if (n.core !== undefined && n.core.hasReady()) {
          this.handleReady(n);
          busy = true;
        }
      }
      const batch = this.network;
      this.network = [];
      for (const f of batch) this.deliver(f);
      if (!busy && batch.length === 0) return;
    }
  }

  private checkHistory(): void {
    for (const op of [...this.pending.values()]) this.giveUp(op);
    // The simulator knows more than the client: a write no node ever applied never took
    // effect, and one applied took effect no later than its first application (it was
    // committed by then, and every later read must see it).
    for (const op of this.unknownWrites) {
      if (op.input.op !== 'put') continue;
      const applied = this.firstApplied.get(op.input.value);
      if (applied === undefined) continue;
      this.history.push({ ...op, return: Math.max(applied, op.call), output: {} });
    }
    const result = checkKvHistory(this.history, { maxSteps: MAX_CHECK_STEPS });
    this.note(`history: ${this.history.length} operations, ${result.ok ? 'linearizable' : result.reason}`);
    // Too large to settle within the budget: not a verdict, but counted so it is visible.
    if (!result.ok && result.reason === 'timeout') this.stats.linearizabilityTimeouts++;
    if (!result.ok && result.reason === 'illegal') {
      const ops = this.history
        .filter((op) => op.input.key === result.partition)
        .sort((a, b) => a.call - b.call)
        .map((op) => {
          const span = `[${op.call},${op.return ?? '∞'})`;
          return op.input.op === 'get'
            ? `c${op.clientId} get=${String(op.output?.value ?? null)} ${span}`
            : `c${op.clientId} put ${op.input.op === 'put' ? op.input.value : ''} ${span}`;
        });
      this.fail(
        'linearizability',
        `the history of key ${result.partition} (${result.operations} operations) is not linearizable:\n    ${ops.slice(0, 60).join('\n    ')}`,
      );
    }
  }
}

/** Runs one seed and reports instead of throwing. */
export function runSeed(options: SimOptions): SimResult {
  const sim = new Simulation(options);
  let violation: InvariantViolation | undefined;
  try {
    sim.run();
  } catch (err) {
    if (!(err instanceof InvariantViolation)) throw err;
    violation = err;
  }
  sim.stats.leaders = sim.leadersSeen;
  return {
    seed: sim.seed,
    nodes: sim.initialVoters,
    stats: sim.stats,
    traceHash: sim.hash,
    trace: sim.lastEvents,
    violation,
  };
}
