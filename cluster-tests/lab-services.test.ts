// Services on the namespace lab, through the CLI only, with real agents running tasks on Docker:
// replicas converge and spread, scale up and down, a killed worker's tasks are replaced
// elsewhere, and a drained node's tasks move.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { capabilities, eventually, jsonLines, useLab, type HostName } from './lib/lab';

const caps = capabilities();
// Without agents no task ever runs: the whole file waits for them rather than failing.
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 3, workers: 2 });

const CONVERGE_TIMEOUT_MS = 90_000;

interface TaskRow {
  ID: string;
  Name: string;
  Node: string;
  DesiredState: string;
  CurrentState: string;
  Error: string;
}

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

async function runningTasks(service: string, via: HostName = 'manager1'): Promise<TaskRow[]> {
  const out = await theLab().ok(
    via,
    '--format',
    'json',
    'service',
    'ps',
    '--filter',
    'desired-state=running',
    service,
  );
  return jsonLines<TaskRow>(out).filter((t) => /^Running/.test(t.CurrentState));
}

/** Waits until exactly `replicas` tasks run (and service ls agrees); returns them. */
async function converged(
  service: string,
  replicas: number,
  timeoutMs = CONVERGE_TIMEOUT_MS,
): Promise<TaskRow[]> {
  return eventually(
    `${service} at ${replicas}/${replicas}`,
    timeoutMs,
    async () => {
      const row = (await theLab().services('manager1')).find((s) => s.Name === service);
      if (row?.Replicas !== `${replicas}/${replicas}`) return undefined;
      const tasks = await runningTasks(service);
      return tasks.length === replicas ? tasks : undefined;
    },
    500,
  );
}

const nodesOf = (tasks: TaskRow[]) => tasks.map((t) => t.Node);

describe('lab services: 3 managers + 2 workers, tasks on Docker', { skip: needs }, () => {
  test('service create --replicas 3 converges to 3/3 running, spread over 3 nodes', async (t) => {
    const started = Date.now();
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'web',
      '--replicas',
      '3',
      'local/busybox:1',
    );
    const tasks = await converged('web', 3);
    t.diagnostic(
      `3/3 running after ${((Date.now() - started) / 1000).toFixed(1)} s on ${nodesOf(tasks).join(', ')}`,
    );
    assert.equal(new Set(nodesOf(tasks)).size, 3, `one task per node: ${nodesOf(tasks).join(', ')}`);
  });

  test('scale up to 7 and down to 2', async () => {
    await theLab().ok('manager2', 'service', 'scale', '-d', 'web=7');
    const up = await converged('web', 7);
    assert.equal(new Set(nodesOf(up)).size, 5, `7 tasks reach all 5 nodes: ${nodesOf(up).join(', ')}`);
    await theLab().ok('manager3', 'service', 'scale', '-d', 'web=2');
    await converged('web', 2);
    await theLab().ok('manager1', 'service', 'scale', '-d', 'web=5');
    const back = await converged('web', 5);
    assert.equal(new Set(nodesOf(back)).size, 5, `5 tasks, one per node: ${nodesOf(back).join(', ')}`);
  });

  test('kill -9 a worker: its tasks are replaced on other nodes; it rejoins after a restart', async (t) => {
    const before = await converged('web', 5);
    const victim = 'worker1';
    assert.ok(nodesOf(before).includes(victim), `${victim} runs a task: ${nodesOf(before).join(', ')}`);
    const killedAt = Date.now();
    const k = await theLab().lab(['kill', victim]);
    assert.equal(k.code, 0, k.stderr);
    const after = await eventually(
      '5 running tasks, none on the killed worker',
      CONVERGE_TIMEOUT_MS,
      async () => {
        const tasks = await runningTasks('web');
        return tasks.length === 5 && !nodesOf(tasks).includes(victim) ? tasks : undefined;
      },
      500,
    );
    const seconds = (Date.now() - killedAt) / 1000;
    console.log(`reschedule: ${victim} killed; 5/5 running elsewhere after ${seconds.toFixed(1)} s`);
    t.diagnostic(`reschedule seconds (kill -9 worker → its tasks running elsewhere): ${seconds.toFixed(1)}`);
    assert.ok(nodesOf(after).every((n) => n !== victim));

    const r = await theLab().lab(['restart', victim]);
    assert.equal(r.code, 0, r.stderr);
    await eventually(`${victim} Ready again`, 60_000, async () => {
      const row = (await theLab().nodes('manager1')).find((n) => n.Hostname === victim);
      return row?.Status === 'Ready' ? row : undefined;
    });
  });

  test('drain a node: its tasks move; active again: new tasks may land there', async () => {
    const drained = 'worker2';
    const before = await converged('web', 5);
    assert.ok(nodesOf(before).includes(drained), `${drained} runs a task: ${nodesOf(before).join(', ')}`);
    await theLab().ok('manager1', 'node', 'update', '--availability', 'drain', drained);
    const moved = await eventually(
      `no task on ${drained}, 5 running`,
      CONVERGE_TIMEOUT_MS,
      async () => {
        const tasks = await runningTasks('web');
        return tasks.length === 5 && !nodesOf(tasks).includes(drained) ? tasks : undefined;
      },
      500,
    );
    assert.ok(!nodesOf(moved).includes(drained));
    const row = (await theLab().nodes('manager1')).find((n) => n.Hostname === drained);
    assert.equal(row?.Availability, 'Drain');

    await theLab().ok('manager1', 'node', 'update', '--availability', 'active', drained);
    await theLab().ok('manager1', 'service', 'scale', '-d', 'web=6');
    // Spread: the new task goes to the node with the fewest of the service's tasks, the one drained.
    const grown = await converged('web', 6);
    assert.ok(nodesOf(grown).includes(drained), `a new task on ${drained}: ${nodesOf(grown).join(', ')}`);
  });

  test('service rm removes the service and its tasks', async () => {
    await theLab().ok('manager1', 'service', 'rm', 'web');
    await eventually('no web tasks left', 60_000, async () => {
      const names = (await theLab().services('manager1')).map((s) => s.Name);
      return names.includes('web') ? undefined : names;
    });
    const ps = await theLab().cli('manager1', 'service', 'ps', 'web');
    assert.equal(ps.code, 1);
    assert.match(ps.stderr, /not found/);
  });
});
