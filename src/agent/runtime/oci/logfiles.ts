// Reading a container's log as the shim writes it: container.log, and once it is full, the
// rotated container.log.1 (newest) … container.log.N (oldest). Tail, since and follow read across
// them oldest first, and a follower goes from one file to the next without losing or repeating a
// line: it holds the file it reads open, so a rename (or a drop) under it loses nothing.
import fs from 'node:fs';
import path from 'node:path';
import { abortableSleep } from '../../../common/sleep';
import type { LogLine, LogOptions } from '../index';

/** The file the shim writes; rotated ones are `${LOG_FILE}.1` (newest) and up. */
export const LOG_FILE = 'container.log';
/** Bytes read per call: a few lines at the shim's longest (16 KiB of text) fit. */
const CHUNK_BYTES = 64 * 1024;
/** Enough of a line for "<unix ms> <o|e> ": its time and stream. */
const PREFIX_BYTES = 32;
/** Tries at a consistent view of the folder while the shim renames under it. */
const CHAIN_ATTEMPTS = 50;

/** The bound on one container's log: Docker's `local` driver's defaults, 20 MiB × 5 files. */
export interface LogLimits {
  /** A file is rotated before it would pass this (0: never, as shims of older agents do). */
  maxSizeBytes: number;
  /** Files kept, the current one included. */
  maxFiles: number;
}
export const DEFAULT_LOG_LIMITS: LogLimits = { maxSizeBytes: 20 * 1024 * 1024, maxFiles: 5 };
/** A file holds at least a few of the shim's longest lines (16 KiB each). */
export const MIN_LOG_MAX_SIZE_BYTES = 64 * 1024;
/** Sizes past this are a typo rather than a bound. */
export const MAX_LOG_MAX_SIZE_BYTES = 1024 * 1024 * 1024 * 1024;
export const MAX_LOG_MAX_FILES = 100;

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** `--log-max-size`: bytes, or a number with k, m or g (binary units, as Docker reads them). */
export function parseLogMaxSize(text: string): number {
  const m = /^([0-9]+)([kmg]?)b?$/i.exec(text.trim());
  const bytes = m ? Number(m[1]) * (SIZE_UNITS[(m[2] ?? '').toLowerCase()] ?? 1) : NaN;
  if (!(bytes >= MIN_LOG_MAX_SIZE_BYTES && bytes <= MAX_LOG_MAX_SIZE_BYTES))
    throw new Error(`--log-max-size must be a size like 20m, 512k or 1g, from 64k to 1024g; got '${text}'`);
  return bytes;
}

/** `--log-max-files`: a whole number from 1 (the current file only) to MAX_LOG_MAX_FILES. */
export function parseLogMaxFiles(text: string): number {
  const files = /^[0-9]+$/.test(text.trim()) ? Number(text) : NaN;
  if (!(files >= 1 && files <= MAX_LOG_MAX_FILES))
    throw new Error(`--log-max-files must be a whole number from 1 to ${MAX_LOG_MAX_FILES}; got '${text}'`);
  return files;
}

/** The daemon's `--log-max-size` and `--log-max-files`, each defaulted; undefined when neither is given. */
export function logLimitsFromFlags(maxSize?: string, maxFiles?: string): LogLimits | undefined {
  if (maxSize === undefined && maxFiles === undefined) return undefined;
  return {
    maxSizeBytes: maxSize === undefined ? DEFAULT_LOG_LIMITS.maxSizeBytes : parseLogMaxSize(maxSize),
    maxFiles: maxFiles === undefined ? DEFAULT_LOG_LIMITS.maxFiles : parseLogMaxFiles(maxFiles),
  };
}

/** Throws on limits the shim cannot keep (a caller that built them in code, not from flags). */
export function checkLogLimits(limits: LogLimits): LogLimits {
  const { maxSizeBytes, maxFiles } = limits;
  if (
    !Number.isInteger(maxSizeBytes) ||
    maxSizeBytes < MIN_LOG_MAX_SIZE_BYTES ||
    maxSizeBytes > MAX_LOG_MAX_SIZE_BYTES
  )
    throw new Error(
      `the log max size must be a whole number of bytes from ${MIN_LOG_MAX_SIZE_BYTES} to ${MAX_LOG_MAX_SIZE_BYTES}, got ${maxSizeBytes}`,
    );
  if (!Number.isInteger(maxFiles) || maxFiles < 1 || maxFiles > MAX_LOG_MAX_FILES)
    throw new Error(
      `the log max files must be a whole number from 1 to ${MAX_LOG_MAX_FILES}, got ${maxFiles}`,
    );
  return limits;
}

/** Parses "<unix ms> <o|e> <text>" lines of a container log. */
export function parseLogLine(line: string): LogLine | undefined {
  const first = line.indexOf(' ');
  if (first < 0) return undefined;
  const timeMs = Number(line.slice(0, first));
  const stream = line.slice(first + 1, first + 2);
  if (first === 0 || !Number.isFinite(timeMs) || (stream !== 'o' && stream !== 'e')) return undefined;
  return { stream: stream === 'o' ? 'stdout' : 'stderr', timeMs, text: line.slice(first + 3) };
}

/** One log file by name and inode, as seen at one moment. */
interface ChainEntry {
  name: string;
  ino: number;
}

/** An open log file: the descriptor keeps its bytes readable whatever the shim renames. */
interface OpenLog {
  fd: number;
  ino: number;
}

/** Where a reader is: a file, the next byte to read, and the start of an unfinished line. */
interface Cursor {
  file: OpenLog;
  offset: number;
  partial: Buffer;
}

/** The rotation index of a log file name: 0 for the current file, undefined for other files. */
function rotationIndex(name: string): number | undefined {
  if (name === LOG_FILE) return 0;
  const m = /^container\.log\.([1-9][0-9]{0,5})$/.exec(name);
  return m ? Number(m[1]) : undefined;
}

/** The log files in `dir`, oldest first, by one look (which a rotation can tear). */
function listOnce(dir: string): ChainEntry[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const indexed: { name: string; index: number }[] = [];
  for (const name of names) {
    const index = rotationIndex(name);
    if (index !== undefined) indexed.push({ name, index });
  }
  indexed.sort((a, b) => b.index - a.index);
  const entries: ChainEntry[] = [];
  for (const { name } of indexed) {
    try {
      entries.push({ name, ino: fs.statSync(path.join(dir, name)).ino });
    } catch {
      // Renamed away between the listing and the stat: the second look tells.
      entries.push({ name, ino: -1 });
    }
  }
  return entries;
}

function sameChain(a: ChainEntry[], b: ChainEntry[]): boolean {
  return a.length === b.length && a.every((e, i) => e.name === b[i]?.name && e.ino === b[i]?.ino);
}

function openLog(dir: string, entry: ChainEntry): OpenLog | undefined {
  let fd: number;
  try {
    fd = fs.openSync(path.join(dir, entry.name), 'r');
  } catch {
    return undefined;
  }
  if (fs.fstatSync(fd).ino !== entry.ino) {
    fs.closeSync(fd);
    return undefined;
  }
  return { fd, ino: entry.ino };
}

function closeAll(files: OpenLog[]): void {
  for (const f of files) fs.closeSync(f.fd);
}

/**
 * Opens the entries `pick` chooses from a view of the folder that held at one moment: two looks
 * that agree bracket the opens, and a name's inode never comes back once replaced, so nothing
 * was renamed in between. Undefined when `pick` finds nothing.
 */
function openConsistent(dir: string, pick: (chain: ChainEntry[]) => ChainEntry[]): OpenLog[] {
  let files: OpenLog[] = [];
  for (let attempt = 0; attempt < CHAIN_ATTEMPTS; attempt++) {
    const before = listOnce(dir);
    files = [];
    let torn = false;
    for (const entry of pick(before)) {
      const file = openLog(dir, entry);
      if (!file) {
        torn = true;
        break;
      }
      files.push(file);
    }
    if (!torn && sameChain(before, listOnce(dir))) return files;
    closeAll(files);
    files = [];
  }
  return files;
}

/** The file that follows `ino` in the rotation (the oldest one when `ino` is gone or undefined). */
function openNext(dir: string, ino: number | undefined): OpenLog | undefined {
  return openConsistent(dir, (chain) => {
    const at = ino === undefined ? -1 : chain.findIndex((e) => e.ino === ino);
    // At the newest: the shim has renamed it and not yet created the next one.
    const next = chain[at + 1];
    return next ? [next] : [];
  })[0];
}

function readAt(fd: number, buf: Buffer, length: number, position: number): number {
  return fs.readSync(fd, buf, 0, length, position);
}

/** Lines from the cursor on, up to `end` (a byte offset) or the end of the file. */
function* readForward(cursor: Cursor, sinceMs: number, end?: number): Generator<LogLine> {
  const chunk = Buffer.alloc(CHUNK_BYTES);
  for (;;) {
    const want = end === undefined ? CHUNK_BYTES : Math.min(CHUNK_BYTES, end - cursor.offset);
    if (want <= 0) return;
    const n = readAt(cursor.file.fd, chunk, want, cursor.offset);
    if (n === 0) return;
    cursor.offset += n;
    // Whole lines only: the bytes of an unfinished one (maybe half a character) wait for the rest.
    const data = cursor.partial.length
      ? Buffer.concat([cursor.partial, chunk.subarray(0, n)])
      : chunk.subarray(0, n);
    const texts: string[] = [];
    let start = 0;
    for (let nl = data.indexOf(10, start); nl >= 0; nl = data.indexOf(10, start)) {
      texts.push(data.toString('utf8', start, nl));
      start = nl + 1;
    }
    cursor.partial = Buffer.from(data.subarray(start));
    for (const text of texts) {
      const line = parseLogLine(text);
      if (line && line.timeMs >= sinceMs) yield line;
    }
  }
}

/** The offset just past the last newline at or before `size`: where whole lines end. */
function lineBoundary(fd: number, size: number): number {
  const chunk = Buffer.alloc(CHUNK_BYTES);
  let hi = size;
  while (hi > 0) {
    const lo = Math.max(0, hi - CHUNK_BYTES);
    const n = readAt(fd, chunk, hi - lo, lo);
    const nl = chunk.subarray(0, n).lastIndexOf(10);
    if (nl >= 0) return lo + nl + 1;
    hi = lo;
  }
  return 0;
}

/** Whether the line starting at `start` (its newline at `newline`) is a log line at or after `sinceMs`. */
function lineCounts(
  fd: number,
  chunk: Buffer,
  lo: number,
  hi: number,
  start: number,
  newline: number,
  sinceMs: number,
): boolean {
  const prefixEnd = Math.min(newline, start + PREFIX_BYTES);
  let prefix: string;
  if (prefixEnd <= hi) {
    prefix = chunk.toString('utf8', start - lo, prefixEnd - lo);
  } else {
    const buf = Buffer.alloc(prefixEnd - start);
    prefix = buf.toString('utf8', 0, readAt(fd, buf, buf.length, start));
  }
  const line = parseLogLine(prefix);
  return line !== undefined && line.timeMs >= sinceMs;
}

/**
 * Where the last `tail` lines at or after `sinceMs` start, counting back from `ends` (each file's
 * end at a line boundary): the index of the file and the offset in it.
 */
function findTailStart(
  files: OpenLog[],
  ends: number[],
  tail: number,
  sinceMs: number,
): { index: number; offset: number } {
  const newest = files.length - 1;
  if (tail <= 0) return { index: newest, offset: ends[newest] ?? 0 };
  const chunk = Buffer.alloc(CHUNK_BYTES);
  let counted = 0;
  for (let index = newest; index >= 0; index--) {
    const file = files[index];
    const end = ends[index] ?? 0;
    if (!file || end === 0) continue;
    // The line being walked back over ends with the newline at `newline`.
    let newline = end - 1;
    let hi = end - 1;
    while (hi > 0) {
      const lo = Math.max(0, hi - CHUNK_BYTES);
      const n = readAt(file.fd, chunk, hi - lo, lo);
      for (let j = n - 1; j >= 0; j--) {
        if (chunk[j] !== 10) continue;
        const start = lo + j + 1;
        if (lineCounts(file.fd, chunk, lo, lo + n, start, newline, sinceMs) && ++counted === tail)
          return { index, offset: start };
        newline = lo + j;
      }
      hi = lo;
    }
    // The file's first line.
    const n = readAt(file.fd, chunk, Math.min(CHUNK_BYTES, end), 0);
    if (lineCounts(file.fd, chunk, 0, n, 0, newline, sinceMs) && ++counted === tail)
      return { index, offset: 0 };
  }
  return { index: 0, offset: 0 };
}

export interface LogReadOptions extends LogOptions {
  /** How long a follower sleeps when it has read everything. */
  pollMs: number;
  /**
   * For a follower: true once nothing more will be written (the container exited, or is gone).
   * Asked before each last read, so a line written just before it is still read.
   */
  finished: () => boolean;
}

/** The log lines of the container whose folder is `dir`, across rotated files. */
export async function* readContainerLog(dir: string, options: LogReadOptions): AsyncGenerator<LogLine> {
  const sinceMs = options.sinceMs ?? 0;
  const chain = openConsistent(dir, (entries) => entries);
  // The follower's place; a holder, so that whatever file it has open is closed on every way out.
  const at: { cursor?: Cursor } = {};
  try {
    const newest = chain.length - 1;
    const newestFile = chain[newest];
    if (newestFile) {
      let start = { index: 0, offset: 0 };
      let newestEnd: number | undefined;
      if (options.tail !== undefined) {
        // Rotated files end at a line boundary; the current one may end in half a line.
        const ends = chain.map((f) => fs.fstatSync(f.fd).size);
        newestEnd = lineBoundary(newestFile.fd, ends[newest] ?? 0);
        ends[newest] = newestEnd;
        start = findTailStart(chain, ends, options.tail, sinceMs);
      }
      for (let index = start.index; index <= newest; index++) {
        const file = chain[index];
        if (!file) continue;
        const cursor: Cursor = {
          file,
          offset: index === start.index ? start.offset : 0,
          partial: Buffer.alloc(0),
        };
        yield* readForward(cursor, sinceMs, index === newest ? newestEnd : undefined);
        if (index === newest) {
          at.cursor = cursor;
          chain.pop();
        }
      }
    }
    if (!options.follow) return;
    // The follower keeps the newest file open; the rotated ones are read.
    closeAll(chain.splice(0));
    const signal = options.signal ?? new AbortController().signal;
    for (;;) {
      if (signal.aborted) return;
      const finished = options.finished();
      yield* followOnce(dir, at, sinceMs);
      if (finished) return;
      await abortableSleep(options.pollMs, signal);
    }
  } finally {
    closeAll(chain);
    if (at.cursor) fs.closeSync(at.cursor.file.fd);
  }
}

/**
 * Reads what is there now: to the end of the cursor's file, and on through the files the shim
 * started since. The shim closes a file before it renames it, so once the current name points
 * elsewhere the cursor's file is complete.
 */
function* followOnce(dir: string, at: { cursor?: Cursor }, sinceMs: number): Generator<LogLine> {
  for (;;) {
    const cursor = at.cursor;
    if (cursor) {
      yield* readForward(cursor, sinceMs);
      let current: number | undefined;
      try {
        current = fs.statSync(path.join(dir, LOG_FILE)).ino;
      } catch {
        current = undefined;
      }
      if (current === cursor.file.ino) return;
      // Rotated: whatever was written before the rename is there now.
      yield* readForward(cursor, sinceMs);
    }
    const next = openNext(dir, cursor?.file.ino);
    if (!next) return;
    if (cursor) fs.closeSync(cursor.file.fd);
    at.cursor = { file: next, offset: 0, partial: Buffer.alloc(0) };
  }
}
