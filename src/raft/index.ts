// The public face of the Raft core: types, RawNode, MemoryStorage, the Config, and helpers
// the driver and simulator need. Nothing here does I/O.

export * from './types';
export { RawNode } from './raw_node';
export {
  type Config,
  type RaftLogger,
  type ProposeResult,
  type Status,
  type ProgressStatus,
  DEFAULT_ELECTION_TICKS,
  DEFAULT_HEARTBEAT_TICKS,
  DEFAULT_MAX_SIZE_PER_MSG,
  DEFAULT_MAX_INFLIGHT_MSGS,
  Raft,
} from './raft';
export { MemoryStorage, SnapshotOutOfDateError, emptySnapshot, cloneConfState } from './memory_storage';
export {
  encodeConfChange,
  decodeConfChange,
  applyConfChangeToState,
  InvalidConfChangeError,
} from './confchange';
export { ProgressState } from './progress';
export { RaftInvariantError, entrySize } from './util';
