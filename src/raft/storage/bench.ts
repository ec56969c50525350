// Storage micro-benchmark (figures printed, not asserted): synced saves per second for Readies
// of 1, 16 and 256 entries of 256 bytes, and the time to reopen and verify the log written.
// Usage: npm run build && node dist/src/raft/storage/bench.js

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { type Entry, EntryType } from '../types';
import { LevelRaftStorage } from './index';

const VALUE_BYTES = 256;
/** Saves per Ready size: enough for a stable figure, few enough to finish in seconds. */
const SAVES: Array<[entriesPerSave: number, saves: number]> = [
  [1, 2000],
  [16, 1000],
  [256, 200],
];

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'raft-storage-bench-'));
  try {
    const storage = await LevelRaftStorage.open(dir);
    const data = new Uint8Array(VALUE_BYTES).fill(7);
    let index = 0;
    const results: Record<string, { savesPerSec: number; entriesPerSec: number; cpuMsPerSave: number }> = {};
    for (const [perSave, saves] of SAVES) {
      const started = process.hrtime.bigint();
      const cpuStart = process.cpuUsage();
      for (let i = 0; i < saves; i++) {
        const entries: Entry[] = [];
        for (let j = 0; j < perSave; j++)
          entries.push({ index: ++index, term: 1, type: EntryType.Normal, data });
        await storage.save({ term: 1, vote: 1, commit: index - 1 }, entries);
      }
      const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
      const cpu = process.cpuUsage(cpuStart);
      results[perSave] = {
        savesPerSec: Math.round((saves / wallMs) * 1000),
        entriesPerSec: Math.round(((saves * perSave) / wallMs) * 1000),
        cpuMsPerSave: Number(((cpu.user + cpu.system) / 1000 / saves).toFixed(3)),
      };
      console.log(`${perSave} entries/save`, results[perSave]);
    }
    await storage.close();
    const started = process.hrtime.bigint();
    const reopened = await LevelRaftStorage.open(dir);
    const reopenMs = Math.round(Number(process.hrtime.bigint() - started) / 1e6);
    console.log(`reopen and verify ${reopened.lastIndex()} entries: ${reopenMs} ms`);
    await reopened.close();
    console.log(JSON.stringify({ saves: results, reopenEntries: index, reopenMs }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
