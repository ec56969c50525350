// The store's contract: transactions apply atomically in log order with version checks, reads
// are local copies, names are unique where they must be, indexes follow every change.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { ClusterError } from '../common/errors';
import { NodeRole, TaskState, type Service } from '../gen/cluster/v1/objects';
import { encodeTransaction } from './codec';
import { LocalProposer } from './local_proposer';
import { MAX_TRANSACTION_BYTES, MemoryStore, type WriteTx } from './memory_store';
import { TABLE_NAMES, type TableName, type TableTypes } from './tables';
import { localStores, makeCluster, makeNetwork, makeNode, makeService, makeTask } from './testing';

const T0 = Date.UTC(2026, 0, 1);

function clockedStore(): { store: MemoryStore; proposer: LocalProposer; clock: { now: number } } {
  const clock = { now: T0 };
  const proposer = new LocalProposer();
  const store = new MemoryStore(undefined, { nowMs: () => clock.now });
  proposer.attach(store);
  return { store, proposer, clock };
}

function isCode(code: string, pattern?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof ClusterError, `expected a ClusterError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (pattern) assert.match(err.message, pattern);
    return true;
  };
}

// One factory per table, and a field each table's update can change.
const factories: { [N in TableName]: { make(): TableTypes[N]; change(o: TableTypes[N]): void } } = {
  nodes: { make: () => makeNode('host-a'), change: (n) => (n.role = NodeRole.NODE_ROLE_MANAGER) },
  services: { make: () => makeService('web'), change: (s) => (s.previousSpec = s.spec) },
  tasks: { make: () => makeTask('svc', 1), change: (t) => (t.nodeId = 'node-1') },
  networks: { make: () => makeNetwork('backend'), change: (n) => (n.vni = 4097) },
  clusters: { make: () => makeCluster(), change: (c) => (c.rootCaCert = 'OTHER PEM') },
};

function writer<N extends TableName>(tx: WriteTx, table: N): WriteTx[N] {
  return tx[table];
}

for (const table of TABLE_NAMES) {
  test(`${table}: create, get, list, update and delete, with versions and timestamps from the proposer`, async () => {
    const { store, clock } = clockedStore();
    const factory = factories[table] as {
      make(): TableTypes[TableName];
      change(o: TableTypes[TableName]): void;
    };
    const obj = factory.make();

    const created = await store.update((tx) => writer(tx, table).create(obj as never));
    assert.equal(created.index, 1);
    const stored = store.view((tx) => tx[table].get(obj.id));
    assert.ok(stored);
    assert.equal(stored.meta?.version, 1);
    assert.deepEqual(stored.meta?.createdAt, new Date(T0));
    assert.deepEqual(stored.meta?.updatedAt, new Date(T0));
    assert.deepEqual({ ...stored, meta: undefined }, { ...obj, meta: undefined });
    assert.equal(store.view((tx) => tx[table].list()).length, 1);

    clock.now = T0 + 5000;
    factory.change(stored);
    const updated = await store.update((tx) => writer(tx, table).update(stored as never));
    assert.equal(updated.index, 2);
    const after = store.view((tx) => tx[table].get(obj.id));
    assert.ok(after);
    assert.equal(after.meta?.version, 2);
    assert.deepEqual(after.meta?.createdAt, new Date(T0), 'createdAt is kept');
    assert.deepEqual(after.meta?.updatedAt, new Date(T0 + 5000));
    assert.deepEqual({ ...after, meta: undefined }, { ...stored, meta: undefined });

    await store.update((tx) => writer(tx, table).delete(obj.id));
    assert.equal(
      store.view((tx) => tx[table].get(obj.id)),
      undefined,
    );
    assert.deepEqual(
      store.view((tx) => tx[table].list()),
      [],
    );
    assert.equal(store.appliedIndex, 3);
  });
}

test('reads and results are copies: changing them changes nothing stored', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const svc = makeService('web');
  const result = await store.update((tx) => tx.services.create(svc));
  svc.spec = undefined; // the caller's own object was copied at create
  const read = store.view((tx) => tx.services.get(svc.id));
  assert.ok(read?.spec);
  read.spec.annotations = undefined;
  const listed = store.view((tx) => tx.services.list());
  assert.equal(listed[0]?.spec?.annotations?.name, 'web');
  // Event objects are shared and frozen: writing to one throws instead of corrupting the store.
  const event = result.events[0];
  assert.ok(event);
  assert.throws(() => {
    (event.object as { id: string }).id = 'x';
  }, TypeError);
});

test('an update carrying a version read before another write is refused locally with CONFLICT', async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const svc = makeService('web');
  await store.update((tx) => tx.services.create(svc));
  const stale = store.view((tx) => tx.services.get(svc.id)) as Service;
  const fresh = structuredClone(stale);
  fresh.previousSpec = fresh.spec;
  await store.update((tx) => tx.services.update(fresh));
  const logged = proposer.log.length;
  await assert.rejects(
    store.update((tx) => tx.services.update(stale)),
    isCode(
      'CONFLICT',
      new RegExp(`service '${svc.id}' was changed by someone else \\(version 2, you had 1\\)`),
    ),
  );
  assert.equal(proposer.log.length, logged, 'nothing proposed');
});

test('a transaction that conflicts at apply changes nothing, not even its other writes', async () => {
  const { stores } = localStores(2);
  const [a, b] = stores as [MemoryStore, MemoryStore];
  const svc = makeService('web');
  await a.update((tx) => tx.services.create(svc));
  const read = a.view((tx) => tx.services.get(svc.id)) as Service;
  const first = structuredClone(read);
  first.previousSpec = first.spec;
  const second = structuredClone(read);
  second.spec = undefined;
  const extraTask = makeTask(svc.id, 1);

  // Both transactions are built from version 1 before either applies, as two managers' writers.
  const one = a.update((tx) => tx.services.update(first));
  const two = a.update((tx) => {
    tx.tasks.create(extraTask);
    tx.services.update(second);
  });
  const [r1, r2] = await Promise.allSettled([one, two]);
  assert.equal(r1.status, 'fulfilled');
  assert.equal(r2.status, 'rejected');
  assert.ok(r2.status === 'rejected' && isCode('CONFLICT', /version 2, you had 1/)(r2.reason));
  for (const store of [a, b]) {
    assert.equal(store.appliedIndex, 3, 'the refused entry still consumed its index');
    assert.equal(
      store.view((tx) => tx.tasks.get(extraTask.id)),
      undefined,
      'the task of the refused transaction',
    );
    assert.deepEqual(store.view((tx) => tx.services.get(svc.id))?.previousSpec, read.spec);
    assert.deepEqual(
      store.view((tx) => tx.tasks.find('serviceId', svc.id)),
      [],
    );
  }
});

test('updating or deleting an object deleted meanwhile fails with NOT_FOUND at apply', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const task = makeTask('svc', 1);
  await store.update((tx) => tx.tasks.create(task));
  const read = store.view((tx) => tx.tasks.get(task.id));
  assert.ok(read);
  read.nodeId = 'n1';
  const del = store.update((tx) => tx.tasks.delete(task.id));
  const upd = store.update((tx) => tx.tasks.update(read));
  await del;
  await assert.rejects(upd, isCode('NOT_FOUND', new RegExp(`task '${task.id}' not found`)));
  await assert.rejects(
    store.update((tx) => tx.tasks.delete(task.id)),
    isCode('NOT_FOUND'),
  );
});

test('service and network names are unique; ids too; a transaction may free a name and reuse it', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const web = makeService('web');
  await store.update((tx) => tx.services.create(web));
  await assert.rejects(
    store.update((tx) => tx.services.create(makeService('web'))),
    isCode('ALREADY_EXISTS', new RegExp(`service 'web' already exists \\(id ${web.id}\\)`)),
  );
  await assert.rejects(
    store.update((tx) => tx.services.create(makeService('api', { id: web.id }))),
    isCode('ALREADY_EXISTS'),
  );
  // Renaming another service onto a taken name is refused too.
  const api = makeService('api');
  await store.update((tx) => tx.services.create(api));
  const renamed = store.view((tx) => tx.services.get(api.id)) as Service;
  renamed.spec = { ...renamed.spec, annotations: { name: 'web', labels: {} } };
  await assert.rejects(
    store.update((tx) => tx.services.update(renamed)),
    isCode('ALREADY_EXISTS'),
  );

  // Two writers racing for one name: the second is refused when it applies.
  const [x, y] = await Promise.allSettled([
    store.update((tx) => tx.networks.create(makeNetwork('backend'))),
    store.update((tx) => tx.networks.create(makeNetwork('backend'))),
  ]);
  assert.equal(x.status, 'fulfilled');
  assert.ok(
    y.status === 'rejected' && isCode('ALREADY_EXISTS', /network 'backend' already exists/)(y.reason),
  );
  assert.equal(store.view((tx) => tx.networks.list()).length, 1);

  // Delete web and create a new web in one transaction: the name is checked on the result.
  const web2 = makeService('web');
  await store.update((tx) => {
    tx.services.create(web2);
    tx.services.delete(web.id);
  });
  assert.deepEqual(
    store.view((tx) => tx.services.find('name', 'web').map((s) => s.id)),
    [web2.id],
  );
  // Node hostnames need not be unique.
  await store.update((tx) => {
    tx.nodes.create(makeNode('same'));
    tx.nodes.create(makeNode('same'));
  });
  assert.equal(store.view((tx) => tx.nodes.find('hostname', 'same')).length, 2);
});

test('a create of an id taken meanwhile fails at apply with ALREADY_EXISTS', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const [x, y] = await Promise.allSettled([
    store.update((tx) => tx.tasks.create(makeTask('s', 1, { id: 'same-id' }))),
    store.update((tx) => tx.tasks.create(makeTask('s', 2, { id: 'same-id' }))),
  ]);
  assert.equal(x.status, 'fulfilled');
  assert.ok(y.status === 'rejected' && isCode('ALREADY_EXISTS', /task same-id already exists/)(y.reason));
  assert.equal(store.view((tx) => tx.tasks.get('same-id'))?.slot, 1);
});

test('tasks are found by service, node, desired state and slot, and the indexes follow updates', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const [s1, s2] = ['s1', 's2'];
  const tasks = [
    makeTask(s1, 1, { nodeId: 'n1' }),
    makeTask(s1, 2, { nodeId: 'n2' }),
    makeTask(s1, 3, { nodeId: '' }),
    makeTask(s2, 1, { nodeId: 'n1', desiredState: TaskState.TASK_STATE_SHUTDOWN }),
  ];
  await store.update((tx) => tasks.forEach((t) => tx.tasks.create(t)));
  const ids = (list: { id: string }[]) => list.map((t) => t.id).sort();
  const idsOf = (...ts: typeof tasks) => ts.map((t) => t.id).sort();
  const [t0, t1, t2, t3] = tasks as [
    (typeof tasks)[0],
    (typeof tasks)[0],
    (typeof tasks)[0],
    (typeof tasks)[0],
  ];

  store.view((tx) => {
    assert.deepEqual(ids(tx.tasks.find('serviceId', s1)), idsOf(t0, t1, t2));
    assert.deepEqual(ids(tx.tasks.find('nodeId', 'n1')), idsOf(t0, t3));
    assert.deepEqual(ids(tx.tasks.find('nodeId', '')), [], 'unassigned tasks are not in the node index');
    assert.deepEqual(ids(tx.tasks.find('desiredState', TaskState.TASK_STATE_RUNNING)), idsOf(t0, t1, t2));
    assert.deepEqual(ids(tx.tasks.find('desiredState', TaskState.TASK_STATE_SHUTDOWN)), idsOf(t3));
    assert.deepEqual(ids(tx.tasks.find('slot', `${s1}/2`)), idsOf(t1));
    assert.deepEqual(ids(tx.tasks.list((t) => t.slot === 1)), idsOf(t0, t3));
  });

  // Move t0 to n2 and shut it down, delete t1: every index follows.
  const moved = store.view((tx) => tx.tasks.get(t0.id));
  assert.ok(moved);
  moved.nodeId = 'n2';
  moved.desiredState = TaskState.TASK_STATE_SHUTDOWN;
  await store.update((tx) => {
    tx.tasks.update(moved);
    tx.tasks.delete(t1.id);
    // Inside the transaction, reads already see its own writes.
    assert.deepEqual(ids(tx.tasks.find('nodeId', 'n2')), idsOf(t0));
    assert.deepEqual(ids(tx.tasks.find('serviceId', s1)), idsOf(t0, t2));
    assert.deepEqual(ids(tx.tasks.list()), idsOf(t0, t2, t3));
  });
  store.view((tx) => {
    assert.deepEqual(ids(tx.tasks.find('nodeId', 'n1')), idsOf(t3));
    assert.deepEqual(ids(tx.tasks.find('nodeId', 'n2')), idsOf(t0));
    assert.deepEqual(ids(tx.tasks.find('desiredState', TaskState.TASK_STATE_RUNNING)), idsOf(t2));
    assert.deepEqual(ids(tx.tasks.find('serviceId', s1)), idsOf(t0, t2));
  });
});

test('lookup takes a full id, a name or hostname, or a unique id prefix; ambiguity names the candidates', async () => {
  const { stores } = localStores(1);
  const store = stores[0];
  const web = makeService('web', { id: 'abc111' });
  const api = makeService('api', { id: 'abc222' });
  const db = makeService('db', { id: 'xyz333' });
  const n1 = makeNode('worker-1', { id: 'n1aaa' });
  const n2 = makeNode('twin', { id: 'n2bbb' });
  const n3 = makeNode('twin', { id: 'n3ccc', name: 'named' });
  await store.update((tx) => {
    [web, api, db].forEach((s) => tx.services.create(s));
    [n1, n2, n3].forEach((n) => tx.nodes.create(n));
  });
  store.view((tx) => {
    assert.equal(tx.services.lookup('abc111').spec?.annotations?.name, 'web');
    assert.equal(tx.services.lookup('api').id, 'abc222');
    assert.equal(tx.services.lookup('xy').id, 'xyz333');
    assert.equal(tx.services.lookup('abc2').id, 'abc222');
    assert.throws(
      () => tx.services.lookup('abc'),
      isCode(
        'INVALID_ARGUMENT',
        /service id prefix 'abc' is ambiguous: it matches abc111 \(web\), abc222 \(api\)/,
      ),
    );
    assert.throws(() => tx.services.lookup('nope'), isCode('NOT_FOUND', /service 'nope' not found/));
    assert.throws(() => tx.services.lookup(''), isCode('INVALID_ARGUMENT'));
    assert.equal(tx.nodes.lookup('worker-1').id, 'n1aaa');
    assert.equal(tx.nodes.lookup('named').id, 'n3ccc');
    assert.throws(
      () => tx.nodes.lookup('twin'),
      isCode('INVALID_ARGUMENT', /node name 'twin' is ambiguous: it matches n2bbb \(twin\), n3ccc \(named\)/),
    );
  });
  // A name wins over an id prefix that it also is.
  await store.update((tx) => tx.services.create(makeService('abc', { id: 'qqq' })));
  assert.equal(
    store.view((tx) => tx.services.lookup('abc').id),
    'qqq',
  );
});

test('within one transaction: create then update then delete folds into the right actions', async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const keep = makeTask('s', 1);
  const gone = makeTask('s', 2);
  await store.update((tx) => {
    tx.tasks.create(keep);
    const again = tx.tasks.get(keep.id);
    assert.ok(again);
    again.nodeId = 'n9';
    tx.tasks.update(again);
    tx.tasks.create(gone);
    tx.tasks.delete(gone.id);
  });
  assert.equal(proposer.log.length, 1);
  const stored = store.view((tx) => tx.tasks.list());
  assert.equal(stored.length, 1);
  assert.equal(stored[0]?.nodeId, 'n9');
  assert.equal(stored[0]?.meta?.version, 1);

  // An update twice in one transaction carries the version first read.
  const read = stored[0];
  assert.ok(read);
  const result = await store.update((tx) => {
    read.slot = 7;
    tx.tasks.update(read);
    const seen = tx.tasks.get(read.id);
    assert.ok(seen);
    assert.equal(seen.meta?.version, 1);
    seen.slot = 8;
    tx.tasks.update(seen);
  });
  assert.equal(result.events.length, 1);
  assert.equal(store.view((tx) => tx.tasks.get(read.id))?.slot, 8);
});

test('update: a function that writes nothing proposes nothing; a throwing one aborts; an async one is refused', async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const empty = await store.update((tx) => tx.services.list().length);
  assert.deepEqual(empty, { index: 0, events: [], value: 0 });
  await assert.rejects(
    store.update((tx) => {
      tx.services.create(makeService('web'));
      throw new Error('changed my mind');
    }),
    /changed my mind/,
  );
  await assert.rejects(
    store.update((tx) => {
      tx.services.create(makeService('web'));
      return Promise.resolve();
    }),
    /must be synchronous/,
  );
  // A transaction object kept past its function cannot write.
  let kept: WriteTx | undefined;
  await store.update((tx) => {
    kept = tx;
  });
  assert.throws(() => kept?.services.create(makeService('late')), /after its update function returned/);
  assert.equal(proposer.log.length, 0);
  assert.equal(store.view((tx) => tx.services.list()).length, 0);
});

test(`a transaction larger than MAX_TRANSACTION_BYTES (${MAX_TRANSACTION_BYTES}) is refused before it is proposed`, async () => {
  const { stores, proposer } = localStores(1);
  const store = stores[0];
  const big = makeService('big');
  big.spec?.task?.container?.env.push('X='.padEnd(MAX_TRANSACTION_BYTES, 'x'));
  await assert.rejects(
    store.update((tx) => tx.services.create(big)),
    isCode('RESOURCE_EXHAUSTED', /smaller batches/),
  );
  assert.equal(proposer.log.length, 0);
});

test('apply: indexes must strictly increase; an unreadable entry is refused everywhere alike and consumes its index', () => {
  const store = new MemoryStore();
  const data = encodeTransaction({
    timestampMs: T0,
    actions: [{ kind: 'create', table: 'services', version: 0, object: makeService('web') }],
  });
  assert.equal(store.apply(5, data).error, undefined);
  assert.throws(() => store.apply(5, data), /apply index 5 must exceed the last applied index 5/);
  assert.throws(() => store.apply(3, data), /store invariant/);
  const bad = store.apply(6, new Uint8Array([0xff, 0xff, 0xff]));
  assert.ok(bad.error && isCode('INTERNAL', /unreadable store transaction at index 6/)(bad.error));
  assert.equal(store.appliedIndex, 6);
  assert.equal(store.view((tx) => tx.services.list()).length, 1);
});

test('update() without a proposer fails UNAVAILABLE; a proposer that returns nothing is an INTERNAL error', async () => {
  const store = new MemoryStore();
  await assert.rejects(
    store.update((tx) => tx.services.create(makeService('web'))),
    isCode('UNAVAILABLE'),
  );
  store.setProposer({ propose: () => Promise.resolve(undefined) });
  await assert.rejects(
    store.update((tx) => tx.services.create(makeService('web'))),
    isCode('INTERNAL'),
  );
});

test('three stores fed the same log stay identical, and a late store replays the log to the same state', async () => {
  const { stores, proposer } = localStores(3);
  const [a, b, c] = stores as [MemoryStore, MemoryStore, MemoryStore];
  const svc = makeService('web', { replicas: 3 });
  await b.update((tx) => tx.services.create(svc)); // any store may propose
  proposer.skipIndex(); // a Raft conf change between store entries
  await c.update((tx) => {
    for (let slot = 1; slot <= 3; slot++) tx.tasks.create(makeTask(svc.id, slot, { nodeId: `n${slot}` }));
  });
  const tasks = a.view((tx) => tx.tasks.find('serviceId', svc.id));
  for (const t of tasks)
    t.status = { ...(t.status as NonNullable<typeof t.status>), state: TaskState.TASK_STATE_RUNNING };
  await a.update((tx) => tasks.forEach((t) => tx.tasks.update(t)));
  assert.equal(a.appliedIndex, 4);
  const late = new MemoryStore();
  for (const entry of proposer.log) late.apply(entry.index, entry.data);
  const expected = Buffer.from(a.snapshot());
  for (const store of [b, c, late]) assert.deepEqual(Buffer.from(store.snapshot()), expected);
});

test('asStateMachine has the shape a Raft node applies entries through', () => {
  const store = new MemoryStore();
  const machine = store.asStateMachine();
  const data = encodeTransaction({
    timestampMs: T0,
    actions: [{ kind: 'create', table: 'networks', version: 0, object: makeNetwork('n') }],
  });
  const result = machine.apply({ index: 9, data });
  assert.equal(result.index, 9);
  assert.equal(result.events[0]?.kind, 'create');
  const copy = new MemoryStore();
  copy.asStateMachine().restore(machine.snapshot());
  assert.equal(copy.appliedIndex, 9);
  assert.equal(
    copy.view((tx) => tx.networks.lookup('n').meta?.version),
    9,
  );
});
