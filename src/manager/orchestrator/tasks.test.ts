import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Task, TaskState } from '../../gen/cluster/v1/objects';
import { takesTraffic } from './tasks';

const task = (state: TaskState, desired: TaskState, test: string[], health = '') =>
  Task.fromPartial({
    desiredState: desired,
    status: { state, health },
    spec: { container: { image: 'x', healthcheck: { test } } },
  });

test('takesTraffic: running and meant to run; healthy when a healthcheck is defined', () => {
  const R = TaskState.TASK_STATE_RUNNING;
  assert.equal(takesTraffic(task(R, R, [])), true);
  assert.equal(takesTraffic(task(R, R, ['NONE'])), true);
  assert.equal(takesTraffic(task(R, TaskState.TASK_STATE_SHUTDOWN, [])), false, 'being stopped');
  assert.equal(takesTraffic(task(TaskState.TASK_STATE_STARTING, R, [])), false, 'not running yet');
  assert.equal(takesTraffic(task(R, R, ['CMD', 'true'])), false, 'health not known yet');
  assert.equal(takesTraffic(task(R, R, ['CMD', 'true'], 'starting')), false);
  assert.equal(takesTraffic(task(R, R, ['CMD', 'true'], 'unhealthy')), false);
  assert.equal(takesTraffic(task(R, R, ['CMD', 'true'], 'healthy')), true);
});
