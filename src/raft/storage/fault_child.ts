// Child process of the fault tests, run inside a private mount namespace over a tiny or
// read-only tmpfs: reports, as JSON lines, how the storage fails.
// Usage: node fault_child.js <dir> fill|open

import { LevelRaftStorage } from './index';
import { EntryType } from '../types';

/** Entries large enough to fill a small tmpfs in a few dozen writes. */
const ENTRY_BYTES = 64 * 1024;
/** More than the tmpfs can hold; reaching it means the disk never filled. */
const MAX_WRITES = 1000;

function report(fields: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(fields)}\n`);
}

function describe(err: unknown): { code: unknown; message: string } {
  return {
    code: (err as { code?: unknown }).code,
    message: err instanceof Error ? err.message : String(err),
  };
}

async function fill(dir: string): Promise<void> {
  const storage = await LevelRaftStorage.open(dir);
  try {
    for (let index = 1; index <= MAX_WRITES; index++) {
      const before = storage.lastIndex();
      try {
        const data = new Uint8Array(ENTRY_BYTES).fill(index & 0xff);
        await storage.save({ term: 1, vote: 1, commit: index - 1 }, [
          { index, term: 1, type: EntryType.Normal, data },
        ]);
      } catch (err) {
        report({
          event: 'saveFailed',
          ...describe(err),
          lastIndexBefore: before,
          lastIndexAfter: storage.lastIndex(),
        });
        try {
          await storage.save({ term: 1, vote: 1, commit: index - 1 }, []);
          report({ event: 'nextSave', code: 'none' });
        } catch (next) {
          report({ event: 'nextSave', ...describe(next) });
        }
        return;
      }
    }
    report({ event: 'neverFull' });
  } finally {
    await storage.close().catch(() => undefined);
  }
}

async function open(dir: string): Promise<void> {
  try {
    const storage = await LevelRaftStorage.open(dir);
    await storage.close();
    report({ event: 'opened' });
  } catch (err) {
    report({ event: 'openFailed', ...describe(err) });
  }
}

const [dir, mode] = process.argv.slice(2);
const run = mode === 'fill' ? fill : open;
run(dir ?? '').catch((err: unknown) => {
  process.stderr.write(`fault_child: ${String(err)}\n`);
  process.exit(1);
});
