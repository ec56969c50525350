// A small network-namespace lab for the load balancer's cluster test and benchmark: namespaces
// and veths the caller names, HTTP/UDP backends that answer their own name, and a client that
// runs inside a namespace. Everything it creates is tracked and removed by destroy().
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import readline from 'node:readline';

export function sh(argv: string[], timeoutMs = 15_000): Promise<string> {
  return new Promise((resolve, reject) => {
    const [command, ...args] = argv;
    if (command === undefined) {
      reject(new Error('empty command'));
      return;
    }
    execFile(command, args, { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${argv.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}

// Runs inside a backend namespace: `node -e BACKEND name ip port` serves HTTP (keep-alive) and
// UDP on ip:port, both answering the name, and prints "ready".
const BACKEND_SCRIPT = `
const http = require('http'); const dgram = require('dgram');
const [name, ip, port] = process.argv.slice(1);
const body = Buffer.from(name);
const server = http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
  res.end(body);
});
server.keepAliveTimeout = 60000;
const udp = dgram.createSocket('udp4');
udp.on('message', (m, r) => udp.send(body, r.port, r.address));
let ready = 0;
const up = () => { if (++ready === 2) process.stdout.write('ready\\n'); };
server.listen(Number(port), ip, up);
udp.bind(Number(port), ip, up);
process.stdin.on('end', () => process.exit(0)); process.stdin.resume();
process.on('SIGTERM', () => process.exit(0));
`;

// Runs inside the client namespace; one JSON request per stdin line, one JSON answer per line.
const CLIENT_SCRIPT = `
const http = require('http'); const dgram = require('dgram'); const readline = require('readline');
const agents = new Map();
function get(url, agent) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent, timeout: 3000 }, (res) => {
      let body = ''; res.setEncoding('utf8'); res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ ok: res.statusCode === 200, body }));
      res.on('error', (e) => resolve({ ok: false, error: e.code || e.message }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ ok: false, error: e.code || e.message }));
  });
}
function udp(host, port) {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const t = setTimeout(() => { s.close(); resolve({ ok: false, error: 'timeout' }); }, 2000);
    s.on('message', (m) => { clearTimeout(t); s.close(); resolve({ ok: true, body: m.toString() }); });
    s.on('error', (e) => { clearTimeout(t); s.close(); resolve({ ok: false, error: e.code || e.message }); });
    s.send('hi', port, host);
  });
}
async function handle(q) {
  if (q.op === 'get') {
    let agent = false;
    if (q.agent) {
      agent = agents.get(q.agent);
      if (!agent) { agent = new http.Agent({ keepAlive: true, maxSockets: 1 }); agents.set(q.agent, agent); }
    }
    return get(q.url, agent);
  }
  if (q.op === 'dropAgent') { const a = agents.get(q.agent); if (a) a.destroy(); agents.delete(q.agent); return { ok: true }; }
  if (q.op === 'fresh') {
    const bodies = []; const errors = [];
    for (let i = 0; i < q.count; i++) { const r = await get(q.url, false); if (r.ok) bodies.push(r.body); else errors.push(r.error); }
    return { ok: true, bodies, errors };
  }
  if (q.op === 'udp') {
    const bodies = []; const errors = [];
    for (let i = 0; i < q.count; i++) { const r = await udp(q.host, q.port); if (r.ok) bodies.push(r.body); else errors.push(r.error); }
    return { ok: true, bodies, errors };
  }
  if (q.op === 'loop') {
    // Steady stream of fresh connections until told to stop; counts per answer and failures.
    loop = { stop: false, ok: 0, failed: 0, errors: [], byBody: {} };
    const l = loop;
    const worker = async () => { while (!l.stop) { const r = await get(q.url, false);
      if (r.ok) { l.ok++; l.byBody[r.body] = (l.byBody[r.body] || 0) + 1; } else { l.failed++; if (l.errors.length < 10) l.errors.push(r.error); } } };
    l.done = Promise.all(Array.from({ length: q.concurrency }, worker));
    return { ok: true };
  }
  if (q.op === 'stopLoop') { loop.stop = true; await loop.done; const { ok, failed, errors, byBody } = loop; return { ok: true, result: { ok, failed, errors, byBody } }; }
  return { ok: false, error: 'unknown op ' + q.op };
}
let loop;
readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const q = JSON.parse(line);
  handle(q).then((r) => process.stdout.write(JSON.stringify({ id: q.id, ...r }) + '\\n'));
}).on('close', () => process.exit(0));
`;

export interface ClientAnswer {
  id: number;
  ok: boolean;
  body?: string;
  error?: string;
  bodies?: string[];
  errors?: string[];
  result?: { ok: number; failed: number; errors: string[]; byBody: Record<string, number> };
}

/** A client process inside a namespace, driven by JSON requests. */
export class NsClient {
  private nextId = 1;
  private readonly waiting = new Map<number, (answer: ClientAnswer) => void>();

  constructor(private readonly child: ChildProcessWithoutNullStreams) {
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const answer = JSON.parse(line) as ClientAnswer;
      const resolve = this.waiting.get(answer.id);
      this.waiting.delete(answer.id);
      resolve?.(answer);
    });
  }

  request(query: Record<string, unknown>): Promise<ClientAnswer> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.stdin.write(`${JSON.stringify({ id, ...query })}\n`);
    });
  }

  /** One GET; with `agent`, over that named keep-alive connection (made on first use). */
  get(url: string, agent?: string): Promise<ClientAnswer> {
    return this.request({ op: 'get', url, agent });
  }

  /** `count` sequential GETs, each on a new connection. */
  fresh(url: string, count: number): Promise<ClientAnswer> {
    return this.request({ op: 'fresh', url, count });
  }

  udp(host: string, port: number, count: number): Promise<ClientAnswer> {
    return this.request({ op: 'udp', host, port, count });
  }
}

export class NetnsLab {
  private readonly namespaces: string[] = [];
  private readonly children: ChildProcessWithoutNullStreams[] = [];

  /** `prefix` must be unique per run (e.g. with the pid) so labs can run side by side. */
  constructor(readonly prefix: string) {}

  ns(short: string): string {
    return `${this.prefix}-${short}`;
  }

  async addNamespace(short: string): Promise<string> {
    const name = this.ns(short);
    await sh(['ip', 'netns', 'add', name]);
    this.namespaces.push(name);
    await this.exec(name, ['ip', 'link', 'set', 'lo', 'up']);
    return name;
  }

  exec(ns: string, argv: string[]): Promise<string> {
    return sh(['ip', 'netns', 'exec', ns, ...argv]);
  }

  /** A veth pair between two namespaces, each end given an address (CIDR) and brought up. */
  async link(
    nsA: string,
    devA: string,
    cidrA: string | undefined,
    nsB: string,
    devB: string,
    cidrB: string | undefined,
  ): Promise<void> {
    await sh([
      'ip',
      'link',
      'add',
      'name',
      devA,
      'netns',
      nsA,
      'type',
      'veth',
      'peer',
      'name',
      devB,
      'netns',
      nsB,
    ]);
    for (const [ns, dev, cidr] of [
      [nsA, devA, cidrA],
      [nsB, devB, cidrB],
    ] as const) {
      if (cidr !== undefined) await sh(['ip', '-n', ns, 'addr', 'add', cidr, 'dev', dev]);
      await sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
    }
  }

  spawnIn(ns: string, argv: string[]): ChildProcessWithoutNullStreams {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => undefined);
    child.stderr.resume();
    this.children.push(child);
    return child;
  }

  /** An HTTP + UDP backend answering `name`, listening on ip:port inside `ns`. */
  async startBackend(
    ns: string,
    name: string,
    ip: string,
    port: number,
  ): Promise<ChildProcessWithoutNullStreams> {
    const child = this.spawnIn(ns, [process.execPath, '-e', BACKEND_SCRIPT, name, ip, String(port)]);
    await new Promise<void>((resolve, reject) => {
      const lines = readline.createInterface({ input: child.stdout });
      lines.once('line', () => resolve());
      child.once('exit', (code) => reject(new Error(`backend ${name} exited with ${code ?? 'signal'}`)));
    });
    return child;
  }

  startClient(ns: string): NsClient {
    return new NsClient(this.spawnIn(ns, [process.execPath, '-e', CLIENT_SCRIPT]));
  }

  /** Stops one process we started (SIGTERM, then SIGKILL after 2 s). */
  async stop(child: ChildProcessWithoutNullStreams): Promise<void> {
    await stopChild(child);
    const index = this.children.indexOf(child);
    if (index >= 0) this.children.splice(index, 1);
  }

  /** Stops every process we started (by pid) and deletes our namespaces, which takes their veths and nft tables along. */
  async destroy(): Promise<void> {
    await Promise.all(this.children.map(stopChild));
    this.children.length = 0;
    for (const name of this.namespaces.splice(0))
      await sh(['ip', 'netns', 'del', name]).catch(() => undefined);
  }
}

function stopChild(child: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
    child.stdin.end();
  });
}
