// What a RaftNode snapshot holds: the members' raft addresses (so a node restored from a
// snapshot, after the conf change entries that named them were compacted, can still reach
// them) and the application's own snapshot bytes.
//
// Layout: "RNS1" | uint32 BE length of the JSON member list | JSON | application bytes.

import { RaftError, type NodeId } from '../types';

const MAGIC = Buffer.from('RNS1');
const HEADER_BYTES = MAGIC.length + 4;

export interface SnapshotEnvelope {
  members: Array<[NodeId, string]>;
  app: Uint8Array;
}

export function encodeEnvelope(envelope: SnapshotEnvelope): Uint8Array {
  const json = Buffer.from(JSON.stringify(envelope.members));
  const out = Buffer.allocUnsafe(HEADER_BYTES + json.length + envelope.app.length);
  MAGIC.copy(out, 0);
  out.writeUInt32BE(json.length, MAGIC.length);
  json.copy(out, HEADER_BYTES);
  out.set(envelope.app, HEADER_BYTES + json.length);
  return out;
}

export function decodeEnvelope(data: Uint8Array): SnapshotEnvelope {
  // An empty snapshot is the bootstrap one (index 0): nothing to restore.
  if (data.length === 0) return { members: [], app: data };
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < HEADER_BYTES || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new RaftError('BAD_SNAPSHOT', 'snapshot data is not a RaftNode snapshot (bad header)');
  }
  const jsonLength = buf.readUInt32BE(MAGIC.length);
  if (HEADER_BYTES + jsonLength > buf.length) {
    throw new RaftError('BAD_SNAPSHOT', 'snapshot data is truncated (member list runs past the end)');
  }
  const parsed: unknown = JSON.parse(buf.subarray(HEADER_BYTES, HEADER_BYTES + jsonLength).toString('utf8'));
  if (
    !Array.isArray(parsed) ||
    !parsed.every(
      (m): m is [NodeId, string] => Array.isArray(m) && typeof m[0] === 'number' && typeof m[1] === 'string',
    )
  ) {
    throw new RaftError('BAD_SNAPSHOT', 'snapshot member list is malformed');
  }
  return { members: parsed, app: buf.subarray(HEADER_BYTES + jsonLength) };
}
