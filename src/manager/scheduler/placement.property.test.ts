// Properties of placement over random clusters, checked against plain re-statements of the
// rules: no task on a node a filter turns away, no memory or host port over-committed, no task
// left pending while some node could take it, and even spreading on equal nodes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import {
  NodeAvailability,
  NodeRole,
  NodeState,
  TaskState,
  type Node,
  type Task,
} from '../../gen/cluster/v1/objects';
import { placeTasks } from './placement';
import { GiB, MiB, makeNode, makeTask, makeTasks } from './testing';

const CONSTRAINTS = ['node.labels.zone==a', 'node.labels.zone!=b', 'node.role==worker', 'node.role==manager'];

/** The constraint rules restated directly on the fields the test builds. */
function satisfies(node: Node, constraint: string): boolean {
  const zone = node.spec?.annotations?.labels.zone;
  switch (constraint) {
    case 'node.labels.zone==a':
      return zone === 'a';
    case 'node.labels.zone!=b':
      return zone !== 'b';
    case 'node.role==worker':
      return node.role === NodeRole.NODE_ROLE_WORKER;
    case 'node.role==manager':
      return node.role === NodeRole.NODE_ROLE_MANAGER;
    default:
      throw new Error(`test does not know constraint ${constraint}`);
  }
}

const takesNewTasks = (node: Node) =>
  node.status?.state === NodeState.NODE_STATE_READY &&
  node.spec?.availability === NodeAvailability.NODE_AVAILABILITY_ACTIVE;

const nodeArb = fc.record({
  ready: fc.boolean(),
  availability: fc.constantFrom(
    NodeAvailability.NODE_AVAILABILITY_ACTIVE,
    NodeAvailability.NODE_AVAILABILITY_ACTIVE,
    NodeAvailability.NODE_AVAILABILITY_PAUSE,
    NodeAvailability.NODE_AVAILABILITY_DRAIN,
  ),
  zone: fc.constantFrom('a', 'b', undefined),
  manager: fc.boolean(),
  memoryGiB: fc.integer({ min: 0, max: 4 }),
});

const serviceArb = fc.record({
  replicas: fc.integer({ min: 0, max: 25 }),
  constraints: fc.subarray(CONSTRAINTS, { maxLength: 2 }),
  reserveMemoryBytes: fc.constantFrom(0, 512 * MiB, 1 * GiB, 3 * GiB),
  hostPort: fc.constantFrom(undefined, 80, 443),
  spread: fc.boolean(),
});

const existingArb = fc.record({
  node: fc.nat(),
  service: fc.nat(),
  reserveMemoryBytes: fc.constantFrom(0, 256 * MiB, 1 * GiB),
  hostPort: fc.constantFrom(undefined, 80),
  state: fc.constantFrom(
    TaskState.TASK_STATE_RUNNING,
    TaskState.TASK_STATE_ASSIGNED,
    TaskState.TASK_STATE_FAILED,
  ),
});

const clusterArb = fc.record({
  nodes: fc.array(nodeArb, { minLength: 0, maxLength: 12 }),
  services: fc.array(serviceArb, { minLength: 1, maxLength: 4 }),
  existing: fc.array(existingArb, { maxLength: 20 }),
});

describe('placement properties', () => {
  it('never uses a filtered-out node, never over-commits, and leaves nothing pending that fits', () => {
    fc.assert(
      fc.property(clusterArb, (cluster) => {
        const nodes = cluster.nodes.map((n, i) =>
          makeNode(`node-${String(i).padStart(2, '0')}`, {
            state: n.ready ? NodeState.NODE_STATE_READY : NodeState.NODE_STATE_DOWN,
            availability: n.availability,
            labels: n.zone === undefined ? {} : { zone: n.zone },
            role: n.manager ? NodeRole.NODE_ROLE_MANAGER : NodeRole.NODE_ROLE_WORKER,
            memoryBytes: n.memoryGiB * GiB,
          }),
        );
        const existing: Task[] =
          nodes.length === 0
            ? []
            : cluster.existing.map((e, i) =>
                makeTask(`old-${i}`, `svc-${e.service % cluster.services.length}`, {
                  nodeId: nodes[e.node % nodes.length].id,
                  reserveMemoryBytes: e.reserveMemoryBytes,
                  hostPorts: e.hostPort === undefined ? [] : [e.hostPort],
                  state: e.state,
                }),
              );
        const pending = cluster.services.flatMap((s, i) =>
          makeTasks(`svc-${i}`, s.replicas, {
            constraints: s.constraints,
            reserveMemoryBytes: s.reserveMemoryBytes,
            hostPorts: s.hostPort === undefined ? [] : [s.hostPort],
            spread: s.spread ? ['node.labels.zone'] : [],
          }),
        );
        const result = placeTasks({ pendingTasks: pending, nodes, tasksOnNodes: existing });

        const outcome = new Map<string, string>();
        for (const a of result.assignments) outcome.set(a.taskId, `node ${a.nodeId}`);
        for (const u of result.unplaced) {
          assert.ok(!outcome.has(u.taskId), `${u.taskId} is both placed and pending`);
          assert.match(u.reason, /^no suitable node \(.+\)$/);
          outcome.set(u.taskId, u.reason);
        }
        assert.equal(outcome.size, pending.length, 'every pending task is placed or given a reason');
        assert.equal(result.assignments.length + result.unplaced.length, pending.length);

        const nodeById = new Map(nodes.map((n) => [n.id, n]));
        const taskById = new Map(pending.map((t) => [t.id, t]));
        // Memory and ports held per node after placement: existing holders plus new tasks.
        const freeMemory = new Map(nodes.map((n) => [n.id, n.description?.resources?.memoryBytes ?? 0]));
        const heldPorts = new Map(nodes.map((n) => [n.id, [] as number[]]));
        const hold = (task: Task, nodeId: string) => {
          const reserve = task.spec?.resources?.reservations?.memoryBytes ?? 0;
          freeMemory.set(nodeId, (freeMemory.get(nodeId) ?? 0) - reserve);
          for (const p of task.endpoint?.ports ?? []) heldPorts.get(nodeId)?.push(p.publishedPort);
        };
        for (const t of existing)
          if ((t.status?.state ?? 0) <= TaskState.TASK_STATE_RUNNING) hold(t, t.nodeId);
        const overCommittedBefore = new Set(
          nodes.filter((n) => (freeMemory.get(n.id) ?? 0) < 0).map((n) => n.id),
        );
        const portsBefore = new Map([...heldPorts].map(([id, ports]) => [id, ports.length]));

        for (const a of result.assignments) {
          const node = nodeById.get(a.nodeId);
          const task = taskById.get(a.taskId);
          assert.ok(node !== undefined && task !== undefined);
          assert.ok(takesNewTasks(node), `${a.taskId} placed on ${a.nodeId}, which takes no new tasks`);
          for (const c of task.spec?.placement?.constraints ?? []) {
            assert.ok(satisfies(node, c), `${a.taskId} placed on ${a.nodeId}, which fails ${c}`);
          }
          hold(task, a.nodeId);
        }
        for (const node of nodes) {
          const newReserving = result.assignments.some(
            (a) =>
              a.nodeId === node.id &&
              (taskById.get(a.taskId)?.spec?.resources?.reservations?.memoryBytes ?? 0) > 0,
          );
          if (newReserving) {
            assert.ok(
              !overCommittedBefore.has(node.id),
              `reserving task placed on over-committed ${node.id}`,
            );
            assert.ok((freeMemory.get(node.id) ?? 0) >= 0, `memory over-committed on ${node.id}`);
          }
          const ports = heldPorts.get(node.id) ?? [];
          const newPorts = ports.slice(portsBefore.get(node.id) ?? 0);
          for (const p of newPorts) {
            assert.equal(ports.filter((q) => q === p).length, 1, `host port ${p} used twice on ${node.id}`);
          }
        }
        // Nothing pending could have gone anywhere in the final state.
        for (const u of result.unplaced) {
          const task = taskById.get(u.taskId);
          assert.ok(task !== undefined);
          const reserve = task.spec?.resources?.reservations?.memoryBytes ?? 0;
          const fits = nodes.find(
            (node) =>
              takesNewTasks(node) &&
              (task.spec?.placement?.constraints ?? []).every((c) => satisfies(node, c)) &&
              (reserve === 0 || (freeMemory.get(node.id) ?? 0) >= reserve) &&
              (task.endpoint?.ports ?? []).every(
                (p) => !(heldPorts.get(node.id) ?? []).includes(p.publishedPort),
              ),
          );
          assert.equal(fits, undefined, `${u.taskId} left pending though ${fits?.id} could take it`);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('spreads one service over equal nodes to within one task', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 30 }),
        fc.integer({ min: 0, max: 200 }),
        (nodeCount, replicas) => {
          const nodes = Array.from({ length: nodeCount }, (_, i) => makeNode(`n${i}`));
          const result = placeTasks({ pendingTasks: makeTasks('web', replicas), nodes, tasksOnNodes: [] });
          assert.equal(result.assignments.length, replicas);
          const counts = nodes.map((n) => result.assignments.filter((a) => a.nodeId === n.id).length);
          assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `uneven: ${counts.join(',')}`);
        },
      ),
    );
  });

  it('spreads over label values to within one task, then over nodes within each value', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom('a', 'b', 'c', undefined), { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 0, max: 100 }),
        (zones, replicas) => {
          const nodes = zones.map((zone, i) =>
            makeNode(`n${i}`, { labels: zone === undefined ? {} : { zone } }),
          );
          const tasks = makeTasks('web', replicas, { spread: ['spread=node.labels.zone'] });
          const result = placeTasks({ pendingTasks: tasks, nodes, tasksOnNodes: [] });
          assert.equal(result.assignments.length, replicas);
          const perNode = new Map(nodes.map((n) => [n.id, 0]));
          for (const a of result.assignments) perNode.set(a.nodeId, (perNode.get(a.nodeId) ?? 0) + 1);
          const perZone = new Map<string, number[]>();
          nodes.forEach((n, i) => {
            const key = zones[i] ?? '(none)';
            perZone.set(key, [...(perZone.get(key) ?? []), perNode.get(n.id) ?? 0]);
          });
          const zoneTotals = [...perZone.values()].map((c) => c.reduce((x, y) => x + y, 0));
          assert.ok(
            Math.max(...zoneTotals) - Math.min(...zoneTotals) <= 1,
            `zones uneven: ${zoneTotals.join(',')}`,
          );
          for (const [zone, counts] of perZone) {
            assert.ok(
              Math.max(...counts) - Math.min(...counts) <= 1,
              `zone ${zone} uneven: ${counts.join(',')}`,
            );
          }
        },
      ),
    );
  });
});
