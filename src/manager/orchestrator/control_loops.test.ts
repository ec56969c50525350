// The control loops together on a real MemoryStore (LocalProposer standing in for Raft) with a
// fake agent that runs what is assigned and stops what is told to stop: a replicated service
// converges, scales up and down, leaves a drained node, and the loops stop promptly on abort.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  NodeAvailability,
  NodeState,
  TaskState,
  UpdateConfig,
  UpdateStatus_State,
  type Task,
} from '../../gen/cluster/v1/objects';
import type { MemoryStore } from '../../store';
import { localStores, makeService } from '../../store/testing';
import { node } from './testing';
import { controlLoops, reconcilerLoop, type Plan } from './index';

const WAIT_LIMIT_MS = 5_000;

/** The agents of every node: assigned tasks start at once, stopped ones stop at once. */
function fakeAgents(store: MemoryStore) {
  return reconcilerLoop('fake-agents', store, ['tasks'], (state, plan: Plan) => {
    for (const task of state.tasks) {
      const current = task.status?.state ?? TaskState.TASK_STATE_NEW;
      if (
        task.nodeId === '' ||
        current < TaskState.TASK_STATE_ASSIGNED ||
        current >= TaskState.TASK_STATE_COMPLETE
      )
        continue;
      const next = structuredClone(task);
      if (!next.status) continue;
      if (task.desiredState > TaskState.TASK_STATE_RUNNING) next.status.state = TaskState.TASK_STATE_SHUTDOWN;
      else if (task.desiredState === TaskState.TASK_STATE_RUNNING && current < TaskState.TASK_STATE_RUNNING)
        next.status.state = TaskState.TASK_STATE_RUNNING;
      else continue;
      plan.updateTask(next);
    }
  });
}

/** Resolves once `check` holds on the store, polling after each change; fails after the limit. */
async function until(store: MemoryStore, what: string, check: (tasks: Task[]) => boolean): Promise<void> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), WAIT_LIMIT_MS);
  try {
    const watcher = store.watch({ tables: ['tasks', 'services', 'nodes'], signal: controller.signal });
    if (check(store.view((tx) => tx.tasks.list()))) return;
    while (!(await watcher.next()).done) {
      if (check(store.view((tx) => tx.tasks.list()))) return;
    }
    assert.fail(`not reached within ${WAIT_LIMIT_MS} ms: ${what}`);
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

const running = (tasks: Task[]) =>
  tasks.filter(
    (t) =>
      t.desiredState === TaskState.TASK_STATE_RUNNING && t.status?.state === TaskState.TASK_STATE_RUNNING,
  );

describe('control loops on a store', () => {
  it('converge, scale, drain, and stop on abort', async () => {
    const { stores } = localStores(1);
    const [store] = stores;
    assert.ok(store);
    const nodes = ['n1', 'n2', 'n3'].map((id) => node(id));
    const web = makeService('web', { replicas: 3 });
    await store.update((tx) => {
      for (const n of nodes) tx.nodes.create(n);
      tx.services.create(web);
    });

    const controller = new AbortController();
    const loops = [...controlLoops(store), fakeAgents(store)];
    const runs = loops.map((loop) => loop.run(controller.signal));
    try {
      await until(store, '3 tasks running on 3 nodes', (tasks) => {
        const up = running(tasks);
        return up.length === 3 && new Set(up.map((t) => t.nodeId)).size === 3 && tasks.length === 3;
      });
      const first = running(store.view((tx) => tx.tasks.list()));
      assert.deepEqual(first.map((t) => t.slot).sort(), [1, 2, 3]);
      for (const t of first) assert.equal(t.annotations?.name, `web.${t.slot}`);

      const scale = async (replicas: number) => {
        await store.update((tx) => {
          const svc = tx.services.get(web.id);
          assert.ok(svc?.spec);
          svc.spec.mode = { $case: 'replicated', value: { replicas } };
          tx.services.update(svc);
        });
      };
      await scale(5);
      await until(store, '5 running', (tasks) => running(tasks).length === 5);
      assert.deepEqual(
        running(store.view((tx) => tx.tasks.list()))
          .map((t) => t.slot)
          .sort(),
        [1, 2, 3, 4, 5],
      );

      await scale(2);
      // Slots 3..5 stop, and their finished tasks are deleted.
      await until(
        store,
        '2 running, scaled-down tasks gone',
        (tasks) => running(tasks).length === 2 && tasks.length === 2,
      );
      assert.deepEqual(
        running(store.view((tx) => tx.tasks.list()))
          .map((t) => t.slot)
          .sort(),
        [1, 2],
      );

      const victim = running(store.view((tx) => tx.tasks.list()))[0];
      assert.ok(victim);
      await store.update((tx) => {
        const n = tx.nodes.get(victim.nodeId);
        assert.ok(n?.spec);
        n.spec.availability = NodeAvailability.NODE_AVAILABILITY_DRAIN;
        tx.nodes.update(n);
      });
      await until(store, 'drained node empty, 2 running elsewhere', (tasks) => {
        const up = running(tasks);
        const onDrained = tasks.filter((t) => t.nodeId === victim.nodeId);
        return (
          up.length === 2 &&
          up.every((t) => t.nodeId !== victim.nodeId) &&
          onDrained.every((t) => t.status?.state === TaskState.TASK_STATE_SHUTDOWN)
        );
      });
      const moved = store.view((tx) => tx.tasks.find('slot', `${web.id}/${victim.slot}`));
      assert.equal(moved.length, 2, 'the slot keeps the drained task as history next to its replacement');
    } finally {
      // Abort must end the loops now, not at their next periodic wake-up (every 30 s): a loop
      // that ignored the signal would still be waiting when this race gives up.
      controller.abort();
      let giveUp: NodeJS.Timeout | undefined;
      const stopped = await Promise.race([
        Promise.all(runs).then(() => true),
        new Promise<boolean>((resolve) => {
          giveUp = setTimeout(() => resolve(false), 10_000);
        }),
      ]);
      clearTimeout(giveUp);
      assert.ok(stopped, 'the loops did not stop on abort');
    }
    assert.deepEqual(
      process.getActiveResourcesInfo().filter((r) => r === 'Timeout'),
      [],
      'no timer left behind',
    );
  });

  it('a node down past the grace period loses its tasks; a shorter blip moves nothing', async () => {
    const graceMs = 200;
    const { stores } = localStores(1);
    const [store] = stores;
    assert.ok(store);
    const web = makeService('web', { replicas: 2 });
    await store.update((tx) => {
      for (const id of ['n1', 'n2', 'n3']) tx.nodes.create(node(id));
      tx.services.create(web);
    });
    const controller = new AbortController();
    const runs = [...controlLoops(store, { nodeDownGraceMs: graceMs }), fakeAgents(store)].map((loop) =>
      loop.run(controller.signal),
    );
    const setNodeState = (id: string, state: NodeState) =>
      store.update((tx) => {
        const n = tx.nodes.get(id);
        assert.ok(n?.status);
        n.status.state = state;
        tx.nodes.update(n);
      });
    try {
      await until(store, '2 running', (tasks) => running(tasks).length === 2);
      const [victim] = running(store.view((tx) => tx.tasks.list()));
      assert.ok(victim);

      await setNodeState(victim.nodeId, NodeState.NODE_STATE_DOWN);
      await sleepMs(graceMs / 2);
      await setNodeState(victim.nodeId, NodeState.NODE_STATE_READY);
      await sleepMs(graceMs);
      assert.equal(
        store.view((tx) => tx.tasks.get(victim.id))?.desiredState,
        TaskState.TASK_STATE_RUNNING,
        'a blip moved a task',
      );

      const downAt = performance.now();
      await setNodeState(victim.nodeId, NodeState.NODE_STATE_DOWN);
      await until(store, 'task replaced on another node', (tasks) => {
        const up = running(tasks);
        return up.length === 2 && up.every((t) => t.nodeId !== victim.nodeId);
      });
      const movedMs = performance.now() - downAt;
      assert.ok(movedMs >= graceMs, `moved after ${movedMs.toFixed(0)} ms, before the ${graceMs} ms grace`);
      const lost = store.view((tx) => tx.tasks.get(victim.id));
      assert.equal(lost?.status?.state, TaskState.TASK_STATE_ORPHANED);
    } finally {
      controller.abort();
      await Promise.all(runs);
    }
  });

  it('a spec change rolls through the slots and the update completes', async () => {
    const { stores } = localStores(1);
    const [store] = stores;
    assert.ok(store);
    const web = makeService('web', { replicas: 3, image: 'nginx:1' });
    await store.update((tx) => {
      for (const id of ['n1', 'n2']) tx.nodes.create(node(id));
      tx.services.create(web);
    });
    const controller = new AbortController();
    const runs = [...controlLoops(store), fakeAgents(store)].map((loop) => loop.run(controller.signal));
    try {
      await until(store, '3 running', (tasks) => running(tasks).length === 3);
      await store.update((tx) => {
        const svc = tx.services.get(web.id);
        assert.ok(svc?.spec?.task?.container);
        svc.previousSpec = structuredClone(svc.spec);
        svc.spec.task.container.image = 'nginx:2';
        svc.spec.update = UpdateConfig.fromPartial({ parallelism: 1, monitor: { seconds: 0, nanos: 0 } });
        tx.services.update(svc);
      });
      await until(
        store,
        '3 running nginx:2, update completed',
        (tasks) =>
          running(tasks).length === 3 &&
          running(tasks).every((t) => t.spec?.container?.image === 'nginx:2') &&
          store.view((tx) => tx.services.get(web.id))?.updateStatus?.state ===
            UpdateStatus_State.STATE_COMPLETED,
      );
      // One at a time, stop-first: never more than 3 tasks meant to run.
      const all = store.view((tx) => tx.tasks.list());
      assert.equal(all.filter((t) => t.spec?.container?.image === 'nginx:2').length, 3);
    } finally {
      controller.abort();
      await Promise.all(runs);
    }
  });
});

function sleepMs(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
