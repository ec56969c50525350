// Child process of the crash-consistency test: opens the store, runs the workload from the
// step given, and prints "done <step>" after each write has resolved, until it is SIGKILLed.
// Usage: node crash_child.js <dir> <firstStep>

import { LevelRaftStorage } from './index';
import { applyToStorage, workloadOp } from './crash_workload';

/** The parent kills us within seconds; this only stops an orphan from running forever. */
const ORPHAN_LIMIT_MS = 30_000;

async function main(): Promise<void> {
  const [dir, firstStepArg] = process.argv.slice(2);
  if (dir === undefined || firstStepArg === undefined)
    throw new Error('usage: crash_child.js <dir> <firstStep>');
  const deadline = Date.now() + ORPHAN_LIMIT_MS;
  const storage = await LevelRaftStorage.open(dir);
  // Pipes are written synchronously on Linux, so a printed line is out before the next write.
  process.stdout.write('ready\n');
  for (let step = Number(firstStepArg); Date.now() < deadline; step++) {
    await applyToStorage(workloadOp(step, storage), storage);
    process.stdout.write(`done ${step}\n`);
  }
  await storage.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`crash_child: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
