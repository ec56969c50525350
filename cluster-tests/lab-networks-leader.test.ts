// Addresses on a user overlay network across a leader change (issue 6): the leader is killed
// (SIGKILL) between two scale-ups, and the new leader's allocator, rebuilt from the replicated
// store, hands out no address a task already holds: every task container ends up with its own.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { capabilities, eventually, jsonLines, run, useLab } from './lib/lab';

const caps = capabilities();
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 3, workers: 2, runtime: 'docker' });

const CONVERGE_TIMEOUT_MS = 120_000;
const SERVICE_ID_LABEL = 'cluster.service.id';

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

/** The addresses on eth0 (the user network: the service publishes nothing) of every task container. */
async function taskAddresses(serviceId: string): Promise<string[]> {
  const ps = await run('docker', ['ps', '-q', '--filter', `label=${SERVICE_ID_LABEL}=${serviceId}`]);
  const addresses: string[] = [];
  for (const id of ps.stdout.split('\n').filter((l) => l.trim() !== '')) {
    const r = await run('docker', ['exec', id, 'ip', '-4', '-o', 'addr', 'show', 'eth0']);
    const match = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout);
    if (match?.[1]) addresses.push(match[1]);
  }
  return addresses.sort();
}

async function runningCount(host: string): Promise<number> {
  const out = await theLab().ok(
    host,
    '--format',
    'json',
    'service',
    'ps',
    '--filter',
    'desired-state=running',
    'app',
  );
  return jsonLines<{ CurrentState: string }>(out).filter((r) => /^Running/.test(r.CurrentState)).length;
}

describe('lab user network: no address handed out twice across a leader change', { skip: needs }, () => {
  test('scale up, kill the leader, scale up again: every task has its own address', async (t) => {
    const leader = theLab()
      .managers()
      .find((m) => theLab().raftRole(m) === 'Leader');
    assert.ok(leader, 'a leader is known');
    const other = theLab()
      .managers()
      .find((m) => m !== leader);
    assert.ok(other);
    await theLab().ok(other, 'network', 'create', 'appnet');
    await theLab().ok(
      other,
      'service',
      'create',
      '-d',
      '--name',
      'app',
      '--replicas',
      '4',
      '--network',
      'appnet',
      '--constraint',
      'node.role==worker',
      'local/busybox:1',
      'sleep',
      '100000',
    );
    await eventually('app at 4 running', CONVERGE_TIMEOUT_MS, async () =>
      (await runningCount(other)) === 4 ? true : undefined,
    );
    type Inspected = { ID?: string; id?: string };
    const inspected = JSON.parse(await theLab().ok(other, 'service', 'inspect', 'app')) as
      Inspected[] | Inspected;
    const first = Array.isArray(inspected) ? inspected[0] : inspected;
    const serviceId = first?.ID ?? first?.id ?? '';
    assert.notEqual(serviceId, '');
    const before = await taskAddresses(serviceId);
    assert.equal(before.length, 4);

    const killed = await theLab().lab(['kill', leader]);
    assert.equal(killed.code, 0, killed.stderr);
    // A new leader takes writes: the scale-up goes through it.
    await eventually(
      'a new leader accepts the scale-up',
      60_000,
      async () =>
        (await theLab().cli(other, 'service', 'scale', '-d', 'app=8')).code === 0 ? true : undefined,
      1000,
    );
    await eventually('app at 8 running', CONVERGE_TIMEOUT_MS, async () =>
      (await runningCount(other)) === 8 ? true : undefined,
    );
    const after = await eventually('8 task containers with an address', 60_000, async () => {
      const found = await taskAddresses(serviceId);
      return found.length === 8 ? found : undefined;
    });
    t.diagnostic(`addresses before: ${before.join(', ')}; after: ${after.join(', ')}`);
    assert.equal(new Set(after).size, 8, `distinct addresses: ${after.join(', ')}`);
    for (const address of before) assert.ok(after.includes(address), `${address} kept by its task`);
  });
});
