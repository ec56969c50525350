// Progress while PREPARING: the throttle alone on a fake clock, then the controller reporting a
// runtime's progress (the same state, its start time kept) paced by it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Task, TaskState, type TaskStatus } from '../gen/cluster/v1/objects';
import { componentLogger } from '../common/logger';
import { TaskController } from './controller';
import { ProgressThrottle } from './progress';
import type { PrepareOptions, ProgressListener } from './runtime';
import { FakeRuntime } from './testing';

const logger = componentLogger('progress-test');
logger.level = 'silent';
const S = TaskState;

test('the first text goes out at once; the same text never twice in a row', () => {
  const t = new ProgressThrottle(500);
  assert.equal(t.offer('a', 1000), 'a');
  assert.equal(t.offer('a', 5000), undefined, 'unchanged: nothing to report');
  assert.equal(t.dueAtMs, undefined);
});

test('a newer text within the interval is held, and only the newest held text goes out when due', () => {
  const t = new ProgressThrottle(500);
  assert.equal(t.offer('a', 1000), 'a');
  assert.equal(t.offer('b', 1100), undefined);
  assert.equal(t.offer('c', 1200), undefined);
  assert.equal(t.dueAtMs, 1500);
  assert.equal(t.flush(1499), undefined, 'not yet');
  assert.equal(t.flush(1500), 'c', 'b was overtaken by c');
  assert.equal(t.dueAtMs, undefined);
  assert.equal(t.flush(9000), undefined, 'nothing held');
  assert.equal(t.offer('d', 1700), undefined, 'held: 200 ms after c');
  assert.equal(t.offer('e', 2000), 'e', 'the interval passed: out at once, d dropped');
  assert.equal(t.dueAtMs, undefined);
});

test('a held text that returns to the last reported one is dropped', () => {
  const t = new ProgressThrottle(500);
  assert.equal(t.offer('a', 0), 'a');
  assert.equal(t.offer('b', 100), undefined);
  assert.equal(t.offer('a', 200), undefined);
  assert.equal(t.dueAtMs, undefined);
  assert.equal(t.flush(1000), undefined);
});

test('at most one report per interval however many events arrive', () => {
  const t = new ProgressThrottle(500);
  const sent: number[] = [];
  // 10 s of a pull sending a new text every 10 ms, with the held text flushed when due.
  for (let now = 0; now <= 10_000; now += 10) {
    if (t.flush(now) !== undefined) sent.push(now);
    if (t.offer(`bytes ${now}`, now) !== undefined) sent.push(now);
  }
  for (let i = 1; i < sent.length; i++) {
    const gap = (sent[i] ?? 0) - (sent[i - 1] ?? 0);
    assert.ok(gap >= 500, `reports ${gap} ms apart`);
  }
  assert.equal(sent.length, 21);
});

/** A runtime whose prepare hands its progress listener to the test and waits to be let go. */
class PullingRuntime extends FakeRuntime {
  listener: ProgressListener | undefined;
  signal: AbortSignal | undefined;
  private letGo: () => void = () => undefined;
  private readonly gate = new Promise<void>((resolve) => (this.letGo = resolve));

  override async prepare(task: Task, nodeId: string, options?: PrepareOptions): Promise<string> {
    this.listener = options?.onProgress;
    this.signal = options?.signal;
    await this.gate;
    return super.prepare(task, nodeId);
  }

  finish(): void {
    this.letGo();
  }

  say(message: string): void {
    if (!this.listener) throw new Error('prepare has not started');
    this.listener(message);
  }
}

function harness(progressIntervalMs: number) {
  const runtime = new PullingRuntime();
  const reports: TaskStatus[] = [];
  const controller = new TaskController(
    Task.fromPartial({
      id: 't1',
      serviceId: 'svc',
      nodeId: 'n1',
      desiredState: S.TASK_STATE_RUNNING,
      status: { state: S.TASK_STATE_ASSIGNED },
      spec: { container: { image: 'reg:5000/x:1' } },
    }),
    { runtime, nodeId: 'n1', report: (_id, status) => reports.push(status), logger, progressIntervalMs },
  );
  const preparing = () => reports.filter((r) => r.state === S.TASK_STATE_PREPARING).map((r) => r.message);
  return { runtime, reports, controller, preparing };
}

const tick = () => new Promise((r) => setImmediate(r));
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await tick();
  assert.ok(cond(), `${what}: not reached`);
}

test('progress is reported as PREPARING with the message, keeping the time PREPARING began', async () => {
  const h = harness(0);
  h.controller.start();
  await until('prepare called', () => h.runtime.listener !== undefined);
  h.runtime.say('pulling image reg:5000/x:1');
  h.runtime.say('pulling image reg:5000/x:1');
  h.runtime.say('pulling image reg:5000/x:1: 0 of 1 layer, 1.0 MB of 2.0 MB');
  h.runtime.finish();
  await until('running', () => h.controller.reportedState === S.TASK_STATE_RUNNING);
  assert.deepEqual(h.preparing(), [
    'preparing',
    'pulling image reg:5000/x:1',
    'pulling image reg:5000/x:1: 0 of 1 layer, 1.0 MB of 2.0 MB',
  ]);
  const times = h.reports.filter((r) => r.state === S.TASK_STATE_PREPARING).map((r) => r.timestamp);
  assert.ok(
    times.every((t) => t === times[0]),
    'one PREPARING time',
  );
  assert.deepEqual(
    h.reports.map((r) => S[r.state]),
    [
      'TASK_STATE_ACCEPTED',
      'TASK_STATE_PREPARING',
      'TASK_STATE_PREPARING',
      'TASK_STATE_PREPARING',
      'TASK_STATE_READY',
      'TASK_STATE_STARTING',
      'TASK_STATE_RUNNING',
    ],
  );
  h.runtime.containerOf('t1')?.exit(0);
  await h.controller.idle();
});

test('progress within the interval is held; once prepare is done a held message is dropped', async () => {
  // An interval no test outlives: only the first message can go out.
  const h = harness(3_600_000);
  h.controller.start();
  await until('prepare called', () => h.runtime.listener !== undefined);
  h.runtime.say('pulling image reg:5000/x:1');
  h.runtime.say('pulling image reg:5000/x:1: 0 of 1 layer');
  h.runtime.say('pulling image reg:5000/x:1: 1 of 1 layer');
  h.runtime.finish();
  await until('running', () => h.controller.reportedState === S.TASK_STATE_RUNNING);
  assert.deepEqual(h.preparing(), ['preparing', 'pulling image reg:5000/x:1']);
  // A late message from the runtime after prepare is not a PREPARING report any more.
  h.runtime.say('pulling image reg:5000/x:1: late');
  assert.deepEqual(h.preparing(), ['preparing', 'pulling image reg:5000/x:1']);
  h.runtime.containerOf('t1')?.exit(0);
  await h.controller.idle();
});

test('a held message goes out when its interval is over, without a newer event', async () => {
  const h = harness(20);
  h.controller.start();
  await until('prepare called', () => h.runtime.listener !== undefined);
  h.runtime.say('first');
  h.runtime.say('second');
  h.runtime.say('third');
  // Event-driven: the held "third" is reported by the controller's timer, whenever it fires.
  await until('the held message reported', () => h.preparing().includes('third'));
  assert.deepEqual(h.preparing(), ['preparing', 'first', 'third']);
  h.runtime.finish();
  await until('running', () => h.controller.reportedState === S.TASK_STATE_RUNNING);
  h.runtime.containerOf('t1')?.exit(0);
  await h.controller.idle();
});

test('a task shut down while preparing tells the runtime to give up, and reports no more progress', async () => {
  const h = harness(0);
  const task = Task.fromPartial({
    id: 't1',
    serviceId: 'svc',
    nodeId: 'n1',
    desiredState: S.TASK_STATE_SHUTDOWN,
    spec: { container: { image: 'reg:5000/x:1' } },
  });
  h.controller.start();
  await until('prepare called', () => h.runtime.listener !== undefined);
  h.runtime.say('before');
  assert.equal(h.runtime.signal?.aborted, false);
  h.controller.update(task);
  assert.equal(h.runtime.signal?.aborted, true, 'the pull is told to stop');
  h.runtime.say('after');
  h.runtime.finish();
  await h.controller.idle();
  assert.deepEqual(h.preparing(), ['preparing', 'before']);
  assert.equal(h.reports.at(-1)?.state, S.TASK_STATE_SHUTDOWN);
});
