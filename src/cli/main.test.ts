// The CLI as a user meets it: the installed bin script run as a child process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { bareBoolFlags, buildProgram } from './main';

const root = path.join(__dirname, '..', '..', '..');
const bin = path.join(root, 'bin', 'cluster.js');

function cluster(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('--help lists the command groups and global options', () => {
  const r = cluster('--help');
  assert.equal(r.code, 0);
  for (const word of ['node', 'service', 'network', 'init', 'join', '--host', '--log-level', '--format']) {
    assert.ok(r.stdout.includes(word), `help mentions ${word}`);
  }
});

test('--version prints the package version', () => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { version } = require(path.join(root, 'package.json')) as { version: string };
  const r = cluster('--version');
  assert.equal(r.code, 0);
  assert.equal(r.stdout.trim(), version);
});

test('an unknown command exits 2 with a one-line error', () => {
  const r = cluster('bogus');
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.match(r.stderr, /unknown command 'bogus'/);
});

test('a bad flag or a bad flag value exits 2', () => {
  assert.equal(cluster('--no-such-flag').code, 2);
  const r = cluster('--format', 'xml', 'service', 'ls');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /xml/);
  assert.equal(cluster('--log-level', 'loud', 'node', 'ls').code, 2);
});

test('a bad flag value of service logs exits 2 without a stack trace', () => {
  const r = cluster('service', 'logs', '--tail', '-3', 'web');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--tail/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test('daemon --drain-period must be a duration: a bad one exits 2 before anything starts', () => {
  const r = cluster('daemon', '--data-dir', '/nonexistent/never-created', '--drain-period', 'soon');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--drain-period/);
  assert.match(r.stderr, /duration/);
});

test('daemon --log-max-size and --log-max-files are checked before anything starts', () => {
  for (const [flag, value, rule] of [
    ['--log-max-size', '10t', /--log-max-size must be a size like 20m/],
    ['--log-max-size', '1k', /from 64k/],
    ['--log-max-files', '0', /--log-max-files must be a whole number from 1 to 100/],
  ] as const) {
    const r = cluster('daemon', '--data-dir', '/nonexistent/never-created', flag, value);
    assert.equal(r.code, 2, `${flag} ${value}`);
    assert.match(r.stderr, rule);
    assert.doesNotMatch(r.stderr, /\n\s+at /);
  }
});

test('--init and --read-only are bare flags: they never swallow the image, and container arguments are left alone', () => {
  const program = buildProgram();
  const run = (...args: string[]) => bareBoolFlags(program, ['node', 'cluster', 'service', ...args]).slice(3);
  assert.deepEqual(run('create', '--init', 'local/busybox:1'), ['create', '--init=true', 'local/busybox:1']);
  assert.deepEqual(run('create', '--name', '--init', '--read-only', 'img'), [
    'create',
    '--name',
    '--init',
    '--read-only=true',
    'img',
  ]);
  assert.deepEqual(run('create', '--init=false', 'img', 'sh', '--init'), [
    'create',
    '--init=false',
    'img',
    'sh',
    '--init',
  ]);
  assert.deepEqual(run('update', 'web', '--init', '--read-only=false'), [
    'update',
    'web',
    '--init=true',
    '--read-only=false',
  ]);
  assert.deepEqual(run('create', '--', '--init'), ['create', '--', '--init']);
  // Other verbs are untouched.
  assert.deepEqual(run('ls', '--init'), ['ls', '--init']);
});
