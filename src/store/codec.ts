// The bytes the store hands to Raft: one transaction per log entry, and the whole store for a
// Raft snapshot. Objects are encoded with their generated protobuf codecs; the envelope is
// written by hand in protobuf wire format so that it can become a .proto message unchanged:
//
//   enum StoreTable  { STORE_TABLE_UNSPECIFIED = 0; NODES = 1; SERVICES = 2; TASKS = 3;
//                      NETWORKS = 4; CLUSTERS = 5; }
//   enum ActionKind  { CREATE = 0; UPDATE = 1; DELETE = 2; }
//   message StoreAction      { ActionKind kind = 1; StoreTable table = 2; string id = 3;
//                              uint64 version = 4; bytes object = 5; }
//   message StoreTransaction { uint32 format = 1; int64 timestamp_ms = 2;
//                              repeated StoreAction actions = 3; }
//   message StoreSnapshotTable { StoreTable table = 1; repeated bytes objects = 2; }
//   message StoreSnapshot    { uint32 format = 1; uint64 applied_index = 2;
//                              repeated StoreSnapshotTable tables = 3; }
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';

import { TABLES, TABLE_NAMES, type TableName, type TableTypes } from './tables';

/** Bumped when the envelope changes incompatibly; a decoder refuses formats it does not know. */
export const TRANSACTION_FORMAT = 1;
export const SNAPSHOT_FORMAT = 1;

export type ActionKind = 'create' | 'update' | 'delete';

/**
 * One change of a transaction. `version` is the object's version when the writer read it
 * (0 for a create): the apply step refuses the transaction if the stored version differs.
 */
export type StoreAction = {
  [N in TableName]:
    | { kind: 'create' | 'update'; table: N; version: number; object: TableTypes[N] }
    | { kind: 'delete'; table: N; id: string; version: number };
}[TableName];

export interface StoreTransaction {
  /** Chosen by the proposer so that every manager stamps createdAt/updatedAt identically. */
  timestampMs: number;
  actions: StoreAction[];
}

export interface StoreSnapshot {
  appliedIndex: number;
  tables: { [N in TableName]: TableTypes[N][] };
}

const KIND_TAGS: Record<ActionKind, number> = { create: 0, update: 1, delete: 2 };
const KINDS: readonly ActionKind[] = ['create', 'update', 'delete'];
// Wire tags 1..5 follow TABLE_NAMES; 0 is "unspecified" and refused.
const tableTag = (table: TableName): number => TABLE_NAMES.indexOf(table) + 1;

function tableFromTag(tag: number): TableName {
  const table = TABLE_NAMES[tag - 1];
  if (tag < 1 || table === undefined) throw new Error(`store codec: unknown table tag ${tag}`);
  return table;
}

function toSafeNumber(value: bigint | string, field: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n))
    throw new Error(`store codec: ${field} ${String(value)} is not a safe integer`);
  return n;
}

function encodeObject<N extends TableName>(table: N, object: TableTypes[N]): Uint8Array {
  return TABLES[table].codec.encode(object).finish();
}

function decodeObject<N extends TableName>(table: N, bytes: Uint8Array): TableTypes[N] {
  return TABLES[table].codec.decode(bytes);
}

export function encodeTransaction(txn: StoreTransaction): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.Varint).uint32(TRANSACTION_FORMAT);
  w.tag(2, WireType.Varint).int64(txn.timestampMs);
  for (const action of txn.actions) {
    w.tag(3, WireType.LengthDelimited).fork();
    w.tag(1, WireType.Varint).uint32(KIND_TAGS[action.kind]);
    w.tag(2, WireType.Varint).uint32(tableTag(action.table));
    if (action.kind === 'delete') w.tag(3, WireType.LengthDelimited).string(action.id);
    w.tag(4, WireType.Varint).uint64(action.version);
    if (action.kind !== 'delete') {
      w.tag(5, WireType.LengthDelimited).bytes(encodeObject(action.table, action.object));
    }
    w.join();
  }
  return w.finish();
}

function decodeAction(bytes: Uint8Array): StoreAction {
  const r = new BinaryReader(bytes);
  let kindTag = 0;
  let tableTagValue = 0;
  let id = '';
  let version = 0;
  let object: Uint8Array | undefined;
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.Varint) kindTag = r.uint32();
    else if (field === 2 && wireType === WireType.Varint) tableTagValue = r.uint32();
    else if (field === 3 && wireType === WireType.LengthDelimited) id = r.string();
    else if (field === 4 && wireType === WireType.Varint) version = toSafeNumber(r.uint64(), 'version');
    else if (field === 5 && wireType === WireType.LengthDelimited) object = r.bytes();
    else r.skip(wireType, field);
  }
  const kind = KINDS[kindTag];
  if (kind === undefined) throw new Error(`store codec: unknown action kind ${kindTag}`);
  const table = tableFromTag(tableTagValue);
  if (kind === 'delete') {
    if (id === '') throw new Error('store codec: a delete action without an id');
    return { kind, table, id, version };
  }
  if (object === undefined) throw new Error(`store codec: a ${kind} action without an object`);
  return { kind, table, version, object: decodeObject(table, object) } as StoreAction;
}

/** Throws on bytes that are not a transaction of a known format (a corrupt or foreign entry). */
export function decodeTransaction(data: Uint8Array): StoreTransaction {
  const r = new BinaryReader(data);
  let format = 0;
  let timestampMs = 0;
  const actions: StoreAction[] = [];
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.Varint) format = r.uint32();
    else if (field === 2 && wireType === WireType.Varint) timestampMs = toSafeNumber(r.int64(), 'timestamp');
    else if (field === 3 && wireType === WireType.LengthDelimited) actions.push(decodeAction(r.bytes()));
    else r.skip(wireType, field);
  }
  if (format !== TRANSACTION_FORMAT) {
    throw new Error(`store codec: transaction format ${format}, this build reads ${TRANSACTION_FORMAT}`);
  }
  return { timestampMs, actions };
}

export function encodeSnapshot(snapshot: StoreSnapshot): Uint8Array {
  const w = new BinaryWriter();
  w.tag(1, WireType.Varint).uint32(SNAPSHOT_FORMAT);
  w.tag(2, WireType.Varint).uint64(snapshot.appliedIndex);
  for (const table of TABLE_NAMES) writeSnapshotTable(w, table, snapshot.tables[table]);
  return w.finish();
}

function writeSnapshotTable<N extends TableName>(
  w: BinaryWriter,
  table: N,
  objects: readonly TableTypes[N][],
): void {
  w.tag(3, WireType.LengthDelimited).fork();
  w.tag(1, WireType.Varint).uint32(tableTag(table));
  for (const object of objects) {
    // Each object is written as an embedded message: the same wire bytes as `bytes`.
    w.tag(2, WireType.LengthDelimited).fork();
    TABLES[table].codec.encode(object, w);
    w.join();
  }
  w.join();
}

export function emptyTables(): StoreSnapshot['tables'] {
  return { nodes: [], services: [], tasks: [], networks: [], clusters: [] };
}

export function decodeSnapshot(data: Uint8Array): StoreSnapshot {
  const r = new BinaryReader(data);
  let format = 0;
  let appliedIndex = 0;
  const tables = emptyTables();
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.Varint) format = r.uint32();
    else if (field === 2 && wireType === WireType.Varint)
      appliedIndex = toSafeNumber(r.uint64(), 'applied index');
    else if (field === 3 && wireType === WireType.LengthDelimited) decodeSnapshotTable(r.bytes(), tables);
    else r.skip(wireType, field);
  }
  if (format !== SNAPSHOT_FORMAT) {
    throw new Error(`store codec: snapshot format ${format}, this build reads ${SNAPSHOT_FORMAT}`);
  }
  return { appliedIndex, tables };
}

function decodeSnapshotTable(bytes: Uint8Array, into: StoreSnapshot['tables']): void {
  const r = new BinaryReader(bytes);
  let table: TableName | undefined;
  const objects: Uint8Array[] = [];
  while (r.pos < r.len) {
    const [field, wireType] = r.tag();
    if (field === 1 && wireType === WireType.Varint) table = tableFromTag(r.uint32());
    else if (field === 2 && wireType === WireType.LengthDelimited) objects.push(r.bytes());
    else r.skip(wireType, field);
  }
  if (table === undefined) throw new Error('store codec: a snapshot table without its name');
  const list: unknown[] = into[table];
  for (const bytes of objects) list.push(decodeObject(table, bytes));
}
