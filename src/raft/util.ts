// Small helpers shared by the Raft core: entry sizing for byte limits, and loud assertions
// for invariants (a broken invariant is a bug, never an error to handle).

import type { Entry } from './types';

/** Fixed per-entry overhead counted in byte limits (term, index, type on the wire). */
export const ENTRY_OVERHEAD_BYTES = 24;

/** Bytes an entry counts for in maxSizePerMsg / inflight / uncommitted limits. */
export function entrySize(entry: Entry): number {
  return entry.data.length + ENTRY_OVERHEAD_BYTES;
}

export function entriesSize(entries: readonly Entry[]): number {
  let total = 0;
  for (const e of entries) total += entrySize(e);
  return total;
}

/**
 * The longest prefix of `entries` whose size is at most maxBytes, but never fewer than one
 * entry: a single entry larger than the limit must still be able to travel.
 */
export function limitSize(entries: Entry[], maxBytes: number): Entry[] {
  if (entries.length === 0) return entries;
  let size = entrySize(entries[0]);
  let n = 1;
  for (; n < entries.length; n++) {
    size += entrySize(entries[n]);
    if (size > maxBytes) break;
  }
  return n === entries.length ? entries : entries.slice(0, n);
}

/** Thrown when an invariant of the core is broken: the state can no longer be trusted. */
export class RaftInvariantError extends Error {
  constructor(message: string) {
    super(`raft invariant violated: ${message}`);
    this.name = 'RaftInvariantError';
  }
}

export function invariant(condition: boolean, message: string | (() => string)): asserts condition {
  if (!condition) {
    throw new RaftInvariantError(typeof message === 'string' ? message : message());
  }
}
