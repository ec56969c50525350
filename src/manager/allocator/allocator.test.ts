// The allocator's rules: ingress ports asked as 0 get unique ports from the dynamic range, kept
// across passes and leader changes; tasks go NEW → PENDING with the service's endpoint only
// once it is allocated.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  PortConfig_Protocol,
  PortConfig_PublishMode,
  TaskState,
  type PortConfig,
  type Service,
} from '../../gen/cluster/v1/objects';
import { LocalProposer, MemoryStore } from '../../store';
import { localStores } from '../../store/testing';
import { Plan } from '../orchestrator/plan';
import { readClusterState, writePlan } from '../orchestrator/reconciler';
import { applyPlan, planOnce, service, state, task } from '../orchestrator/testing';
import {
  INGRESS_PORT_RANGE_END,
  INGRESS_PORT_RANGE_START,
  planAllocation,
  type TaskAllocator,
} from './allocator';

function port(target: number, published = 0, options: Partial<PortConfig> = {}): PortConfig {
  return {
    name: '',
    protocol: PortConfig_Protocol.PROTOCOL_TCP,
    targetPort: target,
    publishedPort: published,
    publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
    ...options,
  };
}

function withPorts(id: string, ports: PortConfig[]): Service {
  const svc = service(id);
  if (svc.spec) svc.spec.endpoint = { mode: 0, ports };
  return svc;
}

const published = (obj: { endpoint?: { ports: PortConfig[] } | undefined } | undefined) =>
  (obj?.endpoint?.ports ?? []).map((p) => p.publishedPort);

describe('allocator: ingress ports', () => {
  it('gives ports asked as 0 distinct numbers from the range, explicit ones as asked', () => {
    const a = withPorts('a', [port(80), port(443)]);
    const b = withPorts('b', [port(80, 8080), port(81)]);
    const plan = planOnce((p) => planAllocation(state({ services: [a, b] }), p));
    const pa = published(plan.updatedServices.get('a'));
    const pb = published(plan.updatedServices.get('b'));
    assert.deepEqual(pa, [INGRESS_PORT_RANGE_START, INGRESS_PORT_RANGE_START + 1]);
    assert.deepEqual(pb, [8080, INGRESS_PORT_RANGE_START + 2]);
  });

  it('skips ports another service publishes explicitly in the range', () => {
    const a = withPorts('a', [port(80, INGRESS_PORT_RANGE_START)]);
    const b = withPorts('b', [port(80)]);
    const plan = planOnce((p) => planAllocation(state({ services: [b, a] }), p));
    assert.deepEqual(published(plan.updatedServices.get('b')), [INGRESS_PORT_RANGE_START + 1]);
  });

  it('the same port number may be used once per protocol', () => {
    const a = withPorts('a', [port(53), port(53, 0, { protocol: PortConfig_Protocol.PROTOCOL_UDP })]);
    const plan = planOnce((p) => planAllocation(state({ services: [a] }), p));
    assert.deepEqual(published(plan.updatedServices.get('a')), [
      INGRESS_PORT_RANGE_START,
      INGRESS_PORT_RANGE_START,
    ]);
  });

  it('leaves host-mode ports to the scheduler', () => {
    const a = withPorts('a', [port(80, 0, { publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST })]);
    const plan = planOnce((p) => planAllocation(state({ services: [a] }), p));
    assert.deepEqual(published(plan.updatedServices.get('a')), [0]);
  });

  it('is idempotent and keeps ports when the spec changes elsewhere', () => {
    let s = state({ services: [withPorts('a', [port(80)]), withPorts('b', [port(80)])] });
    s = applyPlan(
      s,
      planOnce((p) => planAllocation(s, p)),
    );
    assert.ok(planOnce((p) => planAllocation(s, p)).empty);
    // b adds a port: its first port keeps its number, the new one gets a fresh number.
    const b = structuredClone(s.services[1]);
    assert.ok(b?.spec?.endpoint);
    b.spec.endpoint.ports.push(port(9000));
    s = { ...s, services: [s.services[0], b] };
    const plan = planOnce((p) => planAllocation(s, p));
    assert.deepEqual(published(plan.updatedServices.get('b')), [
      INGRESS_PORT_RANGE_START + 1,
      INGRESS_PORT_RANGE_START + 2,
    ]);
  });

  it('keeps every port after a leader change: a new store restored from a snapshot', async () => {
    const { stores } = localStores(1);
    const [store] = stores;
    assert.ok(store);
    await store.update((tx) => {
      tx.services.create(withPorts('a', [port(80)]));
      tx.services.create(withPorts('b', [port(80)]));
    });
    const first = new Plan();
    planAllocation(readClusterState(store), first);
    assert.ok(await writePlan(store, first));
    const restored = new MemoryStore();
    restored.restore(store.snapshot());
    new LocalProposer(restored.appliedIndex + 1).attach(restored);
    await restored.update((tx) => tx.services.create(withPorts('c', [port(80)])));
    const second = new Plan();
    planAllocation(readClusterState(restored), second);
    assert.deepEqual([...second.updatedServices.keys()], ['c']);
    assert.deepEqual(published(second.updatedServices.get('c')), [INGRESS_PORT_RANGE_START + 2]);
  });

  it('reports an exhausted range on the tasks and allocates nothing', () => {
    const size = INGRESS_PORT_RANGE_END - INGRESS_PORT_RANGE_START + 1;
    const hog = withPorts(
      'hog',
      Array.from({ length: size }, (_, i) => port(i + 1)),
    );
    const late = withPorts('late', [port(80)]);
    const waiting = task(late, { slot: 1, state: TaskState.TASK_STATE_NEW });
    const plan = planOnce((p) => planAllocation(state({ services: [hog, late], tasks: [waiting] }), p));
    assert.equal(plan.updatedServices.has('late'), false);
    assert.match(plan.updatedTasks.get(waiting.id)?.status?.message ?? '', /no free ingress port/);
    assert.equal(plan.updatedTasks.get(waiting.id)?.status?.state, TaskState.TASK_STATE_NEW);
  });
});

describe('allocator: tasks', () => {
  it('moves NEW tasks to PENDING with the allocated endpoint', () => {
    const a = withPorts('a', [port(80)]);
    const t = task(a, { slot: 1, state: TaskState.TASK_STATE_NEW });
    const plan = planOnce((p) => planAllocation(state({ services: [a], tasks: [t] }), p));
    const pending = plan.updatedTasks.get(t.id);
    assert.equal(pending?.status?.state, TaskState.TASK_STATE_PENDING);
    assert.deepEqual(published(pending), [INGRESS_PORT_RANGE_START]);
  });

  it('leaves tasks not meant to run, and tasks past NEW, alone', () => {
    const a = service('a');
    const stopped = task(a, {
      slot: 1,
      state: TaskState.TASK_STATE_NEW,
      desired: TaskState.TASK_STATE_SHUTDOWN,
    });
    const assigned = task(a, { slot: 2, state: TaskState.TASK_STATE_ASSIGNED });
    const s = state({ services: [a], tasks: [stopped, assigned] });
    const plan = planOnce((p) => planAllocation(s, p));
    assert.equal(plan.updatedTasks.size, 0);
  });

  it('an extension allocates services first (prepare once per pass), then tasks; changes are written', () => {
    const a = service('a');
    const t = task(a, { slot: 1, state: TaskState.TASK_STATE_NEW });
    const calls: string[] = [];
    const vips: TaskAllocator = {
      name: 'vips',
      prepare: () => calls.push('prepare'),
      allocateService: (svc) => {
        calls.push(`service ${svc.id}`);
        if (svc.endpoint) svc.endpoint.virtualIps = [{ networkId: 'net', addr: '10.0.0.2/24' }];
        return undefined;
      },
      allocateTask: (tk, svc) => {
        calls.push(`task ${tk.id}`);
        assert.equal(svc.endpoint?.virtualIps[0]?.addr, '10.0.0.2/24');
        return undefined;
      },
    };
    const s = state({ services: [a], tasks: [t] });
    const plan = planOnce((p) => planAllocation(s, p, { taskAllocators: [vips] }));
    assert.deepEqual(calls, ['prepare', 'service a', `task ${t.id}`]);
    assert.equal(plan.updatedServices.get('a')?.endpoint?.virtualIps[0]?.addr, '10.0.0.2/24');
    assert.equal(plan.updatedTasks.get(t.id)?.endpoint?.virtualIps[0]?.addr, '10.0.0.2/24');
    const after = applyPlan(s, plan);
    const again = planOnce((p) => planAllocation(after, p, { taskAllocators: [vips] }));
    assert.equal(again.updatedServices.size, 0, 'an unchanged service is not written again');
  });

  it('a task allocator can hold a task back with a reason (the networking extension point)', () => {
    const a = service('a');
    const t = task(a, { slot: 1, state: TaskState.TASK_STATE_NEW });
    const networks: TaskAllocator = { name: 'networks', allocateTask: () => 'waiting for network addresses' };
    const s = state({ services: [a], tasks: [t] });
    const plan = planOnce((p) => planAllocation(s, p, { taskAllocators: [networks] }));
    assert.equal(plan.updatedTasks.get(t.id)?.status?.state, TaskState.TASK_STATE_NEW);
    assert.equal(plan.updatedTasks.get(t.id)?.status?.message, 'waiting for network addresses');
    const after = applyPlan(s, plan);
    const again = planOnce((p) => planAllocation(after, p, { taskAllocators: [networks] }));
    assert.equal(again.updatedTasks.size, 0, 'an unchanged reason is not written again');
  });
});
