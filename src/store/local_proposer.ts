// An in-process Proposer for tests and single-process tools: it plays the part of a Raft log
// with one writer. Each proposal gets the next index and is applied to every attached store in
// the same order, so several stores stand for several managers that must end identical.
import type { AppliedResult, MemoryStore, Proposer } from './memory_store';

export interface LoggedEntry {
  index: number;
  data: Uint8Array;
}

export class LocalProposer implements Proposer {
  private readonly stores: MemoryStore[] = [];
  /** Every proposed entry, in order, so a test can replay the log into another store. */
  readonly log: LoggedEntry[] = [];
  private lastIndex: number;

  /** `firstIndex - 1` is taken as already used: Raft's first entries are not the store's. */
  constructor(firstIndex = 1) {
    this.lastIndex = firstIndex - 1;
  }

  /** The first store attached is the one whose apply result propose() returns. */
  attach(store: MemoryStore): this {
    this.stores.push(store);
    store.setProposer(this);
    return this;
  }

  /** Leaves an index unused, as a Raft conf change or empty entry would. */
  skipIndex(): void {
    this.lastIndex++;
  }

  /** Every proposal is applied before propose() resolves: local reads are already linearizable. */
  readIndex(): Promise<void> {
    return Promise.resolve();
  }

  async propose(data: Uint8Array): Promise<AppliedResult | undefined> {
    // Asynchronous as Raft is: the caller's update() continues after other work may have run.
    await Promise.resolve();
    const index = ++this.lastIndex;
    this.log.push({ index, data });
    let first: AppliedResult | undefined;
    for (const store of this.stores) {
      const result = store.apply(index, data);
      first ??= result;
    }
    return first;
  }
}
