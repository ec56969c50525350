// User overlay networks on the namespace lab (issue 6): two tasks of a service on a user network,
// on different hosts, reach each other by IP and by service name (the embedded DNS server and the
// VIP), tasks.NAME lists every task, the VIP spreads connections, a removed endpoint stops
// getting new connections, `network rm` is refused while a service uses the network, and nothing
// is left on any host once the service and the network are gone. The service also publishes a
// port, so its tasks sit on two networks (ingress first). Run by lab-networks.test.ts on the
// nftables data plane and by lab-networks-userspace.test.ts on the userspace proxy.
import { describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import assert from 'node:assert/strict';
import { capabilities, eventually, jsonLines, run, useLab, type Lab } from './lib/lab';

const CONVERGE_TIMEOUT_MS = 90_000;
const NETWORK = 'appnet';
const SERVICE_ID_LABEL = 'cluster.service.id';

let lab: Lab | undefined;

function theLab(): Lab {
  if (!lab) throw new Error('no lab');
  return lab;
}

interface TaskRow {
  Node: string;
  CurrentState: string;
}

let runtime: 'docker' | 'oci' = 'docker';

/** A command inside a task's container: docker exec, or nsenter into a runc container's namespaces. */
function execIn(container: string, args: readonly string[], timeoutMs = 60_000) {
  const oci = /^oci:(\d+)$/.exec(container);
  return oci
    ? run('nsenter', ['-t', oci[1] ?? '', '-m', '-u', '-i', '-n', '-p', ...args], { timeoutMs })
    : run('docker', ['exec', container, ...args], { timeoutMs });
}

async function inContainer(container: string, ...args: string[]): Promise<string> {
  const r = await execIn(container, args);
  if (r.code !== 0) throw new Error(`${args.join(' ')} in ${container} exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

/**
 * The running containers of a service: on docker (a shared dockerd) by the service id label; on
 * oci, what runc runs for this lab's hosts (the only service running then), as `oci:<pid>`.
 */
async function containersOf(serviceId: string): Promise<string[]> {
  if (runtime === 'oci') {
    const found: string[] = [];
    for (const { host } of theLab().hosts()) {
      const root = path.join(theLab().dir, host, 'data', 'oci', 'runc');
      const r = await run('runc', ['--root', root, 'list', '--format', 'json']);
      const list = (JSON.parse(r.stdout.trim() || 'null') ?? []) as { status: string; pid: number }[];
      found.push(...list.filter((c) => c.status === 'running').map((c) => `oci:${c.pid}`));
    }
    return found;
  }
  const r = await run('docker', ['ps', '-q', '--filter', `label=${SERVICE_ID_LABEL}=${serviceId}`]);
  if (r.code !== 0) throw new Error(`docker ps exited ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.split('\n').filter((l) => l.trim() !== '');
}

/** A container's address on the user network: eth1 (eth0 is on the ingress network). */
async function addressOf(container: string): Promise<string> {
  const out = await inContainer(container, 'ip', '-4', '-o', 'addr', 'show', 'eth1');
  const match = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(out);
  if (!match?.[1]) throw new Error(`no IPv4 address on eth1 of ${container}: ${out}`);
  return match[1];
}

/**
 * `wget -qO- http://TARGET/` from inside the container, `count` times (a new connection each).
 * `timeout`, not wget's -T: that option crashes this busybox's wget.
 */
async function fetchFrom(container: string, target: string, count = 1): Promise<string[]> {
  const script = `for i in $(seq 1 ${count}); do out=$(timeout 5 wget -qO- http://${target}/ 2>&1) && echo "$out" | head -1 || echo "ERR $out"; done`;
  const out = await inContainer(container, 'sh', '-c', script);
  return out.split('\n').filter((l) => l.trim() !== '');
}

/** The A records busybox's nslookup prints for NAME (the answer section, not the server's address). */
async function lookup(container: string, name: string): Promise<string[]> {
  const r = await execIn(container, ['nslookup', name], 30_000);
  const answer = r.stdout
    .split(/Name:\s/)
    .slice(1)
    .join('\n');
  return [...answer.matchAll(/Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1] ?? '').sort();
}

async function serviceId(name: string): Promise<string> {
  const out = await theLab().ok('manager1', 'service', 'inspect', name);
  const parsed = JSON.parse(out) as { ID?: string; id?: string }[] | { ID?: string; id?: string };
  const first = Array.isArray(parsed) ? parsed[0] : parsed;
  const id = first?.ID ?? first?.id;
  if (!id) throw new Error(`no id in service inspect output: ${out.slice(0, 200)}`);
  return id;
}

async function runningTasks(name: string): Promise<TaskRow[]> {
  const out = await theLab().ok(
    'manager1',
    '--format',
    'json',
    'service',
    'ps',
    '--filter',
    'desired-state=running',
    name,
  );
  return jsonLines<TaskRow>(out).filter((r) => /^Running/.test(r.CurrentState));
}

/** Devices, addresses and nft tables of ours on a lab host (names start with cov / cluster_overlay_). */
async function leftovers(host: string, vniHex: string): Promise<string[]> {
  const links = await theLab().lab(['exec', host, '--', 'ip', '-o', 'link', 'show']);
  const tables = await theLab().lab(['exec', host, '--', 'nft', 'list', 'tables']);
  return [
    ...links.stdout.split('\n').filter((l) => l.includes(`cov`) && l.includes(vniHex)),
    ...tables.stdout.split('\n').filter((l) => l.includes(`cluster_overlay_${vniHex}`)),
  ];
}

export function networksSuite(lb: 'nftables' | 'userspace', on: 'docker' | 'oci' = 'docker'): void {
  runtime = on;
  const caps = capabilities();
  const needs =
    caps.labUnavailable ?? (caps.agent ? false : `needs agents that run tasks: ${caps.agentMissing ?? ''}`);
  // The lab's daemons start with --lb from LAB_LB (read when the lab comes up).
  process.env.LAB_LB = lb;
  const noRunc = on === 'oci' && spawnSync('runc', ['--version']).status !== 0 ? 'needs runc' : false;
  const skip = needs || noRunc;
  lab = skip ? undefined : useLab({ managers: 1, workers: 2, runtime: on }).lab;
  describe(`lab user overlay network (${lb}, ${on}): service discovery, VIP and cleanup`, { skip }, () => {
    let webId = '';
    let vniHex = '';
    const state: { containers: string[]; ips: string[] } = { containers: [], ips: [] };

    test('network create; a service on an unknown network is refused and nothing is written', async () => {
      await theLab().ok('manager1', 'network', 'create', '--driver', 'overlay', NETWORK);
      const bad = await theLab().cli(
        'manager1',
        'service',
        'create',
        '-d',
        '--name',
        'lost',
        '--network',
        'nope',
        'local/busybox:1',
        'sleep',
        '1000',
      );
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /nope/);
      const services = await theLab().services('manager1');
      assert.ok(!services.some((s) => JSON.stringify(s).includes('lost')), 'no service written');
    });

    test('two tasks on different hosts reach each other by IP, by name, and through the VIP', async (t) => {
      await theLab().ok(
        'manager1',
        'service',
        'create',
        '-d',
        '--name',
        'web',
        '--replicas',
        '2',
        '--network',
        NETWORK,
        '--constraint',
        'node.role==worker',
        '--publish',
        '8080:80',
        'local/busybox:1',
        'sh',
        '-c',
        'echo "replica $(hostname)" >/www/index.html && exec httpd -f -p 80 -h /www',
      );
      const tasks = await eventually(
        'web at 2/2 running',
        CONVERGE_TIMEOUT_MS,
        async () => {
          const running = await runningTasks('web');
          return running.length === 2 ? running : undefined;
        },
        500,
      );
      assert.equal(new Set(tasks.map((r) => r.Node)).size, 2, 'one task per worker');
      webId = await serviceId('web');
      state.containers = await eventually('two containers', 30_000, async () => {
        const found = await containersOf(webId);
        return found.length === 2 ? found : undefined;
      });
      state.ips = await Promise.all(state.containers.map((c) => addressOf(c)));
      const [a = '', b = ''] = state.containers;
      const [ipA = '', ipB = ''] = state.ips;
      t.diagnostic(`task addresses: ${state.ips.join(', ')}`);
      // By IP, across hosts, both ways.
      const direct = await eventually('a reaches b by IP', 30_000, async () => {
        const [reply] = await fetchFrom(a, ipB);
        return reply?.startsWith('replica ') ? reply : undefined;
      });
      assert.match(direct, /^replica /);
      assert.match((await fetchFrom(b, ipA))[0] ?? '', /^replica /);
      // By service name: the embedded DNS server answers with the VIP, which balances.
      const viaName = await eventually('web answers by name', 30_000, async () => {
        const replies = await fetchFrom(a, 'web', 1);
        return replies[0]?.startsWith('replica ') ? replies : undefined;
      });
      assert.ok(viaName.length === 1);
      const replies = await fetchFrom(a, 'web', 8);
      assert.deepEqual(
        replies.filter((r) => !r.startsWith('replica ')),
        [],
        'every request by name answers',
      );
      const seen = new Set(replies);
      t.diagnostic(`replicas seen through the VIP: ${[...seen].join(', ')}`);
      assert.equal(seen.size, 2, 'the VIP spreads connections over both replicas');
      const vip = await lookup(a, 'web');
      assert.equal(vip.length, 1, `web resolves to one VIP: ${vip.join(', ')}`);
      assert.ok(!state.ips.includes(vip[0] ?? ''), 'the VIP is no task address');
      assert.deepEqual(await lookup(b, 'tasks.web'), [...state.ips].sort(), 'tasks.web lists every task');
    });

    test(`the ${lb} data plane serves it`, async () => {
      const tables = await theLab().lab(['exec', 'worker1', '--', 'nft', 'list', 'tables']);
      assert.equal(tables.stdout.includes('cluster_mesh'), lb === 'nftables', tables.stdout);
      // The published port answers through the same data plane, from a host without a replica.
      const manager = theLab()
        .hosts()
        .find((h) => h.host === 'manager1');
      const [client = ''] = state.containers;
      const replies = await fetchFrom(client, `${manager?.address ?? ''}:8080`, 2);
      assert.deepEqual(
        replies.filter((r) => !r.startsWith('replica ')),
        [],
        'the published port answers',
      );
    });

    test('dnsrr: the name lists the task IPs (no VIP); removed, it stops resolving', async (t) => {
      await theLab().ok(
        'manager1',
        'service',
        'create',
        '-d',
        '--name',
        'db',
        '--replicas',
        '2',
        '--endpoint-mode',
        'dnsrr',
        '--network',
        NETWORK,
        '--constraint',
        'node.role==worker',
        'local/busybox:1',
        'sleep',
        '100000',
      );
      const [client = ''] = state.containers;
      const ips = await eventually(
        'db resolves to its 2 tasks',
        CONVERGE_TIMEOUT_MS,
        async () => {
          const found = await lookup(client, 'db');
          return found.length === 2 ? found : undefined;
        },
        500,
      );
      assert.ok(!ips.some((ip) => state.ips.includes(ip)), `db's addresses are its own: ${ips.join(', ')}`);
      assert.deepEqual(await lookup(client, 'tasks.db'), ips);
      await theLab().ok('manager1', 'service', 'rm', 'db');
      const removedAt = Date.now();
      await eventually(
        'db no longer resolves',
        30_000,
        async () => ((await lookup(client, 'db')).length === 0 ? true : undefined),
        100,
      );
      t.diagnostic(
        `db stopped resolving ${Date.now() - removedAt} ms after service rm returned (polling ~100 ms + nslookup)`,
      );
      // On oci every runc container of the lab is counted: wait for db's to go.
      await eventually('db containers gone', 60_000, async () =>
        (await containersOf(webId)).length === 2 ? true : undefined,
      );
    });

    test('network rm is refused while a service uses the network', async () => {
      const refused = await theLab().cli('manager1', 'network', 'rm', NETWORK);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /in use by service 'web'/);
    });

    test('a removed endpoint stops receiving new connections', async () => {
      await theLab().ok('manager1', 'service', 'scale', '-d', 'web=1');
      const client = state.containers[0] ?? '';
      // The survivor: whichever task still runs once the scale-down settled.
      await eventually('web at 1 running task', CONVERGE_TIMEOUT_MS, async () =>
        (await runningTasks('web')).length === 1 ? true : undefined,
      );
      const remaining = await eventually('one container left', 60_000, async () => {
        const found = await containersOf(webId);
        return found.length === 1 ? found[0] : undefined;
      });
      // The client may be the removed one: ask from the survivor then.
      const from = state.containers.includes(remaining ?? '') ? (remaining ?? client) : client;
      await eventually('tasks.web lists the survivor only', 30_000, async () =>
        (await lookup(from, 'tasks.web')).length === 1 ? true : undefined,
      );
      const replies = await fetchFrom(from, 'web', 6);
      assert.deepEqual(
        replies.filter((r) => !r.startsWith('replica ')),
        [],
        'every request answers',
      );
      assert.equal(new Set(replies).size, 1, `one replica answers: ${replies.join(' | ')}`);
      assert.match(replies[0] ?? '', /^replica /);
    });

    test('service rm, network rm: no device, address or nft table is left on any host', async () => {
      const inspected = JSON.parse(await theLab().ok('manager1', 'network', 'inspect', NETWORK)) as unknown;
      const vni = /"(?:vni|VNI)"\s*:\s*(\d+)/.exec(JSON.stringify(inspected))?.[1];
      assert.ok(vni, `network inspect shows the VNI: ${JSON.stringify(inspected).slice(0, 300)}`);
      vniHex = Number(vni).toString(16).padStart(6, '0');
      await theLab().ok('manager1', 'service', 'rm', 'web');
      await eventually('network rm succeeds once the service is gone', 60_000, async () => {
        const r = await theLab().cli('manager1', 'network', 'rm', NETWORK);
        return r.code === 0 ? true : undefined;
      });
      for (const host of theLab()
        .hosts()
        .map((h) => h.host)) {
        await eventually(`nothing of VNI ${vni} left on ${host}`, 60_000, async () => {
          const left = await leftovers(host, vniHex);
          return left.length === 0 ? true : undefined;
        });
      }
      await eventually('the containers are gone', 60_000, async () =>
        (await containersOf(webId)).length === 0 ? true : undefined,
      );
    });
  });
}
