// The Docker runtime's logs and health on the real engine: the multiplexed log stream with both
// streams, timestamps, tail, since and follow (ended by its signal and by the container's end);
// Docker's own health verdict from State.Health. Every container carries this run's node id and
// is removed at the end, also when a test fails.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Task, type HealthConfig } from '../src/gen/cluster/v1/objects';
import { DockerRuntime } from '../src/agent/runtime/docker';
import { NODE_ID_LABEL, type HealthStatus, type LogLine } from '../src/agent/runtime';

const NODE_ID = `lhtest${process.pid}${Math.floor(Math.random() * 1e6)}`;
const IMAGE = 'local/busybox:1';

function docker(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('docker', args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const engineUp = docker('version', '--format', '{{.Server.Version}}').code === 0;
const imagePresent = engineUp && docker('image', 'inspect', IMAGE).code === 0;
const skip = !engineUp
  ? 'the Docker engine does not answer (bash scripts/dockerd.sh)'
  : !imagePresent
    ? `${IMAGE} is missing (scripts/images.sh)`
    : false;

after(() => {
  if (!engineUp) return;
  const ids = docker('ps', '-aq', '--filter', `label=${NODE_ID_LABEL}=${NODE_ID}`)
    .stdout.split('\n')
    .filter((l) => l.trim());
  if (ids.length) docker('rm', '-f', ...ids);
});

let nextTask = 1;
function task(script: string, healthcheck?: Partial<HealthConfig>): Task {
  const id = `lhtask${process.pid}x${nextTask++}`;
  return Task.fromPartial({
    id,
    serviceId: 'lhsvc',
    slot: 1,
    annotations: { name: `lh.${nextTask}` },
    spec: {
      container: {
        image: IMAGE,
        command: ['sh', '-c', script],
        healthcheck,
      },
    },
  });
}

async function collect(lines: AsyncIterable<LogLine>): Promise<LogLine[]> {
  const out: LogLine[] = [];
  for await (const l of lines) out.push(l);
  return out;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test('logs: both streams in order, timestamps, tail and since', { skip }, async () => {
  const rt = new DockerRuntime();
  const id = await rt.prepare(
    task('for i in 1 2 3 4 5; do echo "out $i"; done; echo "err 1" >&2; sleep 1; echo "late"'),
    NODE_ID,
  );
  const before = Date.now();
  await rt.start(id);
  assert.equal(await rt.wait(id, new AbortController().signal), 0);
  const all = await collect(rt.logs(id, { follow: false }));
  assert.deepEqual(
    all.filter((l) => l.stream === 'stdout').map((l) => l.text),
    ['out 1', 'out 2', 'out 3', 'out 4', 'out 5', 'late'],
  );
  assert.deepEqual(
    all.filter((l) => l.stream === 'stderr').map((l) => l.text),
    ['err 1'],
  );
  // Times are the engine's, around the run (a generous window: clocks are the same machine's).
  for (const l of all)
    assert.ok(l.timeMs > before - 60_000 && l.timeMs < Date.now() + 60_000, String(l.timeMs));

  // Docker orders stdout and stderr by arrival: the two written together may come either way.
  const tail = await collect(rt.logs(id, { follow: false, tail: 2 }));
  assert.equal(tail.length, 2);
  assert.ok(['out 5', 'err 1'].includes(tail[0]?.text ?? ''), tail[0]?.text);
  assert.equal(tail[1]?.text, 'late');

  const late = all.find((l) => l.text === 'late');
  assert.ok(late);
  const since = await collect(rt.logs(id, { follow: false, sinceMs: late.timeMs }));
  assert.deepEqual(
    since.map((l) => l.text),
    ['late'],
  );
  await rt.remove(id);
});

test('logs: follow streams new lines, ends on abort and when the container ends', { skip }, async () => {
  const rt = new DockerRuntime();
  const id = await rt.prepare(
    task('echo first; while [ ! -f /tmp/stop ]; do echo tick; sleep 0.2; done; echo bye'),
    NODE_ID,
  );
  await rt.start(id);
  const abort = new AbortController();
  const seen: string[] = [];
  for await (const l of rt.logs(id, { follow: true, tail: 0, signal: abort.signal })) {
    seen.push(l.text);
    if (seen.length === 3) abort.abort();
  }
  assert.deepEqual(seen, ['tick', 'tick', 'tick'], 'tail 0: only new lines, and the abort ended the stream');

  const toEnd: string[] = [];
  const following = (async () => {
    for await (const l of rt.logs(id, { follow: true, tail: 0 })) toEnd.push(l.text);
  })();
  await until('a followed tick', () => Promise.resolve(toEnd.includes('tick') ? true : undefined));
  assert.equal(docker('exec', id, 'touch', '/tmp/stop').code, 0);
  await following;
  assert.equal(toEnd.at(-1), 'bye', 'the followed stream ends with the container');
  await rt.remove(id);
});

test(
  "health: Docker's own verdict, starting then healthy, or unhealthy; none without a check",
  { skip },
  async () => {
    const rt = new DockerRuntime();
    const check = (test: string[]) => ({
      test,
      interval: { seconds: 0, nanos: 200_000_000 },
      timeout: { seconds: 2, nanos: 0 },
      retries: 2,
    });
    const good = await rt.prepare(task('sleep 60', check(['CMD-SHELL', 'true'])), NODE_ID);
    const bad = await rt.prepare(task('sleep 60', check(['CMD', 'false'])), NODE_ID);
    const none = await rt.prepare(task('sleep 60'), NODE_ID);
    for (const id of [good, bad, none]) await rt.start(id);
    const first = await rt.health(good);
    assert.ok(first === 'starting' || first === 'healthy', first);
    const verdict = (id: string, wanted: HealthStatus) =>
      until(`${id} ${wanted}`, async () => ((await rt.health(id)) === wanted ? true : undefined));
    await verdict(good, 'healthy');
    await verdict(bad, 'unhealthy');
    assert.equal(await rt.health(none), '');
    assert.equal(await rt.health('no-such-container'), '');
    for (const id of [good, bad, none]) await rt.remove(id);
  },
);
