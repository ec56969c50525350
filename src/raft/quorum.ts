// Majority quorum arithmetic: the commit index a set of voters has acknowledged, and the
// outcome of a vote. Learners never appear here; callers pass voters only.

import type { NodeId } from './types';

export enum VoteResult {
  /** Neither won nor lost yet: enough voters have not answered to decide. */
  Pending = 0,
  Lost = 1,
  Won = 2,
}

/** Votes needed for a majority of `voterCount` voters. */
export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The largest index acknowledged by a majority of voters: sort the acknowledged indexes in
 * descending order and take the one at position majority-1. A voter with no entry in
 * `acked` counts as 0. With no voters the result is Infinity (an empty config commits
 * everything, as in etcd; the caller never commits past its own log).
 */
export function committedIndex(voters: Iterable<NodeId>, acked: (id: NodeId) => number | undefined): number {
  const indexes: number[] = [];
  for (const id of voters) indexes.push(acked(id) ?? 0);
  if (indexes.length === 0) return Infinity;
  indexes.sort((a, b) => b - a);
  return indexes[majority(indexes.length) - 1];
}

/**
 * Tally of a vote among `voters`. `votes` holds the answers received (true = granted);
 * answers from non-voters are ignored. An empty voter set wins, as in etcd.
 */
export function voteResult(voters: Iterable<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let missing = 0;
  let total = 0;
  for (const id of voters) {
    total++;
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) granted++;
  }
  if (total === 0) return VoteResult.Won;
  const q = majority(total);
  if (granted >= q) return VoteResult.Won;
  if (granted + missing >= q) return VoteResult.Pending;
  return VoteResult.Lost;
}
