// The orchestrators' rules, one test per rule, on plain objects: no store, no clock.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  NodeState,
  TaskState,
  UpdateConfig_Order,
  UpdateStatus_State,
  type Service,
} from '../../gen/cluster/v1/objects';
import { planGlobalService, planOrchestration } from './orchestrator';
import type { ClusterState } from './plan';
import { NODE_DOWN_GRACE_MS, hasEnded } from './tasks';
import {
  DOWN,
  DRAIN,
  PAUSE,
  applyPlan,
  live,
  node,
  planOnce,
  service,
  slotsOf,
  state,
  task,
} from './testing';

const options = { nodeDownGraceMs: NODE_DOWN_GRACE_MS };
const orchestrate = (s: ClusterState, nowMs = 0) =>
  planOnce((plan) => planOrchestration(s, plan, nowMs, options));

function withReplicas(svc: Service, replicas: number): Service {
  const next = structuredClone(svc);
  next.spec = { ...next.spec, mode: { $case: 'replicated', value: { replicas } } };
  return next;
}

function withImage(svc: Service, image: string, version: number): Service {
  const next = structuredClone(svc);
  if (next.spec?.task?.container) next.spec.task.container.image = image;
  next.previousSpec = structuredClone(svc.spec);
  next.meta = { version };
  return next;
}

/** Plays the agent: every live task runs, every stopped one has stopped. */
function agentsSettle(s: ClusterState): ClusterState {
  return {
    ...s,
    tasks: s.tasks.map((t) => {
      const next = structuredClone(t);
      if (!next.status) return next;
      if (t.desiredState <= TaskState.TASK_STATE_RUNNING) next.status.state = TaskState.TASK_STATE_RUNNING;
      else if (next.status.state < TaskState.TASK_STATE_COMPLETE)
        next.status.state = TaskState.TASK_STATE_SHUTDOWN;
      return next;
    }),
  };
}

describe('replicated orchestrator', () => {
  it('creates one NEW task per slot 1..replicas from the service spec', () => {
    const web = service('web', { replicas: 3, version: 7 });
    const plan = orchestrate(state({ services: [web] }));
    assert.deepEqual(plan.createdTasks.map((t) => t.slot).sort(), [1, 2, 3]);
    for (const t of plan.createdTasks) {
      assert.equal(t.serviceId, 'web');
      assert.equal(t.status?.state, TaskState.TASK_STATE_NEW);
      assert.equal(t.desiredState, TaskState.TASK_STATE_RUNNING);
      assert.equal(t.specVersion, 7);
      assert.equal(t.annotations?.name, `web.${t.slot}`);
      assert.deepEqual(t.spec, web.spec?.task);
      assert.equal(t.id.length, 25);
    }
  });

  it('is idempotent: a second pass over its own result plans nothing', () => {
    const s = state({ services: [service('web', { replicas: 3 })] });
    const after = applyPlan(s, orchestrate(s));
    assert.ok(orchestrate(after).empty);
  });

  it('scaling up fills only the missing slots', () => {
    const web = service('web', { replicas: 3 });
    const tasks = [1, 2, 3].map((slot) => task(web, { slot, nodeId: 'n1' }));
    const plan = orchestrate(state({ services: [withReplicas(web, 5)], tasks }));
    assert.deepEqual(plan.createdTasks.map((t) => t.slot).sort(), [4, 5]);
    assert.equal(plan.updatedTasks.size, 0);
  });

  it('scaling down stops the highest slots first', () => {
    const web = service('web', { replicas: 5 });
    const tasks = [1, 2, 3, 4, 5].map((slot) => task(web, { slot, nodeId: 'n1' }));
    const plan = orchestrate(state({ services: [withReplicas(web, 2)], tasks }));
    const stopped = [...plan.updatedTasks.values()];
    assert.deepEqual(stopped.map((t) => t.slot).sort(), [3, 4, 5]);
    for (const t of stopped) assert.equal(t.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    assert.equal(plan.createdTasks.length, 0);
  });

  it('deletes the finished tasks of slots above replicas, not those still running', () => {
    const web = service('web', { replicas: 1 });
    const done = task(web, {
      slot: 2,
      nodeId: 'n1',
      desired: TaskState.TASK_STATE_SHUTDOWN,
      state: TaskState.TASK_STATE_SHUTDOWN,
    });
    const stopping = task(web, {
      slot: 3,
      nodeId: 'n1',
      desired: TaskState.TASK_STATE_SHUTDOWN,
      state: TaskState.TASK_STATE_RUNNING,
    });
    const plan = orchestrate(state({ services: [web], tasks: [task(web, { slot: 1 }), done, stopping] }));
    assert.deepEqual([...plan.deletedTasks.keys()], [done.id]);
    assert.equal(plan.updatedTasks.size, 0);
  });

  it('leaves an ended task that is still desired RUNNING to the supervisor (no second task)', () => {
    const web = service('web', { replicas: 1 });
    const failed = task(web, { slot: 1, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    assert.ok(orchestrate(state({ services: [web], tasks: [failed] })).empty);
  });

  it('does not refill a slot whose task finished by policy (desired COMPLETE)', () => {
    const web = service('web', { replicas: 1 });
    const finished = task(web, {
      slot: 1,
      nodeId: 'n1',
      state: TaskState.TASK_STATE_COMPLETE,
      desired: TaskState.TASK_STATE_COMPLETE,
    });
    assert.ok(orchestrate(state({ services: [web], tasks: [finished] })).empty);
  });

  it('refills a slot whose only task was stopped', () => {
    const web = service('web', { replicas: 1 });
    const stopped = task(web, {
      slot: 1,
      nodeId: 'n1',
      state: TaskState.TASK_STATE_SHUTDOWN,
      desired: TaskState.TASK_STATE_SHUTDOWN,
    });
    const plan = orchestrate(state({ services: [web], tasks: [stopped] }));
    assert.deepEqual(
      plan.createdTasks.map((t) => t.slot),
      [1],
    );
  });

  it('keeps one task per slot: a duplicate is stopped, the running one stays', () => {
    const web = service('web', { replicas: 1 });
    const running = task(web, { slot: 1, nodeId: 'n1', createdMs: 1 });
    const newer = task(web, { slot: 1, state: TaskState.TASK_STATE_PENDING, createdMs: 2 });
    const plan = orchestrate(state({ services: [web], tasks: [running, newer] }));
    assert.deepEqual([...plan.updatedTasks.keys()], [newer.id]);
    assert.equal(plan.updatedTasks.get(newer.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
  });
});

describe('removed services', () => {
  it('marks running tasks REMOVE and deletes those no agent runs', () => {
    const gone = service('gone', { replicas: 3 });
    const running = task(gone, { slot: 1, nodeId: 'n1' });
    const ended = task(gone, { slot: 2, nodeId: 'n1', state: TaskState.TASK_STATE_FAILED });
    const unassigned = task(gone, { slot: 3, state: TaskState.TASK_STATE_PENDING });
    const plan = orchestrate(state({ tasks: [running, ended, unassigned], nodes: [node('n1')] }));
    assert.equal(plan.updatedTasks.get(running.id)?.desiredState, TaskState.TASK_STATE_REMOVE);
    assert.deepEqual([...plan.deletedTasks.keys()].sort(), [ended.id, unassigned.id].sort());
    assert.equal(plan.createdTasks.length, 0);
  });

  it('deletes tasks on a lost node at once (nothing will report them)', () => {
    const gone = service('gone');
    const t = task(gone, { slot: 1, nodeId: 'n1', desired: TaskState.TASK_STATE_REMOVE });
    const plan = orchestrate(
      state({ tasks: [t], nodes: [node('n1', { state: NodeState.NODE_STATE_DOWN })] }),
      NODE_DOWN_GRACE_MS,
    );
    assert.deepEqual([...plan.deletedTasks.keys()], [t.id]);
  });

  it('does not rewrite a task already marked REMOVE', () => {
    const gone = service('gone');
    const t = task(gone, { slot: 1, nodeId: 'n1', desired: TaskState.TASK_STATE_REMOVE });
    assert.ok(orchestrate(state({ tasks: [t], nodes: [node('n1')] })).empty);
  });
});

describe('global orchestrator', () => {
  const run = (svc: Service, s: ClusterState, nowMs = 0) =>
    planOnce((plan) =>
      planGlobalService(
        svc,
        s.tasks.filter((t) => t.serviceId === svc.id),
        s.nodes,
        plan,
        nowMs,
        options,
      ),
    );

  it('creates one task per ready, active node matching the constraints', () => {
    const agent = service('agent', { global: true, constraints: ['node.labels.zone==a'] });
    const nodes = [
      node('n1', { labels: { zone: 'a' } }),
      node('n2', { labels: { zone: 'b' } }),
      node('n3', { labels: { zone: 'a' }, availability: DRAIN }),
      node('n4', { labels: { zone: 'a' }, availability: PAUSE }),
      node('n5', { labels: { zone: 'a' }, state: NodeState.NODE_STATE_UNKNOWN }),
      node('n6', { labels: { zone: 'a' } }),
    ];
    const plan = run(agent, state({ services: [agent], nodes }));
    assert.deepEqual(plan.createdTasks.map((t) => t.nodeId).sort(), ['n1', 'n6']);
    for (const t of plan.createdTasks) {
      assert.equal(t.slot, 0);
      assert.equal(t.annotations?.name, `agent.${t.nodeId}`);
    }
  });

  it('follows a node that joins', () => {
    const agent = service('agent', { global: true });
    const s = state({ services: [agent], nodes: [node('n1')], tasks: [task(agent, { nodeId: 'n1' })] });
    assert.ok(run(agent, s).empty);
    const plan = run(agent, { ...s, nodes: [...s.nodes, node('n2')] });
    assert.deepEqual(
      plan.createdTasks.map((t) => t.nodeId),
      ['n2'],
    );
  });

  it('stops the task of a drained node and does not replace it', () => {
    const agent = service('agent', { global: true });
    const t = task(agent, { nodeId: 'n1' });
    const plan = run(
      agent,
      state({ services: [agent], nodes: [node('n1', { availability: DRAIN })], tasks: [t] }),
    );
    assert.equal(plan.updatedTasks.get(t.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    assert.equal(plan.createdTasks.length, 0);
  });

  it('keeps the task of a paused node', () => {
    const agent = service('agent', { global: true });
    const t = task(agent, { nodeId: 'n1' });
    assert.ok(
      run(agent, state({ services: [agent], nodes: [node('n1', { availability: PAUSE })], tasks: [t] }))
        .empty,
    );
  });

  it('stops and orphans the task of a removed node', () => {
    const agent = service('agent', { global: true });
    const t = task(agent, { nodeId: 'gone' });
    const plan = run(agent, state({ services: [agent], nodes: [], tasks: [t] }));
    const stopped = plan.updatedTasks.get(t.id);
    assert.equal(stopped?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    assert.equal(stopped?.status?.state, TaskState.TASK_STATE_ORPHANED);
  });

  it('keeps the task of a DOWN node during the grace period, then orphans it', () => {
    const agent = service('agent', { global: true });
    const t = task(agent, { nodeId: 'n1' });
    const s = state({ services: [agent], nodes: [node('n1', { state: DOWN, changedMs: 1000 })], tasks: [t] });
    const early = run(agent, s, 1000 + NODE_DOWN_GRACE_MS - 1);
    assert.ok(early.empty);
    assert.equal(early.wakeAtMs, 1000 + NODE_DOWN_GRACE_MS);
    const late = run(agent, s, 1000 + NODE_DOWN_GRACE_MS);
    assert.equal(late.updatedTasks.get(t.id)?.status?.state, TaskState.TASK_STATE_ORPHANED);
  });
});

describe('rolling update (orchestrator part)', () => {
  function deployed(replicas: number, configure?: (s: Service) => void): ClusterState {
    const web = service('web', { replicas });
    configure?.(web);
    const tasks = Array.from({ length: replicas }, (_, i) => task(web, { slot: i + 1, nodeId: 'n1' }));
    return state({ services: [web], tasks, nodes: [node('n1')] });
  }

  function update(s: ClusterState, image: string): ClusterState {
    const [web] = s.services;
    assert.ok(web);
    return { ...s, services: [withImage(web, image, 100)] };
  }

  /** No slot runs (or is about to run) a new task while its old task has not ended. */
  function assertNoOverlap(s: ClusterState): void {
    for (const t of live(s.tasks)) {
      if (t.spec?.container?.image !== 'nginx:2') continue;
      const old = s.tasks.filter(
        (o) => o.slot === t.slot && o.spec?.container?.image === 'nginx:1' && !hasEnded(o),
      );
      assert.deepEqual(
        old.map((o) => o.id),
        [],
        `slot ${t.slot}: new task ${t.id} beside old ones still running`,
      );
    }
  }

  it('replaces one slot at a time, stop-first: the new task is created once the old one has stopped', () => {
    let s = update(deployed(3), 'nginx:2');
    const created: number[] = [];
    for (let round = 0; round < 20; round++) {
      // Each round is past the previous replacement's monitor period (5 s by default).
      const nowMs = round * 10_000;
      const plan = orchestrate(s, nowMs);
      if (plan.empty) break;
      created.push(...plan.createdTasks.map((t) => t.slot));
      s = applyPlan(s, plan, nowMs);
      assertNoOverlap(s);
      // Until the agent reports the old task stopped, the slot waits and nothing else moves.
      const again = orchestrate(s, nowMs);
      if (plan.createdTasks.length === 0 && plan.updatedTasks.size > 0) {
        assert.deepEqual(again.createdTasks, []);
        assert.equal(again.updatedTasks.size, 0);
      }
      s = agentsSettle(s);
    }
    assert.deepEqual(created, [1, 2, 3]);
    assert.ok(live(s.tasks).every((t) => t.spec?.container?.image === 'nginx:2'));
    assert.equal(s.services[0]?.updateStatus?.state, UpdateStatus_State.STATE_COMPLETED);
  });

  it('stop-first: a slot waiting for its old task to stop counts against parallelism', () => {
    let s = update(deployed(3), 'nginx:2');
    const first = orchestrate(s, 0);
    assert.deepEqual(first.createdTasks, []);
    assert.deepEqual(
      [...first.updatedTasks.values()].map((t) => [t.slot, t.desiredState]),
      [[1, TaskState.TASK_STATE_SHUTDOWN]],
    );
    s = applyPlan(s, first, 0);
    // Long after, the old task still runs (draining): no other slot starts, slot 1 stays empty.
    const later = orchestrate(s, 60_000);
    assert.ok(later.empty, 'nothing moves while slot 1 waits');
  });

  it('stop-first: the replacement starts at once when the old task never reached an agent', () => {
    const web = service('web', { replicas: 1 });
    const pending = task(web, { slot: 1, state: TaskState.TASK_STATE_PENDING });
    const s = update(state({ services: [web], tasks: [pending], nodes: [node('n1')] }), 'nginx:2');
    const plan = orchestrate(s);
    assert.deepEqual(
      plan.createdTasks.map((t) => t.slot),
      [1],
    );
    assert.equal(plan.updatedTasks.get(pending.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
  });

  it('stop-first: the replacement does not wait for an old task on a DOWN node', () => {
    let s = update(deployed(1), 'nginx:2');
    s = applyPlan(s, orchestrate(s), 0);
    assert.equal(live(s.tasks).length, 0);
    assert.deepEqual(orchestrate(s).createdTasks, []);
    const down = { ...s, nodes: [node('n1', { state: DOWN })] };
    assert.deepEqual(
      orchestrate(down).createdTasks.map((t) => t.slot),
      [1],
    );
  });

  it('stop-first on a global service: the node gets its new task once the old one stopped', () => {
    const web = service('web', { global: true });
    const old = task(web, { nodeId: 'n1' });
    let s = update(state({ services: [web], tasks: [old], nodes: [node('n1')] }), 'nginx:2');
    const first = orchestrate(s);
    assert.deepEqual(first.createdTasks, []);
    assert.equal(first.updatedTasks.get(old.id)?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
    s = applyPlan(s, first);
    assert.deepEqual(orchestrate(s).createdTasks, []);
    s = agentsSettle(s);
    assert.deepEqual(
      orchestrate(s).createdTasks.map((t) => t.nodeId),
      ['n1'],
    );
  });

  it('scaling up during a stop-first update fills the new slots with the new spec', () => {
    let s = update(deployed(2), 'nginx:2');
    s = applyPlan(s, orchestrate(s), 0);
    const [web] = s.services;
    assert.ok(web);
    s = { ...s, services: [withReplicas(web, 4)] };
    const plan = orchestrate(s);
    assert.deepEqual(plan.createdTasks.map((t) => [t.slot, t.spec?.container?.image]).sort(), [
      [3, 'nginx:2'],
      [4, 'nginx:2'],
    ]);
  });

  it('stop-first with parallelism 0 stops every slot at once and refills each once stopped', () => {
    let s = update(
      deployed(4, (svc) => {
        if (svc.spec)
          svc.spec.update = {
            parallelism: 0,
            delay: undefined,
            failureAction: 0,
            monitor: undefined,
            maxFailureRatio: 0,
            order: 0,
          };
      }),
      'nginx:2',
    );
    const plan = orchestrate(s);
    assert.deepEqual(plan.createdTasks, []);
    assert.equal(plan.updatedTasks.size, 4);
    assert.equal(
      [...plan.updatedServices.values()][0]?.updateStatus?.state,
      UpdateStatus_State.STATE_UPDATING,
    );
    s = agentsSettle(applyPlan(s, plan));
    assert.deepEqual(
      orchestrate(s)
        .createdTasks.map((t) => t.slot)
        .sort(),
      [1, 2, 3, 4],
    );
  });

  it('start-first keeps the old task until the new one runs', () => {
    let s = update(
      deployed(1, (svc) => {
        if (svc.spec)
          svc.spec.update = {
            parallelism: 1,
            delay: undefined,
            failureAction: 0,
            monitor: undefined,
            maxFailureRatio: 0,
            order: UpdateConfig_Order.ORDER_START_FIRST,
          };
      }),
      'nginx:2',
    );
    const first = orchestrate(s);
    assert.equal(first.createdTasks.length, 1);
    assert.equal(first.updatedTasks.size, 0);
    s = applyPlan(s, first);
    assert.equal(slotsOf(s.tasks).length, 2);
    assert.equal(orchestrate(s).updatedTasks.size, 0);
    s = {
      ...s,
      tasks: s.tasks.map((t) =>
        t.spec?.container?.image === 'nginx:2' && t.status
          ? { ...t, status: { ...t.status, state: TaskState.TASK_STATE_RUNNING } }
          : t,
      ),
    };
    const second = orchestrate(s);
    const stopped = [...second.updatedTasks.values()];
    assert.equal(stopped.length, 1);
    assert.equal(stopped[0]?.spec?.container?.image, 'nginx:1');
    assert.equal(stopped[0]?.desiredState, TaskState.TASK_STATE_SHUTDOWN);
  });

  it('a change of published ports redeploys tasks that carry the old endpoint, not NEW ones', () => {
    const web = service('web', { replicas: 2 });
    const endpoint = {
      mode: 0,
      ports: [{ name: '', protocol: 0, targetPort: 80, publishedPort: 8080, publishMode: 0 }],
    };
    const allocated = task(web, { slot: 1, nodeId: 'n1' });
    allocated.endpoint = { spec: structuredClone(endpoint), ports: [], virtualIps: [] };
    const fresh = task(web, { slot: 2, state: TaskState.TASK_STATE_NEW });
    const changed = structuredClone(web);
    if (changed.spec)
      changed.spec.endpoint = {
        ...endpoint,
        ports: [{ ...endpoint.ports[0], publishedPort: 9090 }],
      };
    const plan = orchestrate(state({ services: [changed], tasks: [allocated, fresh] }));
    assert.deepEqual(
      plan.createdTasks.map((t) => t.slot),
      [1],
    );
    assert.deepEqual([...plan.updatedTasks.keys()], [allocated.id]);
  });

  it('a first deployment writes no update status', () => {
    const plan = orchestrate(state({ services: [service('web', { replicas: 2 })] }));
    assert.equal(plan.updatedServices.size, 0);
  });
});
