// Healthchecks: Docker's verdict rules with a fake clock, the probe loop with a fake exec, and the
// task controller reporting health, failing an unhealthy task and stopping its container.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { HealthConfig, Task, TaskState, type TaskStatus } from '../gen/cluster/v1/objects';
import { componentLogger } from '../common/logger';
import { TaskController, UNHEALTHY_ERROR } from './controller';
import {
  DEFAULT_HEALTH_INTERVAL_MS,
  DEFAULT_HEALTH_RETRIES,
  DEFAULT_HEALTH_TIMEOUT_MS,
  HealthVerdict,
  healthRules,
  networkProbe,
  networkProbeArgv,
  PROBE_MAIN,
  probeArgv,
  runNetworkProbe,
  runProbeLoop,
  specHasHealthcheck,
  type NetworkProbe,
} from './health';
import type { ExecResult, HealthStatus } from './runtime';
import { FakeRuntime } from './testing';

const logger = componentLogger('health-test');
logger.level = 'silent';

const rules = { intervalMs: 1000, timeoutMs: 500, retries: 3, startPeriodMs: 5000 };

test('starting until the first pass, healthy after it', () => {
  const v = new HealthVerdict(rules, 0);
  assert.equal(v.status, 'starting');
  assert.equal(v.record(true, 1000), 'healthy');
});

test('failures inside the start period do not count while starting', () => {
  const v = new HealthVerdict(rules, 0);
  for (let t = 1000; t < 5000; t += 1000) assert.equal(v.record(false, t), 'starting');
  assert.equal(v.failingStreak, 0);
  assert.equal(v.record(false, 5000), 'starting');
  assert.equal(v.record(false, 6000), 'starting');
  assert.equal(v.record(false, 7000), 'unhealthy');
});

test('after a pass, the start period no longer shields failures', () => {
  const v = new HealthVerdict(rules, 0);
  v.record(true, 1000);
  assert.equal(v.record(false, 2000), 'healthy');
  assert.equal(v.record(false, 3000), 'healthy');
  assert.equal(v.record(false, 4000), 'unhealthy');
});

test('a pass resets the failing streak', () => {
  const v = new HealthVerdict({ ...rules, startPeriodMs: 0 }, 0);
  v.record(false, 1);
  v.record(false, 2);
  v.record(true, 3);
  assert.equal(v.failingStreak, 0);
  v.record(false, 4);
  v.record(false, 5);
  assert.equal(v.status, 'healthy');
  assert.equal(v.record(false, 6), 'unhealthy');
});

test("Docker's defaults fill fields left at zero; probe forms", () => {
  assert.deepEqual(healthRules(HealthConfig.fromPartial({ test: ['CMD', 'true'] })), {
    intervalMs: DEFAULT_HEALTH_INTERVAL_MS,
    timeoutMs: DEFAULT_HEALTH_TIMEOUT_MS,
    retries: DEFAULT_HEALTH_RETRIES,
    startPeriodMs: 0,
  });
  assert.deepEqual(
    healthRules(
      HealthConfig.fromPartial({
        interval: { seconds: 2, nanos: 500_000_000 },
        timeout: { seconds: 1, nanos: 0 },
        retries: 5,
        startPeriod: { seconds: 10, nanos: 0 },
      }),
    ),
    { intervalMs: 2500, timeoutMs: 1000, retries: 5, startPeriodMs: 10_000 },
  );
  assert.deepEqual(probeArgv(HealthConfig.fromPartial({ test: ['CMD', 'cat', '/ok'] })), ['cat', '/ok']);
  assert.deepEqual(probeArgv(HealthConfig.fromPartial({ test: ['CMD-SHELL', 'test -f /ok'] })), [
    '/bin/sh',
    '-c',
    'test -f /ok',
  ]);
  assert.equal(probeArgv(HealthConfig.fromPartial({ test: ['NONE'] })), undefined);
  assert.equal(probeArgv(HealthConfig.fromPartial({ test: [] })), undefined);
  assert.equal(probeArgv(undefined), undefined);
});

test('HTTP and TCP probe forms: read from the spec, run by node inside the namespace of the pid', () => {
  const form = (test: string[]) => networkProbe(HealthConfig.fromPartial({ test }));
  assert.deepEqual(form(['HTTP', '80', '/health?x=1']), { kind: 'http', port: 80, path: '/health?x=1' });
  assert.deepEqual(form(['TCP', '5432']), { kind: 'tcp', port: 5432 });
  for (const bad of [
    ['HTTP', '80'],
    ['HTTP', '0', '/'],
    ['HTTP', '80', 'x'],
    ['TCP', '80', '/'],
    ['TCP', 'x'],
  ])
    assert.equal(form(bad), undefined, bad.join(' '));
  assert.equal(form(['CMD', 'true']), undefined);
  assert.equal(probeArgv(HealthConfig.fromPartial({ test: ['HTTP', '80', '/'] })), undefined);
  const task = (test: string[]) =>
    Task.fromPartial({ spec: { container: { image: 'x', healthcheck: { test, retries: 0 } } } });
  assert.equal(specHasHealthcheck(task(['TCP', '81'])), true);
  assert.equal(specHasHealthcheck(task(['HTTP', '80', '/'])), true);
  assert.equal(specHasHealthcheck(task(['NONE'])), false);
  assert.deepEqual(networkProbeArgv({ kind: 'http', port: 80, path: '/' }, 1234, 2000), [
    'nsenter',
    '--net=/proc/1234/ns/net',
    process.execPath,
    PROBE_MAIN,
    'http',
    '80',
    '/',
    '2000',
  ]);
  assert.deepEqual(networkProbeArgv({ kind: 'tcp', port: 81 }, 7, 500).slice(3), [
    PROBE_MAIN,
    'tcp',
    '81',
    '500',
  ]);
});

/** A fake clock: sleeping advances it at once. */
function fakeLoop(results: (ExecResult | Error | 'hang')[]) {
  let now = 0;
  const calls: { timeoutMs: number; atMs: number }[] = [];
  const changes: HealthStatus[] = [];
  const sleeps: number[] = [];
  const deps = {
    check(timeoutMs: number): Promise<ExecResult> {
      calls.push({ timeoutMs, atMs: now });
      const r = results.shift() ?? { exitCode: 0, output: '' };
      if (r === 'hang') return new Promise<ExecResult>(() => undefined);
      return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    },
    sleep(ms: number): Promise<void> {
      sleeps.push(ms);
      now += ms;
      return Promise.resolve();
    },
    nowMs: () => now,
    onChange: (s: HealthStatus): void => {
      changes.push(s);
    },
  };
  return { deps, calls, changes, sleeps };
}

test('the probe loop waits an interval before each probe and stops at unhealthy', async () => {
  const f = fakeLoop([
    { exitCode: 0, output: 'ok' },
    { exitCode: 1, output: 'bad' },
    new Error('exec failed'),
    { exitCode: 2, output: 'bad' },
  ]);
  const config = HealthConfig.fromPartial({
    test: ['CMD-SHELL', 'check'],
    interval: { seconds: 2, nanos: 0 },
    timeout: { seconds: 1, nanos: 0 },
    retries: 3,
  });
  const result = await runProbeLoop(config, f.deps, new AbortController().signal);
  assert.equal(result, 'unhealthy');
  assert.deepEqual(f.changes, ['starting', 'healthy', 'unhealthy']);
  assert.deepEqual(
    f.calls.map((c) => c.atMs),
    [2000, 4000, 6000, 8000],
  );
  assert.equal(f.calls[0]?.timeoutMs, 1000);
});

test('a probe that outlives its timeout counts as a failure', async () => {
  const f = fakeLoop(['hang']);
  const config = HealthConfig.fromPartial({
    test: ['CMD', 'sleep', '100'],
    interval: { seconds: 0, nanos: 1_000_000 },
    timeout: { seconds: 0, nanos: 20_000_000 },
    retries: 1,
  });
  assert.equal(await runProbeLoop(config, f.deps, new AbortController().signal), 'unhealthy');
});

test('the probe loop ends on abort with its last status, and does nothing without a check', async () => {
  const abort = new AbortController();
  const f = fakeLoop([]);
  f.deps.onChange = (s) => {
    f.changes.push(s);
    if (s === 'healthy') abort.abort();
  };
  const config = HealthConfig.fromPartial({ test: ['CMD', 'true'], interval: { seconds: 1, nanos: 0 } });
  assert.equal(await runProbeLoop(config, f.deps, abort.signal), 'healthy');
  const none = fakeLoop([]);
  assert.equal(await runProbeLoop(HealthConfig.fromPartial({ test: ['NONE'] }), none.deps, abort.signal), '');
  assert.equal(none.calls.length, 0);
  assert.deepEqual(none.changes, []);
});

test('the probe loop runs network probes with the same rules', async () => {
  const f = fakeLoop([
    { exitCode: 1, output: 'refused' },
    { exitCode: 0, output: 'HTTP 200 OK' },
  ]);
  const config = HealthConfig.fromPartial({
    test: ['HTTP', '80', '/'],
    interval: { seconds: 1, nanos: 0 },
    retries: 2,
  });
  const abort = new AbortController();
  f.deps.onChange = (s) => {
    f.changes.push(s);
    if (s === 'healthy') abort.abort();
  };
  assert.equal(await runProbeLoop(config, f.deps, abort.signal), 'healthy');
  assert.deepEqual(f.changes, ['starting', 'healthy']);
  assert.equal(f.calls[0]?.timeoutMs, DEFAULT_HEALTH_TIMEOUT_MS);
});

const asRoot = process.getuid?.() === 0 && spawnSync('nsenter', ['--version']).status === 0;

test(
  'runNetworkProbe: the probe program, through nsenter, in the namespace of a process (ours)',
  { skip: asRoot ? false : 'needs root and nsenter (util-linux)' },
  async () => {
    const server = http.createServer((req, res) => {
      res.statusCode = req.url === '/ok' ? 204 : 503;
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const ok = await runNetworkProbe({ kind: 'http', port, path: '/ok' }, process.pid, 20_000);
      assert.equal(ok.exitCode, 0, ok.output);
      assert.match(ok.output, /^GET http:\/\/127\.0\.0\.1:\d+\/ok: HTTP 204/);
      const down = await runNetworkProbe({ kind: 'http', port, path: '/down' }, process.pid, 20_000);
      assert.equal(down.exitCode, 1);
      assert.match(down.output, /HTTP 503/);
      const tcp = await runNetworkProbe({ kind: 'tcp', port }, process.pid, 20_000);
      assert.equal(tcp.exitCode, 0, tcp.output);
      const gone = await runNetworkProbe({ kind: 'tcp', port }, 999_999_999, 20_000);
      assert.notEqual(gone.exitCode, 0, 'no such process: no namespace to enter');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  },
);

// ------------------------------------------------------------------ the controller

/** A runtime that runs checks through exec (as the oci runtime): the test says what each returns. */
class ExecRuntime extends FakeRuntime {
  execResults: number[] = [];
  execCalls = 0;
  exec(_id: string, _argv: string[]): Promise<ExecResult> {
    this.execCalls++;
    return Promise.resolve({ exitCode: this.execResults.shift() ?? 1, output: '' });
  }
}

/** A runtime with its own verdict (as Docker): the test sets it. */
class EngineHealthRuntime extends FakeRuntime {
  verdict: HealthStatus = 'starting';
  health(): Promise<HealthStatus> {
    return Promise.resolve(this.verdict);
  }
}

function healthTask(id: string, test: string[] = ['CMD', 'check']): Task {
  return Task.fromPartial({
    id,
    serviceId: 'svc',
    nodeId: 'n1',
    desiredState: TaskState.TASK_STATE_RUNNING,
    status: { state: TaskState.TASK_STATE_ASSIGNED },
    spec: {
      container: {
        image: 'local/busybox:1',
        stopGracePeriod: { seconds: 1, nanos: 0 },
        healthcheck: { test, interval: { seconds: 0, nanos: 1_000_000 }, retries: 2 },
      },
    },
  });
}

/** Waits for the event with a generous overall limit (no timed assertion). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 30_000 && !cond(); i++) await new Promise((r) => setTimeout(r, 2));
  assert.ok(cond(), 'condition not reached');
}

test('the controller reports starting, then healthy, then fails an unhealthy task and stops it', async () => {
  const runtime = new ExecRuntime();
  runtime.execResults = [0, 1, 1];
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t1'), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
  });
  c.start();
  await c.idle();
  const running = reports.filter((r) => r.state === TaskState.TASK_STATE_RUNNING);
  assert.deepEqual(
    running.map((r) => r.health),
    ['starting', 'healthy', 'unhealthy'],
  );
  // A change of health keeps the time of the RUNNING report.
  assert.ok(running.every((r) => r.timestamp?.getTime() === running[0]?.timestamp?.getTime()));
  const last = reports.at(-1);
  assert.equal(last?.state, TaskState.TASK_STATE_FAILED);
  assert.equal(last?.err, UNHEALTHY_ERROR);
  assert.equal(last?.health, 'unhealthy');
  const container = runtime.containerOf('t1');
  assert.ok(runtime.calls.includes(`stop ${container?.info.id ?? ''} 1000`));
  assert.equal(runtime.execCalls, 3);
});

test("the engine's own verdict is used where the runtime has one", async () => {
  const runtime = new EngineHealthRuntime();
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t2'), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
    healthPollMs: 1,
  });
  c.start();
  try {
    await until(() => c.reportedHealth === 'starting' && c.reportedState === TaskState.TASK_STATE_RUNNING);
    runtime.verdict = 'healthy';
    await until(() => c.reportedHealth === 'healthy');
    runtime.verdict = 'unhealthy';
    await c.idle();
  } finally {
    await c.shutdown(false);
  }
  assert.equal(reports.at(-1)?.state, TaskState.TASK_STATE_FAILED);
  assert.equal(reports.at(-1)?.err, UNHEALTHY_ERROR);
});

test('a task without a healthcheck reports no health and runs until it exits', async () => {
  const runtime = new ExecRuntime();
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t3', ['NONE']), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
  });
  c.start();
  await until(() => c.reportedState === TaskState.TASK_STATE_RUNNING);
  runtime.containerOf('t3')?.exit(0);
  await c.idle();
  assert.equal(runtime.execCalls, 0);
  assert.ok(reports.every((r) => r.health === ''));
  assert.equal(reports.at(-1)?.state, TaskState.TASK_STATE_COMPLETE);
});

test('a task stopped while its check runs ends without a verdict', async () => {
  const runtime = new ExecRuntime();
  runtime.execResults = new Array<number>(1000).fill(0);
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t4'), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
  });
  c.start();
  await until(() => c.reportedHealth === 'healthy');
  c.update({ ...healthTask('t4'), desiredState: TaskState.TASK_STATE_SHUTDOWN });
  await c.idle();
  assert.equal(reports.at(-1)?.state, TaskState.TASK_STATE_SHUTDOWN);
  assert.equal(reports.at(-1)?.err, '');
});

test('after an agent restart, a health change keeps the time of the running report it adopted', async () => {
  const runtime = new EngineHealthRuntime();
  const t = healthTask('t5');
  const containerId = await runtime.prepare(t, 'n1');
  await runtime.start(containerId);
  const runningSince = new Date(Date.now() - 60_000);
  const adoptedTask: Task = {
    ...t,
    status: {
      state: TaskState.TASK_STATE_RUNNING,
      timestamp: runningSince,
      message: 'started',
      err: '',
      container: { containerId, pid: 0, exitCode: 0 },
      health: 'healthy',
    },
  };
  runtime.verdict = 'unhealthy';
  const reports: TaskStatus[] = [];
  const c = new TaskController(
    adoptedTask,
    { runtime, nodeId: 'n1', report: (_id, s) => reports.push(s), logger, healthPollMs: 1 },
    {
      ...(runtime.containerOf('t5')?.info ?? {
        id: containerId,
        taskId: 't5',
        status: 'running',
        exitCode: 0,
        pid: 0,
        error: '',
      }),
    },
  );
  c.start();
  await c.idle();
  const [changed, failed] = reports;
  assert.equal(changed?.state, TaskState.TASK_STATE_RUNNING);
  assert.equal(changed?.health, 'unhealthy');
  assert.equal(changed?.timestamp?.getTime(), runningSince.getTime());
  assert.equal(failed?.state, TaskState.TASK_STATE_FAILED);
  assert.equal(failed?.err, UNHEALTHY_ERROR);
});

test("an HTTP/TCP probe is the agent's on every runtime: not the engine's verdict, from the container's pid", async () => {
  const runtime = new EngineHealthRuntime();
  runtime.verdict = 'healthy'; // Docker knows no such probe: its verdict must not be read
  const probes: { probe: NetworkProbe; pid: number }[] = [];
  const results = [0, 1, 1];
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t6', ['TCP', '81']), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
    networkProbe: (probe, pid) => {
      probes.push({ probe, pid });
      const exitCode = results.shift() ?? 1;
      return Promise.resolve({ exitCode, output: exitCode === 0 ? 'connected' : 'refused' });
    },
  });
  c.start();
  await c.idle();
  assert.deepEqual(
    reports.filter((r) => r.state === TaskState.TASK_STATE_RUNNING).map((r) => r.health),
    ['starting', 'healthy', 'unhealthy'],
  );
  assert.equal(reports.at(-1)?.state, TaskState.TASK_STATE_FAILED);
  assert.equal(reports.at(-1)?.err, UNHEALTHY_ERROR);
  assert.equal(probes.length, 3);
  // FakeRuntime gives a started container pid 100.
  assert.ok(probes.every((p) => p.pid === 100 && p.probe.kind === 'tcp' && p.probe.port === 81));
});

test("a network probe without the container's process fails (and never runs)", async () => {
  const runtime = new ExecRuntime();
  const original = runtime.inspect.bind(runtime);
  runtime.inspect = async (id) => {
    const info = await original(id);
    return info && { ...info, pid: 0 };
  };
  let probes = 0;
  const reports: TaskStatus[] = [];
  const c = new TaskController(healthTask('t7', ['HTTP', '80', '/']), {
    runtime,
    nodeId: 'n1',
    report: (_id, s) => reports.push(s),
    logger,
    networkProbe: () => {
      probes++;
      return Promise.resolve({ exitCode: 0, output: '' });
    },
  });
  c.start();
  await c.idle();
  assert.equal(probes, 0);
  assert.equal(runtime.execCalls, 0, 'not through exec either');
  assert.equal(reports.at(-1)?.err, UNHEALTHY_ERROR);
});
