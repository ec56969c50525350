// Disk faults a test cannot make without a file system of its own: a full disk and a
// read-only one. Each runs a child in a private mount namespace (unshare) over a tmpfs, which
// vanishes with the child, so nothing is left mounted even if the test dies. Skipped where
// unprivileged mount namespaces are not allowed.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

import { withTempDir } from './test_util';

const CHILD = join(__dirname, 'fault_child.js');

// The probe mounts over the temp directory inside its own namespace: invisible outside it.
const canUnshare =
  spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs tmpfs "$1"', 'sh', tmpdir()], { stdio: 'ignore' })
    .status === 0;
const skip = canUnshare ? false : 'unshare -rm with a tmpfs mount is not permitted here';

type Report = Record<string, unknown>;

/** Mounts a tmpfs with `mountOptions` over `dir` in a new namespace and runs the child there. */
function runInTmpfs(dir: string, mountOptions: string, mode: 'fill' | 'open'): Promise<Report[]> {
  return new Promise((resolve, reject) => {
    const script = 'mount -t tmpfs -o "$1" tmpfs "$2" && exec "$3" "$4" "$2" "$5"';
    const child = spawn(
      'unshare',
      ['-rm', 'sh', '-c', script, 'sh', mountOptions, dir, process.execPath, CHILD, mode],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) reject(new Error(`fault child exited with ${code}: ${stderr}`));
      else
        resolve(
          stdout
            .trim()
            .split('\n')
            .map((line) => JSON.parse(line) as Report),
        );
    });
  });
}

test(
  'a full disk fails the save with a clear error, changes nothing visible, and stops further writes',
  { skip },
  async () => {
    await withTempDir(async (dir) => {
      const reports = await runInTmpfs(dir, 'size=1m', 'fill');
      const failed = reports.find((r) => r.event === 'saveFailed');
      assert.ok(failed !== undefined, `no save failed: ${JSON.stringify(reports)}`);
      assert.equal(failed.code, 'STORAGE_IO');
      assert.match(
        String(failed.message),
        /cannot write raft storage in .*: the disk is full; free space, then restart this member/,
      );
      assert.ok(String(failed.message).includes(dir), 'the message names the directory');
      assert.equal(failed.lastIndexAfter, failed.lastIndexBefore, 'a failed write changes nothing visible');
      assert.ok(Number(failed.lastIndexBefore) > 0, 'some writes succeeded before the disk filled');
      const next = reports.find((r) => r.event === 'nextSave');
      assert.equal(
        next?.code,
        'STORAGE_FAILED',
        'after a failed write the store refuses more until reopened',
      );
    });
  },
);

test('a read-only file system gives a clear error naming the directory', { skip }, async () => {
  await withTempDir(async (dir) => {
    const reports = await runInTmpfs(dir, 'ro', 'open');
    assert.equal(reports.length, 1);
    const [report] = reports;
    assert.equal(report.event, 'openFailed');
    assert.equal(report.code, 'STORAGE_IO');
    assert.ok(String(report.message).includes(dir), String(report.message));
    assert.match(String(report.message), /read-only; use a writable --data-dir/);
  });
});
