// Change events and the per-watcher queue. A watcher is an async iterator over the events of
// applied transactions, in apply order. Its queue is bounded: a watcher that falls this far
// behind is closed with an error (it must re-read and watch again) instead of growing memory.
import { ClusterError } from '../common/errors';
import type { ActionKind } from './codec';
import type { DeepReadonly, TableName, TableTypes } from './tables';

/** Events a watcher may hold before it is closed for falling behind. */
export const DEFAULT_WATCH_QUEUE_LIMIT = 10_000;

/** A writable copy of a frozen object (for example an event's object, to update it). */
export function thaw<T>(frozen: DeepReadonly<T>): T {
  return copyDeep(frozen) as T;
}

/** A deep copy of a stored object or of one a caller hands in. */
export function copyObject<T>(value: T): T {
  return copyDeep(value) as T;
}

// Stored objects are plain data (objects, arrays, Dates, primitives) from the generated codecs.
// A hand-written copy is about ten times faster than structuredClone on frozen objects, and
// reads copy every object they return.
function copyDeep(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (Array.isArray(value)) {
    const items: unknown[] = new Array<unknown>(value.length);
    for (let i = 0; i < value.length; i++) items[i] = copyDeep(value[i]);
    return items;
  }
  if (value instanceof Date) return new Date(value.getTime());
  // for-in rather than Object.entries: no array per object (reads copy a lot).
  const source = value as Record<string, unknown>;
  const copy: Record<string, unknown> = {};
  for (const key in source) copy[key] = copyDeep(source[key]);
  return copy;
}

/**
 * One change of an applied transaction. `version` is the transaction's Raft index (the new
 * meta.version of a created or updated object). For a delete, `object` is the object as it was.
 */
export type StoreEvent = {
  [N in TableName]: {
    kind: ActionKind;
    table: N;
    object: DeepReadonly<TableTypes[N]>;
    /** The object before an update. */
    oldObject?: DeepReadonly<TableTypes[N]>;
    version: number;
  };
}[TableName];

export interface WatchOptions {
  /** Only events of these tables; all tables when left out. */
  tables?: readonly TableName[];
  /** Ends the iteration (done) when it fires. */
  signal?: AbortSignal;
  /** Events the watcher may hold before it is closed with RESOURCE_EXHAUSTED. */
  queueLimit?: number;
}

// The queue is compacted once this many consumed slots sit at its head.
const COMPACT_AFTER = 1024;

export class Watcher implements AsyncIterableIterator<StoreEvent> {
  private queue: StoreEvent[] = [];
  private head = 0;
  private waiting: { resolve(r: IteratorResult<StoreEvent>): void; reject(e: Error): void } | undefined;
  private done = false;
  private failure: Error | undefined;
  private readonly tables: ReadonlySet<TableName> | undefined;
  private readonly queueLimit: number;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.close();

  constructor(
    options: WatchOptions,
    private readonly onClose: (w: Watcher) => void,
  ) {
    this.tables = options.tables ? new Set(options.tables) : undefined;
    this.queueLimit = options.queueLimit ?? DEFAULT_WATCH_QUEUE_LIMIT;
    if (!(this.queueLimit >= 1))
      throw new RangeError(`watch queue limit must be ≥ 1, got ${this.queueLimit}`);
    if (options.signal?.aborted) {
      this.done = true;
    } else {
      options.signal?.addEventListener('abort', this.onAbort, { once: true });
      this.signal = options.signal;
    }
  }

  get closed(): boolean {
    return this.done;
  }

  /** Called by the store with the events of one applied transaction. */
  push(events: readonly StoreEvent[]): void {
    if (this.done) return;
    for (const event of events) {
      if (this.tables && !this.tables.has(event.table)) continue;
      if (this.waiting) {
        const waiting = this.waiting;
        this.waiting = undefined;
        waiting.resolve({ value: event, done: false });
        continue;
      }
      if (this.queue.length - this.head >= this.queueLimit) {
        this.fail(
          new ClusterError(
            'RESOURCE_EXHAUSTED',
            `watcher fell ${this.queueLimit} events behind (the queue limit) and was closed: read again and watch again`,
            { queueLimit: this.queueLimit },
          ),
        );
        return;
      }
      this.queue.push(event);
    }
  }

  /** Ends the iteration; with an error, the next read (after queued events are dropped) throws it. */
  close(error?: Error): void {
    if (error) this.fail(error);
    else this.finish();
  }

  private fail(error: Error): void {
    if (this.done) return;
    this.failure = error;
    this.finish();
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.queue = [];
    this.head = 0;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onClose(this);
    const waiting = this.waiting;
    this.waiting = undefined;
    if (!waiting) return;
    if (this.failure) {
      const failure = this.failure;
      this.failure = undefined;
      waiting.reject(failure);
    } else {
      waiting.resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<StoreEvent>> {
    if (this.head < this.queue.length) {
      const value = this.queue[this.head];
      this.head++;
      if (this.head >= COMPACT_AFTER && this.head * 2 >= this.queue.length) {
        this.queue = this.queue.slice(this.head);
        this.head = 0;
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.done) {
      // The error is thrown once; later reads see a plain end.
      const failure = this.failure;
      this.failure = undefined;
      return failure ? Promise.reject(failure) : Promise.resolve({ value: undefined, done: true });
    }
    if (this.waiting) return Promise.reject(new Error('watcher: next() called while a read is pending'));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
    });
  }

  /** `break` out of a for-await loop lands here. */
  return(): Promise<IteratorResult<StoreEvent>> {
    this.failure = undefined;
    this.finish();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
