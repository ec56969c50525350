// Helpers shared by the storage tests: temporary directories that are always removed, entry
// builders, and raw LevelDB access for damaging a store on purpose.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { ClassicLevel } from 'classic-level';

import { type Entry, EntryType } from '../types';

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'raft-storage-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Entry `index` of `term`, with data that names both, so mix-ups show in assertions. */
export function entry(index: number, term: number, type: EntryType = EntryType.Normal): Entry {
  return { index, term, type, data: new TextEncoder().encode(`entry ${index} term ${term}`) };
}

export function entries(from: number, to: number, term: number): Entry[] {
  const result: Entry[] = [];
  for (let i = from; i <= to; i++) result.push(entry(i, term));
  return result;
}

/** Opens the store's LevelDB directly, bypassing every check, and closes it after `fn`. */
export async function withRawDb(
  dir: string,
  fn: (db: ClassicLevel<Uint8Array, Uint8Array>) => Promise<void>,
): Promise<void> {
  const db = new ClassicLevel<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
  await db.open();
  try {
    await fn(db);
  } finally {
    await db.close();
  }
}
