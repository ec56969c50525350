// Rolling updates drop no request (issue 7) on the namespace lab: a client in the root
// namespace sends HTTP requests without pause, a new connection each, to the published port of
// every lab host in turn, while the service is updated, rolled back, and (one replica) updated
// start-first; and a client inside another task's network namespace sends them to a service's
// VIP on a user overlay network while that service is updated. Every request must answer 200, and the answers must switch from one version to
// the other. Old tasks leave the load balancer before they stop, and the agent waits the drain
// period before the stop signal; new ones join only once running. The services run with --init
// so that a task stops serving the moment it gets its stop signal.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { capabilities, eventually, run, useLab } from './lib/lab';
import { CONVERGE_TIMEOUT_MS, REQUEST_TIMEOUT_MS, updateHelpers } from './lab-update-helpers';

const caps = capabilities();
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 1, workers: 2 });

const { updateState, settledOn, underTraffic, sixReplicasStopFirst } = updateHelpers(theLab);

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

describe('lab rolling update: no request dropped', { skip: needs }, () => {
  const PORT = 8080;

  test('6 replicas, parallelism 2, stop-first: every request answers, v1 then v2', async (t) => {
    // An init process makes httpd exit at once on the stop signal, as a well-behaved server
    // does (alone as PID 1 it ignores SIGTERM and serves 10 s more, hiding a missing drain).
    const requests = await sixReplicasStopFirst(PORT, ['--init=true']);
    t.diagnostic(`update: ${requests} requests, none failed`);
  });

  test('rollback under traffic: every request answers, v2 then v1', async (t) => {
    const outcomes = await underTraffic(PORT, 'hello v2', 'hello v1', async () => {
      await theLab().ok('manager1', 'service', 'rollback', '-d', 'web');
      await eventually(
        'rollback completed',
        CONVERGE_TIMEOUT_MS,
        async () => ((await updateState('web')) === 'STATE_ROLLBACK_COMPLETED' ? true : undefined),
        500,
      );
      await eventually(
        'old tasks stopped',
        CONVERGE_TIMEOUT_MS,
        () => settledOn('web', 'local/busybox:1', 6),
        500,
      );
    });
    t.diagnostic(`rollback: ${outcomes.length} requests, none failed`);
    await theLab().ok('manager1', 'service', 'rm', 'web');
  });

  test('1 replica, start-first: every request answers, v1 then v2', async (t) => {
    const port = 8081;
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'one',
      '--replicas',
      '1',
      '--publish',
      `${port}:80`,
      '--update-order',
      'start-first',
      '--update-monitor',
      '2s',
      // An init process makes httpd exit at once on the stop signal, as a well-behaved server
      // does (alone as PID 1 it ignores SIGTERM and serves 10 s more, hiding a missing drain).
      '--init=true',
      'local/busybox:1',
    );
    await eventually('one 1/1 on v1', CONVERGE_TIMEOUT_MS, () => settledOn('one', 'local/busybox:1', 1), 500);
    const outcomes = await underTraffic(port, 'hello v1', 'hello v2', async () => {
      // Not detached: the CLI follows the rollout to its end and says how it ended.
      const out = await theLab().ok('manager1', 'service', 'update', '--image', 'local/busybox:2', 'one');
      assert.match(out, /^one\noverall progress: [\s\S]*\nupdated\n$/);
      await eventually(
        'update completed',
        CONVERGE_TIMEOUT_MS,
        async () => ((await updateState('one')) === 'STATE_COMPLETED' ? true : undefined),
        500,
      );
      await eventually(
        'old task stopped',
        CONVERGE_TIMEOUT_MS,
        () => settledOn('one', 'local/busybox:2', 1),
        500,
      );
    });
    t.diagnostic(`start-first: ${outcomes.length} requests, none failed`);
    await theLab().ok('manager1', 'service', 'rm', 'one');
  });

  test('a new version that never gets healthy takes no traffic, and the update rolls back', async (t) => {
    const port = 8083;
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'hc',
      '--replicas',
      '2',
      '--publish',
      `${port}:80`,
      '--update-monitor',
      '2s',
      '--update-failure-action',
      'rollback',
      '--init=true',
      'local/busybox:1',
    );
    await eventually('hc 2/2 on v1', CONVERGE_TIMEOUT_MS, () => settledOn('hc', 'local/busybox:1', 2), 500);
    let result = { code: 0, stdout: '', stderr: '' };
    const outcomes = await underTraffic(port, 'hello v1', 'hello v1', async () => {
      result = await theLab().cli(
        'manager1',
        'service',
        'update',
        '--image',
        'local/busybox:2',
        '--health-cmd',
        'exit 1',
        '--health-interval',
        '500ms',
        '--health-retries',
        '1',
        'hc',
      );
      await eventually(
        'hc back on v1',
        CONVERGE_TIMEOUT_MS,
        () => settledOn('hc', 'local/busybox:1', 2),
        500,
      );
    });
    assert.equal(result.code, 1, `the CLI reports the failed update: ${result.stdout}${result.stderr}`);
    assert.match(result.stdout, /\nrolled back: 1 of 2 updated tasks failed[^\n]*\n$/);
    assert.equal(await updateState('hc'), 'STATE_ROLLBACK_COMPLETED');
    assert.ok(
      outcomes.every((o) => o.reply === '200 hello v1'),
      'the unhealthy version never answered a request',
    );
    t.diagnostic(`failed update: ${outcomes.length} requests, none failed, none reached v2`);
    await theLab().ok('manager1', 'service', 'rm', 'hc');
  });

  test('through the VIP from another task: every request answers, v1 then v2', async (t) => {
    await theLab().ok('manager1', 'network', 'create', '--driver', 'overlay', 'appnet');
    const create = (...args: string[]) => theLab().ok('manager1', 'service', 'create', '-d', ...args);
    await create(
      '--name',
      'api',
      '--replicas',
      '6',
      '--network',
      'appnet',
      '--update-monitor',
      '2s',
      '--init=true',
      'local/busybox:1',
    );
    await create(
      '--name',
      'caller',
      '--network',
      'appnet',
      '--init=true',
      'local/busybox:1',
      'sleep',
      '100000',
    );
    await eventually('api 6/6 on v1', CONVERGE_TIMEOUT_MS, () => settledOn('api', 'local/busybox:1', 6), 500);
    const callerId =
      (JSON.parse(await theLab().ok('manager1', 'service', 'inspect', 'caller')) as { id: string }[])[0]
        ?.id ?? '';
    const container = await eventually(
      'the caller container',
      CONVERGE_TIMEOUT_MS,
      async () => {
        const r = await run('docker', ['ps', '-q', '--filter', `label=cluster.service.id=${callerId}`]);
        return r.stdout.trim().split('\n')[0] || undefined;
      },
      500,
    );
    const pid = (await run('docker', ['inspect', '-f', '{{.State.Pid}}', container])).stdout.trim();
    // The service's VIP on appnet, as the allocator recorded it.
    const [appnet] = JSON.parse(await theLab().ok('manager1', 'network', 'inspect', 'appnet')) as {
      id: string;
    }[];
    const vip = await eventually(
      'api has a VIP on appnet',
      30_000,
      async () => {
        const [api] = JSON.parse(await theLab().ok('manager1', 'service', 'inspect', 'api')) as {
          endpoint?: { virtualIps?: { networkId?: string; addr?: string }[] };
        }[];
        const onAppnet = api?.endpoint?.virtualIps?.find((v) => v.networkId === appnet?.id);
        return onAppnet?.addr?.split('/')[0] || undefined;
      },
      500,
    );
    // Node in the caller's network namespace only: the same HTTP client as above.
    const client = spawn(
      'nsenter',
      ['-t', pid, '-n', process.execPath, '-e', VIP_CLIENT, '--', vip, String(REQUEST_TIMEOUT_MS)],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let output = '';
    let errors = '';
    client.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    client.stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    const exited = new Promise<void>((resolve) => client.on('close', () => resolve()));
    try {
      try {
        await eventually(
          'the VIP answers v1',
          30_000,
          () => Promise.resolve(output.includes('200 hello v1') ? true : undefined),
          200,
        );
      } catch (err) {
        const direct = await run('docker', [
          'exec',
          container,
          'sh',
          '-c',
          `ip -4 -o addr; ip route; timeout 5 wget -qO- http://${vip}/`,
        ]);
        throw new Error(
          `${err instanceof Error ? err.message : String(err)}; VIP ${vip}; client said: ${output.split('\n').slice(-3).join(' | ')} ${errors}; wget from the caller: ${direct.code} ${direct.stdout}${direct.stderr}`,
        );
      }
      await theLab().ok(
        'manager1',
        'service',
        'update',
        '-d',
        '--image',
        'local/busybox:2',
        '--update-parallelism',
        '2',
        'api',
      );
      await eventually(
        'update completed',
        CONVERGE_TIMEOUT_MS,
        async () => ((await updateState('api')) === 'STATE_COMPLETED' ? true : undefined),
        500,
      );
      await eventually(
        'old tasks stopped',
        CONVERGE_TIMEOUT_MS,
        () => settledOn('api', 'local/busybox:2', 6),
        500,
      );
    } finally {
      client.kill('SIGTERM');
      await exited;
    }
    const replies = output.split('\n').filter((l) => l !== '');
    // Requests until the first answer may fail while the VIP is being set up: they do not count.
    const first = replies.indexOf('200 hello v1');
    const during = replies.slice(first);
    const failed = during.filter((r) => !r.startsWith('200 '));
    assert.deepEqual(failed, [], `${failed.length} of ${during.length} requests through the VIP failed`);
    assert.equal(during.at(-1), '200 hello v2', 'answers end on the new version');
    t.diagnostic(`VIP ${vip}: ${during.length} requests, none failed`);
    await theLab().ok('manager1', 'service', 'rm', 'api', 'caller');
  });
});

// GETs http://VIP/ one after another, a new connection each, one line per request ("200 <body>",
// "HTTP <code>" or "ERR <reason>"), until SIGTERM.
const VIP_CLIENT = `
const http = require('node:http');
const [host, timeoutMs] = process.argv.slice(1);
let stop = false;
process.on('SIGTERM', () => (stop = true));
const get = () => new Promise((resolve) => {
  const req = http.get({ host, port: 80, path: '/', agent: false, timeout: Number(timeoutMs) }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c) => (body += c));
    res.on('end', () => resolve(res.statusCode === 200 ? '200 ' + body.trim() : 'HTTP ' + res.statusCode));
    res.on('error', (e) => resolve('ERR ' + e.message));
  });
  req.on('timeout', () => req.destroy(new Error('no answer in ' + timeoutMs + ' ms')));
  req.on('error', (e) => resolve('ERR ' + e.message));
});
(async () => {
  while (!stop) process.stdout.write((await get()) + '\\n');
})();
`;
