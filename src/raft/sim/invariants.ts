// The safety properties of Raft (Figure 3 of the paper) checked over what the simulator's
// driver observes: every Ready persisted, every leader seen, every entry applied. Checks are
// incremental (each observation is compared with a global record) so they can run after every
// step of every run.

import type { Entry, NodeId, Storage } from '../index';

export type InvariantName =
  /** At most one leader per term, over the whole run. */
  | 'election-safety'
  /** A leader never overwrites or deletes entries in its log while it leads. */
  | 'leader-append-only'
  /** Two logs with an entry of equal index and term are identical up to it. */
  | 'log-matching'
  /** A committed entry is in the log of every leader of a later term. */
  | 'leader-completeness'
  /** No two nodes apply different entries (or hold different snapshots) at one index. */
  | 'state-machine-safety'
  /** An entry once committed stays committed and on disk, across crashes. */
  | 'committed-durable'
  /** Term and commit never go back, applied advances one entry at a time. */
  | 'monotonic'
  /** A node votes for at most one candidate per term. */
  | 'vote-once'
  /** A restarted node comes back with exactly the state its disk acknowledged. */
  | 'durability'
  /** Client reads and writes form a linearizable history. */
  | 'linearizability'
  /** Once faults heal, a leader exists and a new write commits everywhere in bounded time. */
  | 'liveness'
  /** The core threw (its own assertions or an unexpected error). */
  | 'core-error';

export const ALL_INVARIANTS: readonly InvariantName[] = [
  'election-safety',
  'leader-append-only',
  'log-matching',
  'leader-completeness',
  'state-machine-safety',
  'committed-durable',
  'monotonic',
  'vote-once',
  'durability',
  'linearizability',
  'liveness',
  'core-error',
];

/** The properties stated in the Raft paper, plus what a client sees. */
export const PAPER_INVARIANTS: readonly InvariantName[] = [
  'election-safety',
  'leader-append-only',
  'log-matching',
  'leader-completeness',
  'state-machine-safety',
  'linearizability',
];

export class InvariantViolation extends Error {
  constructor(
    readonly invariant: InvariantName,
    readonly detail: string,
    readonly seed: number,
    readonly step: number,
    readonly trace: readonly string[],
  ) {
    super(`${invariant} violated at seed ${seed} step ${step}: ${detail}`);
    this.name = 'InvariantViolation';
  }
}

/** Raised through this callback; the simulator adds the seed, step and trace. */
export type Fail = (invariant: InvariantName, detail: string) => never;

/** An entry's identity: two entries are the same iff their fingerprints are equal. */
export function fingerprint(e: Entry): string {
  return `${e.term}|${e.type}|${Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength).toString('latin1')}`;
}

interface CommittedEntry {
  term: number;
  fp: string;
  /** An upper bound on the term in which it was committed (the reporter's term then). */
  commitTerm: number;
}

export class SafetyChecker {
  private readonly leaderOfTerm = new Map<number, NodeId>();
  /** Per (index, term): the entry and the term of its predecessor, the first time seen. */
  private readonly entryAt = new Map<string, { fp: string; prevTerm: number }>();
  private readonly committed: (CommittedEntry | undefined)[] = [];
  private maxCommitted = 0;
  private readonly applied: (string | undefined)[] = [];
  private readonly snapshots = new Map<number, string>();
  private leadersSeen = 0;

  constructor(
    private readonly enabled: ReadonlySet<InvariantName>,
    private readonly fail: Fail,
  ) {}

  get leaderCount(): number {
    return this.leadersSeen;
  }

  get highestCommitted(): number {
    return this.maxCommitted;
  }

  private check(invariant: InvariantName, ok: boolean, detail: () => string): void {
    if (!ok && this.enabled.has(invariant)) this.fail(invariant, detail());
  }

  /** `id` is leader of `term`, with `log` persisted: first sighting checks completeness. */
  leader(id: NodeId, term: number, log: Storage): void {
    const known = this.leaderOfTerm.get(term);
    this.check(
      'election-safety',
      known === undefined || known === id,
      () => `nodes ${known} and ${id} both lead term ${term}`,
    );
    if (known !== undefined) return;
    this.leaderOfTerm.set(term, id);
    this.leadersSeen++;
    const first = log.firstIndex();
    const last = log.lastIndex();
    // Entries below `first` are in the leader's snapshot, which the snapshot checks cover.
    for (let i = Math.max(1, first); i <= this.maxCommitted; i++) {
      const c = this.committed[i];
      if (c === undefined || c.commitTerm >= term) continue;
      this.check(
        'leader-completeness',
        i <= last,
        () => `leader ${id} of term ${term} lacks committed entry ${i} (last index ${last})`,
      );
      if (i > last) return;
      const t = log.term(i);
      this.check(
        'leader-completeness',
        t === c.term,
        () => `leader ${id} of term ${term} has term ${t} at committed index ${i}, committed term ${c.term}`,
      );
      if (t === c.term) {
        const fp = fingerprint(log.entries(i, i + 1, Number.POSITIVE_INFINITY)[0]);
        this.check(
          'leader-completeness',
          fp === c.fp,
          () => `leader ${id} of term ${term} holds a different entry at committed index ${i}`,
        );
      }
    }
  }

  /** `entries` were just appended to `id`'s log (now `log`). */
  appended(id: NodeId, entries: readonly Entry[], log: Storage): void {
    const first = log.firstIndex();
    for (const e of entries) {
      if (e.index < first) continue;
      const key = `${e.index}:${e.term}`;
      const fp = fingerprint(e);
      const prevTerm = log.term(e.index - 1);
      const seen = this.entryAt.get(key);
      if (seen === undefined) {
        this.entryAt.set(key, { fp, prevTerm });
        continue;
      }
      this.check(
        'log-matching',
        seen.fp === fp,
        () => `node ${id} holds a different entry at index ${e.index} term ${e.term}`,
      );
      this.check(
        'log-matching',
        seen.prevTerm === prevTerm,
        () =>
          `node ${id} has entry ${e.index} term ${e.term} after term ${prevTerm}, another log after term ${seen.prevTerm}`,
      );
    }
  }

  /** `id`, in `term`, now knows entries up to `to` committed (it knew up to `from - 1`). */
  committedUpTo(id: NodeId, term: number, from: number, to: number, log: Storage): void {
    const first = log.firstIndex();
    for (let i = Math.max(from, first); i <= to; i++) {
      const e = log.entries(i, i + 1, Number.POSITIVE_INFINITY)[0];
      const fp = fingerprint(e);
      const c = this.committed[i];
      if (c === undefined) {
        this.committed[i] = { term: e.term, fp, commitTerm: term };
        if (i > this.maxCommitted) this.maxCommitted = i;
        continue;
      }
      this.check(
        'committed-durable',
        c.fp === fp,
        () =>
          `node ${id} commits a different entry at index ${i} (term ${e.term}, first committed with term ${c.term})`,
      );
      if (term < c.commitTerm) c.commitTerm = term;
    }
  }

  /** A restarted node's disk must still hold the committed entries it had acknowledged. */
  restarted(id: NodeId, log: Storage): void {
    const commit = log.initialState().hardState.commit;
    const last = log.lastIndex();
    this.check(
      'committed-durable',
      commit <= last,
      () => `node ${id} restarts with commit ${commit} beyond its last index ${last}`,
    );
    for (let i = log.firstIndex(); i <= Math.min(commit, last); i++) {
      const c = this.committed[i];
      if (c === undefined) continue;
      const fp = fingerprint(log.entries(i, i + 1, Number.POSITIVE_INFINITY)[0]);
      this.check(
        'committed-durable',
        fp === c.fp,
        () => `node ${id} restarts with a different entry at committed index ${i}`,
      );
    }
  }

  /** `id` applied `entry` to its state machine; true when no node had applied that index. */
  appliedEntry(id: NodeId, entry: Entry): boolean {
    const fp = fingerprint(entry);
    const known = this.applied[entry.index];
    if (known === undefined) {
      this.applied[entry.index] = fp;
      return true;
    }
    this.check(
      'state-machine-safety',
      known === fp,
      () => `node ${id} applies a different entry at index ${entry.index} (term ${entry.term})`,
    );
    return false;
  }

  /** `id` created or installed a snapshot of the state machine as of `index`. */
  snapshot(id: NodeId, index: number, data: Uint8Array): void {
    const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('latin1');
    const known = this.snapshots.get(index);
    if (known === undefined) {
      this.snapshots.set(index, text);
      return;
    }
    this.check(
      'state-machine-safety',
      known === text,
      () => `node ${id} holds a snapshot at index ${index} that differs from another node's`,
    );
  }
}
