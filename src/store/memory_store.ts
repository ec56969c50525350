// The replicated cluster state: in-memory tables with indexes, written only by applying
// committed transactions in Raft log order (apply), read locally (view), watched (watch), and
// serialized whole for Raft snapshots (snapshot/restore). Writers build a transaction against
// the local state (update) and hand its bytes to a Proposer: Raft in production, LocalProposer
// in tests. The apply step is deterministic: it uses only the entry's index and bytes.
import { ClusterError, conflict, invalidArgument, notFound } from '../common/errors';
import {
  decodeSnapshot,
  decodeTransaction,
  emptyTables,
  encodeSnapshot,
  encodeTransaction,
  type ActionKind,
  type StoreAction,
} from './codec';
import {
  TABLE_NAMES,
  anySpec,
  type AnyTableSpec,
  type DeepReadonly,
  type Frozen,
  type StoredObject,
  type TableIndexNames,
  type TableName,
  type TableTypes,
} from './tables';
import { Watcher, copyObject, thaw, type StoreEvent, type WatchOptions } from './watch';

/**
 * Largest encoded transaction update() proposes (SwarmKit's limit too): a Raft entry must stay
 * well inside a gRPC message and must not stall the log. Larger writes are split by the caller.
 */
export const MAX_TRANSACTION_BYTES = 1.5 * 1024 * 1024;
/** How many candidates an ambiguity error names. */
const MAX_NAMED_CANDIDATES = 5;

type AnyFrozen = DeepReadonly<StoredObject>;

/** What applying one entry did: the change events, or why the whole transaction was refused. */
export interface AppliedResult {
  index: number;
  events: readonly StoreEvent[];
  error?: ClusterError;
}

/**
 * Replicates a transaction and resolves once the local store has applied it, with the result
 * of that apply. RaftNode<AppliedResult> fits as is (its apply calls store.apply).
 */
export interface Proposer {
  propose(data: Uint8Array): Promise<AppliedResult | undefined>;
  /** Resolves once the local store reflects every write committed before the call (ReadIndex). */
  readIndex?(): Promise<void>;
}

export interface UpdateResult<R> {
  /** The Raft index of the transaction: the new version of every object it wrote. */
  index: number;
  events: readonly StoreEvent[];
  /** What the update function returned. */
  value: R;
}

export interface BatchResult<I> {
  /** The index of the last transaction written (the applied index if none was). */
  index: number;
  transactions: number;
  events: StoreEvent[];
  /** Items not written, with why: thrown by the item's function or refused at apply. */
  failed: { item: I; error: Error }[];
}

/** Changes updateEach packs into one transaction (SwarmKit's batches hold 200). */
export const DEFAULT_MAX_ACTIONS_PER_TRANSACTION = 500;

export interface MemoryStoreOptions {
  /** Wall clock for createdAt/updatedAt, read when a transaction is proposed (never in apply). */
  nowMs?: () => number;
}

// --------------------------------------------------------------------------------- tables

/** Where a reader's objects come from: the committed table, or that plus a transaction's writes. */
interface Source {
  get(id: string): AnyFrozen | undefined;
  /** Ids that may have this index key; the reader re-checks each object. */
  candidatesByIndex(index: string, key: string): Iterable<string>;
  candidatesByName(name: string): Iterable<string>;
  ids(): Iterable<string>;
}

const EMPTY: ReadonlySet<string> = new Set();

class Table implements Source {
  readonly objects = new Map<string, AnyFrozen>();
  private readonly indexes = new Map<string, Map<string, Set<string>>>();
  private readonly names = new Map<string, Set<string>>();

  constructor(readonly spec: AnyTableSpec) {
    for (const index of Object.keys(spec.indexes)) this.indexes.set(index, new Map());
  }

  get(id: string): AnyFrozen | undefined {
    return this.objects.get(id);
  }

  candidatesByIndex(index: string, key: string): ReadonlySet<string> {
    return this.indexes.get(index)?.get(key) ?? EMPTY;
  }

  candidatesByName(name: string): ReadonlySet<string> {
    return this.names.get(name) ?? EMPTY;
  }

  ids(): Iterable<string> {
    return this.objects.keys();
  }

  /** Ids holding `name` in the committed state. */
  holdersOf(name: string): ReadonlySet<string> {
    return this.names.get(name) ?? EMPTY;
  }

  /** Inserts or replaces; a replaced object keeps its place in iteration order. */
  put(obj: AnyFrozen): void {
    const old = this.objects.get(obj.id);
    if (old) this.unindex(old);
    this.objects.set(obj.id, obj);
    this.index(obj);
  }

  remove(id: string): void {
    const old = this.objects.get(id);
    if (!old) return;
    this.unindex(old);
    this.objects.delete(id);
  }

  private index(obj: AnyFrozen): void {
    for (const [index, keyOf] of Object.entries(this.spec.indexes)) {
      const key = keyOf(obj);
      if (key === '') continue;
      const byKey = this.indexes.get(index);
      if (!byKey) continue;
      addTo(byKey, key, obj.id);
    }
    for (const name of this.spec.names(obj)) addTo(this.names, name, obj.id);
  }

  private unindex(obj: AnyFrozen): void {
    for (const [index, keyOf] of Object.entries(this.spec.indexes)) {
      const byKey = this.indexes.get(index);
      if (byKey) removeFrom(byKey, keyOf(obj), obj.id);
    }
    for (const name of this.spec.names(obj)) removeFrom(this.names, name, obj.id);
  }
}

function addTo(map: Map<string, Set<string>>, key: string, id: string): void {
  let ids = map.get(key);
  if (!ids) map.set(key, (ids = new Set()));
  ids.add(id);
}

function removeFrom(map: Map<string, Set<string>>, key: string, id: string): void {
  const ids = map.get(key);
  if (!ids) return;
  ids.delete(id);
  if (ids.size === 0) map.delete(key);
}

type Tables = { [N in TableName]: Table };

function newTables(): Tables {
  return {
    nodes: new Table(anySpec('nodes')),
    services: new Table(anySpec('services')),
    tasks: new Table(anySpec('tasks')),
    networks: new Table(anySpec('networks')),
    clusters: new Table(anySpec('clusters')),
  };
}

/** Freezes an object graph so that it can be shared without copies. */
function deepFreeze<T>(value: T): DeepReadonly<T> {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    const source = value as Record<string, unknown>;
    for (const key in source) deepFreeze(source[key]);
  }
  return value as DeepReadonly<T>;
}

// -------------------------------------------------------------------------------- readers

/** Reads of one table. Every object returned is a fresh copy the caller may change. */
export class TableReader<N extends TableName> {
  constructor(
    protected readonly source: Source,
    protected readonly spec: AnyTableSpec,
  ) {}

  protected frozen(id: string): Frozen<N> | undefined {
    return this.source.get(id) as Frozen<N> | undefined;
  }

  get(id: string): TableTypes[N] | undefined {
    const obj = this.frozen(id);
    return obj === undefined ? undefined : thaw<TableTypes[N]>(obj);
  }

  /** Objects whose index key equals `key` (enums and numbers compare by their decimal form). */
  find(index: TableIndexNames[N], key: string | number): TableTypes[N][] {
    const wanted = String(key);
    const keyOf = this.spec.indexes[index];
    if (!keyOf) throw new Error(`store: table ${this.spec.name} has no index ${index}`);
    const found: TableTypes[N][] = [];
    for (const id of this.source.candidatesByIndex(index, wanted)) {
      const obj = this.frozen(id);
      if (obj !== undefined && keyOf(obj) === wanted) found.push(thaw<TableTypes[N]>(obj));
    }
    return found;
  }

  /** Every object, or those the predicate keeps (it sees the stored, frozen object: no copy). */
  list(predicate?: (obj: Frozen<N>) => boolean): TableTypes[N][] {
    const found: TableTypes[N][] = [];
    for (const id of this.source.ids()) {
      const obj = this.frozen(id);
      if (obj !== undefined && (!predicate || predicate(obj))) found.push(thaw<TableTypes[N]>(obj));
    }
    return found;
  }

  /**
   * Resolves what a user typed: a full id, then a name (for nodes also the hostname), then a
   * unique id prefix. Ambiguity is INVALID_ARGUMENT naming the candidates; no match NOT_FOUND.
   */
  lookup(ref: string): TableTypes[N] {
    const kind = this.spec.kind;
    if (ref === '') throw invalidArgument(`a ${kind} name or id is required`);
    const exact = this.frozen(ref);
    if (exact !== undefined) return thaw<TableTypes[N]>(exact);

    const named = this.matching(this.source.candidatesByName(ref), (obj) =>
      this.spec.names(obj).includes(ref),
    );
    if (named.length === 1 && named[0]) return thaw<TableTypes[N]>(named[0] as Frozen<N>);
    if (named.length > 1) {
      throw invalidArgument(
        `${kind} name '${ref}' is ambiguous: it matches ${this.describe(named)}; use an id`,
        {
          kind,
          ref,
          candidates: named.map((o) => o.id),
        },
      );
    }

    const prefixed = this.matching(this.source.ids(), (obj) => obj.id.startsWith(ref));
    if (prefixed.length === 1 && prefixed[0]) return thaw<TableTypes[N]>(prefixed[0] as Frozen<N>);
    if (prefixed.length > 1) {
      throw invalidArgument(
        `${kind} id prefix '${ref}' is ambiguous: it matches ${this.describe(prefixed)}; type more of the id`,
        { kind, ref, candidates: prefixed.map((o) => o.id) },
      );
    }
    throw notFound(kind, ref);
  }

  private matching(ids: Iterable<string>, keep: (obj: AnyFrozen) => boolean): AnyFrozen[] {
    const seen = new Set<string>();
    const found: AnyFrozen[] = [];
    for (const id of ids) {
      if (seen.has(id)) continue;
      seen.add(id);
      const obj = this.source.get(id);
      if (obj !== undefined && keep(obj)) found.push(obj);
    }
    return found;
  }

  private describe(objects: AnyFrozen[]): string {
    const shown = objects.slice(0, MAX_NAMED_CANDIDATES).map((o) => {
      const name = this.spec.names(o)[0];
      return name ? `${o.id} (${name})` : o.id;
    });
    const more = objects.length - shown.length;
    return shown.join(', ') + (more > 0 ? ` and ${more} more` : '');
  }
}

export type ReadTx = { readonly [N in TableName]: TableReader<N> } & {
  /** The Raft index of the last transaction applied to this store. */
  readonly appliedIndex: number;
};

// ------------------------------------------------------------------------------- writers

interface Pending {
  kind: ActionKind;
  /** The committed version the transaction read (0 for a create). */
  version: number;
  /** What the transaction sees now; undefined once deleted. */
  object: AnyFrozen | undefined;
}

/** A table as one transaction sees it: the committed objects under its own writes. */
/** Undo steps of a transaction's changes, newest last, so that part of it can be rolled back. */
type Journal = (() => void)[];

class PendingTable implements Source {
  private readonly pending = new Map<string, Pending>();

  constructor(
    readonly base: Table,
    private readonly journal: Journal,
  ) {}

  get changes(): ReadonlyMap<string, Pending> {
    return this.pending;
  }

  /** Records a change (undefined: forget the id's change), journaled for rollback. */
  set(id: string, change: Pending | undefined): void {
    const previous = this.pending.get(id);
    this.journal.push(() => {
      if (previous) this.pending.set(id, previous);
      else this.pending.delete(id);
    });
    if (change) this.pending.set(id, change);
    else this.pending.delete(id);
  }

  get(id: string): AnyFrozen | undefined {
    const pending = this.changes.get(id);
    return pending ? pending.object : this.base.get(id);
  }

  candidatesByIndex(index: string, key: string): Iterable<string> {
    return this.withChanges(this.base.candidatesByIndex(index, key));
  }

  candidatesByName(name: string): Iterable<string> {
    return this.withChanges(this.base.candidatesByName(name));
  }

  /**
   * Refuses a written object whose unique name another object holds once the transaction is
   * complete (so one transaction may free a name and reuse it, in either order).
   */
  checkNames(): void {
    const spec = this.base.spec;
    if (!spec.uniqueName) return;
    for (const { object } of this.changes.values()) {
      const name = object && spec.names(object)[0];
      if (!object || name === undefined) continue;
      for (const id of this.candidatesByName(name)) {
        const other = id === object.id ? undefined : this.get(id);
        if (other !== undefined && spec.names(other)[0] === name) throw nameTaken(spec.kind, name, id);
      }
    }
  }

  private *withChanges(base: ReadonlySet<string>): Iterable<string> {
    yield* base;
    for (const id of this.changes.keys()) if (!base.has(id)) yield id;
  }

  *ids(): Iterable<string> {
    yield* this.base.ids();
    for (const [id, pending] of this.changes) if (pending.kind === 'create') yield id;
  }
}

/** Reads and writes of one table inside update(). Writes become actions of the transaction. */
export class TableWriter<N extends TableName> extends TableReader<N> {
  constructor(
    private readonly pending: PendingTable,
    spec: AnyTableSpec,
    private readonly isOpen: () => boolean,
  ) {
    super(pending, spec);
  }

  /** Adds a new object; `obj.id` must be set (see newId) and unused, its name free. */
  create(obj: TableTypes[N]): void {
    this.checkOpen();
    const kind = this.spec.kind;
    if (!obj.id) throw invalidArgument(`a new ${kind} needs an id`);
    if (this.pending.get(obj.id) !== undefined) {
      throw new ClusterError('ALREADY_EXISTS', `${kind} ${obj.id} already exists`, { kind, id: obj.id });
    }
    if (this.pending.changes.get(obj.id)?.kind === 'delete') {
      throw invalidArgument(
        `${kind} ${obj.id} was deleted in this transaction and cannot be created again in it`,
      );
    }
    const frozen = deepFreeze({ ...copyObject(obj), meta: { version: 0 } }) as AnyFrozen;
    this.pending.set(obj.id, { kind: 'create', version: 0, object: frozen });
  }

  /** Replaces an object; `obj.meta.version` must be the version read (else CONFLICT). */
  update(obj: TableTypes[N]): void {
    this.checkOpen();
    const current = this.current(obj.id);
    const readVersion = obj.meta?.version ?? 0;
    const currentVersion = current.meta?.version ?? 0;
    if (readVersion !== currentVersion) throw conflict(this.spec.kind, obj.id, readVersion, currentVersion);
    // The transaction keeps seeing the version it read, so that it may update the object again.
    const frozen = deepFreeze({ ...copyObject(obj), meta: current.meta }) as AnyFrozen;
    const earlier = this.pending.changes.get(obj.id);
    this.pending.set(obj.id, {
      kind: earlier?.kind ?? 'update',
      version: earlier?.version ?? currentVersion,
      object: frozen,
    });
  }

  /** Removes an object, carrying the version this transaction sees it at. */
  delete(id: string): void {
    this.checkOpen();
    const current = this.current(id);
    const earlier = this.pending.changes.get(id);
    if (earlier?.kind === 'create') {
      this.pending.set(id, undefined);
      return;
    }
    this.pending.set(id, {
      kind: 'delete',
      version: earlier?.version ?? current.meta?.version ?? 0,
      object: undefined,
    });
  }

  private current(id: string): AnyFrozen {
    const current = this.pending.get(id);
    if (current === undefined) throw notFound(this.spec.kind, id);
    return current;
  }

  private checkOpen(): void {
    if (!this.isOpen()) throw new Error('store: a transaction was used after its update function returned');
  }
}

function nameTaken(kind: string, name: string, holderId: string): ClusterError {
  return new ClusterError(
    'ALREADY_EXISTS',
    `${kind} '${name}' already exists (id ${holderId}): choose another name`,
    {
      kind,
      name,
      id: holderId,
    },
  );
}

export type WriteTx = { readonly [N in TableName]: TableWriter<N> };

/** One transaction being built: a pending view of every table and its writers. */
class TransactionBuilder {
  readonly tx: WriteTx;
  private readonly pendings: PendingTable[];
  private readonly journal: Journal = [];
  private open = true;

  constructor(tables: Tables) {
    this.pendings = TABLE_NAMES.map((name) => new PendingTable(tables[name], this.journal));
    const isOpen = () => this.open;
    const writer = <N extends TableName>(i: number): TableWriter<N> => {
      const pending = this.pendings[i];
      if (!pending) throw new Error('store: table list changed');
      return new TableWriter<N>(pending, pending.base.spec, isOpen);
    };
    this.tx = {
      nodes: writer<'nodes'>(0),
      services: writer<'services'>(1),
      tasks: writer<'tasks'>(2),
      networks: writer<'networks'>(3),
      clusters: writer<'clusters'>(4),
    };
  }

  close(): void {
    this.open = false;
  }

  /** Changes pending over all tables. */
  get size(): number {
    let size = 0;
    for (const pending of this.pendings) size += pending.changes.size;
    return size;
  }

  savepoint(): number {
    return this.journal.length;
  }

  /** Undoes every change made since the savepoint. */
  rollbackTo(savepoint: number): void {
    while (this.journal.length > savepoint) this.journal.pop()?.();
  }

  checkNames(): void {
    for (const pending of this.pendings) pending.checkNames();
  }

  actions(): StoreAction[] {
    const actions: StoreAction[] = [];
    for (const pending of this.pendings) {
      const table = pending.base.spec.name;
      for (const [id, change] of pending.changes) {
        if (change.kind === 'delete' || change.object === undefined) {
          actions.push({ kind: 'delete', table, id, version: change.version });
        } else {
          // meta is the apply step's to set; only the read version travels.
          const object = { ...change.object, meta: undefined } as unknown as TableTypes[typeof table];
          actions.push({ kind: change.kind, table, version: change.version, object } as StoreAction);
        }
      }
    }
    return actions;
  }
}

// --------------------------------------------------------------------------------- store

export class MemoryStore {
  private tables = newTables();
  private applied = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly nowMs: () => number;

  constructor(
    private proposer?: Proposer,
    options: MemoryStoreOptions = {},
  ) {
    this.nowMs = options.nowMs ?? Date.now;
  }

  /** Set once the Raft node exists (it needs the store as its state machine first). */
  setProposer(proposer: Proposer): void {
    this.proposer = proposer;
  }

  /** The Raft index of the last entry applied (0 for an empty store). */
  get appliedIndex(): number {
    return this.applied;
  }

  /** Local reads. Synchronous: no transaction can apply in the middle of `fn`. */
  view<R>(fn: (tx: ReadTx) => R): R {
    const t = this.tables;
    const tx: ReadTx = {
      nodes: new TableReader<'nodes'>(t.nodes, t.nodes.spec),
      services: new TableReader<'services'>(t.services, t.services.spec),
      tasks: new TableReader<'tasks'>(t.tasks, t.tasks.spec),
      networks: new TableReader<'networks'>(t.networks, t.networks.spec),
      clusters: new TableReader<'clusters'>(t.clusters, t.clusters.spec),
      appliedIndex: this.applied,
    };
    return fn(tx);
  }

  /**
   * Builds a transaction from the local state with `fn` (synchronous; it may throw to abort),
   * proposes it, and resolves once it is applied here with the new versions, or rejects with
   * the apply's error (CONFLICT when an object changed since it was read). A transaction
   * without writes is not proposed.
   */
  async update<R>(fn: (tx: WriteTx) => R): Promise<UpdateResult<R>> {
    const builder = new TransactionBuilder(this.tables);
    let value: R;
    try {
      value = fn(builder.tx);
    } finally {
      builder.close();
    }
    if (isPromiseLike(value)) {
      throw new Error(
        'store: the update function must be synchronous (it read state that may change while it awaits)',
      );
    }
    const result = await this.commit(builder);
    return { index: result?.index ?? this.applied, events: result?.events ?? [], value };
  }

  /**
   * Writes many items, each with `fn`, packing up to `maxActionsPerTransaction` changes into
   * each transaction (the hot paths' batching: the scheduler's assignments, the dispatcher's
   * status updates, the orchestrator's new tasks). An item whose `fn` throws is skipped and
   * reported; when a whole transaction is refused at apply (one stale item), its items are
   * retried one per transaction so that only the stale ones fail. Never rejects for an item.
   */
  async updateEach<I>(
    items: Iterable<I>,
    fn: (tx: WriteTx, item: I) => void,
    options: { maxActionsPerTransaction?: number } = {},
  ): Promise<BatchResult<I>> {
    const maxActions = options.maxActionsPerTransaction ?? DEFAULT_MAX_ACTIONS_PER_TRANSACTION;
    if (!(maxActions >= 1)) throw new RangeError(`maxActionsPerTransaction must be ≥ 1, got ${maxActions}`);
    const outcome: BatchResult<I> = { index: this.applied, transactions: 0, events: [], failed: [] };
    let builder = new TransactionBuilder(this.tables);
    let chunk: I[] = [];

    const retryAlone = async (item: I) => {
      try {
        const result = await this.update((tx) => fn(tx, item));
        if (result.events.length > 0) {
          outcome.transactions++;
          outcome.index = result.index;
          outcome.events.push(...result.events);
        }
      } catch (error) {
        outcome.failed.push({ item, error: asError(error) });
      }
    };
    const flush = async () => {
      const items = chunk;
      const full = builder;
      chunk = [];
      full.close();
      if (items.length === 0) return;
      let result: AppliedResult | undefined;
      try {
        result = await this.commit(full);
      } catch (error) {
        if (items.length === 1 && items[0] !== undefined) {
          outcome.failed.push({ item: items[0], error: asError(error) });
        } else {
          for (const item of items) await retryAlone(item);
        }
        return;
      }
      if (result) {
        outcome.transactions++;
        outcome.index = result.index;
        outcome.events.push(...result.events);
      }
    };
    const flushAndRenew = async () => {
      try {
        await flush();
      } finally {
        // Made after the await: a restore in between replaces the tables a builder reads.
        builder = new TransactionBuilder(this.tables);
      }
    };

    for (const item of items) {
      const savepoint = builder.savepoint();
      try {
        const value: unknown = fn(builder.tx, item);
        if (isPromiseLike(value)) throw new Error('store: the updateEach function must be synchronous');
      } catch (error) {
        builder.rollbackTo(savepoint);
        outcome.failed.push({ item, error: asError(error) });
        continue;
      }
      chunk.push(item);
      if (builder.size >= maxActions) await flushAndRenew();
    }
    await flush();
    return outcome;
  }

  /** Proposes a closed builder's changes; undefined when it wrote nothing. */
  private async commit(builder: TransactionBuilder): Promise<AppliedResult | undefined> {
    builder.checkNames();
    const actions = builder.actions();
    if (actions.length === 0) return undefined;
    const data = encodeTransaction({ timestampMs: this.nowMs(), actions });
    if (data.length > MAX_TRANSACTION_BYTES) {
      throw new ClusterError(
        'RESOURCE_EXHAUSTED',
        `transaction of ${data.length} bytes exceeds the limit of ${MAX_TRANSACTION_BYTES} bytes: write in smaller batches`,
        { bytes: data.length, limit: MAX_TRANSACTION_BYTES },
      );
    }
    if (!this.proposer) {
      throw new ClusterError('UNAVAILABLE', 'the store cannot be written: no Raft node yet');
    }
    const result = await this.proposer.propose(data);
    if (!result) {
      throw new ClusterError(
        'INTERNAL',
        'the transaction was committed but no result came back from applying it',
      );
    }
    if (result.error) throw result.error;
    return result;
  }

  /**
   * A linearizable read: waits until this store has applied every write committed before the
   * call (Raft ReadIndex through the proposer), then reads locally. Without a proposer that
   * can do it (LocalProposer applies synchronously), it is a local read.
   */
  async linearizableView<R>(fn: (tx: ReadTx) => R): Promise<R> {
    if (this.proposer?.readIndex) await this.proposer.readIndex();
    return this.view(fn);
  }

  /**
   * Applies a committed transaction: every change or none. Runs on every manager in log order
   * and must give the same outcome everywhere, so it reads nothing but its arguments and the
   * state. A refused transaction still consumes its index.
   */
  apply(index: number, data: Uint8Array): AppliedResult {
    if (!(Number.isSafeInteger(index) && index > this.applied)) {
      throw new Error(
        `store invariant: apply index ${index} must exceed the last applied index ${this.applied}`,
      );
    }
    let txn;
    try {
      txn = decodeTransaction(data);
    } catch (err) {
      // Deterministic on every manager, so refusing the entry keeps them identical.
      this.applied = index;
      const message = err instanceof Error ? err.message : String(err);
      return {
        index,
        events: [],
        error: new ClusterError('INTERNAL', `unreadable store transaction at index ${index}: ${message}`),
      };
    }

    const timestamp = new Date(txn.timestampMs);
    const undo: (() => void)[] = [];
    const events: StoreEvent[] = [];
    const named: { table: Table; obj: AnyFrozen }[] = [];
    let error: ClusterError | undefined;
    for (const action of txn.actions) {
      const table = this.tables[action.table];
      const kind = table.spec.kind;
      const id = action.kind === 'delete' ? action.id : action.object.id;
      const current = table.get(id);
      if (action.kind === 'create') {
        if (current) {
          error = new ClusterError('ALREADY_EXISTS', `${kind} ${id} already exists`, { kind, id });
          break;
        }
        const obj = deepFreeze({
          ...action.object,
          meta: { version: index, createdAt: timestamp, updatedAt: timestamp },
        }) as AnyFrozen;
        table.put(obj);
        undo.push(() => table.remove(id));
        named.push({ table, obj });
        events.push({ kind: 'create', table: action.table, object: obj, version: index } as StoreEvent);
        continue;
      }
      if (!current) {
        error = notFound(kind, id);
        break;
      }
      const currentVersion = current.meta?.version ?? 0;
      if (currentVersion !== action.version) {
        error = conflict(kind, id, action.version, currentVersion);
        break;
      }
      if (!(index > currentVersion)) {
        throw new Error(
          `store invariant: ${kind} ${id} at version ${currentVersion} cannot move to ${index}`,
        );
      }
      if (action.kind === 'update') {
        const obj = deepFreeze({
          ...action.object,
          meta: { version: index, createdAt: current.meta?.createdAt, updatedAt: timestamp },
        }) as AnyFrozen;
        table.put(obj);
        undo.push(() => table.put(current));
        named.push({ table, obj });
        events.push({
          kind: 'update',
          table: action.table,
          object: obj,
          oldObject: current,
          version: index,
        } as StoreEvent);
      } else {
        table.remove(id);
        undo.push(() => table.put(current));
        events.push({ kind: 'delete', table: action.table, object: current, version: index } as StoreEvent);
      }
    }
    // Names are checked on the final state, so one transaction may free a name and reuse it.
    if (!error) {
      for (const { table, obj } of named) {
        if (!table.spec.uniqueName) continue;
        const name = table.spec.names(obj)[0];
        if (name === undefined) continue;
        const holders = table.holdersOf(name);
        if (holders.size > 1) {
          const other = [...holders].find((id) => id !== obj.id) ?? obj.id;
          error = nameTaken(table.spec.kind, name, other);
          break;
        }
      }
    }
    this.applied = index;
    if (error) {
      for (let i = undo.length - 1; i >= 0; i--) undo[i]?.();
      return { index, events: [], error };
    }
    for (const watcher of this.watchers) watcher.push(events);
    return { index, events };
  }

  /** Change events of every transaction applied from now on, in apply order. */
  watch(options: WatchOptions = {}): Watcher {
    const watcher = new Watcher(options, (w) => this.watchers.delete(w));
    if (!watcher.closed) this.watchers.add(watcher);
    return watcher;
  }

  /**
   * Reads the state and starts watching at the same point: no transaction can fall between
   * the two (both run in one synchronous step).
   */
  viewAndWatch<R>(fn: (tx: ReadTx) => R, options: WatchOptions = {}): { value: R; watcher: Watcher } {
    const value = this.view(fn);
    return { value, watcher: this.watch(options) };
  }

  /** The whole store and its applied index, for a Raft snapshot. Objects are sorted by id. */
  snapshot(): Uint8Array {
    const tables = emptyTables();
    for (const name of TABLE_NAMES) {
      const objects = [...this.tables[name].objects.values()].sort((a, b) =>
        a.id < b.id ? -1 : a.id > b.id ? 1 : 0,
      );
      (tables[name] as unknown[]).push(...objects);
    }
    return encodeSnapshot({ appliedIndex: this.applied, tables });
  }

  /**
   * Replaces the whole state with a snapshot's. Watchers stay open and receive the difference
   * as ordinary events (version = the snapshot's index), so they stay consistent without
   * re-reading. A snapshot older than the state is refused.
   */
  restore(data: Uint8Array): void {
    const snapshot = decodeSnapshot(data);
    if (snapshot.appliedIndex < this.applied) {
      throw new Error(
        `store invariant: snapshot at index ${snapshot.appliedIndex} is older than applied index ${this.applied}`,
      );
    }
    const next = newTables();
    for (const name of TABLE_NAMES) {
      for (const obj of snapshot.tables[name] as StoredObject[])
        next[name].put(deepFreeze<StoredObject>(obj));
    }
    const events = this.watchers.size > 0 ? diff(this.tables, next, snapshot.appliedIndex) : [];
    this.tables = next;
    this.applied = snapshot.appliedIndex;
    if (events.length > 0) for (const watcher of this.watchers) watcher.push(events);
  }

  /** The store as Raft's state machine (structurally RaftNode's StateMachine<AppliedResult>). */
  asStateMachine(): {
    apply(entry: { index: number; data: Uint8Array }): AppliedResult;
    snapshot(): Uint8Array;
    restore(data: Uint8Array): void;
  } {
    return {
      apply: (entry) => this.apply(entry.index, entry.data),
      snapshot: () => this.snapshot(),
      restore: (data) => this.restore(data),
    };
  }
}

/** Events turning `from` into `to`; an object whose version is unchanged is unchanged. */
function diff(from: Tables, to: Tables, version: number): StoreEvent[] {
  const events: StoreEvent[] = [];
  for (const table of TABLE_NAMES) {
    const before = from[table].objects;
    const after = to[table].objects;
    for (const [id, obj] of after) {
      const old = before.get(id);
      if (!old) events.push({ kind: 'create', table, object: obj, version } as StoreEvent);
      else if ((old.meta?.version ?? 0) !== (obj.meta?.version ?? 0)) {
        events.push({ kind: 'update', table, object: obj, oldObject: old, version } as StoreEvent);
      }
    }
    for (const [id, old] of before) {
      if (!after.has(id)) events.push({ kind: 'delete', table, object: old, version } as StoreEvent);
    }
  }
  return events;
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}

function isPromiseLike(value: unknown): boolean {
  return (
    typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function'
  );
}
