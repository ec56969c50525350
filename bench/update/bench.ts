// Rolling update benchmark (issue 7): a 10-replica service updated from local/busybox:1 to :2
// with --update-parallelism 2 --update-delay 0s (stop-first, monitor 5 s: the defaults of both),
// ours on a one-host namespace lab, then Docker Swarm single-node on the same engine, in one
// run. Both time the same thing: from spawning the update command to the update state
// "completed" (polled every POLL_MS), and count failed requests of a client that sends GETs one
// after another, a new connection each, during the whole update.
//
// The client paths differ because Swarm's routing mesh and VIPs need IPVS, which this kernel
// lacks: ours goes through the published port (routing mesh, nftables) of the lab host;
// Swarm's goes through the path that works for it here, an overlay network with
// --endpoint-mode dnsrr and a client that re-resolves the name at Docker's DNS (127.0.0.11)
// before every request, from a helper container's network namespace. Both services run with
// --init, so that a task exits at once on its stop signal (busybox httpd alone as PID 1 ignores
// SIGTERM and would make every stop wait its 10 s grace).
//
// Run it under the lab lock (it brings up the namespace lab): `flock /run/clab.lock npm run
// bench:update`. It joins no swarm that exists: `docker swarm init` only when the engine is in
// none, and `docker swarm leave --force` only then. Everything it creates is removed, also on
// failure. The last line is one JSON object.
// Usage: node dist/bench/update/bench.js [--runs N]
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Lab, jsonLines } from '../../cluster-tests/lib/lab';

const REPO = path.resolve(__dirname, '..', '..', '..');
/** Where a running lab records its state dir (scripts/lab STATE_POINTER). */
const LAB_STATE_POINTER = '/run/clab.dir';
const REPLICAS = 10;
const PARALLELISM = 2;
const OLD_IMAGE = 'local/busybox:1';
const NEW_IMAGE = 'local/busybox:2';
const PORT = 8080;
const POLL_MS = 100;
const CONVERGE_TIMEOUT_MS = 300_000;
/** Per request: a request that takes longer counts as failed (a connection that hangs). */
const REQUEST_TIMEOUT_MS = 2_000;
/** Pause between two requests of the client. */
const REQUEST_GAP_MS = 5;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function run(cmd: string, args: string[]): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve({ stdout, stderr });
    });
  });
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] ?? 0) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

async function until<T>(what: string, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + CONVERGE_TIMEOUT_MS;
  let last = 'nothing yet';
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${CONVERGE_TIMEOUT_MS} ms (${last})`);
    await sleep(POLL_MS);
  }
}

// The client, one process: `--url URL` (fixed address) or `--dns NAME` (resolved at 127.0.0.11
// before each request). Runs until SIGTERM, then prints one JSON line.
const CLIENT = `
const http = require('node:http');
const dns = require('node:dns');
const [mode, target, timeoutMs, gapMs] = process.argv.slice(1);
const resolver = new dns.promises.Resolver({ timeout: 500, tries: 1 });
resolver.setServers(['127.0.0.11']);
const st = { total: 0, failed: 0, reasons: {}, bodies: {} };
let stop = false;
process.on('SIGTERM', () => (stop = true));
const get = (host, port, p) => new Promise((resolve) => {
  const req = http.get({ host, port, path: p, agent: false, timeout: Number(timeoutMs) }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (c) => (body += c));
    res.on('end', () => resolve(res.statusCode === 200 ? { ok: true, body: body.trim() } : { ok: false, why: 'HTTP ' + res.statusCode }));
    res.on('error', (e) => resolve({ ok: false, why: e.code || e.message }));
  });
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
  req.on('error', (e) => resolve({ ok: false, why: e.code || e.message }));
});
const once = async () => {
  if (mode === '--url') { const u = new URL(target); return get(u.hostname, Number(u.port), u.pathname); }
  let host;
  try { host = (await resolver.resolve4(target))[0]; } catch (e) { return { ok: false, why: 'DNS ' + (e.code || e.message) }; }
  return get(host, 80, '/');
};
(async () => {
  while (!stop) {
    const r = await once();
    st.total++;
    if (r.ok) st.bodies[r.body] = (st.bodies[r.body] || 0) + 1;
    else { st.failed++; st.reasons[r.why] = (st.reasons[r.why] || 0) + 1; }
    await new Promise((res) => setTimeout(res, Number(gapMs)));
  }
  process.stdout.write(JSON.stringify(st) + '\\n');
})();
`;

interface ClientResult {
  total: number;
  failed: number;
  reasons: Record<string, number>;
  bodies: Record<string, number>;
}

class Client {
  private stdout = '';
  private stderr = '';
  private readonly child: ChildProcess;
  private readonly exited: Promise<void>;

  /** `prefix`: a command that runs node elsewhere (nsenter into a container's namespace). */
  constructor(prefix: string[], mode: '--url' | '--dns', target: string) {
    const args = ['-e', CLIENT, '--', mode, target, String(REQUEST_TIMEOUT_MS), String(REQUEST_GAP_MS)];
    const [command = process.execPath, ...rest] = [
      ...prefix,
      ...(prefix.length > 0 ? [process.execPath] : []),
    ];
    this.child = spawn(command, [...rest, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (c: Buffer) => (this.stdout += c.toString()));
    this.child.stderr?.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', () => resolve()));
  }

  async stop(): Promise<ClientResult> {
    this.child.kill('SIGTERM');
    await this.exited;
    const line = this.stdout.trim().split('\n').at(-1) ?? '';
    if (!line.startsWith('{')) throw new Error(`the client printed no result: ${this.stderr.trim()}`);
    return JSON.parse(line) as ClientResult;
  }

  /** For cleanup after a failure: ends the client by its PID, without waiting for a result. */
  kill(): void {
    if (this.child.exitCode === null) this.child.kill('SIGKILL');
  }
}

interface Measured {
  updateMs: number;
  client: ClientResult;
}

// ------------------------------------------------------------------------------------ ours

interface TaskRow {
  Image: string;
  CurrentState: string;
  DesiredState: string;
}

async function ourSettled(lab: Lab, image: string): Promise<true | undefined> {
  const rows = jsonLines<TaskRow>(await lab.ok('manager1', '--format', 'json', 'service', 'ps', 'web'));
  const live = rows.filter((r) => r.DesiredState === 'Running');
  const onImage = live.filter((r) => r.Image === image && /^Running/.test(r.CurrentState));
  const stillUp = rows.filter((r) => r.DesiredState !== 'Running' && /^Running/.test(r.CurrentState));
  return onImage.length === REPLICAS && live.length === REPLICAS && stillUp.length === 0 ? true : undefined;
}

async function ourUpdateState(lab: Lab): Promise<string> {
  const [service] = JSON.parse(await lab.ok('manager1', 'service', 'inspect', 'web')) as {
    updateStatus?: { state?: string };
  }[];
  return service?.updateStatus?.state ?? '';
}

async function measureOurs(lab: Lab): Promise<Measured> {
  await lab.ok(
    'manager1',
    'service',
    'create',
    '-d',
    '--name',
    'web',
    '--replicas',
    String(REPLICAS),
    '--publish',
    `${PORT}:80`,
    '--update-parallelism',
    String(PARALLELISM),
    '--update-delay',
    '0s',
    '--init=true',
    OLD_IMAGE,
  );
  try {
    await until('web running on v1', () => ourSettled(lab, OLD_IMAGE));
    const address = lab.hosts()[0]?.address ?? '';
    const url = `http://${address}:${PORT}/`;
    await until('the published port answers', async () => {
      const r = await run('curl', ['-fsS', '--max-time', '2', url]);
      return r.stdout.includes('hello v1') ? true : undefined;
    });
    const client = new Client([], '--url', url);
    try {
      await sleep(1000);
      const started = performance.now();
      await lab.ok('manager1', 'service', 'update', '-d', '--image', NEW_IMAGE, 'web');
      await until('our update completed', async () =>
        (await ourUpdateState(lab)) === 'STATE_COMPLETED' ? true : undefined,
      );
      const updateMs = performance.now() - started;
      // The client runs on until the old tasks have drained and stopped.
      await until('old tasks stopped', () => ourSettled(lab, NEW_IMAGE));
      await sleep(1000);
      return { updateMs, client: await client.stop() };
    } finally {
      client.kill();
    }
  } finally {
    await lab.ok('manager1', 'service', 'rm', 'web');
  }
}

// ----------------------------------------------------------------------------------- Swarm

async function docker(...args: string[]): Promise<string> {
  return (await run('docker', args)).stdout.trim();
}

async function swarmRunningOn(name: string, image: string): Promise<number> {
  const out = await docker(
    'service',
    'ps',
    name,
    '--filter',
    'desired-state=running',
    '--format',
    '{{.Image}} {{.CurrentState}}',
  );
  return out.split('\n').filter((l) => l.startsWith(`${image} Running`)).length;
}

async function measureSwarm(tag: string): Promise<Measured> {
  const name = `bench-update-${tag}`;
  const network = `bench-update-net-${tag}`;
  const helper = `bench-update-client-${tag}`;
  await docker('network', 'create', '-d', 'overlay', '--attachable', network);
  let client: Client | undefined;
  try {
    await docker('run', '-d', '--name', helper, '--network', network, OLD_IMAGE, 'sleep', '3600');
    await docker(
      'service',
      'create',
      '--detach',
      '--no-resolve-image',
      '--name',
      name,
      '--replicas',
      String(REPLICAS),
      '--network',
      network,
      '--endpoint-mode',
      'dnsrr',
      '--update-parallelism',
      String(PARALLELISM),
      '--update-delay',
      '0s',
      '--init',
      OLD_IMAGE,
    );
    await until('swarm service running', async () =>
      (await swarmRunningOn(name, OLD_IMAGE)) === REPLICAS ? true : undefined,
    );
    const pid = await docker('inspect', '-f', '{{.State.Pid}}', helper);
    // Docker's DNS lists every task before the client starts.
    await until('the service name resolves to every task', async () => {
      const r = await run('nsenter', [
        '-t',
        pid,
        '-n',
        process.execPath,
        '-e',
        `
        const dns = require('node:dns');
        const resolver = new dns.promises.Resolver({ timeout: 500, tries: 1 });
        resolver.setServers(['127.0.0.11']);
        resolver.resolve4(process.argv[1]).then((a) => console.log(a.length), () => console.log(0));`,
        name,
      ]);
      return Number(r.stdout.trim()) === REPLICAS ? true : undefined;
    });
    client = new Client(['nsenter', '-t', pid, '-n'], '--dns', name);
    await sleep(1000);
    const started = performance.now();
    await docker('service', 'update', '--detach', '--no-resolve-image', '--image', NEW_IMAGE, name);
    await until('swarm update completed', async () =>
      (await docker(
        'service',
        'inspect',
        name,
        '--format',
        '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}',
      )) === 'completed'
        ? true
        : undefined,
    );
    const updateMs = performance.now() - started;
    await sleep(1000);
    return { updateMs, client: await client.stop() };
  } finally {
    client?.kill();
    await docker('service', 'rm', name).catch(() => '');
    await until('swarm containers gone', async () =>
      (await docker('ps', '-aq', '--filter', `label=com.docker.swarm.service.name=${name}`)) === ''
        ? true
        : undefined,
    ).catch((err: unknown) => console.error(String(err)));
    await docker('rm', '-f', helper).catch(() => '');
    // The network is in use until the service's tasks are gone.
    await until('swarm network removed', async () => {
      await docker('network', 'rm', network);
      return true;
    }).catch((err: unknown) => console.error(String(err)));
  }
}

// ------------------------------------------------------------------------------------ main

function parseArgs(argv: string[]): { runs: number } {
  let runs = 1;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--runs') {
      runs = Number(argv[i + 1]);
      i++;
    } else throw new Error(`unknown argument ${argv[i]}: use --runs N`);
  }
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs needs a whole number ≥ 1');
  return { runs };
}

async function main(): Promise<void> {
  const { runs } = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('run as root (the lab needs network namespaces)');
  await docker('version', '--format', '{{.Server.Version}}').catch(() => {
    throw new Error('no Docker engine answers: run scripts/dockerd.sh first');
  });
  await docker('image', 'inspect', OLD_IMAGE, NEW_IMAGE).catch(() =>
    run('bash', [path.join(REPO, 'scripts', 'make-images.sh')]),
  );

  // `scripts/lab down` also tears down the lab the pointer names: never start beside another.
  if (fs.existsSync(LAB_STATE_POINTER)) {
    throw new Error(
      `another lab is up (${fs.readFileSync(LAB_STATE_POINTER, 'utf8').trim()}): run this under flock /run/clab.lock, after it is down`,
    );
  }

  // Ours first, on a one-host lab (one node, as the single-node swarm), before any swarm exists.
  const ours: Measured[] = [];
  const lab = new Lab();
  const onSignal = () => void lab.down().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await lab.up({ managers: 1, workers: 0 });
    for (let r = 0; r < runs; r++) ours.push(await measureOurs(lab));
  } finally {
    await lab.down();
  }

  const swarm: Measured[] = [];
  const state = await docker('info', '--format', '{{.Swarm.LocalNodeState}}');
  let createdSwarm = false;
  if (state === 'inactive') {
    await docker('swarm', 'init', '--advertise-addr', '127.0.0.1');
    createdSwarm = true;
  } else if (state !== 'active') {
    throw new Error(`the engine's swarm state is "${state}": cannot measure Swarm`);
  }
  try {
    for (let r = 0; r < runs; r++) swarm.push(await measureSwarm(`${process.pid}-${r}`));
  } finally {
    if (createdSwarm) await docker('swarm', 'leave', '--force');
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }

  const sum = (xs: Measured[], f: (m: Measured) => number) => xs.reduce((a, m) => a + f(m), 0);
  const reasons = (xs: Measured[]) => {
    const all: Record<string, number> = {};
    for (const m of xs) for (const [k, v] of Object.entries(m.client.reasons)) all[k] = (all[k] ?? 0) + v;
    return all;
  };
  const oursMs = Math.round(median(ours.map((m) => m.updateMs)));
  const swarmMs = Math.round(median(swarm.map((m) => m.updateMs)));
  console.log(
    `rolling update ${OLD_IMAGE} → ${NEW_IMAGE}, ${REPLICAS} replicas, parallelism ${PARALLELISM}, delay 0s, stop-first, monitor 5s, --init; median of ${runs} run(s)`,
  );
  console.log(
    `host: ${os.cpus().length} CPUs, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}, node ${process.version}`,
  );
  for (const [who, xs, via] of [
    ['ours ', ours, 'published port (routing mesh) of the lab host'],
    ['swarm', swarm, 'dnsrr name re-resolved per request (overlay, from a helper container)'],
  ] as const) {
    for (const m of xs) {
      console.log(
        `${who}  update ${(m.updateMs / 1000).toFixed(2)} s  requests ${m.client.total}  failed ${m.client.failed}  ${JSON.stringify(m.client.reasons)}  answers ${JSON.stringify(m.client.bodies)}  via ${via}`,
      );
    }
  }
  console.log(
    JSON.stringify({
      oursMs,
      swarmMs,
      oursFailedRequests: sum(ours, (m) => m.client.failed),
      swarmFailedRequests: sum(swarm, (m) => m.client.failed),
      requests: sum(ours, (m) => m.client.total) + sum(swarm, (m) => m.client.total),
      oursRequests: sum(ours, (m) => m.client.total),
      swarmRequests: sum(swarm, (m) => m.client.total),
      oursFailureReasons: reasons(ours),
      swarmFailureReasons: reasons(swarm),
      runs,
      replicas: REPLICAS,
      parallelism: PARALLELISM,
      oursPath: 'published port, routing mesh (nftables), one-host namespace lab',
      swarmPath: 'overlay network, --endpoint-mode dnsrr, client re-resolves at 127.0.0.11 per request',
      loadAvg1m: Number(os.loadavg()[0]?.toFixed(2)),
    }),
  );
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exitCode = 1;
  });
}
