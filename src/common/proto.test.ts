// The committed src/gen must match proto/: the check fails when a .proto changes without
// regenerating. Runs the real check (protoc + ts-proto) on copies of both folders.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.join(__dirname, '..', '..', '..');

function check(protoDir: string, genDir: string) {
  return spawnSync('bash', [path.join(root, 'scripts', 'gen-proto.sh'), '--check'], {
    encoding: 'utf8',
    env: { ...process.env, PROTO_DIR: protoDir, GEN_DIR: genDir },
    timeout: 60_000,
  });
}

test('the staleness check passes on the committed code and fails when a .proto changes', (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'proto-check-'));
  t.after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const protoDir = path.join(tmp, 'proto');
  const genDir = path.join(tmp, 'gen');
  fs.cpSync(path.join(root, 'proto'), protoDir, { recursive: true });
  fs.cpSync(path.join(root, 'src', 'gen'), genDir, { recursive: true });

  const fresh = check(protoDir, genDir);
  assert.equal(fresh.status, 0, fresh.stderr);

  const objects = path.join(protoDir, 'cluster', 'v1', 'objects.proto');
  fs.appendFileSync(objects, '\nmessage AddedWithoutRegenerating { string field = 1; }\n');
  const stale = check(protoDir, genDir);
  assert.equal(stale.status, 1);
  assert.match(stale.stderr, /stale/);
});
