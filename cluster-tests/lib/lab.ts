// The namespace lab for end-to-end tests: `scripts/lab up` before a test file, `scripts/lab down`
// after it (always, also when a test fails), and the CLI run on a lab host as a user would.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';

export const root = path.resolve(__dirname, '..', '..', '..');
const labScript = path.join(root, 'scripts', 'lab');
/** Where a running lab records its state dir (scripts/lab STATE_POINTER). */
const STATE_POINTER = '/run/clab.dir';
/** Test labs live in temp dirs with this prefix: a leftover one may be torn down without asking. */
const TEST_LAB_PREFIX = 'cluster-lab-';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  /** Wall time of the command, in ms. */
  elapsedMs: number;
}

/** Runs a command; never rejects: a timeout is code 124 with a note on stderr. */
export function run(
  command: string,
  args: readonly string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 60_000;
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(command, args, {
      env: options.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (code: number, note = '') => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr: stderr + note, elapsedMs: Date.now() - started });
    };
    child.on('error', (err) => finish(127, `\n${command}: ${err.message}`));
    child.on('close', (code) =>
      timedOut
        ? finish(124, `\n${command} ${args.join(' ')}: killed after ${timeoutMs} ms`)
        : finish(code ?? 1),
    );
  });
}

export type HostName = string;

export interface LabOptions {
  managers?: number;
  workers?: number;
  /** `scripts/lab up --runtime`; the daemons detect one when left out. */
  runtime?: 'docker' | 'oci';
}

/** What the tree and the machine can do: tests that need more are skipped or todo, with why. */
export interface Capabilities {
  /** Why the lab cannot run here, or undefined when it can. */
  labUnavailable?: string;
  /** The dispatcher is wired into the node process (node status Ready comes from its sessions). */
  dispatcher: boolean;
  /** The agent is wired into the node process and Docker runs with the test images. */
  agent: boolean;
  /** Why `agent` is false. */
  agentMissing?: string;
}

/** The built node process (what `cluster daemon` runs): every module of dist/src/node. */
function nodeProcessSource(): string {
  const dir = path.join(root, 'dist', 'src', 'node');
  try {
    return fs
      .readdirSync(dir)
      .filter((f) => f.endsWith('.js') && !f.endsWith('.test.js'))
      .map((f) => fs.readFileSync(path.join(dir, f), 'utf8'))
      .join('\n');
  } catch {
    return '';
  }
}

function hasCommand(name: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && fs.existsSync(path.join(dir, name)));
}

let capabilitiesMemo: Capabilities | undefined;

/** Reads the built node process (what `cluster daemon` runs) and the machine. */
export function capabilities(): Capabilities {
  if (capabilitiesMemo) return capabilitiesMemo;
  let labUnavailable: string | undefined;
  if (process.platform !== 'linux') labUnavailable = 'the lab needs Linux network namespaces';
  else if (process.getuid?.() !== 0) labUnavailable = 'the lab needs root (network namespaces, nftables)';
  else if (!hasCommand('ip') || !hasCommand('nft'))
    labUnavailable = 'the lab needs iproute2 and nftables (scripts/setup.sh)';
  else if (!fs.existsSync(path.join(root, 'dist', 'src', 'cli', 'main.js')))
    labUnavailable = 'not built (npm run build)';
  const source = nodeProcessSource();
  // The wiring, not the folder: a component exists for the lab only once the daemon runs it.
  const dispatcher = /require\("\.\.\/manager\/dispatcher(\/[^"]*)?"\)/.test(source);
  const agentWired = /require\("\.\.\/agent(\/[^"]*)?"\)/.test(source);
  let agentMissing: string | undefined;
  if (!agentWired)
    agentMissing = 'the agent (src/agent) is not wired into the node process (src/node/index.ts) yet';
  else if (!dispatcher) agentMissing = 'the dispatcher is not wired into the node process yet';
  else if (!hasCommand('docker')) agentMissing = 'docker is not installed (scripts/setup.sh)';
  capabilitiesMemo = { labUnavailable, dispatcher, agent: agentMissing === undefined, agentMissing };
  return capabilitiesMemo;
}

export interface NodeRow {
  ID: string;
  Hostname: string;
  Status: string;
  Availability: string;
  ManagerStatus: string;
  /** A boolean in JSON (older CLIs printed the string "true"/"false"). */
  Self: boolean | string;
}

export interface ServiceRow {
  ID: string;
  Name: string;
  Mode: string;
  Replicas: string;
  Image: string;
}

/** One line of JSON per row, as `--format json` prints lists. */
export function jsonLines<T>(text: string): T[] {
  return text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as T);
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `probe` until it returns a value (not undefined) or the time is up; the error names
 * `what` and the last thing seen, so a failure says where the cluster got stuck.
 */
export async function eventually<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = 'nothing yet';
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err instanceof Error ? err.message : err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms (last: ${String(last)})`);
    await sleep(intervalMs);
  }
}

// GETs `count` times (a new connection each) from every address given; one line per request:
// "<address> <status> <first line of the body>" or "<address> ERR <reason>".
const HTTP_PROBE = `
const http = require('node:http');
const [count, port, ...addrs] = process.argv.slice(1);
const get = (host) => new Promise((resolve) => {
  const req = http.get({ host, port: Number(port), path: '/', timeout: 2000, agent: false }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => resolve(res.statusCode + ' ' + body.split('\\n')[0]));
  });
  req.on('timeout', () => req.destroy(new Error('no answer in 2 s')));
  req.on('error', (e) => resolve('ERR ' + e.message));
});
(async () => {
  for (const host of addrs) for (let i = 0; i < Number(count); i++) console.log(host + ' ' + (await get(host)));
})();
`;

export class Lab {
  readonly dir: string;
  private isUp = false;

  constructor() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), TEST_LAB_PREFIX));
  }

  private env(): NodeJS.ProcessEnv {
    return { ...process.env, LAB_DIR: this.dir, CLUSTER_LOG_LEVEL: undefined };
  }

  /** `scripts/lab ARGS` against this lab. */
  lab(args: readonly string[], timeoutMs = 120_000): Promise<RunResult> {
    return run('bash', [labScript, ...args], { env: this.env(), timeoutMs });
  }

  async up(options: LabOptions = {}): Promise<void> {
    await removeLeftoverTestLab();
    const result = await this.lab(
      [
        'up',
        '--managers',
        String(options.managers ?? 3),
        '--workers',
        String(options.workers ?? 2),
        ...(options.runtime ? ['--runtime', options.runtime] : []),
      ],
      180_000,
    );
    this.isUp = true;
    if (result.code !== 0) {
      throw new Error(
        `scripts/lab up failed (${result.code}):\n${result.stdout}${result.stderr}\n${this.logTails()}`,
      );
    }
  }

  /** Tears the lab down; safe to call after a failed or partial up, and more than once. */
  async down(): Promise<void> {
    if (!this.isUp && !fs.existsSync(path.join(this.dir, 'hosts'))) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      return;
    }
    const result = await this.lab(['down'], 120_000);
    this.isUp = false;
    if (result.code !== 0)
      throw new Error(`scripts/lab down failed (${result.code}):\n${result.stdout}${result.stderr}`);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** The `cluster` CLI run on HOST against that host's daemon (the unix socket), as a user there would. */
  cli(host: HostName, ...args: string[]): Promise<RunResult> {
    // Above the CLI's own deadline (15 s per call): a hang shows as code 124, not a stuck test.
    return this.lab(['exec', host, '--', 'cluster', ...args], 60_000);
  }

  /** Like cli, but a non-zero exit is an error carrying the CLI's stderr. */
  async ok(host: HostName, ...args: string[]): Promise<string> {
    const result = await this.cli(host, ...args);
    if (result.code !== 0) {
      throw new Error(`cluster ${args.join(' ')} on ${host} exited ${result.code}: ${result.stderr.trim()}`);
    }
    return result.stdout;
  }

  /**
   * From inside `host`'s namespace, `count` GETs (a new connection each) to `port` of every
   * address given: one entry per request, its reply "<status> <first line of the body>" or
   * "ERR <reason>".
   */
  async httpProbe(
    host: HostName,
    port: number,
    count: number,
    addrs: readonly string[],
  ): Promise<{ addr: string; reply: string }[]> {
    const r = await this.lab([
      'exec',
      host,
      '--',
      'node',
      '-e',
      HTTP_PROBE,
      String(count),
      String(port),
      ...addrs,
    ]);
    if (r.code !== 0) throw new Error(`probe from ${host} failed: ${r.stderr}`);
    return r.stdout
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((line) => {
        const [addr = '', ...rest] = line.split(' ');
        return { addr, reply: rest.join(' ') };
      });
  }

  async nodes(host: HostName): Promise<NodeRow[]> {
    return jsonLines<NodeRow>(await this.ok(host, '--format', 'json', 'node', 'ls'));
  }

  async services(host: HostName): Promise<ServiceRow[]> {
    return jsonLines<ServiceRow>(await this.ok(host, '--format', 'json', 'service', 'ls'));
  }

  /** Lab host names with their roles, from the lab's own record. */
  hosts(): { host: HostName; address: string; role: 'manager' | 'worker' }[] {
    return fs
      .readFileSync(path.join(this.dir, 'hosts'), 'utf8')
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        const [host = '', address = '', role = ''] = line.split(/\s+/);
        return { host, address, role: role === 'manager' ? 'manager' : 'worker' };
      });
  }

  managers(): HostName[] {
    return this.hosts()
      .filter((h) => h.role === 'manager')
      .map((h) => h.host);
  }

  /**
   * The Raft role HOST's daemon last logged ("Leader", "Follower", ...): the harness's own view,
   * to check what node ls shows and to pick whom to kill. Needs info logs (the lab's default).
   */
  raftRole(host: HostName): string | undefined {
    let text = '';
    try {
      text = fs.readFileSync(path.join(this.dir, host, 'daemon.log'), 'utf8');
    } catch {
      return undefined;
    }
    let role: string | undefined;
    for (const line of text.split('\n')) {
      if (!line.includes('"raft role changed"')) continue;
      try {
        const entry = JSON.parse(line) as { role?: unknown };
        if (typeof entry.role === 'string') role = entry.role;
      } catch {
        // A line cut by a crash: the one before it stands.
      }
    }
    return role;
  }

  /** The last lines of every host's daemon log, for a failure message. */
  logTails(lines = 15): string {
    let text = '';
    for (const entry of fs.existsSync(this.dir) ? fs.readdirSync(this.dir) : []) {
      const log = path.join(this.dir, entry, 'daemon.log');
      if (!fs.existsSync(log)) continue;
      const tail = fs.readFileSync(log, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      text += `--- ${entry}/daemon.log\n${tail}\n`;
    }
    return text;
  }
}

/** A test lab whose runner died before its teardown; a lab someone else runs is left alone. */
async function removeLeftoverTestLab(): Promise<void> {
  let dir = '';
  try {
    dir = fs.readFileSync(STATE_POINTER, 'utf8').trim();
  } catch {
    return;
  }
  if (path.dirname(dir) === os.tmpdir() && path.basename(dir).startsWith(TEST_LAB_PREFIX)) {
    await run('bash', [labScript, 'down'], { env: { ...process.env, LAB_DIR: dir }, timeoutMs: 120_000 });
  }
}

/**
 * One lab for the whole test file: up in `before`, down in `after` (node:test runs `after` also
 * when tests fail). A SIGINT/SIGTERM on the runner tears it down too. Returns the lab, or the
 * reason it cannot run here (then the file's tests skip with that reason).
 */
export function useLab(options: LabOptions = {}): { lab: Lab; skip: string | false } {
  const reason = capabilities().labUnavailable;
  const lab = new Lab();
  if (reason) {
    fs.rmSync(lab.dir, { recursive: true, force: true });
    return { lab, skip: reason };
  }
  const onSignal = (signal: NodeJS.Signals) => {
    void lab.down().finally(() => process.kill(process.pid, signal));
  };
  before(async () => {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    await lab.up(options);
  });
  after(async () => {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await lab.down();
  });
  return { lab, skip: false };
}
