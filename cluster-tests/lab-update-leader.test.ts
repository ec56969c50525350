// Rolling updates on a lab of 3 managers and 2 workers (issue 7): the leader killed (SIGKILL) in
// the middle of a slow update, after which the new leader finishes it from the store without
// redoing finished slots and never with more than `parallelism` slots in flight; `service update
// --force` redeploying every slot with no spec change; and `service scale` in the middle of an
// update ending with the new count, all on the new version. Tasks run on the workers only, so
// killing a manager's daemon moves none of them.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { capabilities, eventually, useLab } from './lib/lab';
import { CONVERGE_TIMEOUT_MS, overlapping, slotOf, updateHelpers, type TaskRow } from './lab-update-helpers';

const caps = capabilities();
const needs =
  caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
const { lab } = needs ? { lab: undefined } : useLab({ managers: 3, workers: 2, runtime: 'docker' });

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

/** The manager the tests talk to: one that is not the leader (so it survives the kill). */
let via = 'manager1';
const { tasks, waitUpdateState, waitSettled, sampleTasks } = updateHelpers(theLab, () => via);

const V1 = 'local/busybox:1';
const V2 = 'local/busybox:2';

const runs = (row: TaskRow) => row.DesiredState === 'Running' && /^Running/.test(row.CurrentState);

/**
 * Slots in the middle of their update in one `service ps` snapshot: neither an old task meant
 * to run and running (not started yet) nor a new one running (done).
 */
function inFlight(rows: readonly TaskRow[], slots: number): number[] {
  const busy: number[] = [];
  for (let slot = 1; slot <= slots; slot++) {
    const here = rows.filter((r) => slotOf(r) === slot);
    if (!here.some((r) => runs(r) && (r.Image === V1 || r.Image === V2))) busy.push(slot);
  }
  return busy;
}

/** The running task id of every slot on `image`. */
function runningIds(rows: readonly TaskRow[], image: string): Map<number, string> {
  return new Map(rows.filter((r) => runs(r) && r.Image === image).map((r) => [slotOf(r), r.ID]));
}

async function create(name: string, replicas: number, ...args: string[]): Promise<void> {
  await theLab().ok(
    via,
    'service',
    'create',
    '-d',
    '--name',
    name,
    '--replicas',
    String(replicas),
    '--constraint',
    'node.role==worker',
    '--init=true',
    ...args,
    V1,
  );
  await waitSettled(name, V1, replicas);
}

describe('lab rolling update: leader change, --force, scale', { skip: needs }, () => {
  test('the leader killed mid-update: the update completes, finished slots are not redone, never more than parallelism in flight', async (t) => {
    const leader = theLab()
      .managers()
      .find((m) => theLab().raftRole(m) === 'Leader');
    assert.ok(leader, 'a leader is known');
    via = theLab()
      .managers()
      .find((m) => m !== leader) as string;
    const REPLICAS = 4;
    await create('slow', REPLICAS, '--update-delay', '2s', '--update-monitor', '1s');

    // Samples the task list all along the update.
    let maxInFlight = 0;
    const busiest: string[] = [];
    const overlaps: string[] = [];
    const sampler = sampleTasks('slow', (rows) => {
      const busy = inFlight(rows, REPLICAS);
      if (busy.length > maxInFlight) {
        maxInFlight = busy.length;
        busiest.push(`slots ${busy.join(',')}: ${JSON.stringify(rows)}`);
      }
      const both = overlapping(rows, V2);
      if (both.length > 0) overlaps.push(`slots ${both.join(',')}: ${JSON.stringify(rows)}`);
    });
    let snapshots = 0;
    try {
      await theLab().ok(via, 'service', 'update', '-d', '--image', V2, 'slow');
      // At least one slot done, some still to do: kill the leader now.
      const doneBefore = await eventually(
        'a first slot updated',
        CONVERGE_TIMEOUT_MS,
        async () => {
          const done = runningIds(await tasks('slow'), V2);
          return done.size >= 1 && done.size < REPLICAS ? done : undefined;
        },
        200,
      );
      const killed = await theLab().lab(['kill', leader]);
      assert.equal(killed.code, 0, killed.stderr);
      await waitUpdateState('slow', 'STATE_COMPLETED');
      await waitSettled('slow', V2, REPLICAS);
      const rows = await tasks('slow');
      const after = runningIds(rows, V2);
      for (const [slot, id] of doneBefore)
        assert.equal(after.get(slot), id, `slot ${slot}, updated before the kill, keeps its task`);
      for (let slot = 1; slot <= REPLICAS; slot++) {
        const newOnes = rows.filter((r) => slotOf(r) === slot && r.Image === V2);
        assert.equal(newOnes.length, 1, `slot ${slot} got one new task: ${JSON.stringify(newOnes)}`);
      }
      t.diagnostic(
        `killed ${leader} with slots ${[...doneBefore.keys()].join(',')} updated; at most ${maxInFlight} slot(s) in flight`,
      );
    } finally {
      snapshots = await sampler.stop();
    }
    assert.deepEqual(overlaps, [], 'stop-first: no new task beside a running old one');
    assert.ok(snapshots > 0, 'the task list was sampled');
    assert.ok(maxInFlight <= 1, `more than 1 slot in flight (parallelism 1): ${busiest.join('\n')}`);
    await theLab().ok(via, 'service', 'rm', 'slow');
  });

  test('service update --force redeploys every slot with no spec change', async () => {
    await create('forced', 3);
    const before = runningIds(await tasks('forced'), V1);
    assert.equal(before.size, 3);
    // Not detached: the CLI follows the rollout and ends with "updated".
    const out = await theLab().ok(via, 'service', 'update', '--force', 'forced');
    assert.match(out, /\nupdated\n$/);
    await waitSettled('forced', V1, 3);
    const rows = await tasks('forced');
    const after = runningIds(rows, V1);
    assert.equal(after.size, 3);
    for (const [slot, id] of before) {
      assert.notEqual(after.get(slot), id, `slot ${slot} has a new task`);
      assert.ok(
        rows.some((r) => r.ID === id && r.DesiredState === 'Shutdown'),
        `the old task of slot ${slot} is in the history, shut down`,
      );
    }
    await theLab().ok(via, 'service', 'rm', 'forced');
  });

  test('scaling up in the middle of an update: the new count, all on the new version', async () => {
    await create('grow', 2, '--update-delay', '2s', '--update-monitor', '1s');
    await theLab().ok(via, 'service', 'update', '-d', '--image', V2, 'grow');
    await eventually(
      'the first slot updated',
      CONVERGE_TIMEOUT_MS,
      async () => {
        const done = runningIds(await tasks('grow'), V2);
        return done.size === 1 ? true : undefined;
      },
      200,
    );
    await theLab().ok(via, 'service', 'scale', '-d', 'grow=5');
    await waitUpdateState('grow', 'STATE_COMPLETED');
    await waitSettled('grow', V2, 5);
    await theLab().ok(via, 'service', 'rm', 'grow');
  });
});
