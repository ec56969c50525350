// `npm run bench:lb`: wrk against 3 Node HTTP backends in a private network namespace, direct
// and through HAProxy (tcp, round robin, nbthread 2), our nftables data plane and our userspace
// proxy, all in one run, in the same setup as the peer baselines (RESULTS.md section D).
// The VXLAN path too: two hosts (namespaces on a veth underlay) with our overlay driver, a task
// namespace on each, wrk from one task to a backend in the other ('vxlan') against wrk between
// the same two hosts over the underlay ('underlay').
// Options: --runs N (default 3, the median is reported), --duration S (default 10),
// --configs direct,haproxy,nft,userspace,underlay,vxlan (a subset, for quick comparisons).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { NetnsLab, sh } from '../../src/agent/lb/netlab';
import { NftLoadBalancer } from '../../src/agent/lb/nft';
import { ProxyProcess } from '../../src/agent/lb/proxy-process';
import { OverlayDriver } from '../../src/agent/network/overlay';
import type { LbConfig, LoadBalancer } from '../../src/agent/lb/types';

const BACKEND_IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
const PORT = 18080;
const HAPROXY_VIP = '127.0.0.10';
const NFT_VIP = '127.0.0.11';
const USERSPACE_VIP = '127.0.0.12';
const WRK_ARGS = ['-t2', '-c64', '--latency'];
/** The two-host overlay setup: underlay addresses, the overlay subnet, node and task addresses. */
const UNDERLAY = { a: '192.168.77.1', b: '192.168.77.2', prefix: 24 };
const OVERLAY = {
  vni: 4242,
  subnet: '10.77.0.0/24',
  nodeA: '10.77.0.2',
  nodeB: '10.77.0.3',
  taskA: '10.77.0.10',
  taskB: '10.77.0.11',
};

/** Peer figures, RESULTS.md section D (medians of 3 runs, 2026-11-22, same VM and wrk flags). */
const PEERS: Record<string, { rps: number; p50: number; p99: number; cpu: string; what: string }> = {
  direct: { rps: 34141, p50: 1.61, p99: 2.87, cpu: '–', what: 'direct' },
  haproxy: { rps: 43265, p50: 1.39, p99: 4.14, cpu: '12.7', what: 'HAProxy tcp nbthread 2' },
  nft: { rps: 47183, p50: 1.03, p99: 7.73, cpu: 'kernel', what: 'bare nft DNAT numgen inc' },
  userspace: { rps: 27814, p50: 2.21, p99: 5.08, cpu: '25.5', what: 'naive Node tcp-proxy.js' },
};

/**
 * Two hosts joined by a veth underlay, our overlay network on both, a task namespace on each
 * plumbed in by the driver as the agent does; a backend in host B (underlay) and in task B.
 */
async function twoHosts(lab: NetnsLab): Promise<{ hostA: string; taskA: string }> {
  const hostA = await lab.addNamespace('ha');
  const hostB = await lab.addNamespace('hb');
  const taskA = await lab.addNamespace('ta');
  const taskB = await lab.addNamespace('tb');
  await lab.link(
    hostA,
    'und0',
    `${UNDERLAY.a}/${UNDERLAY.prefix}`,
    hostB,
    'und0',
    `${UNDERLAY.b}/${UNDERLAY.prefix}`,
  );
  const sides = [
    { host: hostA, task: taskA, underlay: UNDERLAY.a, node: OVERLAY.nodeA, ip: OVERLAY.taskA },
    { host: hostB, task: taskB, underlay: UNDERLAY.b, node: OVERLAY.nodeB, ip: OVERLAY.taskB },
  ];
  for (const side of sides) {
    const other = sides.find((s) => s !== side);
    const driver = new OverlayDriver({ underlayIp: side.underlay, hostNetns: `/var/run/netns/${side.host}` });
    await driver.ensureNetwork({ vni: OVERLAY.vni, subnet: OVERLAY.subnet, nodeIp: side.node });
    await driver.setRemoteEndpoints(OVERLAY.vni, [
      { ip: other?.node ?? '', host: other?.underlay ?? '' },
      { ip: other?.ip ?? '', host: other?.underlay ?? '' },
    ]);
    await driver.attach(OVERLAY.vni, {
      endpointId: `bench-${side.task}`,
      netns: side.task,
      ip: `${side.ip}/24`,
    });
  }
  await lab.startBackend(hostB, 'underlay b', UNDERLAY.b, PORT);
  await lab.startBackend(taskB, 'task b', OVERLAY.taskB, PORT);
  return { hostA, taskA };
}

interface WrkResult {
  rps: number;
  requests: number;
  /** CPU the load balancer process used per request (user + system), when it is a process. */
  lbCpuUsPerReq?: number;
  p50Ms: number;
  p99Ms: number;
  errors: string;
}

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(`--${name}`);
  const value = index >= 0 ? Number(process.argv[index + 1]) : fallback;
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  return value;
}

function toMs(text: string): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(text);
  if (match === null) throw new Error(`cannot read wrk latency '${text}'`);
  const value = Number(match[1]);
  return match[2] === 'us' ? value / 1000 : match[2] === 's' ? value * 1000 : value;
}

export function parseWrk(output: string): WrkResult {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(output);
  const requests = /(\d+) requests in/.exec(output);
  const p50 = /^\s+50%\s+(\S+)/m.exec(output);
  const p99 = /^\s+99%\s+(\S+)/m.exec(output);
  if (rps?.[1] === undefined || p50?.[1] === undefined || p99?.[1] === undefined) {
    throw new Error(`cannot read wrk output:\n${output}`);
  }
  const errors = output
    .split('\n')
    .filter((line) => /Socket errors|Non-2xx/.test(line))
    .map((line) => line.trim())
    .join('; ');
  return {
    rps: Number(rps[1]),
    requests: Number(requests?.[1] ?? 0),
    p50Ms: toMs(p50[1]),
    p99Ms: toMs(p99[1]),
    errors,
  };
}

const CLOCK_TICKS_PER_S = 100; // USER_HZ on Linux

/** User + system CPU seconds of a process so far, from /proc (0 when it is gone). */
async function cpuSeconds(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11] ?? 0) + Number(fields[12] ?? 0)) / CLOCK_TICKS_PER_S;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

function haproxyConfig(vip: string): string {
  return [
    'global',
    '  nbthread 2',
    // 20000 fails here: "Cannot raise FD limit" (RESULTS.md D); the peers used 4000.
    '  maxconn 4000',
    'defaults',
    '  mode tcp',
    '  timeout connect 2s',
    '  timeout client 30s',
    '  timeout server 30s',
    'frontend fe',
    `  bind ${vip}:${PORT}`,
    '  default_backend be',
    'backend be',
    '  balance roundrobin',
    ...BACKEND_IPS.map((ip, i) => `  server b${i + 1} ${ip}:${PORT}`),
    '',
  ].join('\n');
}

function lbConfig(vip: string): LbConfig {
  const backends = BACKEND_IPS.map((ip) => ({ ip, port: PORT }));
  return { frontends: [{ kind: 'vip', protocol: 'tcp', address: vip, port: PORT, backends }] };
}

async function main(): Promise<void> {
  const runs = option('runs', 3);
  const durationS = option('duration', 10);
  if (process.getuid?.() !== 0) throw new Error('bench:lb needs root (network namespaces, nftables)');
  for (const tool of ['wrk', 'haproxy', 'nft']) {
    await sh(['sh', '-c', `command -v ${tool}`]).catch(() => {
      throw new Error(`${tool} not found: apt-get install -y wrk haproxy nftables`);
    });
  }
  const lab = new NetnsLab(`lbb${process.pid % 100000}`);
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'bench-lb-'));
  const active: LoadBalancer[] = [];
  const interrupted = (): void => {
    void (async () => {
      for (const lb of active) await lb.close().catch(() => undefined);
      await lab.destroy();
      await rm(tmp, { recursive: true, force: true });
      process.exit(130);
    })();
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  const configsIndex = process.argv.indexOf('--configs');
  const configs = new Set(
    (configsIndex >= 0
      ? (process.argv[configsIndex + 1] ?? '')
      : 'direct,haproxy,nft,userspace,underlay,vxlan'
    ).split(','),
  );
  const results = new Map<string, WrkResult[]>();
  try {
    const ns = await lab.addNamespace('x');
    for (const [i, ip] of BACKEND_IPS.entries()) await lab.startBackend(ns, `hello from b${i + 1}`, ip, PORT);
    const client = lab.startClient(ns);
    const wrk = async (url: string, seconds: number, from = ns): Promise<WrkResult> =>
      parseWrk(await lab.exec(from, ['wrk', ...WRK_ARGS, `-d${seconds}s`, url]));

    const targets: Array<{ name: string; url: string; pid?: number; from: string }> = [];
    const add = (name: string, address: string, pid?: number, from = ns): void => {
      if (configs.has(name)) targets.push({ name, url: `http://${address}:${PORT}/`, pid, from });
    };
    if (configs.has('underlay') || configs.has('vxlan')) {
      const hosts = await twoHosts(lab);
      add('underlay', UNDERLAY.b, undefined, hosts.hostA);
      add('vxlan', OVERLAY.taskB, undefined, hosts.taskA);
    }
    add('direct', BACKEND_IPS[0] ?? '');
    // Every load balancer is up at once on its own address, so runs can be interleaved: on a
    // shared, noisy machine, a burst of outside load then hits all configs, not just one.
    if (configs.has('haproxy')) {
      const cfg = path.join(tmp, 'haproxy.cfg');
      await writeFile(cfg, haproxyConfig(HAPROXY_VIP));
      const haproxy = lab.spawnIn(ns, ['haproxy', '-db', '-f', cfg]);
      await new Promise((resolve) => setTimeout(resolve, 700));
      if (haproxy.exitCode !== null) throw new Error('haproxy did not start');
      add('haproxy', HAPROXY_VIP, haproxy.pid);
    }
    if (configs.has('nft')) {
      const nft = new NftLoadBalancer({ table: 'cluster_lb_bench', netns: ns });
      active.push(nft);
      await nft.checkAvailable();
      await nft.apply(lbConfig(NFT_VIP));
      add('nft', NFT_VIP);
    }
    if (configs.has('userspace')) {
      const proxy = new ProxyProcess({ netns: ns });
      active.push(proxy);
      await proxy.apply(lbConfig(USERSPACE_VIP));
      add('userspace', USERSPACE_VIP, proxy.pid);
    }

    for (const { name, url, from } of targets) {
      if (from !== ns) {
        // Another namespace: a plain request shows the path answers.
        console.log(
          `[${name}] ${url} answers: ${(await lab.exec(from, ['wget', '-qO-', url]).catch((e: unknown) => String(e))).trim()}`,
        );
        await wrk(url, 2, from);
        results.set(name, []);
        continue;
      }
      // Sanity: which backends answer over 6 fresh connections (as the peer script prints).
      const spread = await client.fresh(url, 6);
      const counts: Record<string, number> = {};
      for (const body of spread.bodies ?? []) counts[body.slice(-2)] = (counts[body.slice(-2)] ?? 0) + 1;
      const errors = spread.errors?.length ? ` errors ${String(spread.errors)}` : '';
      console.log(`[${name}] ${url} 6 fresh connections: ${JSON.stringify(counts)}${errors}`);
      await wrk(url, 2); // warm-up
      results.set(name, []);
    }
    for (let run = 1; run <= runs; run++) {
      for (const { name, url, pid, from } of targets) {
        const cpuBefore = await cpuSeconds(pid);
        const result = await wrk(url, durationS, from);
        if (pid !== undefined && result.requests > 0) {
          result.lbCpuUsPerReq = (((await cpuSeconds(pid)) - cpuBefore) * 1e6) / result.requests;
        }
        const errors = result.errors ? `, ${result.errors}` : '';
        console.log(
          `[${name}] run ${run}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50Ms} ms, p99 ${result.p99Ms} ms${errors}`,
        );
        results.get(name)?.push(result);
      }
    }
  } finally {
    for (const lb of active) await lb.close().catch(() => undefined);
    await lab.destroy();
    await rm(tmp, { recursive: true, force: true });
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }

  const summary = (name: string): { rps: number; p50: number; p99: number; cpu: string } => {
    const list = results.get(name) ?? [];
    const cpu = list.flatMap((r) => (r.lbCpuUsPerReq === undefined ? [] : [r.lbCpuUsPerReq]));
    return {
      rps: median(list.map((r) => r.rps)),
      p50: median(list.map((r) => r.p50Ms)),
      p99: median(list.map((r) => r.p99Ms)),
      cpu: cpu.length > 0 ? median(cpu).toFixed(1) : name === 'nft' ? 'kernel' : '–',
    };
  };
  const ours = {
    direct: summary('direct'),
    haproxy: summary('haproxy'),
    nft: summary('nft'),
    userspace: summary('userspace'),
    underlay: summary('underlay'),
    vxlan: summary('vxlan'),
  };
  const rows: string[] = [];
  rows.push(
    `wrk ${WRK_ARGS.join(' ')} -d${durationS}s, 3 Node backends, netns loopback, median of ${runs} interleaved run(s)`,
  );
  rows.push(
    '| config | req/s | p50 ms | p99 ms | LB CPU µs/req | peer (RESULTS.md D) req/s, p50, p99, µs/req |',
  );
  rows.push('|---|---|---|---|---|---|');
  for (const name of ['direct', 'haproxy', 'nft', 'userspace', 'underlay', 'vxlan'] as const) {
    const o = ours[name];
    const p = PEERS[name];
    rows.push(
      `| ${name} | ${o.rps.toFixed(0)} | ${o.p50.toFixed(2)} | ${o.p99.toFixed(2)} | ${o.cpu} | ${p ? `${p.what}: ${p.rps}, ${p.p50}, ${p.p99}, ${p.cpu}` : ''} |`,
    );
  }
  const nftRatio = ours.nft.rps / ours.haproxy.rps;
  const userspaceRatio = ours.userspace.rps / ours.haproxy.rps;
  const nftOk = nftRatio >= 1.1 && ours.nft.p99 <= ours.haproxy.p99;
  rows.push(
    `target nft ≥ 1.1× HAProxy req/s with p99 no worse: ${nftRatio.toFixed(2)}×, p99 ${ours.nft.p99.toFixed(2)} vs ${ours.haproxy.p99.toFixed(2)} ms → ${nftOk ? 'met' : 'NOT met'}`,
  );
  rows.push(
    `target userspace ≥ 0.7× HAProxy req/s: ${userspaceRatio.toFixed(2)}× → ${userspaceRatio >= 0.7 ? 'met' : 'NOT met'}`,
  );
  const vxlanRatio = ours.vxlan.rps / ours.underlay.rps;
  rows.push(
    `VXLAN task-to-task across two hosts vs the same hosts over the underlay: ${vxlanRatio.toFixed(2)}× req/s`,
  );
  console.log(rows.join('\n'));
  console.log(
    JSON.stringify({
      runs,
      durationS,
      directRps: Math.round(ours.direct.rps),
      haproxyRps: Math.round(ours.haproxy.rps),
      nftRps: Math.round(ours.nft.rps),
      userspaceRps: Math.round(ours.userspace.rps),
      directP50Ms: ours.direct.p50,
      haproxyP50Ms: ours.haproxy.p50,
      nftP50Ms: ours.nft.p50,
      userspaceP50Ms: ours.userspace.p50,
      directP99Ms: ours.direct.p99,
      haproxyP99Ms: ours.haproxy.p99,
      nftP99Ms: ours.nft.p99,
      userspaceP99Ms: ours.userspace.p99,
      haproxyCpuUsPerReq: Number(ours.haproxy.cpu) || null,
      userspaceCpuUsPerReq: Number(ours.userspace.cpu) || null,
      nftVsHaproxy: Number(nftRatio.toFixed(3)),
      userspaceVsHaproxy: Number(userspaceRatio.toFixed(3)),
      underlayRps: Math.round(ours.underlay.rps),
      vxlanRps: Math.round(ours.vxlan.rps),
      underlayP99Ms: ours.underlay.p99,
      vxlanP99Ms: ours.vxlan.p99,
      vxlanVsUnderlay: Number.isFinite(vxlanRatio) ? Number(vxlanRatio.toFixed(3)) : null,
    }),
  );
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exitCode = 1;
});
