// Placement, one behaviour per test: each filter alone, SwarmKit's ranking, spread preferences,
// the reasons given for tasks that stay pending, and determinism.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  NodeAvailability,
  NodeRole,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  TaskState,
  type Node,
  type Task,
} from '../../gen/cluster/v1/objects';
import { placeTasks, type PlacementResult } from './placement';
import { CPU, GiB, MiB, makeNode, makeTask, makeTasks } from './testing';

function place(pendingTasks: Task[], nodes: Node[], tasksOnNodes: Task[] = []): PlacementResult {
  return placeTasks({ pendingTasks, nodes, tasksOnNodes });
}

/** Task id → node id. */
function placements(result: PlacementResult): Record<string, string> {
  return Object.fromEntries(result.assignments.map((a) => [a.taskId, a.nodeId]));
}

/** Node id → number of new tasks it got. */
function tasksPerNode(result: PlacementResult): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const a of result.assignments) counts[a.nodeId] = (counts[a.nodeId] ?? 0) + 1;
  return counts;
}

const threeNodes = () => [makeNode('n1'), makeNode('n2'), makeNode('n3')];

describe('placement ranking', () => {
  it('puts 3 replicas on 3 nodes one per node, in node-id order', () => {
    const result = place(makeTasks('web', 3), threeNodes());
    assert.deepEqual(placements(result), { 'web.1': 'n1', 'web.2': 'n2', 'web.3': 'n3' });
    assert.deepEqual(result.unplaced, []);
  });

  it('puts 6 replicas on 3 nodes two per node', () => {
    const result = place(makeTasks('web', 6), threeNodes());
    assert.deepEqual(tasksPerNode(result), { n1: 2, n2: 2, n3: 2 });
  });

  it('gives fewer new tasks to a node that already runs tasks of the service', () => {
    const existing = [makeTask('old.1', 'web', { nodeId: 'n1' }), makeTask('old.2', 'web', { nodeId: 'n1' })];
    const result = place(makeTasks('web', 4), threeNodes(), existing);
    assert.deepEqual(tasksPerNode(result), { n2: 2, n3: 2 });
  });

  it('breaks ties in tasks of the service by tasks in total', () => {
    const others = [makeTask('db.1', 'db', { nodeId: 'n1' }), makeTask('db.2', 'db', { nodeId: 'n2' })];
    const result = place(makeTasks('web', 1), threeNodes(), others);
    assert.deepEqual(placements(result), { 'web.1': 'n3' });
  });

  it('prefers spreading the service over balancing total load', () => {
    // n1 is busy with other work but has no web task; n2 has one web task and nothing else.
    const existing = [
      makeTask('db.1', 'db', { nodeId: 'n1' }),
      makeTask('db.2', 'db', { nodeId: 'n1' }),
      makeTask('db.3', 'db', { nodeId: 'n1' }),
      makeTask('web.0', 'web', { nodeId: 'n2' }),
    ];
    const result = place(makeTasks('web', 1), [makeNode('n1'), makeNode('n2')], existing);
    assert.deepEqual(placements(result), { 'web.1': 'n1' });
  });

  it('does not count tasks that are being shut down or have stopped', () => {
    const existing = [
      makeTask('web.a', 'web', { nodeId: 'n1', desiredState: TaskState.TASK_STATE_SHUTDOWN }),
      makeTask('web.b', 'web', { nodeId: 'n1', state: TaskState.TASK_STATE_FAILED }),
      makeTask('web.c', 'web', { nodeId: 'n2' }),
    ];
    const result = place(makeTasks('web', 1), [makeNode('n1'), makeNode('n2')], existing);
    assert.deepEqual(placements(result), { 'web.1': 'n1' });
  });

  it('balances new tasks of one service against those placed earlier in the same call', () => {
    const result = place([...makeTasks('a', 2), ...makeTasks('b', 2)], [makeNode('n1'), makeNode('n2')]);
    // a.1→n1, a.2→n2, then b sees equal totals and starts from n1 again.
    assert.deepEqual(placements(result), { 'a.1': 'n1', 'a.2': 'n2', 'b.1': 'n1', 'b.2': 'n2' });
  });

  it('counts tasks of the same service placed in another group of the same call', () => {
    // Two specs of one service (as during a rolling update): the second group sees the first.
    const tasks = [...makeTasks('web', 2, { reserveMemoryBytes: 1 }), makeTask('web.9', 'web', { slot: 9 })];
    const result = place(tasks, threeNodes());
    assert.deepEqual(tasksPerNode(result), { n1: 1, n2: 1, n3: 1 });
  });

  it('ignores tasks on nodes it does not know', () => {
    const result = place(makeTasks('web', 1), [makeNode('n1')], [makeTask('x', 'web', { nodeId: 'gone' })]);
    assert.deepEqual(placements(result), { 'web.1': 'n1' });
  });
});

describe('ready filter', () => {
  it('gives nothing to down, disconnected, runtime-less, unknown, paused or drained nodes', () => {
    const nodes = [
      makeNode('down', { state: NodeState.NODE_STATE_DOWN }),
      makeNode('disc', { state: NodeState.NODE_STATE_DISCONNECTED }),
      makeNode('noengine', { state: NodeState.NODE_STATE_NOT_READY }),
      makeNode('unk', { state: NodeState.NODE_STATE_UNKNOWN }),
      makeNode('paused', { availability: NodeAvailability.NODE_AVAILABILITY_PAUSE }),
      makeNode('drained', { availability: NodeAvailability.NODE_AVAILABILITY_DRAIN }),
      makeNode('ok'),
    ];
    const result = place(makeTasks('web', 4), nodes);
    assert.deepEqual(tasksPerNode(result), { ok: 4 });
  });

  it('leaves tasks pending with the reason when no node is ready and active', () => {
    const nodes = [
      makeNode('n1', { state: NodeState.NODE_STATE_DOWN }),
      makeNode('n2', { availability: NodeAvailability.NODE_AVAILABILITY_DRAIN }),
      makeNode('n3', { availability: NodeAvailability.NODE_AVAILABILITY_DRAIN }),
      makeNode('n4', { state: NodeState.NODE_STATE_NOT_READY }),
    ];
    const result = place(makeTasks('web', 2), nodes);
    assert.deepEqual(result.assignments, []);
    const reason =
      'no suitable node (4 nodes not available for new tasks: 1 down, 1 without a container runtime, 2 drained)';
    assert.deepEqual(result.unplaced, [
      { taskId: 'web.1', reason },
      { taskId: 'web.2', reason },
    ]);
  });

  it('says so when the cluster has no nodes', () => {
    const result = place(makeTasks('web', 1), []);
    assert.deepEqual(result.unplaced, [
      { taskId: 'web.1', reason: 'no suitable node (the cluster has no nodes)' },
    ]);
  });
});

describe('constraint filter', () => {
  const zoned = () => [
    makeNode('n1', { labels: { zone: 'a' } }),
    makeNode('n2', { labels: { zone: 'b' } }),
    makeNode('n3', { labels: { zone: 'a' }, role: NodeRole.NODE_ROLE_MANAGER }),
    makeNode('n4'),
  ];

  it('places only on nodes that match every constraint', () => {
    const result = place(makeTasks('web', 4, { constraints: ['node.labels.zone==a'] }), zoned());
    assert.deepEqual(tasksPerNode(result), { n1: 2, n3: 2 });
    const both = place(
      makeTasks('db', 2, { constraints: ['node.labels.zone==a', 'node.role==worker'] }),
      zoned(),
    );
    assert.deepEqual(tasksPerNode(both), { n1: 2 });
  });

  it('lets != match nodes without the label', () => {
    const result = place(makeTasks('web', 2, { constraints: ['node.labels.zone!=a'] }), zoned());
    assert.deepEqual(tasksPerNode(result), { n2: 1, n4: 1 });
  });

  it('names the constraint each rejected node failed first', () => {
    const result = place(
      makeTasks('web', 1, { constraints: ['node.labels.zone==c', 'node.role==manager'] }),
      zoned(),
    );
    assert.deepEqual(result.unplaced, [
      { taskId: 'web.1', reason: 'no suitable node (4 nodes did not match constraint node.labels.zone==c)' },
    ]);
    const second = place(
      makeTasks('web', 1, { constraints: ['node.labels.zone==b', 'node.role==manager'] }),
      zoned(),
    );
    assert.equal(
      second.unplaced[0]?.reason,
      'no suitable node (3 nodes did not match constraint node.labels.zone==b; ' +
        '1 node did not match constraint node.role==manager)',
    );
  });

  it('leaves tasks with an invalid constraint pending with the parse error, and places the rest', () => {
    const result = place(
      [...makeTasks('bad', 1, { constraints: ['node.zone=a'] }), ...makeTasks('good', 1)],
      zoned(),
    );
    assert.deepEqual(placements(result), { 'good.1': 'n1' });
    assert.deepEqual(result.unplaced, [
      { taskId: 'bad.1', reason: "invalid constraint 'node.zone=a': expected KEY==VALUE or KEY!=VALUE" },
    ]);
  });
});

describe('resource filter', () => {
  it('fits reservations against capacity minus the reservations of tasks already there', () => {
    const nodes = [makeNode('n1', { memoryBytes: 2 * GiB }), makeNode('n2', { memoryBytes: 1 * GiB })];
    const existing = [makeTask('db.1', 'db', { nodeId: 'n1', reserveMemoryBytes: 1536 * MiB })];
    const result = place(makeTasks('web', 3, { reserveMemoryBytes: 512 * MiB }), nodes, existing);
    assert.deepEqual(tasksPerNode(result), { n1: 1, n2: 2 });
    assert.deepEqual(result.unplaced, []);
  });

  it('leaves tasks pending with the reason when memory runs out', () => {
    const nodes = [makeNode('n1', { memoryBytes: 1 * GiB })];
    const result = place(makeTasks('web', 3, { reserveMemoryBytes: 512 * MiB }), nodes);
    assert.deepEqual(placements(result), { 'web.1': 'n1', 'web.2': 'n1' });
    assert.deepEqual(result.unplaced, [
      {
        taskId: 'web.3',
        reason: 'no suitable node (1 node has insufficient memory for a task reserving 512 MiB)',
      },
    ]);
  });

  it('checks CPU the same way and says which resource is short', () => {
    const nodes = [
      makeNode('n1', { nanoCpus: 1 * CPU }),
      makeNode('n2', { nanoCpus: 1 * CPU }),
      makeNode('n3', { nanoCpus: 1 * CPU, memoryBytes: 1 * GiB }),
    ];
    const result = place(
      makeTasks('web', 1, { reserveNanoCpus: 2 * CPU, reserveMemoryBytes: 2 * GiB }),
      nodes,
    );
    assert.equal(
      result.unplaced[0]?.reason,
      'no suitable node (2 nodes have insufficient CPU for a task reserving 2 CPUs; ' +
        '1 node has insufficient CPU and memory for a task reserving 2 CPUs and 2 GiB)',
    );
  });

  it('keeps reservations of a task still running though asked to stop, releases those of stopped ones', () => {
    const nodes = [makeNode('n1', { memoryBytes: 1 * GiB })];
    const stopping = makeTask('old', 'web', {
      nodeId: 'n1',
      reserveMemoryBytes: 1 * GiB,
      desiredState: TaskState.TASK_STATE_SHUTDOWN,
    });
    assert.equal(
      place(makeTasks('web', 1, { reserveMemoryBytes: 1 }), nodes, [stopping]).assignments.length,
      0,
    );
    const stopped = makeTask('old', 'web', {
      nodeId: 'n1',
      reserveMemoryBytes: 1 * GiB,
      desiredState: TaskState.TASK_STATE_SHUTDOWN,
      state: TaskState.TASK_STATE_SHUTDOWN,
    });
    assert.equal(
      place(makeTasks('web', 1, { reserveMemoryBytes: 1 }), nodes, [stopped]).assignments.length,
      1,
    );
  });

  it('lets tasks without reservations go anywhere, even on a node that describes no resources', () => {
    const bare = makeNode('n1');
    bare.description = undefined;
    assert.deepEqual(placements(place(makeTasks('web', 1), [bare])), { 'web.1': 'n1' });
    assert.equal(place(makeTasks('web', 1, { reserveNanoCpus: 1 }), [bare]).assignments.length, 0);
  });
});

describe('host port filter', () => {
  it('puts at most one task publishing a host port on each node', () => {
    const result = place(makeTasks('web', 4, { hostPorts: [8080] }), threeNodes());
    assert.deepEqual(tasksPerNode(result), { n1: 1, n2: 1, n3: 1 });
    assert.deepEqual(result.unplaced, [
      { taskId: 'web.4', reason: 'no suitable node (host-mode port 8080/tcp already in use on 3 nodes)' },
    ]);
  });

  it('avoids nodes where a running task of another service holds the port', () => {
    const existing = [makeTask('other.1', 'other', { nodeId: 'n1', hostPorts: [80] })];
    const result = place(makeTasks('web', 2, { hostPorts: [80] }), threeNodes(), existing);
    assert.deepEqual(tasksPerNode(result), { n2: 1, n3: 1 });
  });

  it('treats the same number over TCP and UDP as different ports', () => {
    const udp = makeTask('dns.1', 'dns', { nodeId: 'n1' });
    udp.endpoint = {
      ports: [
        {
          name: '',
          protocol: PortConfig_Protocol.PROTOCOL_UDP,
          targetPort: 53,
          publishedPort: 53,
          publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
        },
      ],
      virtualIps: [],
    };
    assert.deepEqual(placements(place(makeTasks('web', 1, { hostPorts: [53] }), [makeNode('n1')], [udp])), {
      'web.1': 'n1',
    });
    assert.equal(place([{ ...udp, id: 'dns.2', nodeId: '' }], [makeNode('n1')], [udp]).assignments.length, 0);
  });

  it('ignores ingress-mode ports, which the routing mesh publishes on every node', () => {
    const ingress = makeTasks('web', 3, { hostPorts: [80] }).map((t) => ({
      ...t,
      endpoint: {
        ports: (t.endpoint?.ports ?? []).map((p) => ({
          ...p,
          publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
        })),
        virtualIps: [],
      },
    }));
    assert.deepEqual(tasksPerNode(place(ingress, [makeNode('n1')])), { n1: 3 });
  });

  it('does not mind different ports or tasks that have stopped', () => {
    const existing = [
      makeTask('other.1', 'other', { nodeId: 'n1', hostPorts: [81] }),
      makeTask('other.2', 'other', { nodeId: 'n1', hostPorts: [80], state: TaskState.TASK_STATE_COMPLETE }),
    ];
    const result = place(makeTasks('web', 1, { hostPorts: [80] }), [makeNode('n1')], existing);
    assert.deepEqual(placements(result), { 'web.1': 'n1' });
  });
});

describe('reasons for tasks left pending', () => {
  it('counts each node once, under the first filter that turns it away, in filter order', () => {
    const nodes = [
      makeNode('n1', { state: NodeState.NODE_STATE_DOWN, labels: { zone: 'a' } }),
      makeNode('n2', { availability: NodeAvailability.NODE_AVAILABILITY_PAUSE }),
      makeNode('n3', { labels: { zone: 'b' } }),
      makeNode('n4', { labels: { zone: 'b' }, memoryBytes: 1 * GiB }),
      makeNode('n5', { labels: { zone: 'a' }, memoryBytes: 1 * GiB }),
      makeNode('n6', { labels: { zone: 'a' } }),
    ];
    const existing = [makeTask('lb.1', 'lb', { nodeId: 'n6', hostPorts: [443] })];
    const tasks = makeTasks('web', 1, {
      constraints: ['node.labels.zone==a'],
      reserveMemoryBytes: 2 * GiB,
      hostPorts: [443],
    });
    assert.deepEqual(place(tasks, nodes, existing).unplaced, [
      {
        taskId: 'web.1',
        reason:
          'no suitable node (2 nodes not available for new tasks: 1 down, 1 paused; ' +
          '2 nodes did not match constraint node.labels.zone==a; ' +
          '1 node has insufficient memory for a task reserving 2 GiB; ' +
          'host-mode port 443/tcp already in use on 1 node)',
      },
    ]);
  });

  it('explains against the state after placing, so nodes the batch filled show as full', () => {
    const nodes = [makeNode('n1', { nanoCpus: 2 * CPU }), makeNode('n2', { nanoCpus: 1 * CPU })];
    const result = place(makeTasks('web', 4, { reserveNanoCpus: CPU / 2 }), nodes);
    assert.equal(result.assignments.length, 4);
    const more = place(makeTasks('web', 7, { reserveNanoCpus: CPU / 2 }), nodes);
    assert.equal(more.assignments.length, 6);
    assert.deepEqual(more.unplaced, [
      {
        taskId: 'web.7',
        reason: 'no suitable node (2 nodes have insufficient CPU for a task reserving 0.5 CPUs)',
      },
    ]);
  });

  it('gives the parse error for an invalid spread preference', () => {
    const result = place(makeTasks('web', 1, { spread: ['spread=node.hostname'] }), threeNodes());
    assert.match(result.unplaced[0]?.reason ?? '', /^invalid placement preference 'spread=node\.hostname'/);
  });
});

describe('spread preferences', () => {
  it('splits tasks evenly across label values before across nodes', () => {
    const nodes = [
      makeNode('a1', { labels: { zone: 'a' } }),
      makeNode('b1', { labels: { zone: 'b' } }),
      makeNode('b2', { labels: { zone: 'b' } }),
      makeNode('b3', { labels: { zone: 'b' } }),
    ];
    const result = place(makeTasks('web', 4, { spread: ['spread=node.labels.zone'] }), nodes);
    assert.deepEqual(tasksPerNode(result), { a1: 2, b1: 1, b2: 1 });
    // Without the preference the same tasks go one per node.
    assert.deepEqual(tasksPerNode(place(makeTasks('web', 4), nodes)), { a1: 1, b1: 1, b2: 1, b3: 1 });
  });

  it('puts nodes without the label in a group of their own', () => {
    const nodes = [
      makeNode('a1', { labels: { zone: 'a' } }),
      makeNode('a2', { labels: { zone: 'a' } }),
      makeNode('x1'),
      makeNode('x2'),
      makeNode('x3'),
    ];
    const result = place(makeTasks('web', 4, { spread: ['node.labels.zone'] }), nodes);
    const inA = (tasksPerNode(result).a1 ?? 0) + (tasksPerNode(result).a2 ?? 0);
    assert.equal(inA, 2);
    assert.equal(result.assignments.length, 4);
  });

  it('counts tasks already in a group', () => {
    const nodes = [makeNode('a1', { labels: { zone: 'a' } }), makeNode('b1', { labels: { zone: 'b' } })];
    const existing = [makeTask('web.0', 'web', { nodeId: 'a1' }), makeTask('web.9', 'web', { nodeId: 'a1' })];
    const result = place(makeTasks('web', 4, { spread: ['node.labels.zone'] }), nodes, existing);
    assert.deepEqual(tasksPerNode(result), { a1: 1, b1: 3 });
  });

  it('nests preferences in order', () => {
    const nodes = [
      makeNode('a-r1', { labels: { zone: 'a', rack: '1' } }),
      makeNode('a-r1b', { labels: { zone: 'a', rack: '1' } }),
      makeNode('a-r2', { labels: { zone: 'a', rack: '2' } }),
      makeNode('b-r1', { labels: { zone: 'b', rack: '1' } }),
    ];
    const result = place(makeTasks('web', 8, { spread: ['node.labels.zone', 'node.labels.rack'] }), nodes);
    // 4 per zone; within zone a, 2 per rack, rack 1's two split over its two nodes.
    assert.deepEqual(tasksPerNode(result), { 'a-r1': 1, 'a-r1b': 1, 'a-r2': 2, 'b-r1': 4 });
  });

  it('fills the other groups when one runs out of room', () => {
    const nodes = [
      makeNode('a1', { labels: { zone: 'a' }, memoryBytes: 1 * GiB }),
      makeNode('b1', { labels: { zone: 'b' } }),
    ];
    const result = place(
      makeTasks('web', 6, { spread: ['node.labels.zone'], reserveMemoryBytes: 1 * GiB }),
      nodes,
    );
    assert.deepEqual(tasksPerNode(result), { a1: 1, b1: 5 });
  });

  it('spreads over engine labels too', () => {
    const nodes = [
      makeNode('n1', { engineLabels: { dc: 'east' } }),
      makeNode('n2', { engineLabels: { dc: 'east' } }),
      makeNode('n3', { engineLabels: { dc: 'west' } }),
    ];
    const result = place(makeTasks('web', 4, { spread: ['engine.labels.dc'] }), nodes);
    assert.deepEqual(tasksPerNode(result), { n1: 1, n2: 1, n3: 2 });
  });

  it('ignores groups whose nodes are all unavailable', () => {
    const nodes = [
      makeNode('a1', { labels: { zone: 'a' }, availability: NodeAvailability.NODE_AVAILABILITY_DRAIN }),
      makeNode('b1', { labels: { zone: 'b' } }),
    ];
    const result = place(makeTasks('web', 3, { spread: ['node.labels.zone'] }), nodes);
    assert.deepEqual(tasksPerNode(result), { b1: 3 });
  });
});

describe('determinism', () => {
  it('gives the same result whatever order tasks and nodes come in', () => {
    const nodes = [
      makeNode('n1', { labels: { zone: 'a' } }),
      makeNode('n2', { labels: { zone: 'b' } }),
      makeNode('n3', { labels: { zone: 'b' }, memoryBytes: 1 * GiB }),
      makeNode('n4'),
    ];
    const tasks = [
      ...makeTasks('web', 7, { spread: ['node.labels.zone'] }),
      ...makeTasks('db', 3, { reserveMemoryBytes: 3 * GiB }),
      ...makeTasks('cache', 5, { constraints: ['node.labels.zone!=a'] }),
    ];
    const expected = place(tasks, nodes);
    const sortedAssignments = (r: PlacementResult) =>
      [...r.assignments].sort((x, y) => (x.taskId < y.taskId ? -1 : 1));
    for (let rotation = 1; rotation < 5; rotation++) {
      const shuffledTasks = [...tasks.slice(rotation * 3), ...tasks.slice(0, rotation * 3)].reverse();
      const shuffledNodes = [...nodes.slice(rotation % 4), ...nodes.slice(0, rotation % 4)];
      const again = place(shuffledTasks, shuffledNodes);
      assert.deepEqual(sortedAssignments(again), sortedAssignments(expected));
      assert.deepEqual(again.unplaced, expected.unplaced);
    }
  });
});
