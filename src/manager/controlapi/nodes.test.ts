// Nodes through the control API: lookups, filters, updates with versions, promote/demote with
// the last-manager and quorum rules, removal rules.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClusterError, type ErrorCode } from '../../common/errors';
import { Node, NodeAvailability, NodeRole, NodeSpec, NodeState } from '../../gen/cluster/v1/objects';
import { newTestApi, seed, storeBytes, testNode, testTask, type TestApi } from './testing';

function isCode(code: ErrorCode, text?: RegExp) {
  return (e: unknown) =>
    e instanceof ClusterError && e.code === code && (text === undefined || text.test(e.message));
}

const MANAGER = NodeRole.NODE_ROLE_MANAGER;
const WORKER = NodeRole.NODE_ROLE_WORKER;

function stored(t: TestApi, id: string): Node {
  const node = t.store.view((tx) => tx.nodes.get(id));
  assert.ok(node);
  return node;
}

function specOf(node: Node, change: Partial<NodeSpec>): NodeSpec {
  return NodeSpec.fromPartial({ ...node.spec, ...change });
}

async function update(t: TestApi, node: Node, change: Partial<NodeSpec>) {
  const current = stored(t, node.id);
  return t.api.updateNode({
    nodeId: node.id,
    version: current.meta?.version ?? 0,
    spec: specOf(current, change),
  });
}

describe('getNode and listNodes', () => {
  test('lookup by hostname, id or prefix', async () => {
    const t = newTestApi();
    const node = testNode('worker-1', { id: 'w1' + 'a'.repeat(23) });
    await seed(t.store, { nodes: [node, testNode('worker-2', { id: 'w1' + 'b'.repeat(23) })] });
    for (const ref of ['worker-1', node.id, 'w1a'])
      assert.equal((await t.api.getNode({ nodeId: ref })).node?.id, node.id);
    await assert.rejects(t.api.getNode({ nodeId: 'w1' }), isCode('INVALID_ARGUMENT', /ambiguous/));
    await assert.rejects(
      t.api.getNode({ nodeId: 'worker-9' }),
      isCode('NOT_FOUND', /node 'worker-9' not found/),
    );
  });

  test('filters: id, name/hostname prefix, role, availability, membership, labels', async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER, labels: { zone: 'a' } });
    const w1 = testNode('worker-1', { labels: { zone: 'b', ssd: 'yes' }, engineLabels: { os: 'debian' } });
    const w2 = testNode('worker-2', { availability: NodeAvailability.NODE_AVAILABILITY_DRAIN });
    await seed(t.store, { nodes: [m1, w1, w2] });
    const hosts = async (filters: Record<string, string>) =>
      (await t.api.listNodes({ filters })).nodes.map((n) => n.description?.hostname).sort();
    assert.deepEqual(await hosts({}), ['manager-1', 'worker-1', 'worker-2']);
    assert.deepEqual(await hosts({ role: 'manager' }), ['manager-1']);
    assert.deepEqual(await hosts({ role: 'worker' }), ['worker-1', 'worker-2']);
    assert.deepEqual(await hosts({ name: 'work' }), ['worker-1', 'worker-2']);
    assert.deepEqual(await hosts({ hostname: 'manager' }), ['manager-1']);
    assert.deepEqual(await hosts({ id: w2.id }), ['worker-2']);
    assert.deepEqual(await hosts({ availability: 'drain' }), ['worker-2']);
    assert.deepEqual(await hosts({ availability: 'active,pause' }), ['manager-1', 'worker-1']);
    assert.deepEqual(await hosts({ membership: 'accepted' }), ['manager-1', 'worker-1', 'worker-2']);
    assert.deepEqual(await hosts({ membership: 'pending' }), []);
    assert.deepEqual(await hosts({ 'node.label': 'zone' }), ['manager-1', 'worker-1']);
    assert.deepEqual(await hosts({ 'node.label': 'zone=b,ssd' }), ['worker-1']);
    assert.deepEqual(await hosts({ label: 'os=debian' }), ['worker-1']);
    await assert.rejects(
      t.api.listNodes({ filters: { role: 'boss' } }),
      isCode('INVALID_ARGUMENT', /'boss' for filter 'role'/),
    );
  });
});

describe('updateNode', () => {
  test('availability and labels with the version read; stale versions and bad specs write nothing', async () => {
    const t = newTestApi();
    const w1 = testNode('worker-1');
    await seed(t.store, { nodes: [w1] });
    const first = stored(t, w1.id);
    const { node } = await update(t, w1, {
      availability: NodeAvailability.NODE_AVAILABILITY_DRAIN,
      annotations: { name: '', labels: { zone: 'a' } },
    });
    assert.equal(node?.spec?.availability, NodeAvailability.NODE_AVAILABILITY_DRAIN);
    assert.deepEqual(node?.spec?.annotations?.labels, { zone: 'a' });

    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.updateNode({ nodeId: w1.id, version: first.meta?.version ?? 0, spec: specOf(first, {}) }),
      isCode('CONFLICT'),
    );
    await assert.rejects(
      t.api.updateNode({ nodeId: w1.id, version: 0, spec: specOf(first, {}) }),
      isCode('INVALID_ARGUMENT', /version/),
    );
    await assert.rejects(
      update(t, w1, { availability: 7 as NodeAvailability }),
      isCode('INVALID_ARGUMENT', /availability/),
    );
    await assert.rejects(update(t, w1, { desiredRole: 3 as NodeRole }), isCode('INVALID_ARGUMENT', /role/));
    await assert.rejects(
      update(t, w1, { annotations: { name: '', labels: { '': 'x' } } }),
      isCode('INVALID_ARGUMENT', /labels/),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('promote sets the desired role; the role manager does the rest', async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER });
    const w1 = testNode('worker-1');
    await seed(t.store, { nodes: [m1, w1] });
    const { node } = await update(t, w1, { desiredRole: MANAGER });
    assert.equal(node?.spec?.desiredRole, MANAGER);
    assert.equal(node?.role, WORKER);
  });

  test('the last manager cannot be demoted', async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER });
    await seed(t.store, { nodes: [m1, testNode('worker-1')] });
    const before = storeBytes(t.store);
    await assert.rejects(
      update(t, m1, { desiredRole: WORKER }),
      isCode('FAILED_PRECONDITION', /last manager/),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('a demotion that would lose quorum is refused and says so', async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER });
    const m2 = testNode('manager-2', { role: MANAGER });
    const m3 = testNode('manager-3', { role: MANAGER, reachability: 'unreachable' });
    await seed(t.store, { nodes: [m1, m2, m3] });
    // Without m2: 2 remaining managers, only m1 reachable, 2 needed.
    await assert.rejects(
      update(t, m2, { desiredRole: WORKER }),
      isCode(
        'FAILED_PRECONDITION',
        /would lose quorum \(1 of the 2 remaining managers are reachable, 2 needed\)/,
      ),
    );
    // Without the unreachable m3: m1 and m2 remain, both reachable.
    const { node } = await update(t, m3, { desiredRole: WORKER });
    assert.equal(node?.spec?.desiredRole, WORKER);
  });

  test('two reachable managers: either may be demoted', async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER });
    const m2 = testNode('manager-2', { role: MANAGER });
    await seed(t.store, { nodes: [m1, m2] });
    assert.equal((await update(t, m1, { desiredRole: WORKER })).node?.spec?.desiredRole, WORKER);
  });

  test('the Raft view, when given, decides reachability', async () => {
    const m1 = testNode('manager-1', { role: MANAGER });
    const m2 = testNode('manager-2', { role: MANAGER });
    const m3 = testNode('manager-3', { role: MANAGER });
    let m3Reachable = false;
    const t = newTestApi({
      raftMembers: () => [
        { nodeId: m1.id, reachable: true },
        { nodeId: m2.id, reachable: true },
        { nodeId: m3.id, reachable: m3Reachable },
      ],
    });
    await seed(t.store, { nodes: [m1, m2, m3] });
    await assert.rejects(update(t, m1, { desiredRole: WORKER }), isCode('FAILED_PRECONDITION', /quorum/));
    m3Reachable = true;
    assert.equal((await update(t, m1, { desiredRole: WORKER })).node?.spec?.desiredRole, WORKER);
  });
});

describe('removeNode', () => {
  test("a manager must be demoted first (Docker's message)", async () => {
    const t = newTestApi();
    const m1 = testNode('manager-1', { role: MANAGER });
    const m2 = testNode('manager-2', { role: MANAGER, state: NodeState.NODE_STATE_DOWN });
    await seed(t.store, { nodes: [m1, m2] });
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.removeNode({ nodeId: 'manager-2', force: true }),
      isCode(
        'FAILED_PRECONDITION',
        /node manager-2 is a cluster manager and is a member of the raft cluster\. It must be demoted to worker before removal/,
      ),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('a node that is up is removed only with force; a down one at once; its tasks stay for the orchestrator', async () => {
    const t = newTestApi();
    const up = testNode('worker-1');
    const down = testNode('worker-2', { state: NodeState.NODE_STATE_DOWN });
    const task = testTask('svc', 1, { nodeId: down.id });
    await seed(t.store, { nodes: [testNode('manager-1', { role: MANAGER }), up, down], tasks: [task] });
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.removeNode({ nodeId: 'worker-1', force: false }),
      isCode('FAILED_PRECONDITION', /is not down and can't be removed/),
    );
    assert.deepEqual(storeBytes(t.store), before);
    await t.api.removeNode({ nodeId: 'worker-1', force: true });
    await t.api.removeNode({ nodeId: 'worker-2', force: false });
    t.store.view((tx) => {
      assert.equal(tx.nodes.get(up.id), undefined);
      assert.equal(tx.nodes.get(down.id), undefined);
      assert.ok(tx.tasks.get(task.id));
    });
    await assert.rejects(t.api.removeNode({ nodeId: 'worker-1', force: true }), isCode('NOT_FOUND'));
  });
});
