// Service logs and healthchecks on the namespace lab (issue 5): `service logs` gathers lines from
// replicas on different nodes through the managers (a follower forwards), with --tail and -f;
// a healthcheck that passes shows "healthy"; one that fails turns the task unhealthy, FAILED
// ("unhealthy container") and replaced, and the routing mesh never sends it a request. HTTP and
// TCP probes are the agent's (Docker has none): run in each container's network namespace.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { probeScenario, tasksOf as tasksOfService, type TaskRow } from './lib/health';
import { capabilities, eventually, root, run, useLab } from './lib/lab';

const caps = capabilities();
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 3, workers: 2 });

const CONVERGE_TIMEOUT_MS = 90_000;
const PORT = 8083;

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

function tasksOf(service: string): Promise<TaskRow[]> {
  return tasksOfService(theLab(), service);
}

async function runningTasks(service: string, count: number): Promise<TaskRow[]> {
  return eventually(
    `${service} at ${count} running`,
    CONVERGE_TIMEOUT_MS,
    async () => {
      const rows = (await tasksOf(service)).filter(
        (r) => r.DesiredState === 'Running' && /^Running/.test(r.CurrentState),
      );
      return rows.length === count ? rows : undefined;
    },
    500,
  );
}

/** "talk.2.abcdefabcdef@worker1    | start 3 x" → its parts. */
const PREFIXED = /^(\w+)\.(\d+)\.([0-9a-z]{12})@(\S+)\s+\| (.*)$/;

function parse(out: string) {
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((line) => {
      const m = PREFIXED.exec(line);
      assert.ok(m, `a line with Docker's prefix: ${line}`);
      const [, service = '', slot = '', task = '', node = '', text = ''] = m;
      return { service, slot: Number(slot), task, node, text };
    });
}

describe('lab service logs', { skip: needs }, () => {
  test('lines from replicas on different nodes, with --tail and -f, from a follower too', async () => {
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'talk',
      '--replicas',
      '3',
      'local/busybox:1',
      'sh',
      '-c',
      'for i in 1 2 3 4 5; do echo "start $i"; done; echo "to stderr" >&2; while true; do echo tick; sleep 1; done',
    );
    const running = await runningTasks('talk', 3);
    const nodes = new Set(running.map((r) => r.Node));
    assert.ok(nodes.size >= 2, `3 replicas over several nodes: ${[...nodes].join(', ')}`);

    // Every replica has printed its first lines once it shows in the logs at all.
    const all = await eventually(
      'the start lines of all 3 replicas',
      30_000,
      async () => {
        const r = await theLab().cli('manager1', 'service', 'logs', 'talk');
        if (r.code !== 0) throw new Error(r.stderr);
        const lines = parse(r.stdout);
        const starts = lines.filter((l) => l.text === 'start 5');
        return new Set(starts.map((l) => l.task)).size === 3 ? { lines, stderr: r.stderr } : undefined;
      },
      1000,
    );
    const lineNodes = new Set(all.lines.map((l) => l.node));
    assert.ok(lineNodes.size >= 2, `lines from several nodes: ${[...lineNodes].join(', ')}`);
    assert.deepEqual(lineNodes, nodes, 'the nodes of the lines are those of service ps');
    assert.ok(all.lines.every((l) => l.service === 'talk'));
    for (const r of running) {
      assert.ok(
        all.lines.some((l) => r.ID.startsWith(l.task) && r.Node === l.node),
        `lines of task ${r.ID} on ${r.Node}`,
      );
    }
    assert.match(all.stderr, /talk\.\d\.[0-9a-z]{12}@\S+\s+\| to stderr/, 'stderr lines go to stderr');

    // A follower forwards to the leader; --tail 2 gives the last 2 lines of each task.
    const tailed = await theLab().ok('manager3', 'service', 'logs', '--tail', '2', 'talk');
    const perTask = new Map<string, number>();
    for (const l of parse(tailed)) perTask.set(l.task, (perTask.get(l.task) ?? 0) + 1);
    assert.equal(perTask.size, 3, tailed);
    for (const [task, n] of perTask) assert.ok(n <= 2, `task ${task}: at most 2 lines, got ${n}`);

    // One task by id: its lines only.
    const first = running[0];
    assert.ok(first);
    const one = parse(await theLab().ok('manager2', 'service', 'logs', '--tail', '3', first.ID));
    assert.ok(one.length > 0 && one.every((l) => first.ID.startsWith(l.task)));

    // -f keeps streaming new lines until interrupted (timeout sends SIGINT, as Ctrl-C).
    const followed = await theLab().lab([
      'exec',
      'manager1',
      '--',
      'timeout',
      '-s',
      'INT',
      '6',
      'node',
      path.join(root, 'bin', 'cluster.js'),
      'service',
      'logs',
      '-f',
      '--tail',
      '0',
      'talk',
    ]);
    assert.equal(followed.code, 124, `-f ends only when interrupted: ${followed.stderr}`);
    const ticks = parse(followed.stdout);
    assert.ok(ticks.length > 0, 'new lines arrived while following');
    assert.ok(
      ticks.every((l) => l.text === 'tick'),
      'tail 0: no old lines',
    );
    assert.ok(new Set(ticks.map((l) => l.node)).size >= 2, 'followed lines from several nodes');

    const unknown = await theLab().cli('manager1', 'service', 'logs', 'nosuch');
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no such service or task: 'nosuch'/);
    await theLab().ok('manager1', 'service', 'rm', 'talk');
  });
});

// GETs `count` times from `addr`; one reply a line: "<status> <first line of the body>" or "ERR ...".
const PROBE = `
const http = require('node:http');
const [count, port, host] = process.argv.slice(1);
const get = () => new Promise((resolve) => {
  const req = http.get({ host, port: Number(port), path: '/', timeout: 2000, agent: false }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => resolve(res.statusCode + ' ' + body.split('\\n')[0]));
  });
  req.on('timeout', () => req.destroy(new Error('no answer in 2 s')));
  req.on('error', (e) => resolve('ERR ' + e.message));
});
(async () => { for (let i = 0; i < Number(count); i++) console.log(await get()); })();
`;

describe('lab healthchecks', { skip: needs }, () => {
  test('a passing check is healthy, a failing one is replaced and never gets traffic', async () => {
    // Healthy only where /www/ok exists: the test makes it in one replica's container.
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
      `${PORT}:80`,
      '--health-cmd',
      'test -f /www/ok',
      '--health-interval',
      '1s',
      '--health-timeout',
      '1s',
      '--health-retries',
      '3',
      '--health-start-period',
      '30s',
      '--restart-delay',
      '1s',
      'local/busybox:1',
      'sh',
      '-c',
      'mkdir -p /www && echo "replica $(hostname)" >/www/index.html && exec httpd -f -p 80 -h /www',
    );
    const running = await runningTasks('hc', 2);
    const [chosen, other] = running;
    assert.ok(chosen && other);
    const container = await eventually(`the container of task ${chosen.ID}`, 30_000, async () => {
      const r = await run('docker', [
        'ps',
        '-q',
        '--no-trunc',
        '--filter',
        `label=cluster.task.id=${chosen.ID}`,
      ]);
      return r.stdout.trim() || undefined;
    });
    const exec = await run('docker', ['exec', container, 'touch', '/www/ok']);
    assert.equal(exec.code, 0, exec.stderr);
    const hostname = (await run('docker', ['exec', container, 'hostname'])).stdout.trim();

    // The chosen task turns healthy, and service ps shows it.
    await eventually(
      'the chosen task healthy in service ps',
      60_000,
      async () => {
        const row = (await tasksOf('hc')).find((r) => r.ID === chosen.ID);
        return row && /^Running .* \(healthy\)$/.test(row.CurrentState) ? row : undefined;
      },
      500,
    );
    // The other fails its check past the start period: FAILED with Swarm's error, and replaced.
    const failed = await eventually(
      'the other task FAILED as unhealthy and replaced',
      90_000,
      async () => {
        const rows = await tasksOf('hc');
        const old = rows.find((r) => r.ID === other.ID);
        if (!old || !/^Failed/.test(old.CurrentState)) return undefined;
        const slot = old.Name.replace(/^\s*\\_\s*/, '');
        const replacement = rows.find(
          (r) => r.ID !== other.ID && r.Name.trim() === slot && r.DesiredState === 'Running',
        );
        return replacement ? { old, replacement } : undefined;
      },
      1000,
    );
    assert.match(failed.old.Error, /unhealthy container/);

    // Through the routing mesh, every request reaches the healthy replica only.
    const worker = theLab()
      .hosts()
      .find((h) => h.role === 'worker');
    assert.ok(worker);
    const replies = await eventually(
      'answers through the published port',
      30_000,
      async () => {
        const r = await theLab().lab([
          'exec',
          worker.host,
          '--',
          'node',
          '-e',
          PROBE,
          '10',
          String(PORT),
          worker.address,
        ]);
        const lines = r.stdout.trim().split('\n');
        return lines.length === 10 && lines.every((l) => l.startsWith('200 ')) ? lines : undefined;
      },
      1000,
    );
    assert.deepEqual(
      [...new Set(replies)],
      [`200 replica ${hostname}`],
      'only the healthy replica receives requests',
    );
    await theLab().ok('manager1', 'service', 'rm', 'hc');
  });

  test("HTTP and TCP probes run by the agent in each container's namespace; Docker gets no check", async () => {
    const healthy = await probeScenario(theLab(), 2, CONVERGE_TIMEOUT_MS);

    // Docker runs no check of its own for these (and none of the image's).
    const first = healthy[0];
    assert.ok(first);
    const inspected = await run('docker', [
      'ps',
      '-q',
      '--no-trunc',
      '--filter',
      `label=cluster.task.id=${first.ID}`,
    ]);
    const container = inspected.stdout.trim();
    assert.notEqual(container, '', `the container of task ${first.ID}`);
    const check = await run('docker', ['inspect', '--format', '{{json .Config.Healthcheck}}', container]);
    assert.deepEqual(JSON.parse(check.stdout), { Test: ['NONE'] });
    await theLab().ok('manager1', 'service', 'rm', 'web', 'closed');
  });
});
