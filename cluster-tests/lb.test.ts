// The load balancer's data planes for real, in network namespaces this test creates: a client,
// a "node" running the load balancer, and three backends behind a bridge on the node. The same
// behaviours are checked for the nftables data plane and for the userspace proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { NftLoadBalancer } from '../src/agent/lb/nft';
import { NetnsLab, NsClient, sh } from '../src/agent/lb/netlab';
import { ProxyProcess } from '../src/agent/lb/proxy-process';
import type { LbBackend, LbConfig, LoadBalancer } from '../src/agent/lb/types';

const NODE_CLIENT_SIDE = '10.232.1.1';
const CLIENT_IP = '10.232.1.2';
const NODE_BACKEND_SIDE = '10.232.2.1';
const BACKENDS = [
  { name: 'b1', ip: '10.232.2.11' },
  { name: 'b2', ip: '10.232.2.12' },
  { name: 'b3', ip: '10.232.2.13' },
];
const BACKEND_PORT = 8000;
const VIP = '10.232.9.10';
const VIP_PORT = 80;
const PUBLISHED_PORT = 8080;
const VIP_URL = `http://${VIP}:${VIP_PORT}/`;
const PUBLISHED_URL = `http://${NODE_CLIENT_SIDE}:${PUBLISHED_PORT}/`;
const TABLE = 'cluster_lb_test';

function skipReason(): string | false {
  if (process.getuid?.() !== 0) return 'needs root for network namespaces';
  return false;
}

function backendsOf(overrides: Partial<Record<string, Partial<LbBackend> | 'absent'>> = {}): LbBackend[] {
  const list: LbBackend[] = [];
  for (const b of BACKENDS) {
    const o = overrides[b.name];
    if (o === 'absent') continue;
    list.push({ ip: b.ip, port: BACKEND_PORT, ...o });
  }
  return list;
}

function configOf(backends: LbBackend[], snatTo?: string): LbConfig {
  return {
    frontends: [
      { kind: 'vip', protocol: 'tcp', address: VIP, port: VIP_PORT, backends, snatTo },
      { kind: 'vip', protocol: 'udp', address: VIP, port: VIP_PORT, backends, snatTo },
      { kind: 'published', protocol: 'tcp', port: PUBLISHED_PORT, backends, snatTo },
    ],
  };
}

const skip = skipReason();
const lab = new NetnsLab(`lbt${process.pid % 100000}`);
let client: NsClient;
let nodeNs = '';

before(async () => {
  if (skip) return;
  const clientNs = await lab.addNamespace('c');
  nodeNs = await lab.addNamespace('n');
  await lab.exec(nodeNs, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  await lab.link(clientNs, 'eth0', `${CLIENT_IP}/24`, nodeNs, 'eth0', `${NODE_CLIENT_SIDE}/24`);
  await sh(['ip', '-n', clientNs, 'route', 'add', 'default', 'via', NODE_CLIENT_SIDE]);
  await sh(['ip', '-n', nodeNs, 'link', 'add', 'br0', 'type', 'bridge']);
  await sh(['ip', '-n', nodeNs, 'addr', 'add', `${NODE_BACKEND_SIDE}/24`, 'dev', 'br0']);
  await sh(['ip', '-n', nodeNs, 'link', 'set', 'br0', 'up']);
  for (const [i, b] of BACKENDS.entries()) {
    const ns = await lab.addNamespace(b.name);
    await lab.link(nodeNs, `vb${i}`, undefined, ns, 'eth0', `${b.ip}/24`);
    await sh(['ip', '-n', nodeNs, 'link', 'set', `vb${i}`, 'master', 'br0']);
    await sh(['ip', '-n', ns, 'route', 'add', 'default', 'via', NODE_BACKEND_SIDE]);
    await lab.startBackend(ns, b.name, b.ip, BACKEND_PORT);
  }
  client = lab.startClient(clientNs);
});

after(async () => {
  await lab.destroy();
  if (skip) return;
  const left = await sh(['ip', 'netns', 'list']);
  assert.ok(!left.includes(lab.prefix), `namespaces left behind: ${left}`);
});

function distinct(bodies: string[] | undefined): string[] {
  return [...new Set(bodies ?? [])].sort();
}

async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/** The behaviours both data planes must have; `make` builds a fresh load balancer in the node namespace. */
function dataPlaneSuite(
  name: string,
  make: () => LoadBalancer,
  checkGone: (lb: LoadBalancer) => Promise<void>,
  /** A proxy always sources backend connections from the node, with or without snatTo. */
  alwaysFromNode: boolean,
): void {
  describe(name, { skip }, () => {
    let lb: LoadBalancer;
    before(() => {
      lb = make();
    });
    after(async () => {
      await lb.close();
    });

    test('the published port and the VIP reach every backend over time (TCP and UDP)', async () => {
      await lb.apply(configOf(backendsOf()));
      for (const url of [VIP_URL, PUBLISHED_URL]) {
        const answer = await client.fresh(url, 9);
        assert.deepEqual(answer.errors, [], `errors via ${url}`);
        assert.deepEqual(distinct(answer.bodies), ['b1', 'b2', 'b3'], `backends reached via ${url}`);
      }
      const udp = await client.udp(VIP, VIP_PORT, 9);
      assert.deepEqual(udp.errors, []);
      assert.deepEqual(distinct(udp.bodies), ['b1', 'b2', 'b3'], 'backends reached over UDP');
    });

    test('weights: a weight-2 backend gets twice the new connections', async () => {
      await lb.apply(configOf(backendsOf({ b1: { weight: 2 }, b3: 'absent' })));
      const answer = await client.fresh(VIP_URL, 12);
      const counts = { b1: 0, b2: 0 };
      for (const body of answer.bodies ?? []) if (body === 'b1' || body === 'b2') counts[body]++;
      assert.deepEqual(counts, { b1: 8, b2: 4 });
    });

    test('a draining, then removed, backend gets no new connections while its open keep-alive connection keeps working', async () => {
      await lb.apply(configOf(backendsOf()));
      const first = await client.get(VIP_URL, 'held');
      assert.equal(first.ok, true, first.error);
      const held = first.body ?? '';
      await lb.apply(configOf(backendsOf({ [held]: { draining: true } })));
      const during = await client.fresh(VIP_URL, 9);
      assert.deepEqual(during.errors, []);
      assert.ok(
        !(during.bodies ?? []).includes(held),
        `draining ${held} got new connections: ${String(during.bodies)}`,
      );
      assert.equal(distinct(during.bodies).length, 2);
      const again = await client.get(VIP_URL, 'held');
      assert.deepEqual([again.ok, again.body], [true, held], 'the held connection stays on its backend');

      await lb.apply(configOf(backendsOf({ [held]: 'absent' })));
      const removed = await client.fresh(VIP_URL, 6);
      assert.ok(!(removed.bodies ?? []).includes(held));
      const stillHeld = await client.get(VIP_URL, 'held');
      assert.deepEqual(
        [stillHeld.ok, stillHeld.body],
        [true, held],
        'established connection survives removal',
      );
      await client.request({ op: 'dropAgent', agent: 'held' });
    });

    test('updates are atomic: no request fails while the backend set changes under a steady load', async () => {
      await lb.apply(configOf(backendsOf()));
      await client.request({ op: 'loop', url: VIP_URL, concurrency: 4 });
      const steps: Array<Parameters<typeof backendsOf>[0]> = [
        { b1: 'absent' },
        { b1: { draining: true }, b2: { weight: 3 } },
        { b2: 'absent', b3: 'absent' },
        {},
        { b3: { draining: true } },
        { b1: 'absent', b2: { weight: 2 } },
      ];
      for (let round = 0; round < 3; round++) {
        for (const step of steps) {
          await lb.apply(configOf(backendsOf(step)));
          await sleep(60);
        }
      }
      const stopped = await client.request({ op: 'stopLoop' });
      const result = stopped.result;
      assert.ok(result !== undefined);
      assert.equal(result.failed, 0, `failed requests: ${result.failed} (${result.errors.join(', ')})`);
      assert.ok(result.ok > 50, `only ${result.ok} requests went through`);
      assert.deepEqual(Object.keys(result.byBody).sort(), ['b1', 'b2', 'b3']);
    });

    test('snatTo: backends with no route back to the client still answer through the node', async () => {
      const backendNamespaces = BACKENDS.map((b) => lab.ns(b.name));
      for (const ns of backendNamespaces) await sh(['ip', '-n', ns, 'route', 'del', 'default']);
      try {
        await lb.apply(configOf(backendsOf(), NODE_BACKEND_SIDE));
        const answer = await client.fresh(VIP_URL, 6);
        assert.deepEqual(answer.errors, []);
        assert.deepEqual(distinct(answer.bodies), ['b1', 'b2', 'b3']);
        const published = await client.fresh(PUBLISHED_URL, 3);
        assert.deepEqual(published.errors, []);
        if (!alwaysFromNode) {
          // Without snatTo the replies have nowhere to go: the check above is not vacuous.
          await lb.apply(configOf(backendsOf()));
          const lost = await client.fresh(VIP_URL, 1);
          assert.equal(lost.bodies?.length, 0);
        }
      } finally {
        for (const ns of backendNamespaces)
          await sh(['ip', '-n', ns, 'route', 'add', 'default', 'via', NODE_BACKEND_SIDE]);
      }
    });

    test('a frontend with no backends refuses at once instead of hanging', async () => {
      await lb.apply(configOf([]));
      const started = Date.now();
      const answer = await client.fresh(VIP_URL, 1);
      assert.equal(answer.bodies?.length, 0);
      assert.match(answer.errors?.[0] ?? '', /ECONNREFUSED|ECONNRESET/);
      assert.ok(Date.now() - started < 1500, 'refused quickly');
    });

    test('close() leaves nothing behind', async () => {
      await lb.apply(configOf(backendsOf()));
      await lb.close();
      await checkGone(lb);
      const answer = await client.fresh(VIP_URL, 1);
      assert.equal(answer.bodies?.length, 0, 'nothing answers on the VIP after close');
      lb = make(); // so the suite's after hook has something to close
    });
  });
}

dataPlaneSuite(
  'nftables data plane',
  () => new NftLoadBalancer({ table: TABLE, netns: nodeNs }),
  async () => {
    const tables = await lab.exec(nodeNs, ['nft', 'list', 'tables']);
    assert.ok(!tables.includes(TABLE), `table left behind: ${tables}`);
  },
  false,
);

describe('userspace proxy setup', { skip }, () => {
  // The proxy listens on the VIP, so the node must own it (nft needs no such address).
  test('the node owns the VIP', async () => {
    await sh(['ip', '-n', nodeNs, 'addr', 'add', `${VIP}/32`, 'dev', 'lo']);
  });
});

dataPlaneSuite(
  'userspace proxy',
  () => new ProxyProcess({ netns: nodeNs }),
  async (lb) => {
    const pid = lb instanceof ProxyProcess ? lb.pid : undefined;
    assert.ok(pid !== undefined);
    assert.throws(() => process.kill(pid, 0), /ESRCH/, 'proxy process is gone');
    const listening = await lab.exec(nodeNs, ['ss', '-Htlnu']);
    assert.equal(listening.trim(), '', 'no sockets left listening in the node namespace');
  },
  true,
);
