// The scheduler loop's planning step: PENDING tasks placed become ASSIGNED on a node; unplaced
// ones keep PENDING with the reason; global tasks made for a node wait for it to be usable.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { NodeState, TaskState } from '../../gen/cluster/v1/objects';
import { applyPlan, node, planOnce, service, state, task } from '../orchestrator/testing';
import { planScheduling } from './loop';
import { CPU } from './testing';

const pending = TaskState.TASK_STATE_PENDING;

describe('scheduler loop planning', () => {
  it('assigns pending tasks, spreading them over the nodes', () => {
    const web = service('web', { replicas: 4 });
    const tasks = [1, 2, 3, 4].map((slot) => task(web, { slot, state: pending }));
    const plan = planOnce((p) =>
      planScheduling(state({ services: [web], tasks, nodes: [node('n1'), node('n2')] }), p),
    );
    const assigned = [...plan.updatedTasks.values()];
    assert.equal(assigned.length, 4);
    for (const t of assigned) assert.equal(t.status?.state, TaskState.TASK_STATE_ASSIGNED);
    assert.deepEqual(assigned.map((t) => t.nodeId).sort(), ['n1', 'n1', 'n2', 'n2']);
  });

  it('counts tasks already on nodes', () => {
    const web = service('web', { replicas: 3 });
    const tasks = [
      task(web, { slot: 1, nodeId: 'n1' }),
      task(web, { slot: 2, nodeId: 'n1' }),
      task(web, { slot: 3, state: pending }),
    ];
    const plan = planOnce((p) =>
      planScheduling(state({ services: [web], tasks, nodes: [node('n1'), node('n2')] }), p),
    );
    assert.equal([...plan.updatedTasks.values()][0]?.nodeId, 'n2');
  });

  it('keeps an unplaceable task PENDING with the reason, written once', () => {
    const web = service('web');
    const t = task(web, { slot: 1, state: pending });
    if (t.spec)
      t.spec.resources = { reservations: { nanoCpus: 64 * CPU, memoryBytes: 0, pids: 0 }, limits: undefined };
    const s = state({ services: [web], tasks: [t], nodes: [node('n1'), node('n2')] });
    const plan = planOnce((p) => planScheduling(s, p));
    const waiting = plan.updatedTasks.get(t.id);
    assert.equal(waiting?.status?.state, pending);
    assert.equal(waiting?.nodeId, '');
    assert.match(waiting?.status?.message ?? '', /no suitable node/);
    assert.ok(planOnce((p) => planScheduling(applyPlan(s, plan), p)).empty);
  });

  it('says why when no node is ready', () => {
    const web = service('web');
    const t = task(web, { slot: 1, state: pending });
    const plan = planOnce((p) =>
      planScheduling(
        state({ services: [web], tasks: [t], nodes: [node('n1', { state: NodeState.NODE_STATE_DOWN })] }),
        p,
      ),
    );
    assert.match(plan.updatedTasks.get(t.id)?.status?.message ?? '', /down/);
  });

  it('ignores tasks not pending or not meant to run', () => {
    const web = service('web', { replicas: 2 });
    const tasks = [
      task(web, { slot: 1, state: TaskState.TASK_STATE_NEW }),
      task(web, { slot: 2, state: pending, desired: TaskState.TASK_STATE_SHUTDOWN }),
    ];
    assert.ok(
      planOnce((p) => planScheduling(state({ services: [web], tasks, nodes: [node('n1')] }), p)).empty,
    );
  });

  it('a global task made for a node is assigned there once the node is ready', () => {
    const agent = service('agent', { global: true });
    const t = task(agent, { nodeId: 'n1', state: pending });
    const down = planOnce((p) =>
      planScheduling(
        state({ services: [agent], tasks: [t], nodes: [node('n1', { state: NodeState.NODE_STATE_DOWN })] }),
        p,
      ),
    );
    assert.equal(down.updatedTasks.get(t.id)?.status?.state, pending);
    assert.match(down.updatedTasks.get(t.id)?.status?.message ?? '', /not ready/);
    const up = planOnce((p) =>
      planScheduling(state({ services: [agent], tasks: [t], nodes: [node('n1')] }), p),
    );
    assert.equal(up.updatedTasks.get(t.id)?.status?.state, TaskState.TASK_STATE_ASSIGNED);
    assert.equal(up.updatedTasks.get(t.id)?.nodeId, 'n1');
  });
});
