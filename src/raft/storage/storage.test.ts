// LevelRaftStorage against real LevelDB files: what is saved comes back exactly after a
// reopen, conflicting suffixes and compacted entries are gone, and a damaged store is refused.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';

import { SnapshotOutOfDateError } from '../memory_storage';
import { CompactedError, type Entry, EntryType, UnavailableError } from '../types';
import { RaftInvariantError } from '../util';
import {
  COMPACTION_KEY,
  HARD_STATE_KEY,
  SNAPSHOT_DATA_KEY,
  VERSION_KEY,
  encodeEntry,
  encodeHardState,
  encodeVersion,
  entryKey,
} from './codec';
import { LevelRaftStorage, StorageCorruptError } from './index';
import { entries, entry, withRawDb, withTempDir } from './test_util';

const NO_LIMIT = Number.MAX_SAFE_INTEGER;

async function withStorage<T>(dir: string, fn: (s: LevelRaftStorage) => T | Promise<T>): Promise<T> {
  const storage = await LevelRaftStorage.open(dir);
  try {
    return await fn(storage);
  } finally {
    await storage.close();
  }
}

function allEntries(s: LevelRaftStorage): Entry[] {
  return s.entries(s.firstIndex(), s.lastIndex() + 1, NO_LIMIT);
}

/** Asserts that opening `dir` fails as corrupt, naming `dir` and matching `problem`. */
async function assertCorrupt(dir: string, problem: RegExp, index?: number): Promise<void> {
  await assert.rejects(LevelRaftStorage.open(dir), (err: unknown) => {
    assert.ok(err instanceof StorageCorruptError, `expected StorageCorruptError, got ${String(err)}`);
    assert.equal(err.code, 'STORAGE_CORRUPT');
    assert.match(err.message, problem);
    assert.ok(err.message.includes(dir), 'the message names the directory');
    assert.match(err.message, /restore this member's data directory from a backup, or remove the member/);
    if (index !== undefined) assert.equal(err.index, index);
    return true;
  });
}

/** A store with entries 1..10 of term 1, commit 8. */
async function makeTenEntries(dir: string): Promise<void> {
  await withStorage(dir, (s) => s.save({ term: 1, vote: 1, commit: 8 }, entries(1, 10, 1)));
}

test('a new store is empty, marked new, and its directory is created owner-only', async () => {
  await withTempDir(async (parent) => {
    const dir = join(parent, 'a', 'raft');
    await withStorage(dir, (s) => {
      assert.equal(s.isNew, true);
      assert.equal(s.firstIndex(), 1);
      assert.equal(s.lastIndex(), 0);
      assert.deepEqual(s.initialState(), {
        hardState: { term: 0, vote: 0, commit: 0 },
        confState: { voters: [], learners: [] },
      });
    });
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    await withStorage(dir, (s) => assert.equal(s.isNew, false));
  });
});

test('save then reopen restores hard state and entries of both types exactly', async () => {
  await withTempDir(async (dir) => {
    const saved = [
      entry(1, 1, EntryType.ConfChange),
      entry(2, 1),
      entry(3, 2),
      { index: 4, term: 2, type: EntryType.Normal, data: new Uint8Array(0) },
    ];
    await withStorage(dir, async (s) => {
      await s.save({ term: 2, vote: 3, commit: 3 }, saved);
      assert.deepEqual(allEntries(s), saved);
    });
    await withStorage(dir, (s) => {
      assert.equal(s.isNew, false);
      assert.deepEqual(s.initialState(), {
        hardState: { term: 2, vote: 3, commit: 3 },
        // Membership lives in the log (ConfChange entries) and in snapshots, not beside them.
        confState: { voters: [], learners: [] },
      });
      assert.deepEqual(allEntries(s), saved);
      assert.equal(s.term(3), 2);
      assert.equal(s.term(0), 0);
      assert.throws(() => s.term(5), UnavailableError);
      // Byte limits still apply to the reloaded copy: at least one entry, then up to the limit.
      assert.equal(s.entries(1, 5, 1).length, 1);
    });
  });
});

test('a conflicting suffix is deleted in the same save: 1..10 term 1, then 6..7 term 2 → last 7', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      await s.save({ term: 1, vote: 1, commit: 5 }, entries(1, 10, 1));
      await s.save({ term: 2, vote: 2, commit: 5 }, entries(6, 7, 2));
      assert.equal(s.lastIndex(), 7);
    });
    await withStorage(dir, (s) => {
      assert.equal(s.lastIndex(), 7);
      assert.deepEqual(allEntries(s), [...entries(1, 5, 1), ...entries(6, 7, 2)]);
    });
    // Nothing of the old suffix is left on disk either (a later append must not resurrect it).
    await withRawDb(dir, async (db) => {
      for (let i = 8; i <= 10; i++)
        assert.equal(await db.get(entryKey(i)), undefined, `entry ${i} still stored`);
    });
  });
});

test('createSnapshot compacts the log; snapshot, first index and terms survive a reopen', async () => {
  await withTempDir(async (dir) => {
    const image = new TextEncoder().encode('application state at 6');
    await withStorage(dir, async (s) => {
      await s.save({ term: 2, vote: 1, commit: 8 }, [...entries(1, 4, 1), ...entries(5, 10, 2)]);
      const snap = await s.createSnapshot(6, { voters: [1, 2, 3], learners: [] }, image);
      assert.deepEqual(snap.metadata, { index: 6, term: 2, confState: { voters: [1, 2, 3], learners: [] } });
      assert.equal(s.firstIndex(), 7);
    });
    await withStorage(dir, (s) => {
      assert.equal(s.firstIndex(), 7);
      assert.equal(s.lastIndex(), 10);
      assert.equal(s.term(6), 2);
      assert.throws(() => s.term(5), CompactedError);
      assert.throws(() => s.entries(6, 8, NO_LIMIT), CompactedError);
      assert.deepEqual(s.snapshot(), {
        metadata: { index: 6, term: 2, confState: { voters: [1, 2, 3], learners: [] } },
        data: image,
      });
      assert.deepEqual(s.initialState().confState, { voters: [1, 2, 3], learners: [] });
      assert.deepEqual(allEntries(s), entries(7, 10, 2));
    });
    await withRawDb(dir, async (db) => {
      for (let i = 1; i <= 6; i++)
        assert.equal(await db.get(entryKey(i)), undefined, `entry ${i} not compacted`);
    });
  });
});

test('a snapshot may keep a tail of entries for slow followers; compact() later drops them', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      await s.save({ term: 1, vote: 1, commit: 10 }, entries(1, 10, 1));
      await s.createSnapshot(8, { voters: [1], learners: [] }, Uint8Array.of(8), 3);
      assert.equal(s.firstIndex(), 6);
    });
    await withStorage(dir, async (s) => {
      assert.equal(s.firstIndex(), 6);
      assert.equal(s.term(5), 1);
      assert.equal(s.snapshot().metadata.index, 8);
      assert.deepEqual(allEntries(s), entries(6, 10, 1));
      await s.compact(8);
      await assert.rejects(s.compact(7), CompactedError);
      await assert.rejects(s.compact(9), RaftInvariantError, 'entries past the snapshot are never compacted');
    });
    await withStorage(dir, (s) => {
      assert.equal(s.firstIndex(), 9);
      assert.deepEqual(allEntries(s), entries(9, 10, 1));
    });
  });
});

test('a snapshot received from the leader replaces the whole log, with later entries in the same save', async () => {
  await withTempDir(async (dir) => {
    const snapshot = {
      metadata: { index: 20, term: 3, confState: { voters: [1, 2], learners: [3] } },
      data: Uint8Array.of(20),
    };
    await withStorage(dir, async (s) => {
      await s.save({ term: 1, vote: 1, commit: 2 }, entries(1, 5, 1));
      await s.save({ term: 3, vote: 0, commit: 21 }, entries(21, 22, 3), snapshot);
      await assert.rejects(s.save(undefined, [], snapshot), SnapshotOutOfDateError);
    });
    await withStorage(dir, (s) => {
      assert.deepEqual(s.snapshot(), snapshot);
      assert.equal(s.firstIndex(), 21);
      assert.deepEqual(allEntries(s), entries(21, 22, 3));
      assert.deepEqual(s.initialState(), {
        hardState: { term: 3, vote: 0, commit: 21 },
        confState: { voters: [1, 2], learners: [3] },
      });
    });
    await withRawDb(dir, async (db) => {
      for (let i = 1; i <= 5; i++)
        assert.equal(await db.get(entryKey(i)), undefined, `entry ${i} left behind`);
    });
  });
});

test('what Raft never produces is refused and nothing is written', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withStorage(dir, async (s) => {
      await assert.rejects(s.save(undefined, entries(12, 13, 1)), /append leaves a gap/);
      await assert.rejects(s.save(undefined, entries(11, 11, 0)), /term 0 < previous term 1/);
      await assert.rejects(
        s.save(undefined, entries(7, 7, 2)),
        /committed with term 1; refusing to overwrite/,
      );
      await assert.rejects(s.save({ term: 0, vote: 0, commit: 8 }, []), /term 0 < stored term 1/);
      await assert.rejects(s.save({ term: 1, vote: 1, commit: 7 }, []), /commit 7 < stored 8/);
      await assert.rejects(s.save({ term: 1, vote: 1, commit: 11 }, []), /commit 11 > last index 10/);
      await assert.rejects(
        s.createSnapshot(9, { voters: [], learners: [] }, new Uint8Array(0)),
        /beyond the durable commit index 8/,
      );
      // A refused write is not a failed one: the store keeps working.
      await s.save({ term: 2, vote: 1, commit: 9 }, entries(11, 11, 2));
    });
    await withStorage(dir, (s) => {
      assert.deepEqual(allEntries(s), [...entries(1, 10, 1), entry(11, 2)]);
      assert.deepEqual(s.initialState().hardState, { term: 2, vote: 1, commit: 9 });
    });
  });
});

test('saves issued without waiting are written one at a time, in call order', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      const pending: Promise<void>[] = [];
      for (let i = 1; i <= 50; i++) pending.push(s.save({ term: 1, vote: 1, commit: i - 1 }, [entry(i, 1)]));
      // The conflicting rewrite is planned against the state the earlier saves leave.
      pending.push(s.save({ term: 2, vote: 2, commit: 49 }, entries(50, 52, 2)));
      await Promise.all(pending);
    });
    await withStorage(dir, (s) => {
      assert.deepEqual(allEntries(s), [...entries(1, 49, 1), ...entries(50, 52, 2)]);
      assert.equal(s.initialState().hardState.commit, 49);
    });
  });
});

test('a second open of the same directory is refused as locked', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async () => {
      await assert.rejects(LevelRaftStorage.open(dir), (err: unknown) => {
        assert.ok(err instanceof Error);
        assert.match(
          err.message,
          /is locked by another process: is another member running with this data directory/,
        );
        assert.ok(err.message.includes(dir));
        return true;
      });
    });
  });
});

// ---- corruption ----

test('a flipped byte in an entry is detected and names the entry', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, async (db) => {
      const value = await db.get(entryKey(5));
      assert.ok(value !== undefined);
      const damaged = value.slice();
      damaged[damaged.length - 2] ^= 0x01;
      await db.put(entryKey(5), damaged);
    });
    await assertCorrupt(dir, /entry 5: entry checksum mismatch/, 5);
  });
});

test('a flipped byte in an entry term (the header) is detected too', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, async (db) => {
      const value = await db.get(entryKey(3));
      assert.ok(value !== undefined);
      const damaged = value.slice();
      damaged[11] ^= 0x04;
      await db.put(entryKey(3), damaged);
    });
    await assertCorrupt(dir, /entry 3: entry checksum mismatch/, 3);
  });
});

test('a missing middle entry (gap) is detected', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, (db) => db.del(entryKey(4)));
    await assertCorrupt(dir, /log has a gap: entries 4 are missing before entry 5/, 4);
  });
});

test('a log truncated below the hard state commit is detected', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, (db) =>
      db.batch([
        { type: 'del', key: entryKey(9) },
        { type: 'del', key: entryKey(10) },
        { type: 'del', key: entryKey(8) },
      ]),
    );
    await assertCorrupt(
      dir,
      /hard state commit index 8 is beyond the last log entry 7: committed entries are missing/,
      8,
    );
  });
});

test('a damaged hard state, snapshot data, or compaction point is detected', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      await s.save({ term: 1, vote: 1, commit: 10 }, entries(1, 10, 1));
      await s.createSnapshot(5, { voters: [1], learners: [] }, new TextEncoder().encode('image'));
    });
    const flip = (key: Uint8Array, at: number) =>
      withRawDb(dir, async (db) => {
        const value = await db.get(key);
        assert.ok(value !== undefined);
        const damaged = value.slice();
        damaged[at] ^= 0x80;
        await db.put(key, damaged);
      });
    await flip(HARD_STATE_KEY, 10);
    await assertCorrupt(dir, /'h': hard state checksum mismatch/);
    await flip(HARD_STATE_KEY, 10);
    await flip(SNAPSHOT_DATA_KEY, 2);
    await assertCorrupt(dir, /'d': snapshot data checksum mismatch/);
    await flip(SNAPSHOT_DATA_KEY, 2);
    await withRawDb(dir, (db) => db.del(COMPACTION_KEY));
    await assertCorrupt(dir, /'c': the compaction point is missing though a snapshot at 5 exists/);
  });
});

test('terms going backwards, a stray key, a missing or unknown format version are detected', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, (db) => db.put(entryKey(10), encodeEntry(entry(10, 0))));
    await assertCorrupt(dir, /entry 10: term 0 is lower than the previous entry's term 1/, 10);
    await withRawDb(dir, (db) => db.put(entryKey(10), encodeEntry(entry(10, 1))));
    await withRawDb(dir, (db) => db.put(Uint8Array.of(0x7a), Uint8Array.of(1)));
    await assertCorrupt(dir, /'z': unexpected key/);
    await withRawDb(dir, (db) => db.del(Uint8Array.of(0x7a)));
    await withRawDb(dir, (db) => db.del(VERSION_KEY));
    await assertCorrupt(dir, /format version key is missing/);
    await withRawDb(dir, (db) => db.put(VERSION_KEY, encodeVersion(99)));
    await assert.rejects(LevelRaftStorage.open(dir), /format version 99, this build reads version 1/);
    await withRawDb(dir, (db) => db.put(VERSION_KEY, encodeVersion(1)));
    await withStorage(dir, (s) => assert.equal(s.lastIndex(), 10));
  });
});

test('a valid-looking hard state whose commit passes the log is detected', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await withRawDb(dir, (db) => db.put(HARD_STATE_KEY, encodeHardState({ term: 1, vote: 1, commit: 11 })));
    await assertCorrupt(dir, /commit index 11 is beyond the last log entry 10/, 11);
  });
});

// ---- unusable directories ----

test('a data directory that cannot be created gives a clear error naming the path', async () => {
  await withTempDir(async (parent) => {
    const file = join(parent, 'not-a-dir');
    await writeFile(file, 'x');
    const dir = join(file, 'raft');
    await assert.rejects(LevelRaftStorage.open(dir), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.equal((err as Error & { code?: string }).code, 'STORAGE_IO');
      assert.ok(err.message.includes(dir), err.message);
      assert.match(err.message, /cannot create the directory for raft storage in .*a file is in the way/);
      return true;
    });
  });
});

test(
  'a directory without write permission gives a clear error (skipped as root)',
  {
    skip:
      process.getuid?.() === 0
        ? 'root ignores permissions; see fault.test for a read-only file system'
        : false,
  },
  async () => {
    await withTempDir(async (dir) => {
      await chmod(dir, 0o500);
      try {
        await assert.rejects(
          LevelRaftStorage.open(dir),
          /not writable by this process; fix its owner or permissions/,
        );
      } finally {
        await chmod(dir, 0o700);
      }
    });
  },
);

test('close waits for queued writes; writes after close are refused, reads still answer', async () => {
  await withTempDir(async (dir) => {
    const storage = await LevelRaftStorage.open(dir);
    const pending = storage.save({ term: 1, vote: 1, commit: 0 }, entries(1, 3, 1));
    await storage.close();
    await pending;
    await assert.rejects(storage.save(undefined, [entry(4, 1)]), { code: 'STORAGE_CLOSED' });
    assert.equal(storage.lastIndex(), 3);
    await withStorage(dir, (s) => assert.equal(s.lastIndex(), 3));
  });
});

// ---- damage below our records: LevelDB's own write-ahead log ----

async function levelDbLogFile(dir: string): Promise<string> {
  const logs = (await readdir(dir)).filter((name) => name.endsWith('.log'));
  assert.equal(logs.length, 1, `expected one LevelDB log file, found ${logs.join(', ')}`);
  return join(dir, logs[0]);
}

test('a damaged record in LevelDB’s write-ahead log is refused, and stays refused on the next open', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    const logFile = await levelDbLogFile(dir);
    const bytes = await readFile(logFile);
    // In the middle of the log: LevelDB alone would drop this save and all after it, silently.
    bytes[Math.floor(bytes.length / 2)] ^= 0x01;
    await writeFile(logFile, bytes);
    await assertCorrupt(
      dir,
      /LevelDB dropped damaged records of its write-ahead log while opening: .*dropping \d+ bytes/,
    );
    // LevelDB rewrote its files without the bad records during that open; our marker remains.
    await assertCorrupt(dir, /'x': an earlier open found damage/);
  });
});

test('a torn tail of LevelDB’s log (power lost mid-write) opens cleanly with a prefix of the saves', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      for (let i = 1; i <= 10; i++) await s.save({ term: 1, vote: 1, commit: i - 1 }, [entry(i, 1)]);
    });
    const logFile = await levelDbLogFile(dir);
    await truncate(logFile, (await stat(logFile)).size - 7);
    await withStorage(dir, (s) => {
      assert.equal(s.lastIndex(), 9, 'only the torn last save is gone');
      assert.deepEqual(s.initialState().hardState, { term: 1, vote: 1, commit: 8 });
    });
  });
});

test('LevelDB data files without their CURRENT file are refused, not replaced by an empty store', async () => {
  await withTempDir(async (dir) => {
    await makeTenEntries(dir);
    await rm(join(dir, 'CURRENT'));
    await assertCorrupt(
      dir,
      /CURRENT: LevelDB's CURRENT file is missing but its data files are present \(.*\.log/,
    );
  });
});

test('a flipped byte in a LevelDB table file (entries already compacted out of its log) is detected', async () => {
  await withTempDir(async (dir) => {
    // Random payloads: Snappy leaves them as they are, so the test can find one in the file.
    const stored = Array.from({ length: 10 }, (_, i) => ({
      index: i + 1,
      term: 1,
      type: EntryType.Normal,
      data: new Uint8Array(randomBytes(64)),
    }));
    await withStorage(dir, (s) => s.save({ term: 1, vote: 1, commit: 8 }, stored));
    // compactRange flushes the memtable, moving the entries from LevelDB's log into a table.
    await withRawDb(dir, (db) => db.compactRange(Uint8Array.of(0x00), Uint8Array.of(0xff)));
    const tables = (await readdir(dir)).filter((name) => name.endsWith('.ldb'));
    assert.equal(tables.length, 1, `expected one table file, found ${tables.join(', ')}`);
    const tableFile = join(dir, tables[0]);
    const bytes = await readFile(tableFile);
    const at = bytes.indexOf(stored[1].data);
    assert.ok(at > 0, 'entry 2 is stored as it is in the table');
    bytes[at + 3] ^= 0x01;
    await writeFile(tableFile, bytes);
    await assertCorrupt(dir, /entry 2: entry checksum mismatch/, 2);
  });
});

test('a hard state older than the log’s last term (lost or rolled back) is detected', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, (s) => s.save({ term: 3, vote: 2, commit: 1 }, [entry(1, 1), entry(2, 3)]));
    await withRawDb(dir, (db) => db.put(HARD_STATE_KEY, encodeHardState({ term: 2, vote: 2, commit: 1 })));
    await assertCorrupt(
      dir,
      /'h': hard state term 2 is older than the last entry's term 3: the hard state was lost/,
    );
    await withRawDb(dir, (db) => db.del(HARD_STATE_KEY));
    await assertCorrupt(dir, /hard state term 0 is older than the last entry's term 3/);
  });
});

test('entries of a term newer than the stored hard state are refused', async () => {
  await withTempDir(async (dir) => {
    await withStorage(dir, async (s) => {
      await s.save({ term: 1, vote: 1, commit: 0 }, [entry(1, 1)]);
      await assert.rejects(
        s.save(undefined, [entry(2, 2)]),
        /entries of term 2 saved with hard state term 1/,
      );
      await s.save({ term: 2, vote: 1, commit: 0 }, [entry(2, 2)]);
      assert.equal(s.lastIndex(), 2);
    });
  });
});
