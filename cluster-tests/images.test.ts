// The local test images, on the real Docker engine: each tag serves its own content. Later
// end-to-end tests (rolling updates from :1 to :2) rely on exactly this.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.join(__dirname, '..', '..');

function run(cmd: string, args: string[], timeoutMs = 120_000) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('make-images builds local/busybox:1..3, each serving its own version over HTTP', async (t) => {
  const made = run('bash', [path.join(root, 'scripts', 'make-images.sh')], 300_000);
  assert.equal(made.code, 0, made.stderr);

  const names: string[] = [];
  t.after(() => {
    if (names.length > 0) run('docker', ['rm', '-f', ...names]);
  });
  for (const version of ['1', '2', '3']) {
    const name = `cluster-test-images-${process.pid}-${version}`;
    names.push(name);
    // Start the image's own command (httpd), then fetch from inside the container's own
    // loopback: no traffic leaves the container's network namespace.
    const started = run('docker', [
      'run',
      '-d',
      '--name',
      name,
      '--network',
      'none',
      `local/busybox:${version}`,
    ]);
    assert.equal(started.code, 0, started.stderr);
    let body = '';
    for (let attempt = 0; attempt < 50 && body === ''; attempt++) {
      const got = run('docker', ['exec', name, 'wget', '-qO-', 'http://127.0.0.1/']);
      if (got.code === 0) body = got.stdout.trim();
      else await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.equal(body, `hello v${version}`);
    const health = run('docker', ['exec', name, 'wget', '-qO-', 'http://127.0.0.1/health']);
    assert.equal(health.stdout.trim(), 'ok');
  }
});

test('a second run keeps existing images (idempotent) and says so', () => {
  const again = run('bash', [path.join(root, 'scripts', 'make-images.sh')], 120_000);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, /exists: local\/busybox:1/);
});
