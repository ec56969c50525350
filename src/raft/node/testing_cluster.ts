// Runs a KV cluster as separate node processes on loopback for the linearizability test and
// the benchmark: ports, throwaway TLS, data dirs, SIGKILL and restart, IPC and HTTP clients.
// Every child started here is killed by stopAll(), which callers run in a finally block.

import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { StateRole, type NodeId } from '../types';
import { createTestPki, type TestPki } from '../transport/testing_tls';
import type { RaftNodeStatus } from './index';
import type { KvServerConfig, KvServerRequest, LoadReport, MetricsReport } from './testing_kv_server';
import { freePort } from '../../common/ports';

const SERVER_SCRIPT = join(__dirname, 'testing_kv_server.js');
/** How long a node process may take to open its store and listen. */
const START_TIMEOUT_MS = 15_000;

export interface ClusterOptions {
  size: number;
  tickMs?: number;
  electionTicks?: number;
  snapshotEveryEntries?: number;
  snapshotRetainEntries?: number;
  requestTimeoutMs?: number;
  logLevel?: string;
}

type Distributive<T> = T extends unknown ? Omit<T, 'requestId'> : never;
type IpcRequest = Distributive<KvServerRequest>;

export interface HttpReply {
  status: number;
  body: { index?: number; value?: string | null; leaderId?: number; error?: string };
}

interface Member {
  id: NodeId;
  raftPort: number;
  httpPort: number;
  dataDir: string;
  child?: ChildProcess;
  exited?: Promise<void>;
}

export class KvProcessCluster {
  readonly members = new Map<NodeId, Member>();
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 512 });
  private nextRequestId = 1;
  private readonly replies = new Map<number, (message: Record<string, unknown>) => void>();

  private constructor(
    readonly root: string,
    private readonly pki: TestPki,
    private readonly options: ClusterOptions,
  ) {}

  static async create(options: ClusterOptions): Promise<KvProcessCluster> {
    const root = mkdtempSync(join(tmpdir(), 'raft-kv-'));
    const pki = createTestPki(root);
    const cluster = new KvProcessCluster(root, pki, options);
    for (let id = 1; id <= options.size; id++) {
      pki.node(`node-${id}`);
      cluster.members.set(id, {
        id,
        raftPort: await freePort(),
        httpPort: await freePort(),
        dataDir: join(root, `data-${id}`),
      });
    }
    return cluster;
  }

  ids(): NodeId[] {
    return [...this.members.keys()];
  }

  isRunning(id: NodeId): boolean {
    return this.member(id).child !== undefined;
  }

  private member(id: NodeId): Member {
    const member = this.members.get(id);
    if (!member) throw new Error(`no member ${id}`);
    return member;
  }

  async startAll(): Promise<void> {
    await Promise.all(this.ids().map((id) => this.start(id)));
  }

  /** Starts (or restarts, from its data dir) a node process and waits until it listens. */
  async start(id: NodeId): Promise<void> {
    const member = this.member(id);
    if (member.child) throw new Error(`node ${id} is already running`);
    const config: KvServerConfig = {
      id,
      clusterId: 'kv-test',
      dataDir: member.dataDir,
      raftPort: member.raftPort,
      httpPort: member.httpPort,
      members: [...this.members.values()].map((m) => [m.id, m.raftPort]),
      pkiDir: this.pki.dir,
      tickMs: this.options.tickMs,
      electionTicks: this.options.electionTicks,
      snapshotEveryEntries: this.options.snapshotEveryEntries,
      snapshotRetainEntries: this.options.snapshotRetainEntries,
      requestTimeoutMs: this.options.requestTimeoutMs,
      logLevel: this.options.logLevel ?? 'error',
    };
    const child = fork(SERVER_SCRIPT, [JSON.stringify(config)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    member.child = child;
    member.exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.on('message', (message: Record<string, unknown>) => {
      const requestId = message.requestId;
      if (typeof requestId !== 'number') return;
      const waiter = this.replies.get(requestId);
      this.replies.delete(requestId);
      waiter?.(message);
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`node ${id} did not start within ${START_TIMEOUT_MS} ms`)),
        START_TIMEOUT_MS,
      );
      const onMessage = (message: Record<string, unknown>): void => {
        if (message.type !== 'ready') return;
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve();
      };
      const onExit = (code: number | null): void => {
        clearTimeout(timer);
        child.off('message', onMessage);
        reject(new Error(`node ${id} exited with code ${code} while starting`));
      };
      child.on('message', onMessage);
      child.once('exit', onExit);
    }).catch(async (err: unknown) => {
      await this.kill(id);
      throw err;
    });
  }

  /** SIGKILL by default: the process gets no chance to flush anything. */
  async kill(id: NodeId, signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const member = this.member(id);
    const child = member.child;
    if (!child) return;
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // Already gone.
      }
    }
    await member.exited;
    member.child = undefined;
    member.exited = undefined;
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.ids().map((id) => this.kill(id)));
    this.agent.destroy();
    for (const waiter of this.replies.values()) waiter({ error: 'cluster stopped' });
    this.replies.clear();
    this.pki.cleanup();
    rmSync(this.root, { recursive: true, force: true });
  }

  /** One IPC request to a node process; rejects if it does not answer in time. */
  async ipc(id: NodeId, message: IpcRequest, timeoutMs = 5000): Promise<Record<string, unknown>> {
    const child = this.member(id).child;
    if (!child) throw new Error(`node ${id} is not running`);
    const requestId = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.replies.delete(requestId);
        reject(new Error(`node ${id} did not answer ${message.type} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.replies.set(requestId, (reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
      child.send({ ...message, requestId });
    });
  }

  async status(id: NodeId): Promise<RaftNodeStatus> {
    const reply = await this.ipc(id, { type: 'status' });
    return reply.status as RaftNodeStatus;
  }

  async metrics(id: NodeId, reset: boolean): Promise<MetricsReport> {
    const reply = await this.ipc(id, { type: 'metrics', reset });
    return reply.metrics as MetricsReport;
  }

  async load(id: NodeId, proposers: number, durationMs: number, valueBytes: number): Promise<LoadReport> {
    const reply = await this.ipc(
      id,
      { type: 'load', proposers, durationMs, valueBytes },
      durationMs + 30_000,
    );
    return reply.load as LoadReport;
  }

  /** Resolves with the wall-clock ms at which a write committed on `id` (see 'probe'). */
  async probe(id: NodeId, timeoutMs: number): Promise<number> {
    const reply = await this.ipc(id, { type: 'probe', intervalMs: 5 }, timeoutMs);
    return reply.committedAt as number;
  }

  async probeStop(id: NodeId): Promise<void> {
    await this.ipc(id, { type: 'probeStop' });
  }

  /** Waits until a running node reports itself leader and returns its id. */
  async waitForLeader(timeoutMs = 10_000, exclude?: NodeId): Promise<NodeId> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      for (const id of this.ids()) {
        if (id === exclude || !this.isRunning(id)) continue;
        try {
          const status = await this.status(id);
          if (status.role === StateRole.Leader) return id;
        } catch {
          // Restarting or killed meanwhile: ask the others.
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`no leader within ${timeoutMs} ms`);
  }

  /** An HTTP call to a node's KV API; rejects on a transport error or timeout (outcome unknown). */
  async http(
    id: NodeId,
    method: 'GET' | 'POST',
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<HttpReply> {
    const port = this.member(id).httpPort;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          host: '127.0.0.1',
          port,
          method,
          path,
          agent: this.agent,
          headers: payload
            ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }
            : {},
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            clearTimeout(timer);
            try {
              resolve({
                status: res.statusCode ?? 0,
                body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as HttpReply['body'],
              });
            } catch (err) {
              reject(err instanceof Error ? err : new Error(String(err)));
            }
          });
          res.on('error', (err) => {
            clearTimeout(timer);
            reject(err);
          });
        },
      );
      const timer = setTimeout(
        () => req.destroy(new Error(`request to node ${id} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
      req.end(payload);
    });
  }
}
