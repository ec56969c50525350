// A deterministic stream of storage writes for the crash-consistency test: step k's write is a
// function of k and the state so far, so the test can replay on a MemoryStorage exactly what
// a child process wrote to LevelDB before it was killed.

import type { MemoryStorage } from '../memory_storage';
import { type ConfState, type Entry, EntryType, type HardState, type Storage } from '../types';
import type { LevelRaftStorage } from './index';

export type WorkloadOp =
  | { kind: 'save'; hardState: HardState; entries: Entry[] }
  | { kind: 'snapshot'; index: number; confState: ConfState; data: Uint8Array; retainEntries: number };

/** Sized like the benchmark's proposals, so batches and compactions are realistic. */
const VALUE_BYTES = 256;
const CONF_STATE: ConfState = { voters: [1, 2, 3], learners: [] };

function payload(index: number, term: number): Uint8Array {
  const data = new Uint8Array(VALUE_BYTES);
  const tag = new TextEncoder().encode(`index ${index} term ${term}`);
  data.set(tag);
  for (let i = tag.length; i < VALUE_BYTES; i++) data[i] = (index * 31 + term * 7 + i) & 0xff;
  return data;
}

/**
 * Step k: usually append 1-8 entries and advance commit; every 7th step a new term rewrites
 * the uncommitted tail (a conflicting suffix); every 25th step a snapshot compacts the log.
 */
export function workloadOp(step: number, state: Storage): WorkloadOp {
  const { hardState } = state.initialState();
  const last = state.lastIndex();
  if (step % 25 === 24 && hardState.commit > state.snapshot().metadata.index) {
    const index = hardState.commit;
    return { kind: 'snapshot', index, confState: CONF_STATE, data: payload(index, 0), retainEntries: 5 };
  }
  const conflict = step % 7 === 6;
  const term = Math.max(1, hardState.term) + (conflict ? 1 : 0);
  const start = conflict ? Math.max(hardState.commit + 1, state.firstIndex(), last - 2) : last + 1;
  const count = 1 + ((step * 5) % 8);
  const entries: Entry[] = [];
  for (let i = 0; i < count; i++) {
    entries.push({ index: start + i, term, type: EntryType.Normal, data: payload(start + i, term) });
  }
  // Commit lags the log by a couple of entries, as it does while followers catch up.
  const commit = Math.max(hardState.commit, start + count - 3);
  return { kind: 'save', hardState: { term, vote: 1, commit }, entries };
}

export async function applyToStorage(op: WorkloadOp, storage: LevelRaftStorage): Promise<void> {
  if (op.kind === 'save') await storage.save(op.hardState, op.entries);
  else await storage.createSnapshot(op.index, op.confState, op.data, op.retainEntries);
}

/** The same write on the in-memory model, with LevelRaftStorage's snapshot-then-compact rule. */
export function applyToMemory(op: WorkloadOp, memory: MemoryStorage): void {
  if (op.kind === 'save') {
    memory.append(op.entries);
    memory.setHardState(op.hardState);
    return;
  }
  memory.createSnapshot(op.index, op.confState, op.data);
  const compactTo = Math.max(memory.firstIndex() - 1, op.index - op.retainEntries);
  if (compactTo >= memory.firstIndex()) memory.compact(compactTo);
}
