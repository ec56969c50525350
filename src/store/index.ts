// The replicated cluster store: tables of nodes, services, tasks, networks and the cluster
// object; transactions proposed to Raft and applied in log order; watch events; snapshots.
export {
  DEFAULT_MAX_ACTIONS_PER_TRANSACTION,
  MAX_TRANSACTION_BYTES,
  MemoryStore,
  TableReader,
  TableWriter,
  type AppliedResult,
  type BatchResult,
  type MemoryStoreOptions,
  type Proposer,
  type ReadTx,
  type UpdateResult,
  type WriteTx,
} from './memory_store';
export {
  DEFAULT_WATCH_QUEUE_LIMIT,
  Watcher,
  copyObject,
  thaw,
  type StoreEvent,
  type WatchOptions,
} from './watch';
export {
  TABLE_NAMES,
  type DeepReadonly,
  type Frozen,
  type TableIndexNames,
  type TableName,
  type TableTypes,
} from './tables';
export { type ActionKind } from './codec';
export { ID_LENGTH, newId } from './ids';
export { LocalProposer, type LoggedEntry } from './local_proposer';
