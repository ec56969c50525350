// The rolling updater's next step, one rule per test: batches of `parallelism`, monitor period
// and health, delay between batches, failure ratio and actions, update_status, and resuming
// from the store alone after a leader change.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  TaskState,
  UpdateConfig,
  UpdateConfig_FailureAction,
  UpdateStatus_State,
  type Service,
  type Task,
} from '../../gen/cluster/v1/objects';
import { service, task } from './testing';
import { nextUpdateStep, type SlotView } from './updater';

const MONITOR_MS = 5_000;

interface Setup {
  parallelism?: number;
  delayMs?: number;
  maxFailureRatio?: number;
  failureAction?: UpdateConfig_FailureAction;
  status?: UpdateStatus_State;
  startedMs?: number;
  healthcheck?: boolean;
}

/** Service "web" updated from nginx:1 to nginx:2 with the given update config. */
function updatedService(setup: Setup = {}): { v1: Service; v2: Service } {
  const v1 = service('web', { image: 'nginx:1' });
  const v2 = service('web', { image: 'nginx:2' });
  const ms = (n: number) => ({ seconds: Math.floor(n / 1000), nanos: (n % 1000) * 1e6 });
  if (v2.spec) {
    if (setup.healthcheck && v2.spec.task?.container) {
      v2.spec.task.container.healthcheck = {
        test: ['CMD', 'true'],
        interval: undefined,
        timeout: undefined,
        retries: 0,
        startPeriod: undefined,
      };
    }
    v2.spec.update = UpdateConfig.fromPartial({
      parallelism: setup.parallelism ?? 1,
      delay: ms(setup.delayMs ?? 0),
      monitor: ms(MONITOR_MS),
      maxFailureRatio: setup.maxFailureRatio ?? 0,
      failureAction: setup.failureAction ?? UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE,
    });
    v2.spec.rollback = UpdateConfig.fromPartial({ parallelism: 0, monitor: ms(MONITOR_MS) });
  }
  v2.previousSpec = structuredClone(v1.spec);
  if (setup.status !== undefined) {
    v2.updateStatus = {
      state: setup.status,
      startedAt: new Date(setup.startedMs ?? 0),
      completedAt: undefined,
      message: '',
    };
  }
  return { v1, v2 };
}

/** An outdated slot: one task of the old spec running. */
function oldSlot(v1: Service, slot: number): SlotView {
  return { key: String(slot), tasks: [task(v1, { slot, nodeId: 'n1' })], current: undefined, outdated: true };
}

/** A replaced slot: the old task stopped, the new one in `state` since `sinceMs`. */
function newSlot(
  v1: Service,
  v2: Service,
  slot: number,
  state: TaskState,
  sinceMs: number,
  extra: Partial<Task> = {},
): SlotView {
  const old = task(v1, {
    slot,
    nodeId: 'n1',
    state: TaskState.TASK_STATE_SHUTDOWN,
    desired: TaskState.TASK_STATE_SHUTDOWN,
  });
  const fresh = task(v2, { slot, nodeId: 'n1', state, createdMs: sinceMs });
  if (fresh.meta) fresh.meta.updatedAt = new Date(sinceMs);
  Object.assign(fresh, extra);
  return { key: String(slot), tasks: [old, fresh], current: fresh, outdated: false };
}

describe('updater: batches', () => {
  it('replaces `parallelism` outdated slots, lowest first, and marks the service updating', () => {
    const { v1, v2 } = updatedService({ parallelism: 2 });
    const step = nextUpdateStep(
      v2,
      [1, 2, 3, 4, 5].map((s) => oldSlot(v1, s)),
      1000,
    );
    assert.deepEqual(step.replace, ['1', '2']);
    assert.equal(step.service?.updateStatus?.state, UpdateStatus_State.STATE_UPDATING);
    assert.deepEqual(step.service?.updateStatus?.startedAt, new Date(1000));
  });

  it('parallelism 0 replaces every outdated slot at once', () => {
    const { v1, v2 } = updatedService({ parallelism: 0 });
    assert.deepEqual(
      nextUpdateStep(
        v2,
        [1, 2, 3].map((s) => oldSlot(v1, s)),
        0,
      ).replace,
      ['1', '2', '3'],
    );
  });

  it('slots still in flight use up the batch', () => {
    const { v1, v2 } = updatedService({ parallelism: 2, status: UpdateStatus_State.STATE_UPDATING });
    const slots = [newSlot(v1, v2, 1, TaskState.TASK_STATE_PENDING, 0), oldSlot(v1, 2), oldSlot(v1, 3)];
    assert.deepEqual(nextUpdateStep(v2, slots, 100).replace, ['2']);
  });

  it('a slot whose old task is still stopping (stop-first) uses up the batch and keeps the update open', () => {
    const { v1, v2 } = updatedService({ parallelism: 2, status: UpdateStatus_State.STATE_UPDATING });
    const stopping = (slot: number): SlotView => ({
      key: String(slot),
      tasks: [task(v1, { slot, nodeId: 'n1', desired: TaskState.TASK_STATE_SHUTDOWN })],
      current: undefined,
      outdated: false,
      stopping: true,
    });
    assert.deepEqual(nextUpdateStep(v2, [stopping(1), oldSlot(v1, 2), oldSlot(v1, 3)], 100).replace, ['2']);
    assert.deepEqual(nextUpdateStep(v2, [stopping(1), stopping(2), oldSlot(v1, 3)], 100).replace, []);
    // The last slot still stopping: not completed yet.
    const last = nextUpdateStep(v2, [stopping(1)], 100);
    assert.equal(last.service, undefined);
    // A slot of the current spec being refilled (scaled down and up) is not part of the update.
    const done = nextUpdateStep(
      v2,
      [{ ...stopping(1), tasks: [task(v2, { slot: 1, desired: TaskState.TASK_STATE_SHUTDOWN })] }],
      100,
    );
    assert.equal(done.service?.updateStatus?.state, UpdateStatus_State.STATE_COMPLETED);
  });

  it('the next batch starts once the new tasks run; the update completes after their monitor period', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING });
    const slots = [newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 10_000), oldSlot(v1, 2)];
    assert.deepEqual(nextUpdateStep(v2, slots, 10_000).replace, ['2']);
    const last = [
      newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 10_000),
      newSlot(v1, v2, 2, TaskState.TASK_STATE_RUNNING, 11_000),
    ];
    const monitoring = nextUpdateStep(v2, last, 11_000 + MONITOR_MS - 1);
    assert.equal(monitoring.service, undefined, 'still updating inside the monitor window');
    assert.equal(monitoring.wakeAtMs, 11_000 + MONITOR_MS);
    const done = nextUpdateStep(v2, last, 11_000 + MONITOR_MS);
    assert.equal(done.service?.updateStatus?.state, UpdateStatus_State.STATE_COMPLETED);
  });

  it('a new task failing inside its monitor window is a failure of the update', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING, startedMs: 0 });
    const slots = [newSlot(v1, v2, 1, TaskState.TASK_STATE_FAILED, 1000), oldSlot(v1, 2)];
    const step = nextUpdateStep(v2, slots, 2000);
    assert.deepEqual(step.replace, []);
    assert.equal(step.service?.updateStatus?.state, UpdateStatus_State.STATE_PAUSED);
  });

  it('with a healthcheck, a new task must also be healthy', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING, healthcheck: true });
    const starting = newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 0);
    if (starting.current?.status) starting.current.status.health = 'starting';
    assert.deepEqual(nextUpdateStep(v2, [starting, oldSlot(v1, 2)], 60_000).replace, []);
    if (starting.current?.status) starting.current.status.health = 'healthy';
    assert.deepEqual(nextUpdateStep(v2, [starting, oldSlot(v1, 2)], 60_000).replace, ['2']);
  });

  it('waits `delay` after a batch is done before the next', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING, delayMs: 3000 });
    const slots = [newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 0), oldSlot(v1, 2)];
    // The batch is done when its task runs (time 0 here).
    const done = 0;
    const waiting = nextUpdateStep(v2, slots, done + 2999);
    assert.deepEqual(waiting.replace, []);
    assert.equal(waiting.wakeAtMs, done + 3000);
    assert.deepEqual(nextUpdateStep(v2, slots, done + 3000).replace, ['2']);
  });

  it('completes: updating becomes completed once no slot is outdated or in flight', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING });
    const step = nextUpdateStep(v2, [newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 0)], 60_000);
    assert.equal(step.service?.updateStatus?.state, UpdateStatus_State.STATE_COMPLETED);
    assert.deepEqual(step.service?.updateStatus?.completedAt, new Date(60_000));
    assert.equal(
      nextUpdateStep(step.service ?? v2, [newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 0)], 70_000)
        .service,
      undefined,
    );
  });

  it('a task failure after the update completed does not reopen it', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_COMPLETED });
    // Slot 1's new task failed long after the update; its restart is not running yet.
    const restarting = newSlot(v1, v2, 1, TaskState.TASK_STATE_PENDING, 60_000);
    const step = nextUpdateStep(
      v2,
      [restarting, newSlot(v1, v2, 2, TaskState.TASK_STATE_RUNNING, 10_000)],
      61_000,
    );
    assert.deepEqual(step.replace, []);
    assert.equal(step.service, undefined);
    // Nor after a scale cleared the status (no update_status at all).
    const { v2: scaled } = updatedService();
    assert.equal(nextUpdateStep(scaled, [restarting], 61_000).service, undefined);
  });

  it('a first deployment (no previous spec) writes no status', () => {
    const { v1, v2 } = updatedService();
    v2.previousSpec = undefined;
    const step = nextUpdateStep(v2, [oldSlot(v1, 1)], 0);
    assert.deepEqual(step.replace, ['1']);
    assert.equal(step.service, undefined);
  });

  it('resumes after a leader change from the store alone: finished slots are not redone', () => {
    const { v1, v2 } = updatedService({
      parallelism: 1,
      status: UpdateStatus_State.STATE_UPDATING,
      startedMs: 0,
    });
    const slots = [
      newSlot(v1, v2, 1, TaskState.TASK_STATE_RUNNING, 1000),
      newSlot(v1, v2, 2, TaskState.TASK_STATE_RUNNING, 2000),
      oldSlot(v1, 3),
      oldSlot(v1, 4),
    ];
    const step = nextUpdateStep(v2, slots, 60_000);
    assert.deepEqual(step.replace, ['3']);
    assert.equal(step.service, undefined, 'the status stays as the old leader wrote it');
  });
});

describe('updater: failures', () => {
  function withFailures(setup: Setup, failed: number, total: number) {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING, startedMs: 0, ...setup });
    const slots: SlotView[] = [];
    for (let slot = 1; slot <= total; slot++) {
      slots.push(
        slot <= failed ? newSlot(v1, v2, slot, TaskState.TASK_STATE_FAILED, 100) : oldSlot(v1, slot),
      );
    }
    return { v1, v2, step: nextUpdateStep(v2, slots, 60_000) };
  }

  it('pause: a failed new task pauses the update (max failure ratio 0)', () => {
    const { step } = withFailures({}, 1, 4);
    assert.deepEqual(step.replace, []);
    assert.equal(step.service?.updateStatus?.state, UpdateStatus_State.STATE_PAUSED);
    assert.match(step.service?.updateStatus?.message ?? '', /1 of 4 updated tasks failed/);
  });

  it('a paused update stays paused', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_PAUSED });
    const step = nextUpdateStep(v2, [oldSlot(v1, 1)], 0);
    assert.deepEqual(step.replace, []);
    assert.equal(step.service, undefined);
  });

  it('failures up to the ratio are tolerated', () => {
    assert.deepEqual(withFailures({ maxFailureRatio: 0.3 }, 1, 4).step.replace, ['2']);
    assert.equal(
      withFailures({ maxFailureRatio: 0.3 }, 2, 4).step.service?.updateStatus?.state,
      UpdateStatus_State.STATE_PAUSED,
    );
  });

  it('failures before the update started do not count', () => {
    const { v1, v2 } = updatedService({ status: UpdateStatus_State.STATE_UPDATING, startedMs: 1000 });
    const slots = [newSlot(v1, v2, 1, TaskState.TASK_STATE_FAILED, 500), oldSlot(v1, 2)];
    assert.deepEqual(nextUpdateStep(v2, slots, 60_000).replace, ['2']);
  });

  it('continue: the rollout goes on', () => {
    const { step } = withFailures(
      { failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE },
      1,
      3,
    );
    assert.deepEqual(step.replace, ['2']);
  });

  it('rollback: the service spec becomes the previous spec and the rollback starts', () => {
    const { v1, v2, step } = withFailures(
      { failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK },
      1,
      3,
    );
    assert.equal(step.service?.updateStatus?.state, UpdateStatus_State.STATE_ROLLBACK_STARTED);
    assert.deepEqual(step.service?.spec, v1.spec);
    assert.deepEqual(step.service?.previousSpec, v2.spec);
    assert.deepEqual(step.replace, []);
  });

  it('a rollback follows the rollback config and ends as rollback_completed', () => {
    // After the rollback the "current" spec is nginx:1; the slot updated to nginx:2 is outdated.
    const { v1, v2 } = updatedService();
    const back = structuredClone(v2);
    back.spec = structuredClone(v1.spec);
    if (back.spec)
      back.spec.rollback = UpdateConfig.fromPartial({ parallelism: 0, monitor: { seconds: 5, nanos: 0 } });
    back.updateStatus = {
      state: UpdateStatus_State.STATE_ROLLBACK_STARTED,
      startedAt: new Date(0),
      completedAt: undefined,
      message: '',
    };
    const slots: SlotView[] = [
      { key: '1', tasks: [task(v2, { slot: 1 })], current: undefined, outdated: true },
      { key: '2', tasks: [task(v2, { slot: 2 })], current: undefined, outdated: true },
    ];
    assert.deepEqual(nextUpdateStep(back, slots, 1000).replace, ['1', '2']);
    const done = nextUpdateStep(
      back,
      [{ key: '1', tasks: [task(v1, { slot: 1 })], current: task(v1, { slot: 1 }), outdated: false }],
      2000,
    );
    assert.equal(done.service?.updateStatus?.state, UpdateStatus_State.STATE_ROLLBACK_COMPLETED);
    assert.equal(done.service?.updateStatus?.message, 'rollback completed');
  });

  it('a rollback the failure action started ends with its reason', () => {
    const { v1, v2, step } = withFailures(
      { failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK },
      1,
      3,
    );
    const back = step.service ?? v2;
    const settled: SlotView = {
      key: '1',
      tasks: [task(v1, { slot: 1 })],
      current: task(v1, { slot: 1 }),
      outdated: false,
    };
    const done = nextUpdateStep(back, [settled], 70_000);
    assert.equal(done.service?.updateStatus?.state, UpdateStatus_State.STATE_ROLLBACK_COMPLETED);
    assert.equal(done.service?.updateStatus?.message, '1 of 3 updated tasks failed (max failure ratio 0)');
  });
});
