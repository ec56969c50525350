import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ClusterError } from '../common/errors';
import { Service, Task, TaskState, UpdateStatus_State } from '../gen/cluster/v1/objects';
import { computeProgress, rolloutOutcome, waitForConvergence } from './progress';

const replicated = (replicas: number) =>
  Service.fromPartial({
    id: 'svc1',
    spec: { annotations: { name: 'web' }, mode: { $case: 'replicated', value: { replicas } } },
  });
const global = Service.fromPartial({
  id: 'svc1',
  spec: { annotations: { name: 'agent' }, mode: { $case: 'global', value: {} } },
});

let clock = 0;
function t(
  slot: number,
  state: TaskState,
  extra: { desired?: TaskState; node?: string; err?: string } = {},
): Task {
  clock += 1;
  return Task.fromPartial({
    id: `task${clock}`,
    serviceId: 'svc1',
    slot,
    nodeId: extra.node ?? '',
    desiredState: extra.desired ?? TaskState.TASK_STATE_RUNNING,
    status: { state, timestamp: new Date(1_000_000 + clock), err: extra.err ?? '' },
  });
}

test('replicated progress: one line per slot with a stage bar; converged when every slot runs', () => {
  const p = computeProgress(replicated(3), [
    t(1, TaskState.TASK_STATE_RUNNING),
    t(2, TaskState.TASK_STATE_PREPARING),
    t(3, TaskState.TASK_STATE_PENDING),
  ]);
  assert.equal(p.converged, false);
  assert.equal(p.running, 1);
  assert.deepEqual(
    p.lines.map((l) => l.text),
    [
      'overall progress: 1 out of 3 tasks',
      '1/3: running   [=================================================>]',
      '2/3: preparing [==============================>                   ]',
      '3/3: pending   [============>                                     ]',
    ],
  );
  const done = computeProgress(replicated(2), [
    t(1, TaskState.TASK_STATE_RUNNING),
    t(2, TaskState.TASK_STATE_RUNNING),
  ]);
  assert.equal(done.converged, true);
});

test('a preparing task shows where its image pull stands', () => {
  const pulling = Task.fromPartial({
    ...t(1, TaskState.TASK_STATE_PREPARING),
    status: {
      state: TaskState.TASK_STATE_PREPARING,
      timestamp: new Date(1_000_000),
      message: 'pulling image reg:5000/web:1: 1 of 2 layers, 1.2 MB of 4.0 MB',
    },
  });
  const plain = Task.fromPartial({
    ...t(2, TaskState.TASK_STATE_PREPARING),
    status: { state: TaskState.TASK_STATE_PREPARING, timestamp: new Date(1_000_000), message: 'preparing' },
  });
  assert.deepEqual(
    computeProgress(replicated(2), [pulling, plain])
      .lines.slice(1)
      .map((l) => l.text),
    [
      '1/2: preparing [==============================>                   ] pulling image reg:5000/web:1: 1 of 2 layers, 1.2 MB of 4.0 MB',
      '2/2: preparing [==============================>                   ]',
    ],
  );
});

test('a failed task shows its error; a slot without a task shows nothing yet', () => {
  const p = computeProgress(replicated(2), [t(1, TaskState.TASK_STATE_REJECTED, { err: 'no such image' })]);
  assert.deepEqual(
    p.lines.slice(1).map((l) => l.text),
    ['1/2: rejected no such image', '2/2:'],
  );
  assert.equal(p.converged, false);
});

test('after a scale down, tasks above the replica count must stop first', () => {
  const tasks = [t(1, TaskState.TASK_STATE_RUNNING), t(2, TaskState.TASK_STATE_RUNNING)];
  assert.equal(computeProgress(replicated(1), tasks).converged, false);
  const stopping = [
    t(1, TaskState.TASK_STATE_RUNNING),
    t(2, TaskState.TASK_STATE_RUNNING, { desired: TaskState.TASK_STATE_SHUTDOWN }),
  ];
  assert.equal(computeProgress(replicated(1), stopping).converged, true);
  assert.equal(computeProgress(replicated(0), []).converged, true);
});

test('after a task spec change, tasks of an older spec do not count', () => {
  const service = Service.fromPartial({
    id: 'svc1',
    spec: {
      mode: { $case: 'replicated', value: { replicas: 1 } },
      task: { container: { image: 'nginx:2', labels: { a: '1', b: '2' } } },
    },
  });
  const withSpec = (task: Task, image: string, labels: Record<string, string>) =>
    Task.fromPartial({ ...task, spec: { container: { image, labels } } });
  const old = [withSpec(t(1, TaskState.TASK_STATE_RUNNING), 'nginx:1', { a: '1', b: '2' })];
  assert.equal(computeProgress(service, old, { requireCurrentSpec: true }).converged, false);
  assert.equal(computeProgress(service, old).converged, true, 'a scale does not ask for new tasks');
  // Same content, labels in another order: it is the current spec.
  const replaced = [...old, withSpec(t(1, TaskState.TASK_STATE_RUNNING), 'nginx:2', { b: '2', a: '1' })];
  assert.equal(computeProgress(service, replaced, { requireCurrentSpec: true }).converged, true);
});

test('global progress: one line per node; converged when all run', () => {
  const p = computeProgress(global, [
    t(0, TaskState.TASK_STATE_RUNNING, { node: 'nodeaaaaaaaaaaaaaaa' }),
    t(0, TaskState.TASK_STATE_STARTING, { node: 'nodebbbbbbbbbbbbbbb' }),
  ]);
  assert.equal(p.desired, 2);
  assert.equal(p.converged, false);
  assert.match(p.lines[1]?.text ?? '', /^nodeaaaaaaaa: running/);
  assert.equal(
    computeProgress(global, []).converged,
    false,
    'a global service with no task has not converged',
  );
});

test('the wait prints only changed lines when not on a terminal, then "verify: Service converged"', async () => {
  const answers = [
    [t(1, TaskState.TASK_STATE_PENDING), t(2, TaskState.TASK_STATE_PENDING)],
    [t(1, TaskState.TASK_STATE_RUNNING), t(2, TaskState.TASK_STATE_PENDING)],
    [t(1, TaskState.TASK_STATE_RUNNING), t(2, TaskState.TASK_STATE_PENDING)],
    [t(1, TaskState.TASK_STATE_RUNNING), t(2, TaskState.TASK_STATE_RUNNING)],
  ];
  let out = '';
  let calls = 0;
  await waitForConvergence({
    serviceName: 'web',
    fetch: () =>
      Promise.resolve({
        service: replicated(2),
        tasks: answers[Math.min(calls++, answers.length - 1)] ?? [],
      }),
    write: (text) => (out += text),
    isTTY: false,
    intervalMs: 1,
  });
  assert.equal(calls, 4);
  assert.deepEqual(out.trimEnd().split('\n'), [
    'overall progress: 0 out of 2 tasks',
    '1/2: pending   [============>                                     ]',
    '2/2: pending   [============>                                     ]',
    'overall progress: 1 out of 2 tasks',
    '1/2: running   [=================================================>]',
    'overall progress: 2 out of 2 tasks',
    '2/2: running   [=================================================>]',
    'verify: Service converged',
  ]);
});

test('on a terminal the block is rewritten in place', async () => {
  const answers = [[t(1, TaskState.TASK_STATE_PENDING)], [t(1, TaskState.TASK_STATE_RUNNING)]];
  let out = '';
  let calls = 0;
  await waitForConvergence({
    serviceName: 'web',
    fetch: () => Promise.resolve({ service: replicated(1), tasks: answers[calls++] ?? [] }),
    write: (text) => (out += text),
    isTTY: true,
    intervalMs: 1,
  });
  // The second block starts by moving the cursor up over the two lines of the first.
  assert.ok(out.includes('\x1b[2A\x1b[2Koverall progress: 1 out of 1 tasks\n'), JSON.stringify(out));
});

test('at the timeout the wait fails with exit 1 naming the counts; transient unavailability is waited through', async () => {
  let now = 0;
  let calls = 0;
  await assert.rejects(
    waitForConvergence({
      serviceName: 'web',
      fetch: () => {
        calls += 1;
        now += 1000;
        if (calls === 2) return Promise.reject(new ClusterError('UNAVAILABLE', 'election in progress'));
        return Promise.resolve({ service: replicated(3), tasks: [t(1, TaskState.TASK_STATE_RUNNING)] });
      },
      write: () => undefined,
      isTTY: false,
      intervalMs: 1,
      timeoutMs: 5000,
      now: () => now,
    }),
    (e: unknown) => {
      assert.ok(e instanceof ClusterError);
      assert.equal(e.exitCode, 1);
      assert.match(e.message, /^service 'web' not converged yet: 1\/3 running/);
      return true;
    },
  );
  assert.ok(calls >= 5);
});

test('a NOT_FOUND while waiting (service removed) ends the wait at once', async () => {
  await assert.rejects(
    waitForConvergence({
      serviceName: 'web',
      fetch: () => Promise.reject(new ClusterError('NOT_FOUND', "service 'web' not found")),
      write: () => undefined,
      isTTY: false,
      intervalMs: 1,
    }),
    { code: 'NOT_FOUND' },
  );
});

const withStatus = (service: Service, state: UpdateStatus_State, message = ''): Service =>
  Service.fromPartial({ ...service, updateStatus: { state, message } });

test('rollout outcome: "updated" once completed and converged; nothing while updating or still converging', () => {
  const running = computeProgress(replicated(1), [t(1, TaskState.TASK_STATE_RUNNING)]);
  const starting = computeProgress(replicated(1), [t(1, TaskState.TASK_STATE_STARTING)]);
  const S = UpdateStatus_State;
  assert.equal(rolloutOutcome(withStatus(replicated(1), S.STATE_UPDATING), running, false), undefined);
  assert.equal(rolloutOutcome(withStatus(replicated(1), S.STATE_COMPLETED), starting, false), undefined);
  assert.deepEqual(rolloutOutcome(withStatus(replicated(1), S.STATE_COMPLETED), running, false), {
    line: 'updated',
    ok: true,
  });
  // No update status: a change that replaced no task is done once converged.
  assert.deepEqual(rolloutOutcome(replicated(1), running, false), { line: 'updated', ok: true });
  assert.equal(rolloutOutcome(replicated(1), starting, false), undefined);
});

test('rollout outcome: a pause and an automatic rollback fail with their reason; a requested rollback succeeds', () => {
  const running = computeProgress(replicated(1), [t(1, TaskState.TASK_STATE_RUNNING)]);
  const S = UpdateStatus_State;
  const why = '1 of 1 updated tasks failed (max failure ratio 0)';
  assert.deepEqual(
    rolloutOutcome(withStatus(replicated(1), S.STATE_PAUSED, `${why}: paused`), running, false),
    {
      line: `paused: ${why}: paused`,
      ok: false,
    },
  );
  assert.equal(
    rolloutOutcome(withStatus(replicated(1), S.STATE_ROLLBACK_STARTED), running, false),
    undefined,
  );
  assert.deepEqual(
    rolloutOutcome(
      withStatus(replicated(1), S.STATE_ROLLBACK_COMPLETED, `${why}: rolling back`),
      running,
      false,
    ),
    { line: `rolled back: ${why}: rolling back`, ok: false },
  );
  assert.deepEqual(
    rolloutOutcome(
      withStatus(replicated(1), S.STATE_ROLLBACK_COMPLETED, 'rollback completed'),
      running,
      true,
    ),
    { line: 'rolled back', ok: true },
  );
  assert.deepEqual(rolloutOutcome(withStatus(replicated(1), S.STATE_ROLLBACK_PAUSED, why), running, true), {
    line: `rollback paused: ${why}`,
    ok: false,
  });
});

test('the update wait goes on through the monitor period, then prints the final state line', async () => {
  const S = UpdateStatus_State;
  const task = t(1, TaskState.TASK_STATE_RUNNING);
  const answers = [
    withStatus(replicated(1), S.STATE_UPDATING),
    withStatus(replicated(1), S.STATE_UPDATING),
    withStatus(replicated(1), S.STATE_PAUSED, 'task failed: paused'),
  ];
  let out = '';
  let calls = 0;
  await assert.rejects(
    waitForConvergence({
      serviceName: 'web',
      fetch: () =>
        Promise.resolve({
          service: answers[Math.min(calls++, answers.length - 1)] ?? replicated(1),
          tasks: [task],
        }),
      write: (text) => (out += text),
      isTTY: false,
      intervalMs: 1,
      rollout: { rollback: false },
    }),
    (e: unknown) => {
      assert.ok(e instanceof ClusterError);
      assert.equal(e.exitCode, 1);
      assert.match(e.message, /^service 'web' paused: task failed: paused/);
      return true;
    },
  );
  assert.equal(calls, 3);
  assert.equal(out.trimEnd().split('\n').at(-1), 'paused: task failed: paused');
  assert.ok(!out.includes('verify: Service converged'));
});
