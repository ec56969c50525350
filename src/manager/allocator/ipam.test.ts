// IPAM rules: subnets from the default pool never overlap, one VNI per network, unique addresses
// that are never the network, broadcast or gateway address, and no address handed out twice,
// also after the state is rebuilt from the store's objects (a leader change).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { ClusterError } from '../../common/errors';
import {
  Ipam,
  VNI_MIN,
  addressOf,
  allocateAttachments,
  allocateVips,
  broadcastOf,
  parseSubnet,
  subnetContains,
  subnetsOverlap,
  type AddressOwner,
  type NetworkView,
  type NodeView,
  type ServiceView,
  type TaskView,
} from './ipam';

const task = (id: string): AddressOwner => ({ kind: 'task', id });
const node = (id: string): AddressOwner => ({ kind: 'node', id });
const vip = (id: string): AddressOwner => ({ kind: 'vip', id });

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof ClusterError) return e.code;
    throw e;
  }
  return 'none';
}

describe('ipam: networks', () => {
  it('carves /24 subnets from 10.0.0.0/8 in order, with the first host as gateway', () => {
    const ipam = new Ipam();
    assert.deepEqual(ipam.allocateNetwork('a'), {
      networkId: 'a',
      subnet: '10.0.0.0/24',
      gateway: '10.0.0.1',
      vni: VNI_MIN,
    });
    assert.equal(ipam.allocateNetwork('b').subnet, '10.0.1.0/24');
  });

  it('is idempotent for a known network', () => {
    const ipam = new Ipam();
    const first = ipam.allocateNetwork('a');
    assert.deepEqual(ipam.allocateNetwork('a', { subnet: '192.168.0.0/24' }), first);
  });

  it('skips pool subnets that a user-given subnet overlaps', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('user', { subnet: '10.0.0.0/23' });
    ipam.allocateNetwork('big', { subnet: '10.0.4.0/22' });
    assert.equal(ipam.allocateNetwork('a').subnet, '10.0.2.0/24');
    assert.equal(ipam.allocateNetwork('b').subnet, '10.0.3.0/24');
    assert.equal(ipam.allocateNetwork('c').subnet, '10.0.8.0/24');
  });

  it('rejects an overlapping subnet, a malformed one and a gateway outside the subnet', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('a', { subnet: '10.10.0.0/16' });
    assert.equal(
      code(() => ipam.allocateNetwork('b', { subnet: '10.10.5.0/24' })),
      'CONFLICT',
    );
    assert.equal(
      code(() => ipam.allocateNetwork('c', { subnet: '10.11.0.1/24' })),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      code(() => ipam.allocateNetwork('d', { subnet: '10.12.0.0' })),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      code(() => ipam.allocateNetwork('e', { subnet: '10.13.0.0/24', gateway: '10.13.0.255' })),
      'INVALID_ARGUMENT',
    );
    assert.equal(
      ipam.allocateNetwork('f', { subnet: '10.14.0.0/24', gateway: '10.14.0.254' }).gateway,
      '10.14.0.254',
    );
  });

  it('gives each network its own VNI from 4096 and frees it with the network', () => {
    const ipam = new Ipam();
    assert.equal(ipam.allocateNetwork('a').vni, 4096);
    assert.equal(ipam.allocateNetwork('b').vni, 4097);
    assert.equal(ipam.allocateNetwork('c', { vni: 9000 }).vni, 9000);
    assert.equal(
      code(() => ipam.allocateNetwork('d', { vni: 4097 })),
      'CONFLICT',
    );
    ipam.releaseNetwork('a');
    assert.equal(ipam.allocateNetwork('e').vni, 4096);
    assert.equal(ipam.allocateNetwork('e').subnet, '10.0.0.0/24', 'the subnet was freed too');
  });
});

describe('ipam: addresses', () => {
  it('gives tasks, nodes and VIPs distinct host addresses, never the gateway', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('n', { subnet: '10.20.0.0/24' });
    assert.equal(ipam.allocateAddress('n', vip('web')), '10.20.0.2/24');
    assert.equal(ipam.allocateAddress('n', node('node1')), '10.20.0.3/24');
    assert.equal(ipam.allocateAddress('n', task('t1')), '10.20.0.4/24');
    assert.equal(ipam.allocateAddress('n', task('t1')), '10.20.0.4/24', 'idempotent per owner');
    assert.equal(ipam.addressOf('n', node('node1')), '10.20.0.3/24');
  });

  it('does not reuse a released address at once, and reuses it after wrapping around', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('n', { subnet: '10.20.0.0/29' }); // hosts .1-.6, gateway .1
    const held = ['a', 'b', 'c', 'd', 'e'].map((id) => ipam.allocateAddress('n', task(id)));
    assert.deepEqual(held, ['10.20.0.2/29', '10.20.0.3/29', '10.20.0.4/29', '10.20.0.5/29', '10.20.0.6/29']);
    assert.equal(
      code(() => ipam.allocateAddress('n', task('f'))),
      'RESOURCE_EXHAUSTED',
    );
    ipam.releaseAddress('n', task('b'));
    assert.equal(ipam.allocateAddress('n', task('f')), '10.20.0.3/29');
  });

  it('releases an owner everywhere and everything with its network', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('n1');
    ipam.allocateNetwork('n2');
    ipam.allocateAddress('n1', task('t'));
    ipam.allocateAddress('n2', task('t'));
    ipam.releaseOwner(task('t'));
    assert.deepEqual([ipam.addresses('n1'), ipam.addresses('n2')], [[], []]);
    assert.equal(
      code(() => ipam.allocateAddress('missing', task('t'))),
      'NOT_FOUND',
    );
  });
});

describe('ipam: allocator helpers', () => {
  it('attaches a task to each network with its aliases, all or nothing', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('a', { subnet: '10.30.0.0/24' });
    ipam.allocateNetwork('full', { subnet: '10.31.0.0/30' }); // one host besides the gateway
    ipam.allocateAddress('full', task('other'));
    assert.deepEqual(allocateAttachments(ipam, 't1', [{ networkId: 'a', aliases: ['db'] }]), [
      { networkId: 'a', addresses: ['10.30.0.2/24'], aliases: ['db'] },
    ]);
    assert.equal(
      code(() =>
        allocateAttachments(ipam, 't2', [
          { networkId: 'a', aliases: [] },
          { networkId: 'full', aliases: [] },
        ]),
      ),
      'RESOURCE_EXHAUSTED',
    );
    assert.equal(ipam.addressOf('a', task('t2')), undefined, 'the partial allocation was undone');
    // An owner's existing address survives a failed call that touched it.
    assert.equal(
      code(() =>
        allocateAttachments(ipam, 't1', [
          { networkId: 'a', aliases: [] },
          { networkId: 'full', aliases: [] },
        ]),
      ),
      'RESOURCE_EXHAUSTED',
    );
    assert.equal(ipam.addressOf('a', task('t1')), '10.30.0.2/24');
  });

  it('gives a service one VIP per network', () => {
    const ipam = new Ipam();
    ipam.allocateNetwork('a');
    ipam.allocateNetwork('b');
    assert.deepEqual(allocateVips(ipam, 'web', ['a', 'b']), [
      { networkId: 'a', addr: '10.0.0.2/24' },
      { networkId: 'b', addr: '10.0.1.2/24' },
    ]);
  });
});

// The store's objects as the allocator would have written them from an Ipam's state.
interface Objects {
  networks: NetworkView[];
  services: ServiceView[];
  tasks: TaskView[];
  nodes: NodeView[];
}

function emptyObjects(): Objects {
  return { networks: [], services: [], tasks: [], nodes: [] };
}

function record(objects: Objects, networkId: string, owner: AddressOwner, address: string): void {
  if (owner.kind === 'vip') {
    let service = objects.services.find((s) => s.id === owner.id);
    if (!service) {
      service = { id: owner.id, endpoint: { virtualIps: [] } };
      objects.services.push(service);
    }
    (service.endpoint?.virtualIps as { networkId: string; addr: string }[]).push({
      networkId,
      addr: address,
    });
  } else if (owner.kind === 'task') {
    objects.tasks.push({ id: owner.id, networks: [{ networkId, addresses: [address] }] });
  } else {
    objects.nodes.push({ id: owner.id, attachments: [{ networkId, addresses: [address] }] });
  }
}

describe('ipam: rebuilt from the store', () => {
  it('restores subnets, VNIs and addresses, and never hands a held one out again', () => {
    const first = new Ipam();
    const objects = emptyObjects();
    for (const id of ['n1', 'n2']) {
      const allocation = first.allocateNetwork(id);
      // The allocated subnet is stored in the network's ipam (not its spec).
      objects.networks.push({ id, vni: allocation.vni, ipam: allocation });
    }
    const owners = [vip('web'), node('node1'), task('t1'), task('t2')];
    for (const owner of owners) {
      for (const id of ['n1', 'n2']) record(objects, id, owner, first.allocateAddress(id, owner));
    }

    const second = Ipam.fromObjects(objects.networks, objects.services, objects.tasks, objects.nodes);
    assert.deepEqual(second.conflicts, []);
    assert.deepEqual(second.network('n1'), first.network('n1'));
    assert.deepEqual(second.addresses('n2'), first.addresses('n2'));
    for (const owner of owners) assert.equal(second.addressOf('n1', owner), first.addressOf('n1', owner));
    const fresh = second.allocateAddress('n1', task('t3'));
    assert.ok(!first.addresses('n1').includes(fresh.split('/')[0] ?? ''));
    assert.notEqual(second.allocateNetwork('n3').subnet, first.network('n1')?.subnet);
    assert.equal(second.allocateNetwork('n3').vni, VNI_MIN + 2);
  });

  it('continues after the highest stored address rather than refilling a gap at once', () => {
    const ipam = Ipam.fromObjects(
      [{ id: 'n', vni: 4096, spec: { ipam: { subnet: '10.1.0.0/24', gateway: '' } } }],
      [],
      ['10.1.0.2/24', '10.1.0.4/24', '10.1.0.5/24'].map((address, i) => ({
        id: `t${i}`,
        networks: [{ networkId: 'n', addresses: [address] }],
      })),
      [],
    );
    assert.equal(ipam.allocateAddress('n', task('new')), '10.1.0.6/24');
  });

  it('lets a network with a stored subnet keep it even when listed after pool networks', () => {
    const ipam = Ipam.fromObjects(
      [
        { id: 'pool', vni: 0 },
        { id: 'fixed', vni: 5000, spec: { ipam: { subnet: '10.0.0.0/24', gateway: '' } } },
      ],
      [],
      [],
      [],
    );
    assert.equal(ipam.network('fixed')?.subnet, '10.0.0.0/24');
    assert.equal(ipam.network('pool')?.subnet, '10.0.1.0/24');
  });

  it('reports a stored duplicate instead of giving it to two owners', () => {
    const ipam = Ipam.fromObjects(
      [{ id: 'n', vni: 4096, spec: { ipam: { subnet: '10.1.0.0/24', gateway: '' } } }],
      [],
      [
        { id: 'a', networks: [{ networkId: 'n', addresses: ['10.1.0.7/24'] }] },
        { id: 'b', networks: [{ networkId: 'n', addresses: ['10.1.0.7/24'] }] },
        { id: 'c', networks: [{ networkId: 'n', addresses: ['10.1.0.255/24'] }] },
      ],
      [],
    );
    assert.equal(ipam.addressOf('n', task('a')), '10.1.0.7/24');
    assert.deepEqual(
      ipam.conflicts.map((c) => c.owner.id),
      ['b', 'c'],
    );
    assert.notEqual(ipam.allocateAddress('n', task('b')), '10.1.0.7/24');
  });
});

// ------------------------------------------------------------------ properties

type Op =
  | { op: 'alloc'; network: number; owner: AddressOwner }
  | { op: 'release'; network: number; owner: AddressOwner }
  | { op: 'rebuild' };

const ownerArb = fc.record({
  kind: fc.constantFrom('task' as const, 'node' as const, 'vip' as const),
  id: fc.integer({ min: 0, max: 15 }).map(String),
});
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('alloc' as const),
      network: fc.integer({ min: 0, max: 1 }),
      owner: ownerArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('release' as const),
      network: fc.integer({ min: 0, max: 1 }),
      owner: ownerArb,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('rebuild' as const) }) },
);

describe('ipam: properties', () => {
  it('random allocate/release/rebuild never duplicates an address or leaves the host range', () => {
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 30, maxLength: 150, size: 'max' }), (ops) => {
        // Small subnets (/28: 13 usable) so exhaustion and wrap-around happen.
        const specs = [
          { id: 'n0', subnet: '10.50.0.0/28', gateway: '' },
          { id: 'n1', subnet: '10.50.0.16/28', gateway: '10.50.0.30' },
        ];
        let ipam = new Ipam();
        for (const spec of specs) ipam.allocateNetwork(spec.id, spec);
        // What the store holds: network → owner key → address.
        const held = specs.map(() => new Map<string, { owner: AddressOwner; address: string }>());
        for (const step of ops) {
          if (step.op === 'rebuild') {
            const objects = emptyObjects();
            specs.forEach((spec, i) => {
              objects.networks.push({
                id: spec.id,
                vni: ipam.network(spec.id)?.vni ?? 0,
                spec: { ipam: spec },
              });
              for (const { owner, address } of held[i]?.values() ?? [])
                record(objects, spec.id, owner, address);
            });
            ipam = Ipam.fromObjects(objects.networks, objects.services, objects.tasks, objects.nodes);
            assert.deepEqual(ipam.conflicts, []);
            continue;
          }
          const spec = specs[step.network];
          const table = held[step.network];
          if (!spec || !table) continue;
          const key = `${step.owner.kind}:${step.owner.id}`;
          if (step.op === 'release') {
            ipam.releaseAddress(spec.id, step.owner);
            table.delete(key);
            continue;
          }
          let address: string;
          try {
            address = ipam.allocateAddress(spec.id, step.owner);
          } catch (e) {
            assert.ok(e instanceof ClusterError && e.code === 'RESOURCE_EXHAUSTED');
            assert.equal(table.size, 13, 'exhausted only when every host address is held');
            continue;
          }
          const before = table.get(key);
          if (before) assert.equal(address, before.address, 'an owner keeps its address');
          table.set(key, { owner: step.owner, address });
          const subnet = parseSubnet(spec.subnet);
          const value = addressOf(address) ?? -1;
          const gateway = addressOf(ipam.network(spec.id)?.gateway ?? '') ?? -1;
          assert.ok(subnetContains(subnet, value));
          assert.ok(value !== subnet.base && value !== broadcastOf(subnet) && value !== gateway);
          const all = [...table.values()].map((h) => h.address);
          assert.equal(new Set(all).size, all.length, `duplicate address in ${all.join(',')}`);
        }
      }),
      { numRuns: 300 },
    );
  });

  it('pool subnets never overlap whatever the order of creation and removal', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.tuple(
            fc.boolean(),
            fc.integer({ min: 0, max: 9 }),
            fc.constantFrom(undefined, '10.0.2.0/23', '10.0.0.0/22'),
          ),
          { minLength: 5, maxLength: 40, size: 'max' },
        ),
        (ops) => {
          const ipam = new Ipam();
          const live = new Set<string>();
          for (const [create, n, subnet] of ops) {
            const id = `net${n}`;
            if (!create) {
              ipam.releaseNetwork(id);
              live.delete(id);
              continue;
            }
            try {
              ipam.allocateNetwork(id, { subnet });
              live.add(id);
            } catch (e) {
              assert.ok(e instanceof ClusterError && e.code === 'CONFLICT', String(e));
              assert.ok(subnet !== undefined, 'a pool subnet is never refused');
            }
            const subnets = [...live].map((l) => parseSubnet(ipam.network(l)?.subnet ?? ''));
            const vnis = [...live].map((l) => ipam.network(l)?.vni);
            assert.equal(new Set(vnis).size, vnis.length);
            subnets.forEach((a, i) => subnets.forEach((b, j) => assert.ok(i === j || !subnetsOverlap(a, b))));
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
