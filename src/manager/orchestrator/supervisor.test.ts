// The task supervisor's rules: restart policy (condition, delay, attempts in a window), drain,
// node loss after the grace period, history retention. Plain objects, time passed in.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { NodeState, RestartPolicy_Condition, TaskState, type Task } from '../../gen/cluster/v1/objects';
import { planOrchestration } from './orchestrator';
import type { ClusterState } from './plan';
import { RESTART_HISTORY_LABEL, planHistoryRetention, planSupervision, restartDecision } from './supervisor';
import { NODE_DOWN_GRACE_MS } from './tasks';
import { DOWN, DRAIN, applyPlan, live, node, planOnce, service, state, task } from './testing';

const options = { nodeDownGraceMs: NODE_DOWN_GRACE_MS };
const supervise = (s: ClusterState, nowMs: number) =>
  planOnce((plan) => planSupervision(s, plan, nowMs, options));
const nodes = [node('n1'), node('n2')];

function only<T>(items: Iterable<T>): T {
  const all = [...items];
  assert.equal(all.length, 1, `expected exactly one, got ${all.length}`);
  const [first] = all;
  assert.ok(first !== undefined);
  return first;
}

describe('restart policy', () => {
  it('replaces a failed task in the same slot; the old one is told to shut down', () => {
    const web = service('web', { replicas: 2, restart: { delayMs: 5000 } });
    const failed = task(web, { slot: 2, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    const plan = supervise(state({ services: [web], tasks: [failed], nodes }), 10_000);
    assert.equal(plan.updatedTasks.get(failed.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    const replacement = only(plan.createdTasks);
    assert.equal(replacement.slot, 2);
    assert.equal(replacement.nodeId, '');
    assert.equal(replacement.status?.state, TaskState.TASK_STATE_NEW);
    // Held back for the delay: agents start only RUNNING tasks.
    assert.equal(replacement.desiredState, TaskState.TASK_STATE_READY);
    assert.equal(replacement.annotations?.labels[RESTART_HISTORY_LABEL], '10000');
  });

  it('with no delay the replacement is desired RUNNING at once', () => {
    const web = service('web', { restart: { delayMs: 0 } });
    const failed = task(web, { slot: 1, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    const plan = supervise(state({ services: [web], tasks: [failed], nodes }), 0);
    assert.equal(only(plan.createdTasks).desiredState, TaskState.TASK_STATE_RUNNING);
  });

  it('starts a delayed replacement once created_at + delay has passed, and asks to be woken then', () => {
    const web = service('web', { restart: { delayMs: 5000 } });
    const waiting = task(web, {
      slot: 1,
      state: TaskState.TASK_STATE_PENDING,
      desired: TaskState.TASK_STATE_READY,
      createdMs: 1000,
    });
    const s = state({ services: [web], tasks: [waiting], nodes });
    const early = supervise(s, 5999);
    assert.ok(early.empty);
    assert.equal(early.wakeAtMs, 6000);
    const due = supervise(s, 6000);
    assert.equal(due.updatedTasks.get(waiting.id)?.desiredState, TaskState.TASK_STATE_RUNNING);
  });

  it('condition none: a completed task keeps its slot, finished (desired COMPLETE), and is not refilled', () => {
    const web = service('web', { restart: { condition: RestartPolicy_Condition.CONDITION_NONE } });
    const done = task(web, { slot: 1, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    const s = state({ services: [web], tasks: [done], nodes });
    const plan = supervise(s, 0);
    assert.equal(plan.createdTasks.length, 0);
    assert.equal(plan.updatedTasks.get(done.id)?.desiredState, TaskState.TASK_STATE_COMPLETE);
    const after = applyPlan(s, plan);
    assert.ok(planOnce((p) => planOrchestration(after, p, 0, options)).empty);
    assert.ok(supervise(after, 0).empty);
  });

  for (const [label, fields, restarts] of [
    ['exit 0', { state: TaskState.TASK_STATE_COMPLETE, exitCode: 0 }, false],
    ['exit 1', { state: TaskState.TASK_STATE_COMPLETE, exitCode: 1 }, true],
    ['FAILED', { state: TaskState.TASK_STATE_FAILED }, true],
    ['REJECTED', { state: TaskState.TASK_STATE_REJECTED }, true],
  ] as const) {
    it(`condition on-failure: ${label} ${restarts ? 'restarts' : 'does not restart'}`, () => {
      const web = service('web', { restart: { condition: RestartPolicy_Condition.CONDITION_ON_FAILURE } });
      const ended = task(web, { slot: 1, nodeId: 'n1', ...fields });
      assert.equal(restartDecision(ended, 0).restart, restarts);
    });
  }

  it('condition any restarts a task that exited 0', () => {
    const web = service('web');
    assert.equal(
      restartDecision(task(web, { slot: 1, state: TaskState.TASK_STATE_COMPLETE }), 0).restart,
      true,
    );
  });

  it('max attempts: a crash loop gets exactly max_attempts restarts, then the slot stays finished', () => {
    const web = service('web', { restart: { maxAttempts: 2, delayMs: 0 } });
    let s = state({ services: [web], tasks: [task(web, { slot: 1, nodeId: 'n1' })], nodes });
    let restarts = 0;
    for (let crash = 0; crash < 5; crash++) {
      // The live task of slot 1 crashes.
      s = {
        ...s,
        tasks: s.tasks.map((t) =>
          t.desiredState <= TaskState.TASK_STATE_RUNNING && t.status
            ? { ...t, nodeId: 'n1', status: { ...t.status, state: TaskState.TASK_STATE_FAILED } }
            : t,
        ),
      };
      const plan = supervise(s, 1000 * crash);
      restarts += plan.createdTasks.length;
      s = applyPlan(s, plan, 1000 * crash);
    }
    assert.equal(restarts, 2);
    assert.equal(live(s.tasks).length, 0);
    assert.ok(s.tasks.some((t) => t.desiredState === TaskState.TASK_STATE_COMPLETE));
  });

  it('window: only restarts inside the window count against max attempts', () => {
    const web = service('web', { restart: { maxAttempts: 2, windowMs: 10_000 } });
    const labels = { [RESTART_HISTORY_LABEL]: '1000,2000' };
    const failed = task(web, { slot: 1, state: TaskState.TASK_STATE_FAILED, labels });
    assert.equal(restartDecision(failed, 10_999).restart, false);
    const decision = restartDecision(failed, 11_000);
    assert.equal(decision.restart, true);
    assert.deepEqual(decision.restart && decision.history, [2000, 11_000]);
  });

  it("the replacement is made from the service's current spec", () => {
    const web = service('web', { image: 'nginx:2' });
    const old = task(service('web', { image: 'nginx:1' }), {
      slot: 1,
      nodeId: 'n1',
      state: TaskState.TASK_STATE_FAILED,
    });
    const plan = supervise(state({ services: [web], tasks: [old], nodes }), 0);
    assert.equal(only(plan.createdTasks).spec?.container?.image, 'nginx:2');
  });

  it('a global task is restarted on its own node', () => {
    const agent = service('agent', { global: true });
    const failed = task(agent, { nodeId: 'n2', state: TaskState.TASK_STATE_FAILED });
    const plan = supervise(state({ services: [agent], tasks: [failed], nodes }), 0);
    assert.equal(only(plan.createdTasks).nodeId, 'n2');
  });

  it('does not restart what the orchestrators are stopping (slot above replicas, global task on a drained node)', () => {
    const web = service('web', { replicas: 1 });
    const scaledAway = task(web, { slot: 2, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    assert.ok(supervise(state({ services: [web], tasks: [scaledAway], nodes }), 0).empty);
    const agent = service('agent', { global: true });
    const onDrained = task(agent, { nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    const drained = [node('n1', { availability: DRAIN })];
    assert.ok(supervise(state({ services: [agent], tasks: [onDrained], nodes: drained }), 0).empty);
  });

  it('leaves tasks that run, and tasks already stopped, alone', () => {
    const web = service('web', { replicas: 2 });
    const tasks = [
      task(web, { slot: 1, nodeId: 'n1' }),
      task(web, {
        slot: 2,
        nodeId: 'n1',
        desired: TaskState.TASK_STATE_SHUTDOWN,
        state: TaskState.TASK_STATE_FAILED,
      }),
    ];
    assert.ok(supervise(state({ services: [web], tasks, nodes }), 0).empty);
  });
});

describe('drain and node loss', () => {
  it('moves the tasks of a drained node: same slot, new task, at once', () => {
    const web = service('web', { replicas: 2, restart: { delayMs: 5000 } });
    const onDrained = task(web, { slot: 1, nodeId: 'n1' });
    const elsewhere = task(web, { slot: 2, nodeId: 'n2' });
    const plan = supervise(
      state({
        services: [web],
        tasks: [onDrained, elsewhere],
        nodes: [node('n1', { availability: DRAIN }), node('n2')],
      }),
      0,
    );
    assert.deepEqual([...plan.updatedTasks.keys()], [onDrained.id]);
    assert.equal(plan.updatedTasks.get(onDrained.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    const replacement = only(plan.createdTasks);
    assert.equal(replacement.slot, 1);
    assert.equal(replacement.desiredState, TaskState.TASK_STATE_RUNNING);
    assert.equal(replacement.annotations?.labels[RESTART_HISTORY_LABEL], undefined);
  });

  it('a DOWN node keeps its tasks during the grace period (a blip moves nothing)', () => {
    const web = service('web');
    const t = task(web, { slot: 1, nodeId: 'n1' });
    const s = state({ services: [web], tasks: [t], nodes: [node('n1', { state: DOWN, changedMs: 50_000 })] });
    const plan = supervise(s, 50_000 + NODE_DOWN_GRACE_MS - 1);
    assert.ok(plan.empty);
    assert.equal(plan.wakeAtMs, 50_000 + NODE_DOWN_GRACE_MS);
  });

  it('after the grace period its tasks are orphaned, shut down and replaced', () => {
    const web = service('web');
    const t = task(web, { slot: 1, nodeId: 'n1' });
    const s = state({ services: [web], tasks: [t], nodes: [node('n1', { state: DOWN, changedMs: 50_000 })] });
    const plan = supervise(s, 50_000 + NODE_DOWN_GRACE_MS);
    const lost = plan.updatedTasks.get(t.id);
    assert.equal(lost?.status?.state, TaskState.TASK_STATE_ORPHANED);
    assert.equal(lost?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    assert.match(lost?.status?.message ?? '', /node is down/);
    assert.equal(only(plan.createdTasks).slot, 1);
  });

  it('a node that came back before the grace ended keeps its tasks', () => {
    const web = service('web');
    const t = task(web, { slot: 1, nodeId: 'n1' });
    const s = state({
      services: [web],
      tasks: [t],
      nodes: [node('n1', { state: NodeState.NODE_STATE_READY, changedMs: 50_000 })],
    });
    assert.ok(supervise(s, 1e9).empty);
  });

  it('tasks of a removed node are replaced at once', () => {
    const web = service('web');
    const t = task(web, { slot: 1, nodeId: 'gone' });
    const plan = supervise(state({ services: [web], tasks: [t], nodes }), 0);
    assert.equal(plan.updatedTasks.get(t.id)?.status?.state, TaskState.TASK_STATE_ORPHANED);
    assert.equal(plan.createdTasks.length, 1);
  });
});

describe('task history retention', () => {
  function history(count: number, running: boolean): Task[] {
    const web = service('web');
    const tasks = Array.from({ length: count }, (_, i) =>
      task(web, {
        slot: 1,
        nodeId: 'n1',
        createdMs: i,
        state: TaskState.TASK_STATE_FAILED,
        desired: TaskState.TASK_STATE_SHUTDOWN,
      }),
    );
    if (running) tasks.push(task(web, { slot: 1, nodeId: 'n1', createdMs: count }));
    return tasks;
  }

  it('keeps at most the limit per slot, deleting the oldest finished tasks', () => {
    const tasks = history(6, true);
    const plan = planOnce((p) => planHistoryRetention(service('web'), tasks, p, 5));
    assert.deepEqual([...plan.deletedTasks.keys()], [tasks[0]?.id, tasks[1]?.id]);
  });

  it('never deletes a live task or one an agent still runs', () => {
    const web = service('web');
    const stopping = Array.from({ length: 7 }, (_, i) =>
      task(web, {
        slot: 1,
        nodeId: 'n1',
        createdMs: i,
        state: TaskState.TASK_STATE_RUNNING,
        desired: TaskState.TASK_STATE_SHUTDOWN,
      }),
    );
    assert.ok(planOnce((p) => planHistoryRetention(web, stopping, p, 5)).empty);
  });

  it('counts slots separately', () => {
    const web = service('web', { replicas: 2 });
    const tasks = [...history(4, true), ...history(4, true).map((t) => ({ ...t, slot: 2 }))];
    assert.ok(planOnce((p) => planHistoryRetention(web, tasks, p, 5)).empty);
  });
});
