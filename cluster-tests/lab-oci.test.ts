// The oci runtime on the namespace lab (1 manager + 2 workers, `scripts/lab up --runtime oci`):
// a 3-replica service with --publish 8080:80, env, a bind mount, memory and pids limits and --init
// runs on runc (not Docker), every replica really has them (tini as each container's PID 1), the routing mesh reaches every replica from any
// node, and a worker's daemon killed with SIGKILL and restarted adopts its container instead of
// starting a duplicate.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { capabilities, eventually, jsonLines, useLab } from './lib/lab';

const caps = capabilities();
const haveRunc = spawnSync('runc', ['--version']).status === 0;
function missing(): string | false {
  if (caps.labUnavailable) return caps.labUnavailable;
  // Docker itself is not needed here: only the agent's wiring.
  if (!caps.agent && !/docker is not installed/.test(caps.agentMissing ?? ''))
    return `needs agents that run tasks: ${caps.agentMissing ?? ''}`;
  return haveRunc ? false : 'needs runc (scripts/setup.sh)';
}
const needs = missing();
const { lab } = needs ? { lab: undefined } : useLab({ managers: 1, workers: 2, runtime: 'oci' });

const PORT = 8080;
const CONVERGE_TIMEOUT_MS = 90_000;
const MEMORY_BYTES = 64 << 20;
const PIDS_LIMIT = 50;
let bindDir = '';

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

interface TaskRow {
  ID: string;
  Node: string;
  CurrentState: string;
}

const probe = (count: number, addrs: readonly string[]) => theLab().httpProbe('worker1', PORT, count, addrs);

async function runningTasks(): Promise<TaskRow[]> {
  const out = await theLab().ok(
    'manager1',
    '--format',
    'json',
    'service',
    'ps',
    '--filter',
    'desired-state=running',
    'web',
  );
  return jsonLines<TaskRow>(out).filter((r) => /^Running/.test(r.CurrentState));
}

/** Containers runc runs for each host's daemon (its runc root is in the host's data dir). */
function runcContainers(): Map<string, { id: string; status: string; pid: number }[]> {
  const byHost = new Map<string, { id: string; status: string; pid: number }[]>();
  for (const { host } of theLab().hosts()) {
    const r = spawnSync(
      'runc',
      ['--root', path.join(theLab().dir, host, 'data', 'oci', 'runc'), 'list', '--format', 'json'],
      {
        encoding: 'utf8',
      },
    );
    const list = (JSON.parse(r.stdout.trim() || 'null') ?? []) as {
      id: string;
      status: string;
      pid: number;
    }[];
    byHost.set(host, list);
  }
  return byHost;
}

function allRunning(): { host: string; id: string; pid: number }[] {
  return [...runcContainers()].flatMap(([host, list]) =>
    list.filter((c) => c.status === 'running').map((c) => ({ host, id: c.id, pid: c.pid })),
  );
}

describe('lab on the oci runtime: 1 manager + 2 workers', { skip: needs }, () => {
  before(() => {
    bindDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lab-oci-bind-'));
    fs.writeFileSync(path.join(bindDir, 'greeting'), 'from-the-host\n');
    fs.chmodSync(bindDir, 0o755);
  });
  after(() => {
    if (bindDir) fs.rmSync(bindDir, { recursive: true, force: true });
  });

  test('3 replicas with env, a bind mount, limits and --init run on runc and answer through the mesh', async (t) => {
    for (const { host } of theLab().hosts()) {
      const images = await theLab().ok(
        host,
        'image',
        'ls',
        '-q',
        '--data-dir',
        path.join(theLab().dir, host, 'data'),
      );
      assert.match(images, /^local\/busybox:1$/m, `${host} has the test image`);
    }
    const createdAt = Date.now();
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'web',
      '--replicas',
      '3',
      '--publish',
      `${PORT}:80`,
      '--env',
      'GREETING=hello-oci',
      '--mount',
      `type=bind,src=${bindDir},dst=/host,readonly`,
      '--limit-memory',
      String(MEMORY_BYTES),
      '--limit-pids',
      String(PIDS_LIMIT),
      '--init',
      'local/busybox:1',
      'sh',
      '-c',
      'echo "replica $(hostname) $GREETING $(cat /host/greeting) $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)" >/www/index.html && echo "up on $(hostname)" && exec httpd -f -p 80 -h /www',
    );
    const tasks = await eventually(
      'web at 3/3 running',
      CONVERGE_TIMEOUT_MS,
      async () => {
        const running = await runningTasks();
        return running.length === 3 ? running : undefined;
      },
      500,
    );
    t.diagnostic(
      `3/3 running ${((Date.now() - createdAt) / 1000).toFixed(1)} s after create (lab, under load), on ${tasks.map((r) => r.Node).join(', ')}`,
    );
    // On runc, one container per task, each with the limit in its own cgroup.
    const containers = allRunning();
    assert.equal(containers.length, 3, JSON.stringify(containers));
    for (const c of containers) {
      const limit = fs.readFileSync(
        `/sys/fs/cgroup/memory/cluster-oci-${c.id}/memory.limit_in_bytes`,
        'utf8',
      );
      assert.equal(limit.trim(), String(MEMORY_BYTES));
      const pidsMax = fs.readFileSync(`/sys/fs/cgroup/pids/cluster-oci-${c.id}/pids.max`, 'utf8');
      assert.equal(pidsMax.trim(), String(PIDS_LIMIT));
      // --init: the container's PID 1 is tini at Docker's path, running the service's command.
      const argv = fs.readFileSync(`/proc/${c.pid}/cmdline`, 'utf8').split('\0');
      assert.deepEqual(argv.slice(0, 4), ['/sbin/docker-init', '--', 'sh', '-c'], `${c.id} runs under tini`);
      const environ = fs.readFileSync(`/proc/${c.pid}/environ`, 'utf8').split('\0');
      assert.ok(environ.includes('GREETING=hello-oci'), `${c.id} has the env`);
    }
    const addrs = theLab()
      .hosts()
      .map((h) => h.address);
    await eventually(
      'one answer from every host',
      30_000,
      async () => {
        const replies = await probe(1, addrs);
        return replies.length === addrs.length && replies.every((r) => r.reply.startsWith('200 '))
          ? true
          : undefined;
      },
      500,
    );
    const replies = await probe(6, addrs);
    assert.deepEqual(
      replies.filter((r) => !r.reply.startsWith('200 ')),
      [],
      'every request answers',
    );
    for (const r of replies) {
      assert.match(r.reply, new RegExp(`^200 replica \\S+ hello-oci from-the-host ${MEMORY_BYTES}$`));
    }
    // Their output, captured by the shims, reaches `service logs` through the managers.
    const logs = await eventually(
      'three start lines in service logs',
      30_000,
      async () => {
        const out = await theLab().ok('manager1', 'service', 'logs', 'web');
        return (out.match(/up on \S+/g) ?? []).length === 3 ? out : undefined;
      },
      500,
    );
    t.diagnostic(logs.trim().split('\n').join(' | '));
    const pretty = await theLab().ok('manager1', 'service', 'inspect', '--pretty', 'web');
    assert.match(pretty, new RegExp(`^ Limit Pids:\\s+${PIDS_LIMIT}$`, 'm'));
    const replicas = new Set(replies.map((r) => r.reply.split(' ')[2]));
    t.diagnostic(`replicas seen: ${[...replicas].join(', ')}`);
    assert.equal(replicas.size, 3, `every replica reached: ${[...replicas].join(', ')}`);
  });

  test('kill -9 a worker daemon and restart it: its container is adopted, never duplicated', async (t) => {
    const before = allRunning();
    const victim = before.find((c) => c.host === 'worker1');
    assert.ok(victim, `worker1 runs a container: ${JSON.stringify(before)}`);
    const k = await theLab().lab(['kill', 'worker1']);
    assert.equal(k.code, 0, k.stderr);
    // The container does not depend on the agent: it still runs with its daemon dead.
    assert.ok(allRunning().some((c) => c.id === victim.id));
    const r = await theLab().lab(['restart', 'worker1']);
    assert.equal(r.code, 0, r.stderr);
    await eventually('worker1 Ready again', 60_000, async () => {
      const row = (await theLab().nodes('manager1')).find((n) => n.Hostname === 'worker1');
      return row?.Status === 'Ready' ? row : undefined;
    });
    const settled = await eventually(
      '3 tasks running on 3 containers',
      CONVERGE_TIMEOUT_MS,
      async () => {
        const tasks = await runningTasks();
        const containers = allRunning();
        return tasks.length === 3 && containers.length === 3 ? containers : undefined;
      },
      500,
    );
    const kept = settled.some((c) => c.id === victim.id);
    t.diagnostic(
      kept
        ? `worker1's container ${victim.id} was adopted`
        : 'worker1 was down long enough for its task to move',
    );
    // Never more containers than tasks, on any host, while things settle and after.
    for (let i = 0; i < 10; i++) {
      const now = allRunning();
      assert.ok(now.length <= 3, `no duplicate containers: ${JSON.stringify(now)}`);
      assert.equal(new Set(now.map((c) => c.id)).size, now.length);
    }
    const addrs = theLab()
      .hosts()
      .map((h) => h.address);
    await eventually(
      'every host answers after the restart',
      30_000,
      async () => {
        const replies = await probe(2, addrs);
        return replies.every((x) => x.reply.startsWith('200 replica ')) ? true : undefined;
      },
      500,
    );
  });

  test('healthchecks run through exec in the runc container: healthy shown, unhealthy replaced', async () => {
    const create = (name: string, check: string) =>
      theLab().ok(
        'manager1',
        'service',
        'create',
        '-d',
        '--name',
        name,
        '--health-cmd',
        check,
        '--health-interval',
        '1s',
        '--health-retries',
        '1',
        'local/busybox:1',
      );
    await create('checked', 'wget -q -O /dev/null http://127.0.0.1/health');
    await create('sick', 'test -f /www/missing');
    const psRows = async (name: string) =>
      jsonLines<TaskRow & { Error: string }>(
        await theLab().ok('manager1', '--format', 'json', 'service', 'ps', name),
      );
    await eventually(
      'checked healthy in service ps',
      60_000,
      async () => {
        const rows = await psRows('checked');
        return rows.some((r) => /^Running .* \(healthy\)$/.test(r.CurrentState)) ? true : undefined;
      },
      500,
    );
    const failed = await eventually(
      'sick FAILED as unhealthy',
      60_000,
      async () => {
        const rows = await psRows('sick');
        return rows.find((r) => /unhealthy/.test(r.Error));
      },
      500,
    );
    assert.match(failed.Error, /unhealthy container/);
    await theLab().ok('manager1', 'service', 'rm', 'checked', 'sick');
    await eventually(
      'only the 3 web containers left',
      60_000,
      () => Promise.resolve(allRunning().length === 3 ? true : undefined),
      500,
    );
  });

  test('service rm stops every container (tini and its command) and removes overlays and cgroups', async () => {
    const containers = allRunning();
    await theLab().ok('manager1', 'service', 'rm', 'web');
    await eventually(
      'no containers left',
      60_000,
      () => Promise.resolve(allRunning().length === 0 ? true : undefined),
      500,
    );
    await eventually(
      'container folders removed',
      60_000,
      () => {
        const left = theLab()
          .hosts()
          .flatMap(({ host }) => {
            const dir = path.join(theLab().dir, host, 'data', 'oci', 'containers');
            return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
          });
        return Promise.resolve(left.length === 0 ? true : undefined);
      },
      500,
    );
    for (const c of containers) {
      assert.equal(fs.existsSync(`/sys/fs/cgroup/memory/cluster-oci-${c.id}`), false);
      assert.equal(fs.existsSync(`/sys/fs/cgroup/pids/cluster-oci-${c.id}`), false);
      // Its init exited: the pid is gone, or reused by a process that is not this service's tini.
      const cmdline = fs.existsSync(`/proc/${c.pid}`)
        ? fs.readFileSync(`/proc/${c.pid}/cmdline`, 'utf8')
        : '';
      assert.ok(!cmdline.startsWith('/sbin/docker-init\0--\0sh\0-c\0echo "replica'), `${c.id}'s init exited`);
    }
  });
});
