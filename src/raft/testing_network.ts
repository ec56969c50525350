// Test helper: several RawNodes over MemoryStorage, wired by an in-memory network that can
// drop, cut and isolate. Each node's Ready is persisted before its messages are delivered,
// exactly as a real driver must. Used by the core's tests; not part of the runtime.

import { decodeConfChange } from './confchange';
import { MemoryStorage } from './memory_storage';
import { type Config, Raft } from './raft';
import { RawNode } from './raw_node';
import {
  type ConfState,
  type Entry,
  EntryType,
  emptyMessage,
  type Message,
  MessageType,
  type NodeId,
  type ReadState,
  StateRole,
} from './types';

/** A small deterministic PRNG (mulberry32), so runs replay from a seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface TestMember {
  id: NodeId;
  node: RawNode;
  storage: MemoryStorage;
  /** Committed entries in the order this node applied them (normal and conf change). */
  applied: Entry[];
  readStates: ReadState[];
  confState: ConfState;
}

export type NetworkOptions = Partial<Omit<Config, 'id' | 'storage' | 'random' | 'voters' | 'learners'>> & {
  seed?: number;
  /**
   * How founding members learn the membership: 'confState' puts it in storage (no log
   * entries); 'log' passes config.voters to a brand-new node, which writes it into the log
   * (needed when members join later and must learn it by replay).
   */
  bootstrap?: 'confState' | 'log';
};

export class TestNetwork {
  readonly members = new Map<NodeId, TestMember>();
  /** Directed links that drop everything: "from->to". */
  private readonly cutLinks = new Set<string>();
  /** Extra filter: return false to drop a message. */
  filter: (m: Message) => boolean = () => true;
  /** Every message delivered, for assertions on traffic. */
  readonly delivered: Message[] = [];
  private readonly options: NetworkOptions;

  constructor(ids: NodeId[], options: NetworkOptions = {}) {
    this.options = options;
    for (const id of ids) this.addMember(id, { voters: ids, learners: [] });
  }

  /** Starts a node with the given bootstrap membership (empty for a node joining later). */
  addMember(id: NodeId, confState: ConfState): TestMember {
    const { seed, bootstrap, ...rest } = this.options;
    const viaLog = bootstrap === 'log';
    const storage = viaLog ? new MemoryStorage() : MemoryStorage.withConfState(confState);
    const node = new RawNode({
      electionTicks: 10,
      heartbeatTicks: 1,
      ...rest,
      ...(viaLog ? { voters: confState.voters, learners: confState.learners } : {}),
      id,
      storage,
      random: seededRandom((seed ?? 1) * 1000 + id),
    });
    const member: TestMember = { id, node, storage, applied: [], readStates: [], confState };
    this.members.set(id, member);
    return member;
  }

  /** Restarts a node from its storage (what survives a crash when every Ready was synced). */
  restart(id: NodeId): TestMember {
    const old = this.member(id);
    const { seed, ...rest } = this.options;
    delete rest.bootstrap; // a restarted node reads its membership from storage
    const snapIndex = old.storage.snapshot().metadata.index;
    const node = new RawNode({
      electionTicks: 10,
      heartbeatTicks: 1,
      ...rest,
      id,
      storage: old.storage,
      applied: snapIndex,
      random: seededRandom((seed ?? 1) * 7919 + id),
    });
    const member: TestMember = {
      id,
      node,
      storage: old.storage,
      applied: old.applied.filter((e) => e.index <= snapIndex),
      readStates: [],
      confState: old.confState,
    };
    this.members.set(id, member);
    return member;
  }

  member(id: NodeId): TestMember {
    const m = this.members.get(id);
    if (!m) throw new Error(`no member ${id}`);
    return m;
  }

  node(id: NodeId): RawNode {
    return this.member(id).node;
  }

  cut(a: NodeId, b: NodeId): void {
    this.cutLinks.add(`${a}->${b}`);
    this.cutLinks.add(`${b}->${a}`);
  }

  cutOneWay(from: NodeId, to: NodeId): void {
    this.cutLinks.add(`${from}->${to}`);
  }

  isolate(id: NodeId): void {
    for (const other of this.members.keys()) if (other !== id) this.cut(id, other);
  }

  heal(): void {
    this.cutLinks.clear();
    this.filter = () => true;
  }

  /** Persists one Ready of `id`, applies its committed entries, advances; returns its messages. */
  processReady(id: NodeId): Message[] {
    const m = this.member(id);
    if (!m.node.hasReady()) return [];
    const rd = m.node.ready();
    if (rd.snapshot) {
      m.storage.applySnapshot(rd.snapshot);
      m.confState = rd.snapshot.metadata.confState;
      m.applied = [];
    }
    m.storage.append(rd.entries);
    if (rd.hardState) m.storage.setHardState(rd.hardState);
    for (const e of rd.committedEntries) {
      m.applied.push(e);
      if (e.type === EntryType.ConfChange) m.confState = m.node.applyConfChange(decodeConfChange(e.data));
    }
    m.readStates.push(...rd.readStates);
    m.node.advance();
    return rd.messages;
  }

  /** Hands a message to its destination if the link is up; returns whether it was delivered. */
  deliver(msg: Message): boolean {
    const target = this.members.get(msg.to);
    const ok = target !== undefined && !this.cutLinks.has(`${msg.from}->${msg.to}`) && this.filter(msg);
    // A transport reports how a snapshot send ended; the leader retries on failure.
    if (msg.type === MessageType.Snap) this.members.get(msg.from)?.node.reportSnapshot(msg.to, ok);
    if (!ok || !target) return false;
    this.delivered.push(msg);
    target.node.step(msg);
    return true;
  }

  /** Runs Readys and delivers messages until nothing moves (bounded, to catch livelock). */
  stabilize(maxRounds = 10_000): void {
    for (let round = 0; round < maxRounds; round++) {
      let moved = false;
      for (const id of [...this.members.keys()].sort((a, b) => a - b)) {
        const msgs = this.processReady(id);
        if (msgs.length > 0) moved = true;
        for (const msg of msgs) this.deliver(msg);
      }
      if (!moved && ![...this.members.values()].some((m) => m.node.hasReady())) return;
    }
    throw new Error(`network did not settle in ${maxRounds} rounds`);
  }

  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const m of this.members.values()) m.node.tick();
      this.stabilize();
    }
  }

  /** Makes `id` campaign and settles; returns its role after. */
  elect(id: NodeId): StateRole {
    // Apply what is committed first (a bootstrapped node holds its membership entries).
    this.stabilize();
    this.node(id).campaign();
    this.stabilize();
    return this.node(id).status().role;
  }

  leaders(): NodeId[] {
    return [...this.members.values()]
      .filter((m) => m.node.status().role === StateRole.Leader)
      .map((m) => m.id);
  }

  /** Proposes on `id` and settles; returns what propose returned. */
  propose(id: NodeId, text: string): ReturnType<RawNode['propose']> {
    const result = this.node(id).propose(new TextEncoder().encode(text));
    this.stabilize();
    return result;
  }

  /** The data of the normal, non-empty entries `id` applied, as text. */
  appliedTexts(id: NodeId): string[] {
    return this.member(id)
      .applied.filter((e) => e.type === EntryType.Normal && e.data.length > 0)
      .map((e) => new TextDecoder().decode(e.data));
  }
}

/** A bare Raft (no RawNode) over MemoryStorage, for rule-by-rule tests. */
export function newTestRaft(
  id: NodeId,
  voters: NodeId[],
  options: Partial<Omit<Config, 'id' | 'storage'>> & { storage?: MemoryStorage; learners?: NodeId[] } = {},
): Raft {
  const { storage, learners, ...rest } = options;
  const store = storage ?? MemoryStorage.withConfState({ voters, learners: learners ?? [] });
  return new Raft({
    electionTicks: 10,
    heartbeatTicks: 1,
    random: seededRandom(id),
    ...rest,
    id,
    storage: store,
  });
}

/** A message with the given fields, the rest empty. */
export function msg(type: MessageType, from: NodeId, to: NodeId, fields: Partial<Message> = {}): Message {
  return { ...emptyMessage(type, from, to), ...fields };
}

/** Entries with indexes 1..n (or from `first`) and the given terms. */
export function entriesWithTerms(terms: number[], first = 1): Entry[] {
  return terms.map((term, i) => ({
    term,
    index: first + i,
    type: EntryType.Normal,
    data: new Uint8Array(0),
  }));
}

/** A storage holding entries with the given terms (index 1..n), for a node's initial log. */
export function storageWithTerms(voters: NodeId[], terms: number[]): MemoryStorage {
  const s = MemoryStorage.withConfState({ voters, learners: [] });
  s.append(entriesWithTerms(terms));
  return s;
}
