// Errors a RaftNode's callers act on: where the leader is, whether a proposal's fate is known.

import { RaftError, type NodeId } from '../types';

/**
 * Proposals are not forwarded by the RaftNode: the caller (the control API, issue 4) forwards
 * the request to `leaderId` at `leaderAddress`, so the reply comes from where it was applied.
 */
export class NotLeaderError extends RaftError {
  constructor(
    readonly nodeId: NodeId,
    /** 0 when no leader is known (an election is under way). */
    readonly leaderId: NodeId,
    /** The leader's raft address when known (the caller maps it to its API address). */
    readonly leaderAddress?: string,
  ) {
    super(
      'NOT_LEADER',
      leaderId === 0
        ? `node ${nodeId} is not the leader and no leader is known yet; retry shortly`
        : `node ${nodeId} is not the leader; the leader is node ${leaderId}${leaderAddress ? ` at ${leaderAddress}` : ''}`,
    );
  }
}

/** The entry at the proposal's index was applied with another term: the proposal will never apply. */
export class ProposalLostError extends RaftError {
  constructor(index: number, proposedTerm: number, appliedTerm: number | undefined) {
    super(
      'PROPOSAL_LOST',
      appliedTerm === undefined
        ? `proposal lost: leadership changed (index ${index} of term ${proposedTerm} was replaced); retry`
        : `proposal lost: leadership changed (index ${index} was proposed in term ${proposedTerm} but applied with term ${appliedTerm}); retry`,
    );
  }
}

/** Neither applied nor known lost in time: the outcome is unknown (it may still apply). */
export class ProposalTimeoutError extends RaftError {
  constructor(what: string, timeoutMs: number) {
    super('TIMEOUT', `${what} did not complete within ${timeoutMs} ms; its outcome is unknown`);
  }
}

export class NodeStoppedError extends RaftError {
  constructor(nodeId: NodeId) {
    super('NODE_STOPPED', `raft node ${nodeId} is stopped`);
  }
}

export class NodeRemovedError extends RaftError {
  constructor(nodeId: NodeId) {
    super('NODE_REMOVED', `raft node ${nodeId} has been removed from the cluster`);
  }
}
