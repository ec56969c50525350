// Reading the oci runtime's container logs across rotated files, on real files in a temporary
// folder: tail, since and follow in order, a follower that neither loses nor repeats a line while
// files rotate (and are dropped) under it, the flags' checks, and the real shim rotating.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LogLine } from '../index';
import {
  checkLogLimits,
  LOG_FILE,
  logLimitsFromFlags,
  parseLogMaxFiles,
  parseLogMaxSize,
  readContainerLog,
  type LogReadOptions,
} from './logfiles';
import { installShim } from './shim';

const T0 = 1_700_000_000_000;

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'oci-logs-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes log lines and rotates the way the shim does (the shim's own test is further down). */
class ShimLikeWriter {
  private fd: number | undefined;

  constructor(
    private readonly dir: string,
    private readonly maxFiles: number,
  ) {
    this.open();
  }

  private file(index: number): string {
    return path.join(this.dir, index === 0 ? LOG_FILE : `${LOG_FILE}.${index}`);
  }

  open(): void {
    this.fd = fs.openSync(this.file(0), 'a');
  }

  /** Line n, stamped T0 + n: "<ms> o line <n>". */
  lines(from: number, to: number, stream: 'o' | 'e' = 'o'): void {
    for (let n = from; n <= to; n++) this.raw(`${T0 + n} ${stream} line ${n}\n`);
  }

  raw(text: string): void {
    assert.ok(this.fd !== undefined);
    fs.writeSync(this.fd, text);
  }

  /** The shim's rotation up to the rename; `open()` finishes it. */
  renameAway(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    if (this.maxFiles === 1) {
      fs.unlinkSync(this.file(0));
      return;
    }
    for (let i = this.maxFiles - 2; i >= 1; i--) {
      if (fs.existsSync(this.file(i))) fs.renameSync(this.file(i), this.file(i + 1));
    }
    fs.renameSync(this.file(0), this.file(1));
  }

  rotate(): void {
    this.renameAway();
    this.open();
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

function numbers(lines: LogLine[]): number[] {
  return lines.map((l) => Number(/^line (\d+)(?: |$)/.exec(l.text)?.[1] ?? NaN));
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

async function read(dir: string, options: Partial<LogReadOptions> = {}): Promise<number[]> {
  const lines: LogLine[] = [];
  for await (const line of readContainerLog(dir, {
    follow: false,
    pollMs: 5,
    finished: () => true,
    ...options,
  }))
    lines.push(line);
  return numbers(lines);
}

/** A follower running in the background; `seen` grows as it reads. */
function follow(dir: string, options: Partial<LogReadOptions> = {}) {
  const abort = new AbortController();
  const state = { seen: [] as number[], polls: 0, finished: false };
  const done = (async () => {
    const lines = readContainerLog(dir, {
      follow: true,
      pollMs: 2,
      signal: abort.signal,
      finished: () => {
        state.polls++;
        return state.finished;
      },
      ...options,
    });
    for await (const line of lines) state.seen.push(...numbers([line]));
  })();
  return { state, abort, done };
}

async function until(what: string, cond: () => boolean, limitMs = 20_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

test('the flags take Docker-style sizes and counts, and refuse the rest with a clear message', () => {
  assert.equal(parseLogMaxSize('20m'), 20 * 1024 * 1024);
  assert.equal(parseLogMaxSize('64k'), 64 * 1024);
  assert.equal(parseLogMaxSize('1G'), 1024 ** 3);
  assert.equal(parseLogMaxSize('100000'), 100_000);
  for (const bad of ['', '0', '-1m', '1.5m', '20 mb x', '10t', '63k', '2000g', 'abc'])
    assert.throws(() => parseLogMaxSize(bad), /--log-max-size must be a size like 20m.*got/, bad);
  assert.equal(parseLogMaxFiles('5'), 5);
  assert.equal(parseLogMaxFiles('1'), 1);
  for (const bad of ['0', '-2', '2.5', '101', 'five', ''])
    assert.throws(() => parseLogMaxFiles(bad), /--log-max-files must be a whole number from 1 to 100/, bad);
  assert.equal(logLimitsFromFlags(undefined, undefined), undefined);
  assert.deepEqual(logLimitsFromFlags('1m', undefined), { maxSizeBytes: 1 << 20, maxFiles: 5 });
  assert.deepEqual(logLimitsFromFlags(undefined, '2'), { maxSizeBytes: 20 << 20, maxFiles: 2 });
  assert.throws(() => logLimitsFromFlags('1m', 'x'), /--log-max-files/);
  assert.throws(() => checkLogLimits({ maxSizeBytes: 1000, maxFiles: 3 }), /max size/);
  assert.throws(() => checkLogLimits({ maxSizeBytes: 1 << 20, maxFiles: 0 }), /max files/);
});

test('all, tail and since read the rotated files oldest first', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 3);
  w.lines(1, 3);
  w.rotate();
  w.lines(4, 6);
  w.rotate();
  w.lines(7, 9);
  // Half a line: the shim is writing it.
  w.raw(`${T0 + 10} o line 1`);
  w.close();
  assert.deepEqual(await read(dir), range(1, 9));
  assert.deepEqual(await read(dir, { tail: 4 }), range(6, 9));
  assert.deepEqual(await read(dir, { tail: 1 }), [9]);
  assert.deepEqual(await read(dir, { tail: 7 }), range(3, 9));
  assert.deepEqual(await read(dir, { tail: 9 }), range(1, 9));
  assert.deepEqual(await read(dir, { tail: 100 }), range(1, 9));
  assert.deepEqual(await read(dir, { tail: 0 }), []);
  assert.deepEqual(await read(dir, { sinceMs: T0 + 5 }), range(5, 9));
  assert.deepEqual(await read(dir, { sinceMs: T0 + 5, tail: 2 }), [8, 9]);
  assert.deepEqual(await read(dir, { sinceMs: T0 + 5, tail: 50 }), range(5, 9));
  assert.deepEqual(await read(dir, { sinceMs: T0 + 100 }), []);
});

test('lines that are not log lines are skipped alike by all and by tail', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 2);
  w.lines(1, 2);
  w.raw('garbage\n\n');
  w.rotate();
  w.raw('\n');
  w.lines(3, 3, 'e');
  w.raw('x o not a time\n');
  w.lines(4, 4);
  w.close();
  assert.deepEqual(await read(dir), range(1, 4));
  assert.deepEqual(await read(dir, { tail: 3 }), range(2, 4));
  assert.deepEqual(await read(dir, { tail: 2 }), [3, 4]);
});

test('a log from a shim that never rotates (one file), and no log at all', async (t) => {
  const dir = tmpDir(t);
  assert.deepEqual(await read(dir), []);
  assert.deepEqual(await read(dir, { tail: 5 }), []);
  const w = new ShimLikeWriter(dir, 1);
  w.lines(1, 2000);
  w.close();
  assert.deepEqual(await read(dir), range(1, 2000));
  // Longer than one read's chunk: the count back crosses chunk edges.
  assert.deepEqual(await read(dir, { tail: 1500 }), range(501, 2000));
  assert.deepEqual(await read(dir, { tail: 1500, sinceMs: T0 + 1000 }), range(1000, 2000));
});

test('a line cut across reads keeps its characters whole', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 2);
  // 'é' is two bytes; shifting the line's start puts one of them on every chunk edge in turn.
  const text = 'é'.repeat(40_000);
  for (let shift = 0; shift < 3; shift++) w.raw(`${T0 + shift} o ${'x'.repeat(shift)}${text}\n`);
  w.close();
  const lines: LogLine[] = [];
  for await (const line of readContainerLog(dir, { follow: false, pollMs: 5, finished: () => true }))
    lines.push(line);
  assert.deepEqual(
    lines.map((l) => l.text),
    [0, 1, 2].map((shift) => `${'x'.repeat(shift)}${text}`),
  );
});

test('a follower sees every line once, in order, while files rotate and are dropped under it', async (t) => {
  const dir = tmpDir(t);
  // Started before the shim made the file.
  const f = follow(dir);
  t.after(() => f.abort.abort());
  await until('a few polls', () => f.state.polls >= 2);
  const w = new ShimLikeWriter(dir, 3);
  w.lines(1, 10);
  await until('line 10', () => f.state.seen.length >= 10);
  // Three rotations between two reads: the follower's file is dropped while it holds it.
  w.lines(11, 15);
  w.rotate();
  w.lines(16, 20);
  w.rotate();
  w.lines(21, 25);
  w.rotate();
  w.lines(26, 30);
  await until('line 30', () => f.state.seen.length >= 30);
  assert.deepEqual(f.state.seen, range(1, 30));
  // Caught between the rename and the new file.
  w.lines(31, 32);
  w.renameAway();
  const polls = f.state.polls;
  await until('polls with no current file', () => f.state.polls >= polls + 3);
  w.open();
  w.lines(33, 35);
  // Half a line, then its end.
  w.raw(`${T0 + 36} o line `);
  await until('line 35', () => f.state.seen.length >= 35);
  const at = f.state.polls;
  await until('polls over the half line', () => f.state.polls >= at + 3);
  w.raw('36\n');
  w.rotate();
  w.lines(37, 40);
  f.state.finished = true;
  await f.done;
  w.close();
  assert.deepEqual(f.state.seen, range(1, 40));
});

test('with one file kept, a follower reads the dropped file to its end before the new one', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 1);
  w.lines(1, 5);
  const f = follow(dir);
  t.after(() => f.abort.abort());
  await until('line 5', () => f.state.seen.length >= 5);
  w.lines(6, 8);
  w.rotate();
  w.lines(9, 10);
  f.state.finished = true;
  await f.done;
  w.close();
  assert.deepEqual(f.state.seen, range(1, 10));
  assert.deepEqual(await read(dir), [9, 10]);
});

test('tail then follow: the last lines, then the new ones, none twice', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 3);
  w.lines(1, 4);
  w.rotate();
  w.lines(5, 6);
  w.raw(`${T0 + 7} o line`);
  const f = follow(dir, { tail: 3 });
  t.after(() => f.abort.abort());
  await until('the tail', () => f.state.seen.length >= 3);
  w.raw(' 7\n');
  w.rotate();
  w.lines(8, 9);
  f.state.finished = true;
  await f.done;
  w.close();
  assert.deepEqual(f.state.seen, range(4, 9));
});

test('a follower stops when its signal fires, with nothing more to read', async (t) => {
  const dir = tmpDir(t);
  const w = new ShimLikeWriter(dir, 2);
  w.lines(1, 2);
  const f = follow(dir);
  await until('line 2', () => f.state.seen.length >= 2);
  f.abort.abort();
  await f.done;
  w.close();
  assert.deepEqual(f.state.seen, [1, 2]);
  assert.ok(fs.existsSync(dir));
});

/**
 * Runs the real shim with a stand-in for `runc create`: a shell that starts the "container"
 * (which waits for a go file, then prints `count` numbered lines of 100 bytes) and writes its
 * pid, as runc does. Resolves once the shim has written the exit record.
 */
async function runShim(dir: string, count: number, limitArgs: string[]): Promise<void> {
  const shim = installShim(dir);
  const pidFile = path.join(dir, 'pid');
  const go = path.join(dir, 'go');
  const script = path.join(dir, 'container.sh');
  fs.writeFileSync(
    script,
    `while [ ! -e ${go} ]; do sleep 0.01; done\npad=${'x'.repeat(90)}\ni=1\nwhile [ $i -le ${count} ]; do echo "line $i $pad"; i=$((i+1)); done\n`,
  );
  const child = spawn(
    'perl',
    [
      shim,
      path.join(dir, LOG_FILE),
      path.join(dir, 'exit.json'),
      pidFile,
      ...limitArgs,
      '--',
      'sh',
      '-c',
      `sh ${script} & echo $! > ${pidFile}`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let report = '';
  child.stdout.on('data', (c: Buffer) => (report += c.toString()));
  await new Promise((resolve) => child.stdout.on('end', resolve));
  assert.match(report, /^\{"ok":true/);
  fs.writeFileSync(go, '');
  await until('the exit record', () => fs.existsSync(path.join(dir, 'exit.json')), 60_000);
}

test('the real shim rotates at the max size and keeps the max number of files', async (t) => {
  const dir = tmpDir(t);
  const maxSize = 4096;
  await runShim(dir, 1000, ['--log-max-size', String(maxSize), '--log-max-files', '3']);
  const files = fs.readdirSync(dir).filter((n) => n.startsWith(LOG_FILE));
  assert.deepEqual(files.sort(), [LOG_FILE, `${LOG_FILE}.1`, `${LOG_FILE}.2`]);
  for (const name of files) assert.ok(fs.statSync(path.join(dir, name)).size <= maxSize, name);
  // Lines of about 100 bytes plus a 16-byte stamp: 35 or so to a file, 3 files kept.
  const kept = await read(dir);
  assert.ok(kept.length >= 2 * 30 && kept.length <= 3 * 40, `${kept.length} lines kept`);
  assert.deepEqual(kept, range(1001 - kept.length, 1000));
  assert.deepEqual(await read(dir, { tail: 50 }), range(951, 1000));
});

test('the real shim without limits (as older agents start it) keeps one growing file', async (t) => {
  const dir = tmpDir(t);
  await runShim(dir, 300, []);
  assert.deepEqual(
    fs.readdirSync(dir).filter((n) => n.startsWith(LOG_FILE)),
    [LOG_FILE],
  );
  assert.deepEqual(await read(dir), range(1, 300));
});

test('the shim refuses bad limits', async (t) => {
  const dir = tmpDir(t);
  const shim = installShim(dir);
  for (const args of [
    ['--log-max-size', 'x'],
    ['--log-max-files', '0'],
    ['--bogus', '1'],
  ]) {
    const child = spawn('perl', [shim, 'l', 'e', 'p', ...args, '--', 'true'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const code = await new Promise((resolve) => child.on('close', resolve));
    assert.notEqual(code, 0);
    assert.match(err, /usage: shim.pl/);
  }
});
