// The overlay driver on real kernel devices: two "hosts" are network namespaces on an underlay
// bridge (10.233.0.0/24), each runs the driver for one network (10.234.0.0/24), and two
// "containers" (more namespaces) attached on different hosts talk across VXLAN using only the
// FDB and neighbour entries the driver writes. Everything is removed afterwards, and checked.
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import {
  OverlayDriver,
  bridgeName,
  nftTableName,
  vxlanName,
  type RemoteEndpoint,
} from '../src/agent/network';

// Unique per run so a concurrent or crashed run never collides with this one.
const PREFIX = `ovt${process.pid % 100000}`;
const NS = {
  underlay: `${PREFIX}u`,
  host1: `${PREFIX}h1`,
  host2: `${PREFIX}h2`,
  c1: `${PREFIX}c1`,
  c2: `${PREFIX}c2`,
};
const VNI = 4242;
const SUBNET = '10.234.0.0/24';
const UNDERLAY = { host1: '10.233.0.1', host2: '10.233.0.2' };
const NODE_IP = { host1: '10.234.0.1', host2: '10.234.0.2' };
const TASK_IP = { c1: '10.234.0.11', c2: '10.234.0.12' };
const ECHO_PORT = 7000;
const nsPath = (name: string) => `/var/run/netns/${name}`;

function sh(argv: string[], timeoutMs = 10_000): Promise<string> {
  const [file, ...args] = argv;
  return new Promise((resolve, reject) => {
    execFile(file ?? '', args, { timeout: timeoutMs }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${argv.join(' ')}: ${stderr || error.message}`));
      else resolve(stdout);
    });
  });
}

/** Runs a Node snippet inside a namespace and returns what it printed. */
function nodeIn(ns: string, code: string, timeoutMs = 5000): Promise<string> {
  return sh(['ip', 'netns', 'exec', ns, process.execPath, '-e', code], timeoutMs).then((s) => s.trim());
}

/** A TCP server in a namespace that answers each connection with the peer address it saw. */
async function startEcho(ns: string, host: string): Promise<ChildProcess> {
  const code = `
    const server = require('net').createServer((c) => { c.end(c.remoteAddress); });
    server.listen(${ECHO_PORT}, '${host}', () => console.log('ready'));`;
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', code], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  await new Promise<void>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (c) => reject(new Error(`echo server in ${ns} exited with ${c}`)));
    child.stdout?.once('data', () => resolve());
  });
  child.removeAllListeners('exit');
  return child;
}

/** Connects from a namespace; resolves with the peer address the server saw, or 'unreachable'. */
function connectFrom(ns: string, host: string, timeoutMs = 1000): Promise<string> {
  const code = `
    const c = require('net').connect(${ECHO_PORT}, '${host}');
    const t = setTimeout(() => { console.log('unreachable'); process.exit(0); }, ${timeoutMs});
    let seen = '';
    c.on('data', (d) => { seen += d; });
    c.on('end', () => { clearTimeout(t); console.log(seen); });
    c.on('error', () => { clearTimeout(t); console.log('unreachable'); });`;
  return nodeIn(ns, code, timeoutMs + 4000);
}

async function linksIn(ns: string): Promise<string[]> {
  const links = JSON.parse(await sh(['ip', '-n', ns, '-j', 'link', 'show'])) as { ifname: string }[];
  return links.map((l) => l.ifname);
}

async function tablesIn(ns: string): Promise<string[]> {
  const out = JSON.parse(await sh(['ip', 'netns', 'exec', ns, 'nft', '-j', 'list', 'tables'])) as {
    nftables: { table?: { name: string } }[];
  };
  return out.nftables.flatMap((i) => (i.table ? [i.table.name] : []));
}

function skipReason(): string | false {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root for network namespaces';
  return false;
}

describe('overlay network across two hosts', { skip: skipReason(), timeout: 60_000 }, () => {
  const children: ChildProcess[] = [];
  const driver1 = new OverlayDriver({ underlayIp: UNDERLAY.host1, hostNetns: nsPath(NS.host1) });
  const driver2 = new OverlayDriver({ underlayIp: UNDERLAY.host2, hostNetns: nsPath(NS.host2) });
  // What each host must know of the other: its task and its node address on the network.
  const remoteFor1: RemoteEndpoint[] = [
    { ip: TASK_IP.c2, host: UNDERLAY.host2 },
    { ip: NODE_IP.host2, host: UNDERLAY.host2 },
  ];
  const remoteFor2: RemoteEndpoint[] = [
    { ip: TASK_IP.c1, host: UNDERLAY.host1 },
    { ip: NODE_IP.host1, host: UNDERLAY.host1 },
  ];

  before(async () => {
    for (const ns of Object.values(NS)) await sh(['ip', 'netns', 'add', ns]);
    await sh(['ip', '-n', NS.underlay, 'link', 'add', 'ub', 'type', 'bridge']);
    await sh(['ip', '-n', NS.underlay, 'link', 'set', 'ub', 'up']);
    for (const [i, host] of [NS.host1, NS.host2].entries()) {
      // The veth is created with both ends already in the test's namespaces, never in ours.
      await sh([
        'ip',
        'link',
        'add',
        'eth0',
        'netns',
        host,
        'type',
        'veth',
        'peer',
        'name',
        `p${i}`,
        'netns',
        NS.underlay,
      ]);
      await sh(['ip', '-n', NS.underlay, 'link', 'set', `p${i}`, 'master', 'ub', 'up']);
      await sh(['ip', '-n', host, 'addr', 'add', `10.233.0.${i + 1}/24`, 'dev', 'eth0']);
      await sh(['ip', '-n', host, 'link', 'set', 'eth0', 'up']);
      await sh(['ip', '-n', host, 'link', 'set', 'lo', 'up']);
    }
  });

  after(async () => {
    for (const child of children) child.kill();
    for (const ns of Object.values(NS)) await sh(['ip', 'netns', 'del', ns]).catch(() => undefined);
    const left = (await sh(['ip', 'netns', 'list'])).split('\n').filter((l) => l.startsWith(PREFIX));
    assert.deepEqual(left, [], 'no namespace of the test is left');
  });

  test('a crashed agent leaves stale devices and tables: cleaned at start, others kept', async () => {
    await sh(['ip', '-n', NS.host1, 'link', 'add', bridgeName(0xbeef), 'type', 'bridge']);
    await sh(['ip', 'netns', 'exec', NS.host1, 'nft', 'add', 'table', 'ip', nftTableName(0xbeef)]);
    await sh(['ip', 'netns', 'exec', NS.host1, 'nft', 'add', 'table', 'ip', 'someone_else']);
    assert.deepEqual(await driver1.cleanupStale([VNI]), [0xbeef]);
    assert.ok(!(await linksIn(NS.host1)).includes(bridgeName(0xbeef)));
    assert.deepEqual(await tablesIn(NS.host1), ['someone_else']);
    await sh(['ip', 'netns', 'exec', NS.host1, 'nft', 'delete', 'table', 'ip', 'someone_else']);
    // A device of a kept network left with wrong settings: repaired by ensureNetwork below.
    await sh([
      'ip',
      '-n',
      NS.host2,
      'link',
      'add',
      vxlanName(VNI),
      'type',
      'vxlan',
      'id',
      String(VNI),
      'dstport',
      '4789',
      'local',
      '10.233.0.99',
    ]);
  });

  test('sets up bridge + VXLAN (VNI, port 4789, no learning, MTU 1450) with the node IP', async () => {
    await driver1.ensureNetwork({ vni: VNI, subnet: SUBNET, nodeIp: `${NODE_IP.host1}/24` });
    await driver2.ensureNetwork({ vni: VNI, subnet: SUBNET, nodeIp: NODE_IP.host2 });
    // Twice: idempotent (the agent calls it on every reconcile).
    await driver1.ensureNetwork({ vni: VNI, subnet: SUBNET, nodeIp: NODE_IP.host1 });
    const [vxlan] = JSON.parse(
      await sh(['ip', '-n', NS.host1, '-d', '-j', 'link', 'show', vxlanName(VNI)]),
    ) as { mtu: number; master: string; linkinfo: { info_data: Record<string, unknown> } }[];
    assert.equal(vxlan?.mtu, 1450);
    assert.equal(vxlan?.master, bridgeName(VNI));
    assert.equal(vxlan?.linkinfo.info_data.id, VNI);
    assert.equal(vxlan?.linkinfo.info_data.port, 4789);
    assert.equal(vxlan?.linkinfo.info_data.learning, false);
    assert.equal(vxlan?.linkinfo.info_data.local, UNDERLAY.host1);
    const [repaired] = JSON.parse(
      await sh(['ip', '-n', NS.host2, '-d', '-j', 'link', 'show', vxlanName(VNI)]),
    ) as { linkinfo: { info_data: Record<string, unknown> } }[];
    assert.equal(repaired?.linkinfo.info_data.local, UNDERLAY.host2);
    assert.equal(repaired?.linkinfo.info_data.learning, false);
    const addrs = await sh(['ip', '-n', NS.host1, '-4', '-o', 'addr', 'show', 'dev', bridgeName(VNI)]);
    assert.match(addrs, /10\.234\.0\.1\/24/);
    const rules = await sh([
      'ip',
      'netns',
      'exec',
      NS.host1,
      'nft',
      'list',
      'table',
      'ip',
      nftTableName(VNI),
    ]);
    assert.match(rules, /ip saddr 10\.234\.0\.0\/24 ip daddr != 10\.234\.0\.0\/24 masquerade/);
  });

  test('attaches containers and writes FDB and permanent neighbour entries, no flood entry', async () => {
    await driver1.attach(VNI, { endpointId: 'task-c1', netns: NS.c1, ip: `${TASK_IP.c1}/24` });
    await driver2.attach(VNI, { endpointId: 'task-c2', netns: nsPath(NS.c2), ip: TASK_IP.c2 });
    const plan = await driver1.setRemoteEndpoints(VNI, remoteFor1);
    assert.equal(plan.add.length, 2);
    await driver2.setRemoteEndpoints(VNI, remoteFor2);
    assert.equal((await driver1.setRemoteEndpoints(VNI, remoteFor1)).add.length, 0, 'no change twice');

    const route = await sh(['ip', '-n', NS.c1, 'route', 'show', 'default']);
    assert.match(route, /default via 10\.234\.0\.1 dev eth0/);
    const fdb = await sh(['ip', 'netns', 'exec', NS.host1, 'bridge', 'fdb', 'show', 'dev', vxlanName(VNI)]);
    assert.match(fdb, /02:42:0a:ea:00:0c dst 10\.233\.0\.2 self permanent/);
    assert.doesNotMatch(fdb, /00:00:00:00:00:00/, 'no default (flooding) entry');
    const neigh = await sh(['ip', '-n', NS.host1, 'neigh', 'show', 'dev', vxlanName(VNI)]);
    assert.match(neigh, /10\.234\.0\.12 lladdr 02:42:0a:ea:00:0c PERMANENT/);
  });

  test('containers on different hosts reach each other by IP across VXLAN', async () => {
    children.push(await startEcho(NS.c2, TASK_IP.c2));
    const before = await vxlanTxPackets(NS.host1);
    assert.equal(await connectFrom(NS.c1, TASK_IP.c2), TASK_IP.c1, 'the peer sees the real source');
    assert.ok((await vxlanTxPackets(NS.host1)) > before, 'the packets went through the VXLAN device');
    // A container also reaches the other host's node address (what the routing mesh uses).
    children.push(await startEcho(NS.host1, NODE_IP.host1));
    assert.equal(await connectFrom(NS.c2, NODE_IP.host1), TASK_IP.c2);
  });

  test('egress to outside the overlay is masqueraded to the host address', async () => {
    children.push(await startEcho(NS.host2, UNDERLAY.host2));
    assert.equal(await connectFrom(NS.c1, UNDERLAY.host2), UNDERLAY.host1);
  });

  test('removing an endpoint entries cuts it off; putting them back restores it', async () => {
    await driver1.setRemoteEndpoints(
      VNI,
      remoteFor1.filter((e) => e.ip !== TASK_IP.c2),
    );
    const neigh = await sh(['ip', '-n', NS.host1, 'neigh', 'show', 'dev', vxlanName(VNI)]);
    assert.doesNotMatch(neigh, /10\.234\.0\.12/);
    assert.equal(await connectFrom(NS.c1, TASK_IP.c2), 'unreachable');
    await driver1.setRemoteEndpoints(VNI, remoteFor1);
    assert.equal(await connectFrom(NS.c1, TASK_IP.c2, 3000), TASK_IP.c1);
  });

  test('DNS on the node address answers the service name from inside a container', async () => {
    const dist = path.join(__dirname, '..', 'src', 'agent', 'dns', 'server.js');
    const serverCode = `
      const { DnsServer } = require(${JSON.stringify(dist)});
      const server = new DnsServer({ host: '${NODE_IP.host1}', port: 53, upstreams: [] });
      server.update({ services: [{ name: 'web', vip: '10.234.0.100', taskIps: ['${TASK_IP.c1}', '${TASK_IP.c2}'] }] });
      server.start().then(() => console.log('ready'));`;
    const dns = spawn('ip', ['netns', 'exec', NS.host1, process.execPath, '-e', serverCode], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(dns);
    await new Promise<void>((resolve, reject) => {
      dns.once('exit', (c) => reject(new Error(`dns server exited with ${c}`)));
      dns.stdout?.once('data', () => resolve());
    });
    dns.removeAllListeners('exit');
    const answer = await nodeIn(
      NS.c1,
      `const r = new (require('dns').promises.Resolver)({ timeout: 1000, tries: 2 });
       r.setServers(['${NODE_IP.host1}']);
       Promise.all([r.resolve4('web'), r.resolve4('tasks.web')]).then((a) => console.log(JSON.stringify(a)));`,
    );
    assert.deepEqual(JSON.parse(answer), [['10.234.0.100'], [TASK_IP.c1, TASK_IP.c2]]);
  });

  test('removing the network leaves no device or nft table on either host', async () => {
    for (const child of children.splice(0)) child.kill();
    await driver1.detach(VNI, 'task-c1');
    assert.deepEqual(await linksIn(NS.c1), ['lo'], 'the container end went with the veth');
    await driver1.removeNetwork(VNI);
    await driver2.removeNetwork(VNI);
    for (const ns of [NS.host1, NS.host2]) {
      assert.deepEqual(
        (await linksIn(ns)).filter((l) => l.startsWith('cov')),
        [],
        ns,
      );
      assert.deepEqual(await tablesIn(ns), [], ns);
    }
    assert.deepEqual(await linksIn(NS.c2), ['lo']);
  });
});

async function vxlanTxPackets(ns: string): Promise<number> {
  const [link] = JSON.parse(await sh(['ip', '-n', ns, '-s', '-j', 'link', 'show', vxlanName(VNI)])) as {
    stats64: { tx: { packets: number } };
  }[];
  return link?.stats64.tx.packets ?? 0;
}
