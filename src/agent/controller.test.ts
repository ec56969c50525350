// The task controller's state machine against an in-memory runtime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Task, TaskState, type TaskStatus } from '../gen/cluster/v1/objects';
import { componentLogger } from '../common/logger';
import { TaskController } from './controller';
import { FakeRuntime } from './testing';

const logger = componentLogger('controller-test');
logger.level = 'silent';

const S = TaskState;

function task(
  id: string,
  opts: { desired?: TaskState; state?: TaskState; image?: string; address?: string } = {},
): Task {
  return Task.fromPartial({
    id,
    networks: opts.address === undefined ? [] : [{ networkId: 'ingress', addresses: [opts.address] }],
    serviceId: 'svc',
    nodeId: 'n1',
    desiredState: opts.desired ?? S.TASK_STATE_RUNNING,
    status: { state: opts.state ?? S.TASK_STATE_ASSIGNED },
    spec: {
      container: { image: opts.image ?? 'local/busybox:1', stopGracePeriod: { seconds: 2, nanos: 0 } },
    },
  });
}

function harness(drainMs?: number) {
  const runtime = new FakeRuntime();
  const reports: TaskStatus[] = [];
  const make = (t: Task, adoptedId?: string) => {
    const adopted = adoptedId ? runtime.containers.get(adoptedId)?.info : undefined;
    return new TaskController(
      t,
      { runtime, nodeId: 'n1', report: (_id, status) => reports.push(status), logger, drainMs },
      adopted ? { ...adopted } : undefined,
    );
  };
  return { runtime, reports, make, states: () => reports.map((r) => S[r.state]) };
}

const tick = () => new Promise((r) => setImmediate(r));
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await tick();
  assert.ok(cond(), 'condition not reached');
}

test('a task runs through every state in order and completes with exit code 0', async () => {
  const h = harness();
  const c = h.make(task('t1'));
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  assert.deepEqual(h.states(), [
    'TASK_STATE_ACCEPTED',
    'TASK_STATE_PREPARING',
    'TASK_STATE_READY',
    'TASK_STATE_STARTING',
    'TASK_STATE_RUNNING',
  ]);
  h.runtime.containerOf('t1')?.exit(0);
  await c.idle();
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_COMPLETE);
  assert.equal(h.reports.at(-1)?.container?.exitCode, 0);
});

test('a non-zero exit is FAILED with the exit code', async () => {
  const h = harness();
  const c = h.make(task('t1'));
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  h.runtime.containerOf('t1')?.exit(3);
  await c.idle();
  const last = h.reports.at(-1);
  assert.equal(last?.state, S.TASK_STATE_FAILED);
  assert.equal(last?.container?.exitCode, 3);
  assert.match(last?.err ?? '', /non-zero exit \(3\)/);
});

test('a missing image fails the task with the reason, and a bad command fails at start', async () => {
  const h = harness();
  h.runtime.missingImages.add('nope:1');
  const c = h.make(task('t1', { image: 'nope:1' }));
  c.start();
  await c.idle();
  assert.deepEqual(h.states(), ['TASK_STATE_ACCEPTED', 'TASK_STATE_PREPARING', 'TASK_STATE_FAILED']);
  assert.match(h.reports.at(-1)?.err ?? '', /image nope:1 not found locally and no registry is reachable/);

  const h2 = harness();
  h2.runtime.failStart.add('t2');
  const c2 = h2.make(task('t2'));
  c2.start();
  await c2.idle();
  assert.equal(h2.reports.at(-1)?.state, S.TASK_STATE_FAILED);
  assert.match(h2.reports.at(-1)?.err ?? '', /executable file not found/);
});

test('desired SHUTDOWN stops with the grace period, reports SHUTDOWN, and removes the container', async () => {
  const h = harness();
  const t = task('t1');
  const c = h.make(t);
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  const id = c.container ?? '';
  c.update({ ...t, desiredState: S.TASK_STATE_SHUTDOWN });
  await c.idle();
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_SHUTDOWN);
  assert.ok(!h.states().includes('TASK_STATE_FAILED'), 'a stop we asked for is no failure');
  assert.deepEqual(h.runtime.calls.slice(-2), [`stop ${id} 2000`, `remove ${id}`]);
  assert.equal(h.runtime.containers.size, 0);
});

test('a serving task (running, with an address) drains before its stop signal', async () => {
  // Long enough never to end during the test: the stop must wait for the drain.
  const h = harness(3_600_000);
  const t = task('t1', { address: '10.0.0.5/24' });
  const c = h.make(t);
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  c.update({ ...t, desiredState: S.TASK_STATE_SHUTDOWN });
  for (let i = 0; i < 50; i++) await tick();
  assert.ok(!h.runtime.calls.some((call) => call.startsWith('stop ')), 'no stop signal while draining');
  assert.equal(c.reportedState, S.TASK_STATE_RUNNING, 'it keeps serving open connections meanwhile');
  // The agent stopping ends the drain without a stop: a restarted agent finishes the job.
  await c.detach();
  await c.idle();
  assert.ok(!h.runtime.calls.some((call) => call.startsWith('stop ')));
  assert.equal(h.runtime.containers.size, 1, 'the container is left to the next agent');
});

test('after the drain period the serving task is stopped and reported SHUTDOWN', async () => {
  const h = harness(20);
  const t = task('t1', { address: '10.0.0.5/24' });
  const c = h.make(t);
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  const id = c.container ?? '';
  c.update({ ...t, desiredState: S.TASK_STATE_SHUTDOWN });
  await c.idle();
  assert.deepEqual(h.runtime.calls.slice(-2), [`stop ${id} 2000`, `remove ${id}`]);
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_SHUTDOWN);
});

test('a task without an address, or not yet running, is stopped without a drain', async () => {
  const h = harness(3_600_000);
  const t = task('t1');
  const c = h.make(t);
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  c.update({ ...t, desiredState: S.TASK_STATE_SHUTDOWN });
  await c.idle();
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_SHUTDOWN);

  const failedTask = task('t2', { address: '10.0.0.6/24', state: S.TASK_STATE_FAILED });
  const ended = h.make(failedTask);
  ended.start();
  ended.update({ ...failedTask, desiredState: S.TASK_STATE_SHUTDOWN });
  await ended.idle();
});

test('a task already ended is not restarted and a shutdown of it reports nothing more', async () => {
  const h = harness();
  const t = task('t1', { state: S.TASK_STATE_FAILED });
  const c = h.make(t);
  c.start();
  await c.idle();
  c.update({ ...t, desiredState: S.TASK_STATE_SHUTDOWN });
  await c.idle();
  assert.deepEqual(h.reports, []);
  assert.deepEqual(h.runtime.calls, []);
});

test('shutdown while preparing does not start the container', async () => {
  const h = harness();
  const t = task('t1');
  const c = h.make(t);
  c.start();
  c.update({ ...t, desiredState: S.TASK_STATE_REMOVE });
  await c.idle();
  assert.ok(!h.runtime.calls.some((call) => call.startsWith('start')));
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_SHUTDOWN);
  assert.equal(h.runtime.containers.size, 0);
});

test('an adopted running container is watched, not started again', async () => {
  const h = harness();
  const t = task('t1');
  const id = await h.runtime.prepare(t, 'n1');
  await h.runtime.start(id);
  h.runtime.calls.length = 0;
  const c = h.make({ ...t, status: { state: S.TASK_STATE_RUNNING, message: '', err: '', health: '' } }, id);
  c.start();
  await tick();
  await tick();
  assert.deepEqual(h.runtime.calls, [], 'no prepare, no start');
  assert.deepEqual(h.reports, [], 'RUNNING was reported before the restart');
  h.runtime.containerOf('t1')?.exit(0);
  await c.idle();
  assert.deepEqual(h.states(), ['TASK_STATE_COMPLETE']);
});

test('an adopted container that exited while the agent was away reports its true end', async () => {
  const h = harness();
  const t = task('t1');
  const id = await h.runtime.prepare(t, 'n1');
  await h.runtime.start(id);
  h.runtime.containerOf('t1')?.exit(2);
  const c = h.make({ ...t, status: { state: S.TASK_STATE_STARTING, message: '', err: '', health: '' } }, id);
  c.start();
  await c.idle();
  assert.deepEqual(h.states(), ['TASK_STATE_RUNNING', 'TASK_STATE_FAILED']);
  assert.equal(h.reports.at(-1)?.container?.exitCode, 2);
});

test('a task that was running whose container vanished is FAILED, not started again', async () => {
  const h = harness();
  const c = h.make(task('t1', { state: S.TASK_STATE_RUNNING }));
  c.start();
  await c.idle();
  assert.deepEqual(h.states(), ['TASK_STATE_FAILED']);
  assert.deepEqual(h.runtime.calls, []);
});

test('detach leaves the container running', async () => {
  const h = harness();
  const c = h.make(task('t1'));
  c.start();
  await until(() => c.reportedState === S.TASK_STATE_RUNNING);
  await c.detach();
  assert.equal(h.runtime.containerOf('t1')?.info.status, 'running');
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_RUNNING);
});

test('while the runtime is down the task waits instead of failing, then runs', async () => {
  const h = harness();
  h.runtime.down = true;
  const c = h.make(task('t1'));
  c.start();
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!h.states().includes('TASK_STATE_FAILED'), 'an engine outage is not the task failing');
  h.runtime.down = false;
  const deadline = Date.now() + 3000;
  while (c.reportedState !== S.TASK_STATE_RUNNING && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.equal(c.reportedState, S.TASK_STATE_RUNNING);
  assert.equal(h.runtime.containers.size, 1);
  await c.shutdown(true);
});
