// Conversion between the core's Message (src/raft/types.ts) and the wire RaftMessage. Snapshot
// data never rides inside a RaftMessage: it travels as SnapshotChunk frames and is put back here.

import type { RaftEntry, RaftMessage, RaftSnapshotMetadata } from '../../gen/cluster/v1/raft';
import { EntryType, MessageType, type Entry, type Message, type SnapshotMetadata } from '../types';

/** Wraps bytes as a Buffer without copying (the generated code's bytes fields are Buffers). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export class WireFormatError extends Error {
  constructor(message: string) {
    super(`bad raft frame: ${message}`);
    this.name = 'WireFormatError';
  }
}

const MESSAGE_TYPES = new Set<number>(
  Object.values(MessageType).filter((v): v is number => typeof v === 'number'),
);
const ENTRY_TYPES = new Set<number>(
  Object.values(EntryType).filter((v): v is number => typeof v === 'number'),
);

function entryToProto(entry: Entry): RaftEntry {
  return { term: entry.term, index: entry.index, type: entry.type, data: asBuffer(entry.data) };
}

function entryFromProto(entry: RaftEntry): Entry {
  if (!ENTRY_TYPES.has(entry.type)) throw new WireFormatError(`unknown entry type ${entry.type}`);
  return { term: entry.term, index: entry.index, type: entry.type, data: entry.data };
}

function metadataToProto(metadata: SnapshotMetadata): RaftSnapshotMetadata {
  return {
    index: metadata.index,
    term: metadata.term,
    confState: { voters: [...metadata.confState.voters], learners: [...metadata.confState.learners] },
  };
}

/** The wire form of a message; a snapshot keeps only its metadata (see SnapshotChunk). */
export function messageToProto(message: Message): RaftMessage {
  return {
    type: message.type,
    to: message.to,
    from: message.from,
    term: message.term,
    logTerm: message.logTerm,
    index: message.index,
    entries: message.entries.map(entryToProto),
    commit: message.commit,
    snapshot: message.snapshot ? metadataToProto(message.snapshot.metadata) : undefined,
    reject: message.reject,
    rejectHint: message.rejectHint,
    context: asBuffer(message.context),
  };
}

/**
 * The core's form of a wire message. `snapshotData` is the reassembled snapshot for a Snap
 * message; a Snap without it is malformed (its data must have come in chunks).
 */
export function messageFromProto(wire: RaftMessage, snapshotData?: Uint8Array): Message {
  if (!MESSAGE_TYPES.has(wire.type)) throw new WireFormatError(`unknown message type ${wire.type}`);
  const message: Message = {
    type: wire.type,
    to: wire.to,
    from: wire.from,
    term: wire.term,
    logTerm: wire.logTerm,
    index: wire.index,
    entries: wire.entries.map(entryFromProto),
    commit: wire.commit,
    reject: wire.reject,
    rejectHint: wire.rejectHint,
    context: wire.context,
  };
  if (wire.snapshot) {
    if (snapshotData === undefined) {
      throw new WireFormatError('a snapshot message must arrive as the last snapshot chunk');
    }
    message.snapshot = {
      metadata: {
        index: wire.snapshot.index,
        term: wire.snapshot.term,
        confState: {
          voters: wire.snapshot.confState?.voters ?? [],
          learners: wire.snapshot.confState?.learners ?? [],
        },
      },
      data: snapshotData,
    };
  }
  return message;
}

/** Rough bytes a message occupies in a send queue (the entries dominate). */
export function approximateMessageBytes(message: Message): number {
  const PER_MESSAGE_OVERHEAD_BYTES = 64;
  const PER_ENTRY_OVERHEAD_BYTES = 24;
  let bytes = PER_MESSAGE_OVERHEAD_BYTES + message.context.length;
  for (const entry of message.entries) bytes += PER_ENTRY_OVERHEAD_BYTES + entry.data.length;
  return bytes;
}
