// Typed errors of the durable Raft storage, each naming the data directory and what a person
// should do about it, so the node can print them as they are and exit.

import { RaftError } from '../types';

const CORRUPT_ADVICE =
  "The data cannot be trusted: restore this member's data directory from a backup, or remove " +
  'the member from the cluster and re-join it with an empty data directory.';

/** The store exists but fails verification; it is never used in that state. */
export class StorageCorruptError extends RaftError {
  constructor(
    readonly dir: string,
    /** The LevelDB key at fault, as a person reads it ("entry 42", "'h'"), when one is. */
    readonly key: string | undefined,
    /** The log index at fault, when the problem is about one entry. */
    readonly index: number | undefined,
    readonly problem: string,
  ) {
    super(
      'STORAGE_CORRUPT',
      `raft storage in ${dir} is corrupt: ${key === undefined ? '' : `${key}: `}${problem}. ${CORRUPT_ADVICE}`,
    );
    this.name = 'StorageCorruptError';
  }
}

/** The store was written by a format this build does not read. */
export class StorageVersionError extends RaftError {
  constructor(
    readonly dir: string,
    readonly found: number,
    readonly supported: number,
  ) {
    super(
      'STORAGE_VERSION',
      `raft storage in ${dir} has format version ${found}, this build reads version ${supported}: ` +
        'run a build that supports it, or remove the member and re-join it with an empty data directory.',
    );
    this.name = 'StorageVersionError';
  }
}

/** Disk or permission trouble: the directory cannot be created, opened, or written. */
export class StorageIOError extends RaftError {
  constructor(
    readonly dir: string,
    action: string,
    override readonly cause: unknown,
  ) {
    super('STORAGE_IO', `cannot ${action} raft storage in ${dir}: ${describeCause(cause)}`);
    this.name = 'StorageIOError';
  }
}

/** Another process (most likely another member using the same --data-dir) holds the store. */
export class StorageLockedError extends RaftError {
  constructor(
    readonly dir: string,
    override readonly cause: unknown,
  ) {
    super(
      'STORAGE_LOCKED',
      `raft storage in ${dir} is locked by another process: is another member running with this ` +
        `data directory? (${causeMessage(cause)})`,
    );
    this.name = 'StorageLockedError';
  }
}

/** The store refused a write earlier; it must be reopened (which verifies it) before more. */
export class StorageFailedError extends RaftError {
  constructor(
    readonly dir: string,
    override readonly cause: unknown,
  ) {
    super(
      'STORAGE_FAILED',
      `raft storage in ${dir} failed an earlier write and accepts no more: restart this member ` +
        `(${causeMessage(cause)})`,
    );
    this.name = 'StorageFailedError';
  }
}

/** A write was issued after close(): a bug in the caller's shutdown order. */
export class StorageClosedError extends RaftError {
  constructor(readonly dir: string) {
    super('STORAGE_CLOSED', `raft storage in ${dir} is closed`);
    this.name = 'StorageClosedError';
  }
}

/** The innermost message: LevelDB wraps its native error in LEVEL_* errors with a cause. */
export function causeMessage(cause: unknown): string {
  let current: unknown = cause;
  let message = String(cause);
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    message = current.message;
    current = current.cause;
  }
  return message;
}

/** The cause plus the likely remedy, for the failures a person can fix. */
function describeCause(cause: unknown): string {
  const message = causeMessage(cause);
  const code = errorCode(cause);
  if (code === 'ENOSPC' || /no space left/i.test(message)) {
    return `${message}: the disk is full; free space, then restart this member`;
  }
  if (code === 'EACCES' || code === 'EPERM' || /permission denied/i.test(message)) {
    return `${message}: the directory is not writable by this process; fix its owner or permissions`;
  }
  if (code === 'EROFS' || /read-only file system/i.test(message)) {
    return `${message}: the file system is read-only; use a writable --data-dir`;
  }
  if (code === 'ENOTDIR' || code === 'EEXIST') {
    return `${message}: a file is in the way; choose another --data-dir`;
  }
  return message;
}

/** The first `code` property found along the cause chain (Node system errors carry one). */
export function errorCode(cause: unknown): string | undefined {
  let current: unknown = cause;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code: unknown = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string' && !code.startsWith('LEVEL_')) return code;
    current = current.cause;
  }
  return undefined;
}

/** The LEVEL_* code LevelDB put on the error or its cause (LEVEL_LOCKED, LEVEL_CORRUPTION…). */
export function levelCode(cause: unknown): string | undefined {
  let current: unknown = cause;
  let found: string | undefined;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const code: unknown = (current as Error & { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('LEVEL_')) found = code;
    current = current.cause;
  }
  return found;
}
