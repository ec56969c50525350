// The Vagrantfile of the multi-VM lab validates, and rejects settings it cannot honour.
// (Booting VMs needs VirtualBox, which CI machines do not have; the provisioning script's init
// and joins run on every `scripts/lab up`.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

const root = path.join(__dirname, '..', '..');
// Vagrant keeps per-project state in .vagrant/; the test keeps it out of the work tree.
const dotfiles = fs.mkdtempSync(path.join(os.tmpdir(), 'vagrant-validate-'));
after(() => fs.rmSync(dotfiles, { recursive: true, force: true }));

function validate(env: Record<string, string>) {
  const r = spawnSync('vagrant', ['validate', '--ignore-provider'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
    env: {
      ...process.env,
      VAGRANT_DEFAULT_PROVIDER: 'virtualbox',
      VAGRANT_CHECKPOINT_DISABLE: '1',
      VAGRANT_DOTFILE_PATH: dotfiles,
      ...env,
    },
  });
  assert.notEqual(
    r.error?.message.includes('ENOENT'),
    true,
    'vagrant is not installed: run scripts/setup.sh',
  );
  return { code: r.status, out: r.stdout + r.stderr };
}

test('the Vagrantfile validates with the default 3 managers and 2 workers', () => {
  const r = validate({});
  assert.equal(r.code, 0, r.out);
  for (const host of ['manager1', 'manager2', 'manager3', 'worker1', 'worker2']) {
    assert.ok(r.out.includes(host), `defines ${host}`);
  }
});

test('host-only fallback and custom counts validate', () => {
  const r = validate({ CLUSTER_NETWORK: 'hostonly', CLUSTER_MANAGERS: '1', CLUSTER_WORKERS: '1' });
  assert.equal(r.code, 0, r.out);
  assert.ok(!r.out.includes('manager2'));
});

test('an even number of managers is refused with a clear message', () => {
  const r = validate({ CLUSTER_MANAGERS: '2' });
  assert.notEqual(r.code, 0);
  assert.match(r.out, /CLUSTER_MANAGERS must be 1, 3 or 5/);
});
