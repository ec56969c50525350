// The routing mesh on the namespace lab (issue 6): a service published with --publish 8080:80
// answers on port 8080 of every host's lab address, hosts without a replica included, and new
// connections reach every replica; removing the service closes the port everywhere.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { capabilities, eventually, jsonLines, useLab } from './lib/lab';

const caps = capabilities();
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 3, workers: 2 });

const PORT = 8080;
const CONVERGE_TIMEOUT_MS = 90_000;

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

interface TaskRow {
  Node: string;
  CurrentState: string;
}

const probe = (count: number, addrs: readonly string[]) => theLab().httpProbe('worker1', PORT, count, addrs);

describe('lab routing mesh: --publish 8080:80 answers on every node', { skip: needs }, () => {
  test('every host answers, hosts without a replica too, and every replica is reached', async (t) => {
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
      'local/busybox:1',
      'sh',
      '-c',
      'echo "replica $(hostname)" >/www/index.html && exec httpd -f -p 80 -h /www',
    );
    const running = await eventually(
      'web at 3/3 running',
      CONVERGE_TIMEOUT_MS,
      async () => {
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
        const tasks = jsonLines<TaskRow>(out).filter((r) => /^Running/.test(r.CurrentState));
        return tasks.length === 3 ? tasks : undefined;
      },
      500,
    );
    const withReplica = new Set(running.map((r) => r.Node));
    const hosts = theLab().hosts();
    const idle = hosts.filter((h) => !withReplica.has(h.host));
    assert.ok(idle.length >= 2, `5 hosts, 3 replicas: some hosts run none (${[...withReplica].join(', ')})`);
    const addrs = hosts.map((h) => h.address);

    // The mesh converges a moment after the tasks run (state reaches every agent): wait for
    // one answer from every host, then require every request to answer.
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
    assert.equal(replies.length, 6 * addrs.length);
    const failed = replies.filter((r) => !r.reply.startsWith('200 '));
    assert.deepEqual(failed, [], 'every request through the published port answers');
    for (const h of idle) {
      assert.ok(
        replies.some((r) => r.addr === h.address && r.reply.startsWith('200 replica ')),
        `${h.host} (${h.address}) runs no replica and still answers`,
      );
    }
    const replicas = new Set(replies.map((r) => r.reply.replace(/^200 replica /, '')));
    t.diagnostic(`replicas seen: ${[...replicas].join(', ')}`);
    assert.equal(replicas.size, 3, `every replica reached: ${[...replicas].join(', ')}`);
  });

  test('service rm: the published port stops answering on every host', async () => {
    await theLab().ok('manager1', 'service', 'rm', 'web');
    const addrs = theLab()
      .hosts()
      .map((h) => h.address);
    await eventually(
      'no host answers on the port',
      60_000,
      async () => {
        const replies = await probe(1, addrs);
        return replies.every((r) => r.reply.startsWith('ERR')) ? true : undefined;
      },
      500,
    );
  });
});
