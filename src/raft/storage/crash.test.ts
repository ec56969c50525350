// Crash consistency: a child process writes in a loop and is SIGKILLed at a random moment;
// the store must then open cleanly (every check passes) and hold exactly the state after the
// last write the child reported finished, or after the one in flight, never anything else.
// Several rounds run on the same directory, so recovery from a crash is itself crashed.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';

import { MemoryStorage } from '../memory_storage';
import type { Storage } from '../types';
import { applyToMemory, workloadOp } from './crash_workload';
import { LevelRaftStorage } from './index';
import { withTempDir } from './test_util';

const ROUNDS = 4;
const MAX_RUN_MS = 600;
const CHILD = join(__dirname, 'crash_child.js');

/** Runs the child from `firstStep` for about `runMs` after it is ready, then SIGKILLs it. */
function runAndKill(
  dir: string,
  firstStep: number,
  runMs: number,
): Promise<{ lastDone: number; exitSignal: string | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CHILD, dir, String(firstStep)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let lastDone = firstStep - 1;
    let ready = false;
    let buffered = '';
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => (stderr += chunk));
    child.stdout.on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line === 'ready' && !ready) {
          ready = true;
          timer = setTimeout(() => child.kill('SIGKILL'), runMs);
        } else if (line.startsWith('done ')) {
          lastDone = Number(line.slice(5));
        }
      }
    });
    child.on('error', reject);
    // 'close' waits for stdout to drain, so every line the child wrote has been read.
    child.on('close', (code, signal) => {
      if (timer !== undefined) clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`child exited with ${code ?? signal}: ${stderr}`));
      else resolve({ lastDone, exitSignal: signal });
    });
  });
}

/** The model after steps 0..lastStep. */
function modelAfter(lastStep: number): MemoryStorage {
  const memory = new MemoryStorage();
  for (let step = 0; step <= lastStep; step++) applyToMemory(workloadOp(step, memory), memory);
  return memory;
}

function sameState(a: Storage, b: Storage): boolean {
  try {
    assert.deepEqual(a.initialState(), b.initialState());
    assert.equal(a.firstIndex(), b.firstIndex());
    assert.equal(a.lastIndex(), b.lastIndex());
    assert.equal(a.term(a.firstIndex() - 1), b.term(b.firstIndex() - 1));
    assert.deepEqual(
      a.entries(a.firstIndex(), a.lastIndex() + 1, Infinity),
      b.entries(b.firstIndex(), b.lastIndex() + 1, Infinity),
    );
    assert.deepEqual(a.snapshot(), b.snapshot());
    return true;
  } catch {
    return false;
  }
}

test('SIGKILL at a random moment leaves a verified store holding every reported write', async (t) => {
  await withTempDir(async (dir) => {
    let stepsDone = 0; // the store holds steps 0..stepsDone-1
    const seed = Math.floor(Math.random() * 2 ** 31);
    let random = seed;
    const nextRandom = () => (random = (random * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    for (let round = 0; round < ROUNDS; round++) {
      const runMs = Math.floor(nextRandom() * MAX_RUN_MS);
      const { lastDone } = await runAndKill(dir, stepsDone, runMs);
      const context = `seed ${seed}, round ${round}, killed after ${runMs} ms, last reported step ${lastDone}`;
      // Opening verifies checksums, contiguity, terms and commit; it throws on any violation.
      const storage = await LevelRaftStorage.open(dir);
      try {
        if (sameState(storage, modelAfter(lastDone))) {
          stepsDone = lastDone + 1;
          t.diagnostic(`${context}: store = last reported write (last index ${storage.lastIndex()})`);
        } else if (sameState(storage, modelAfter(lastDone + 1))) {
          stepsDone = lastDone + 2;
          t.diagnostic(`${context}: store = the write in flight, done but not yet reported`);
        } else
          assert.fail(`${context}: the store matches neither the last reported write nor the one after it`);
      } finally {
        await storage.close();
      }
    }
    assert.ok(stepsDone > ROUNDS, `the child made progress (${stepsDone} steps in ${ROUNDS} rounds)`);
  });
});
