// The byte encoding of a ConfChange inside an entry of type ConfChange, and the pure rule
// that applies one change to a membership (one voter or learner at a time).

import { type ConfChange, ConfChangeType, type ConfState, type NodeId, RaftError } from './types';

/** Format version, so a future encoding can be told apart from this one. */
const CONF_CHANGE_VERSION = 1;
/** version (1) + type (1) + node id as two uint32 halves (8). */
const CONF_CHANGE_HEADER_BYTES = 10;
const KNOWN_TYPES: readonly ConfChangeType[] = [
  ConfChangeType.AddVoter,
  ConfChangeType.RemoveVoter,
  ConfChangeType.AddLearner,
];

export class InvalidConfChangeError extends RaftError {
  constructor(reason: string) {
    super('INVALID_CONF_CHANGE', `invalid configuration change: ${reason}`);
  }
}

export function encodeConfChange(cc: ConfChange): Uint8Array {
  if (!Number.isSafeInteger(cc.nodeId) || cc.nodeId <= 0) {
    throw new InvalidConfChangeError(`node id must be a positive integer, got ${cc.nodeId}`);
  }
  const out = new Uint8Array(CONF_CHANGE_HEADER_BYTES + cc.context.length);
  const view = new DataView(out.buffer);
  view.setUint8(0, CONF_CHANGE_VERSION);
  view.setUint8(1, cc.type);
  view.setUint32(2, Math.floor(cc.nodeId / 2 ** 32));
  view.setUint32(6, cc.nodeId >>> 0);
  out.set(cc.context, CONF_CHANGE_HEADER_BYTES);
  return out;
}

export function decodeConfChange(data: Uint8Array): ConfChange {
  if (data.length < CONF_CHANGE_HEADER_BYTES) {
    throw new InvalidConfChangeError(
      `encoded change is ${data.length} bytes, need at least ${CONF_CHANGE_HEADER_BYTES}`,
    );
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const version = view.getUint8(0);
  if (version !== CONF_CHANGE_VERSION)
    throw new InvalidConfChangeError(`unknown encoding version ${version}`);
  const rawType = view.getUint8(1);
  const type = KNOWN_TYPES.find((t) => t === (rawType as ConfChangeType));
  if (type === undefined) throw new InvalidConfChangeError(`unknown change type ${rawType}`);
  const nodeId = view.getUint32(2) * 2 ** 32 + view.getUint32(6);
  return { type, nodeId, context: data.slice(CONF_CHANGE_HEADER_BYTES) };
}

/**
 * The membership after applying `cc` to `cs`. AddVoter on a learner promotes it; AddLearner
 * on a voter demotes it. Throws InvalidConfChangeError when the change would leave no voter.
 */
export function applyConfChangeToState(cs: ConfState, cc: ConfChange): ConfState {
  const voters = new Set<NodeId>(cs.voters);
  const learners = new Set<NodeId>(cs.learners);
  switch (cc.type) {
    case ConfChangeType.AddVoter:
      learners.delete(cc.nodeId);
      voters.add(cc.nodeId);
      break;
    case ConfChangeType.AddLearner:
      voters.delete(cc.nodeId);
      learners.add(cc.nodeId);
      break;
    case ConfChangeType.RemoveVoter:
      voters.delete(cc.nodeId);
      learners.delete(cc.nodeId);
      break;
  }
  if (voters.size === 0) throw new InvalidConfChangeError(`change would remove the last voter ${cc.nodeId}`);
  return {
    voters: [...voters].sort((a, b) => a - b),
    learners: [...learners].sort((a, b) => a - b),
  };
}
