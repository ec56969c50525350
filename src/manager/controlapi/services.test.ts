// Services through the control API: defaults, names, lookups, filters, versions, rollback,
// published port conflicts, removal.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClusterError, type ErrorCode } from '../../common/errors';
import {
  PortConfig_Protocol,
  PortConfig_PublishMode,
  RestartPolicy_Condition,
  Service,
  ServiceSpec,
  TaskState,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
  UpdateStatus_State,
} from '../../gen/cluster/v1/objects';
import { ID_LENGTH } from '../../store';
import { REMOVE_TASKS_BATCH } from './api';
import {
  fullServiceSpec,
  newTestApi,
  seed,
  simpleSpec,
  storeBytes,
  testNetwork,
  testTask,
  type TestApi,
} from './testing';

function isCode(code: ErrorCode, text?: RegExp) {
  return (e: unknown) =>
    e instanceof ClusterError && e.code === code && (text === undefined || text.test(e.message));
}

async function create(t: TestApi, spec: ServiceSpec): Promise<Service> {
  const { service } = await t.api.createService({ spec });
  assert.ok(service);
  return service;
}

function withPort(
  spec: ServiceSpec,
  publishedPort: number,
  opts: { udp?: boolean; host?: boolean } = {},
): ServiceSpec {
  spec.endpoint = {
    mode: 0,
    ports: [
      {
        name: '',
        targetPort: 80,
        publishedPort,
        protocol: opts.udp ? PortConfig_Protocol.PROTOCOL_UDP : PortConfig_Protocol.PROTOCOL_TCP,
        publishMode: opts.host
          ? PortConfig_PublishMode.PUBLISH_MODE_HOST
          : PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
      },
    ],
  };
  return spec;
}

describe('createService', () => {
  test("fills in Swarm's defaults and assigns an id", async () => {
    const t = newTestApi();
    const service = await create(
      t,
      ServiceSpec.fromPartial({ annotations: { name: 'web' }, task: { container: { image: 'nginx' } } }),
    );
    assert.equal(service.id.length, ID_LENGTH);
    assert.ok((service.meta?.version ?? 0) > 0);
    const spec = service.spec;
    assert.deepEqual(spec?.mode, { $case: 'replicated', value: { replicas: 1 } });
    for (const config of [spec?.update, spec?.rollback]) {
      assert.deepEqual(config, {
        parallelism: 1,
        delay: { seconds: 0, nanos: 0 },
        failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE,
        monitor: { seconds: 5, nanos: 0 },
        maxFailureRatio: 0,
        order: UpdateConfig_Order.ORDER_STOP_FIRST,
      });
    }
    assert.deepEqual(spec?.task?.restart, {
      condition: RestartPolicy_Condition.CONDITION_ANY,
      delay: { seconds: 5, nanos: 0 },
      maxAttempts: 0,
      window: { seconds: 0, nanos: 0 },
    });
  });

  test('keeps update settings that are given (parallelism 0 means all at once)', async () => {
    const t = newTestApi();
    const spec = simpleSpec('web');
    spec.update = {
      parallelism: 0,
      delay: undefined,
      failureAction: 1,
      monitor: undefined,
      maxFailureRatio: 0.5,
      order: 1,
    };
    const service = await create(t, spec);
    assert.equal(service.spec?.update?.parallelism, 0);
    assert.equal(service.spec?.update?.maxFailureRatio, 0.5);
    assert.deepEqual(service.spec?.update?.monitor, { seconds: 5, nanos: 0 });
  });

  test('generates a name when none is given', async () => {
    const t = newTestApi();
    const service = await create(t, ServiceSpec.fromPartial({ task: { container: { image: 'nginx' } } }));
    assert.match(service.spec?.annotations?.name ?? '', /^[a-z]+_[a-z]+$/);
  });

  test('names are unique; the refused create writes nothing', async () => {
    const t = newTestApi();
    const first = await create(t, simpleSpec('web'));
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.createService({ spec: simpleSpec('web') }),
      isCode('ALREADY_EXISTS', new RegExp(`'web' already exists \\(id ${first.id}\\)`)),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('network targets are resolved to ids; unknown and ingress networks are refused', async () => {
    const t = newTestApi();
    const backend = testNetwork('backend', { subnet: '10.1.0.0/24' });
    await seed(t.store, { networks: [backend, testNetwork('ingress', { ingress: true })] });
    const service = await create(t, fullServiceSpec('web', 'backend'));
    assert.equal(service.spec?.task?.networks[0]?.target, backend.id);

    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.createService({ spec: fullServiceSpec('a', 'nope') }),
      isCode('INVALID_ARGUMENT', /task\.networks\[0\]\.target: network 'nope' not found/),
    );
    await assert.rejects(
      t.api.createService({ spec: fullServiceSpec('b', 'ingress') }),
      isCode('INVALID_ARGUMENT', /ingress network/),
    );
    const twice = fullServiceSpec('c', 'backend');
    twice.task?.networks.push({ target: backend.id, aliases: [] });
    await assert.rejects(t.api.createService({ spec: twice }), isCode('INVALID_ARGUMENT', /attached twice/));
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('an ingress port in use by another service is refused, naming that service', async () => {
    const t = newTestApi();
    const a = await create(t, withPort(simpleSpec('a'), 8080));
    const before = storeBytes(t.store);
    const conflict = new RegExp(
      `port '8080/tcp' is already in use by service 'a' \\(${a.id}\\) as an ingress port`,
    );
    await assert.rejects(
      t.api.createService({ spec: withPort(simpleSpec('b'), 8080) }),
      isCode('INVALID_ARGUMENT', conflict),
    );
    await assert.rejects(
      t.api.createService({ spec: withPort(simpleSpec('b'), 8080, { host: true }) }),
      isCode('INVALID_ARGUMENT', conflict),
    );
    assert.deepEqual(storeBytes(t.store), before);
    // Another protocol, another port, or host mode against host mode are fine.
    await create(t, withPort(simpleSpec('udp'), 8080, { udp: true }));
    await create(t, withPort(simpleSpec('other'), 8081));
    await create(t, withPort(simpleSpec('h1'), 9000, { host: true }));
    await create(t, withPort(simpleSpec('h2'), 9000, { host: true }));
    await assert.rejects(
      t.api.createService({ spec: withPort(simpleSpec('i'), 9000) }),
      isCode('INVALID_ARGUMENT', /service 'h1'.*as a host-published port/),
    );
  });

  test('ports the allocator assigned count as in use', async () => {
    const t = newTestApi();
    const a = await create(t, withPort(simpleSpec('a'), 0));
    // The allocator fills endpoint.ports with the port it chose.
    await t.store.update((tx) => {
      const s = tx.services.get(a.id);
      assert.ok(s?.spec?.endpoint);
      s.endpoint = {
        spec: s.spec.endpoint,
        ports: [{ name: '', targetPort: 80, publishedPort: 30001, protocol: 0, publishMode: 0 }],
        virtualIps: [],
      };
      tx.services.update(s);
    });
    await assert.rejects(
      t.api.createService({ spec: withPort(simpleSpec('b'), 30001) }),
      isCode('INVALID_ARGUMENT', /service 'a'/),
    );
  });

  test('concurrent creates cannot both take one port', async () => {
    const t = newTestApi();
    const results = await Promise.allSettled([
      t.api.createService({ spec: withPort(simpleSpec('a'), 8080) }),
      t.api.createService({ spec: withPort(simpleSpec('b'), 8080) }),
    ]);
    assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
  });
});

describe('getService and listServices', () => {
  test('lookup by name, full id, or unique prefix; ambiguity and absence are errors', async () => {
    const t = newTestApi();
    const web = await create(t, simpleSpec('web'));
    const db = await create(t, simpleSpec('db'));
    for (const ref of ['web', web.id, web.id.slice(0, 6)]) {
      const { service } = await t.api.getService({ serviceId: ref });
      assert.equal(service?.id, web.id, ref);
    }
    // Two ids that share a prefix, written as another component would.
    await t.store.update((tx) => {
      tx.services.create(Service.fromPartial({ id: 'zz' + 'a'.repeat(23), spec: simpleSpec('z1') }));
      tx.services.create(Service.fromPartial({ id: 'zz' + 'b'.repeat(23), spec: simpleSpec('z2') }));
    });
    await assert.rejects(t.api.getService({ serviceId: 'zz' }), isCode('INVALID_ARGUMENT', /ambiguous/));
    assert.equal((await t.api.getService({ serviceId: 'zzb' })).service?.spec?.annotations?.name, 'z2');
    assert.equal((await t.api.getService({ serviceId: db.id })).service?.spec?.annotations?.name, 'db');
    await assert.rejects(
      t.api.getService({ serviceId: 'nope' }),
      isCode('NOT_FOUND', /service 'nope' not found/),
    );
    await assert.rejects(t.api.getService({ serviceId: '' }), isCode('INVALID_ARGUMENT'));
  });

  test("filters: name and id prefixes, labels, mode, as Docker's", async () => {
    const t = newTestApi();
    const web = await create(
      t,
      ServiceSpec.fromPartial({
        ...simpleSpec('web'),
        annotations: { name: 'web', labels: { tier: 'front', env: 'prod' } },
      }),
    );
    await create(
      t,
      ServiceSpec.fromPartial({
        ...simpleSpec('webhook'),
        annotations: { name: 'webhook', labels: { tier: 'back' } },
      }),
    );
    await create(t, simpleSpec('agent', { global: true }));
    const names = async (filters: Record<string, string>) =>
      (await t.api.listServices({ filters })).services.map((s) => s.spec?.annotations?.name).sort();
    assert.deepEqual(await names({}), ['agent', 'web', 'webhook']);
    assert.deepEqual(await names({ name: 'web' }), ['web', 'webhook']);
    assert.deepEqual(await names({ name: 'webh,ag' }), ['agent', 'webhook']);
    assert.deepEqual(await names({ id: web.id.slice(0, 8) }), ['web']);
    assert.deepEqual(await names({ label: 'tier' }), ['web', 'webhook']);
    assert.deepEqual(await names({ label: 'tier=front' }), ['web']);
    assert.deepEqual(await names({ label: 'tier=front,env=dev' }), []);
    assert.deepEqual(await names({ mode: 'global' }), ['agent']);
    assert.deepEqual(await names({ mode: 'replicated', name: 'web' }), ['web', 'webhook']);
    await assert.rejects(
      t.api.listServices({ filters: { mode: 'sometimes' } }),
      isCode('INVALID_ARGUMENT', /mode/),
    );
    await assert.rejects(
      t.api.listServices({ filters: { colour: 'red' } }),
      isCode('INVALID_ARGUMENT', /invalid filter 'colour'/),
    );
  });
});

describe('updateService', () => {
  test('needs the version read; a stale version is a CONFLICT that writes nothing', async () => {
    const t = newTestApi();
    const web = await create(t, simpleSpec('web', { replicas: 1 }));
    const version = web.meta?.version ?? 0;
    await assert.rejects(
      t.api.updateService({
        serviceId: 'web',
        version: 0,
        spec: simpleSpec('web', { replicas: 2 }),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /version/),
    );
    const { service } = await t.api.updateService({
      serviceId: 'web',
      version,
      spec: simpleSpec('web', { replicas: 3 }),
      rollback: '',
    });
    assert.deepEqual(service?.spec?.mode, { $case: 'replicated', value: { replicas: 3 } });
    assert.deepEqual(service?.previousSpec?.mode, { $case: 'replicated', value: { replicas: 1 } });
    assert.ok((service?.meta?.version ?? 0) > version);
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.updateService({
        serviceId: 'web',
        version,
        spec: simpleSpec('web', { replicas: 5 }),
        rollback: '',
      }),
      isCode('CONFLICT', /changed by someone else/),
    );
    assert.deepEqual(storeBytes(t.store), before);
  });

  test('a negative pids limit is INVALID_ARGUMENT and leaves the service as it was', async () => {
    const t = newTestApi();
    const spec = simpleSpec('web');
    const web = await create(t, spec);
    const before = storeBytes(t.store);
    const withPids = (pids: number) =>
      ServiceSpec.fromPartial({ ...spec, task: { ...spec.task, resources: { limits: { pids } } } });
    await assert.rejects(
      t.api.updateService({
        serviceId: 'web',
        version: web.meta?.version ?? 0,
        spec: withPids(-1),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /task\.resources\.limits\.pids: must be a whole number ≥ 0/),
    );
    assert.deepEqual(storeBytes(t.store), before);
    const { service } = await t.api.updateService({
      serviceId: 'web',
      version: web.meta?.version ?? 0,
      spec: withPids(100),
      rollback: '',
    });
    assert.equal(service?.spec?.task?.resources?.limits?.pids, 100);
  });

  test('rollback to the previous spec swaps the two and marks the rollback started', async () => {
    const now = new Date('2026-01-02T03:04:05Z');
    const t = newTestApi({ clock: () => now });
    const web = await create(t, simpleSpec('web', { image: 'nginx:1.26' }));
    await assert.rejects(
      t.api.updateService({
        serviceId: 'web',
        version: web.meta?.version ?? 0,
        spec: undefined,
        rollback: 'previous',
      }),
      isCode('FAILED_PRECONDITION', /does not have a previous spec/),
    );
    const updated = (
      await t.api.updateService({
        serviceId: 'web',
        version: web.meta?.version ?? 0,
        spec: simpleSpec('web', { image: 'nginx:1.27' }),
        rollback: '',
      })
    ).service;
    const rolled = (
      await t.api.updateService({
        serviceId: 'web',
        version: updated?.meta?.version ?? 0,
        spec: undefined,
        rollback: 'previous',
      })
    ).service;
    assert.equal(rolled?.spec?.task?.container?.image, 'nginx:1.26');
    assert.equal(rolled?.previousSpec?.task?.container?.image, 'nginx:1.27');
    assert.equal(rolled?.updateStatus?.state, UpdateStatus_State.STATE_ROLLBACK_STARTED);
    assert.deepEqual(rolled?.updateStatus?.startedAt, now);
    // A plain update afterwards clears the rollback status (the updater owns it from there).
    const again = (
      await t.api.updateService({
        serviceId: 'web',
        version: rolled?.meta?.version ?? 0,
        spec: simpleSpec('web', { image: 'nginx:1.28' }),
        rollback: '',
      })
    ).service;
    assert.equal(again?.updateStatus, undefined);
    await assert.rejects(
      t.api.updateService({ serviceId: 'web', version: 1, spec: undefined, rollback: 'yesterday' }),
      isCode('INVALID_ARGUMENT', /rollback/),
    );
  });

  test('renames and mode changes are refused; scaling a global service says why', async () => {
    const t = newTestApi();
    const web = await create(t, simpleSpec('web'));
    const agent = await create(t, simpleSpec('agent', { global: true }));
    const before = storeBytes(t.store);
    await assert.rejects(
      t.api.updateService({
        serviceId: web.id,
        version: web.meta?.version ?? 0,
        spec: simpleSpec('www'),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /renaming services is not supported/),
    );
    await assert.rejects(
      t.api.updateService({
        serviceId: agent.id,
        version: agent.meta?.version ?? 0,
        spec: simpleSpec('agent', { replicas: 3 }),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /global service.*scale applies to replicated services only/),
    );
    await assert.rejects(
      t.api.updateService({
        serviceId: web.id,
        version: web.meta?.version ?? 0,
        spec: simpleSpec('web', { global: true }),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /cannot become global/),
    );
    await assert.rejects(
      t.api.updateService({
        serviceId: web.id,
        version: web.meta?.version ?? 0,
        spec: simpleSpec('web', { replicas: -2 }),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /replicas/),
    );
    assert.deepEqual(storeBytes(t.store), before);
    // An empty name in the new spec keeps the current one.
    const unnamed = simpleSpec('', { replicas: 2 });
    const { service } = await t.api.updateService({
      serviceId: web.id,
      version: web.meta?.version ?? 0,
      spec: unnamed,
      rollback: '',
    });
    assert.equal(service?.spec?.annotations?.name, 'web');
  });

  test('a service keeps its own published port across updates; another one is still refused', async () => {
    const t = newTestApi();
    const a = await create(t, withPort(simpleSpec('a'), 8080));
    const b = await create(t, simpleSpec('b'));
    const updated = await t.api.updateService({
      serviceId: 'a',
      version: a.meta?.version ?? 0,
      spec: withPort(simpleSpec('a', { replicas: 2 }), 8080),
      rollback: '',
    });
    assert.ok(updated.service);
    await assert.rejects(
      t.api.updateService({
        serviceId: 'b',
        version: b.meta?.version ?? 0,
        spec: withPort(simpleSpec('b'), 8080),
        rollback: '',
      }),
      isCode('INVALID_ARGUMENT', /service 'a'/),
    );
  });
});

describe('removeService', () => {
  test("deletes the service and sets its tasks' desired state to REMOVE, in batches", async () => {
    const t = newTestApi();
    const web = await create(t, simpleSpec('web'));
    const db = await create(t, simpleSpec('db'));
    const count = REMOVE_TASKS_BATCH * 2 + 3;
    const webTasks = Array.from({ length: count }, (_, i) => testTask(web.id, i + 1));
    const done = testTask(web.id, 1, { desiredState: TaskState.TASK_STATE_REMOVE });
    const dbTask = testTask(db.id, 1);
    await seed(t.store, { tasks: [...webTasks, done, dbTask] });

    await t.api.removeService({ serviceId: 'web' });
    t.store.view((tx) => {
      assert.equal(tx.services.get(web.id), undefined);
      const states = tx.tasks.find('serviceId', web.id).map((task) => task.desiredState);
      assert.equal(states.length, count + 1);
      assert.ok(states.every((s) => s === TaskState.TASK_STATE_REMOVE));
      assert.equal(tx.tasks.get(dbTask.id)?.desiredState, TaskState.TASK_STATE_RUNNING);
    });
    await assert.rejects(t.api.removeService({ serviceId: 'web' }), isCode('NOT_FOUND'));
  });
});
