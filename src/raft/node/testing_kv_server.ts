// One member of a test KV cluster as its own process: a RaftNode with the KV state machine,
// client operations over HTTP on loopback, and (when forked with an IPC channel) load and
// probe commands for the benchmark. Started by kv.test.ts and bench/raft/bench.ts.
//
//   node testing_kv_server.js '<json KvServerConfig>'
//
// HTTP: POST /put {"key","value"[,"op":"append"]} → 200 {"index"}; GET /get?key=k → 200 {"value"} after a
// ReadIndex; GET /status. 421 {"leaderId"} when not the leader (not executed), 409 when the
// proposal was lost (not executed), 503 or 504 when the outcome is unknown.

import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';

import { pino } from 'pino';

import { ProposalDroppedError, RaftError, type NodeId } from '../types';
import { NotLeaderError, ProposalLostError, RaftNode } from './index';
import { TEST_CHANNEL_OPTIONS, channelCredentials, serverCredentials } from '../transport/testing_tls';
import { KvStateMachine, encodeKvCommand, type KvResult } from './testing_kv';

export interface KvServerConfig {
  id: NodeId;
  clusterId: string;
  dataDir: string;
  raftPort: number;
  httpPort: number;
  /** All members, this one included: [id, raft port]. */
  members: Array<[NodeId, number]>;
  /** Directory holding ca.crt and node-<id>.crt / .key (see createTestPki). */
  pkiDir: string;
  tickMs?: number;
  electionTicks?: number;
  snapshotEveryEntries?: number;
  snapshotRetainEntries?: number;
  requestTimeoutMs?: number;
  logLevel?: string;
}

/** IPC requests from a benchmark harness. */
export type KvServerRequest =
  | { type: 'status'; requestId: number }
  | { type: 'load'; requestId: number; proposers: number; durationMs: number; valueBytes: number }
  | { type: 'probe'; requestId: number; intervalMs: number }
  | { type: 'probeStop'; requestId: number }
  | { type: 'metrics'; requestId: number; reset: boolean };

export interface LoadReport {
  committed: number;
  failed: number;
  elapsedMs: number;
  /** Latency of every committed proposal, ms. */
  latenciesMs: number[];
}

export interface MetricsReport {
  eventLoopDelayP50Ms: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  rssBytes: number;
}

/** The histogram records the whole interval between samples; the delay is what exceeds it. */
const EVENT_LOOP_SAMPLE_MS = 5;
function delayMs(intervalNs: number): number {
  return Math.max(0, intervalNs / 1e6 - EVENT_LOOP_SAMPLE_MS);
}

function statusCodeFor(err: unknown): number {
  if (err instanceof NotLeaderError) return 421;
  if (err instanceof ProposalLostError || err instanceof ProposalDroppedError) return 409;
  if (err instanceof RaftError && err.code === 'TIMEOUT') return 504;
  return 503;
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function reply(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function main(): Promise<void> {
  const arg = process.argv[2];
  if (!arg) throw new Error('usage: testing_kv_server.js <json config>');
  const config = JSON.parse(arg) as KvServerConfig;
  const logger = pino({ level: config.logLevel ?? 'warn' }, pino.destination(2));
  const files = {
    ca: readFileSync(join(config.pkiDir, 'ca.crt')),
    cert: readFileSync(join(config.pkiDir, `node-${config.id}.crt`)),
    key: readFileSync(join(config.pkiDir, `node-${config.id}.key`)),
  };
  const kv = new KvStateMachine();
  const node = await RaftNode.start<KvResult>({
    id: config.id,
    clusterId: config.clusterId,
    dataDir: config.dataDir,
    listenAddress: `127.0.0.1:${config.raftPort}`,
    peers: new Map(config.members.map(([id, port]) => [id, `127.0.0.1:${port}`])),
    bootstrapVoters: config.members.map(([id]) => id),
    serverCredentials: serverCredentials(files),
    channelCredentials: channelCredentials(files),
    channelOptions: TEST_CHANNEL_OPTIONS,
    stateMachine: kv,
    tickMs: config.tickMs,
    electionTicks: config.electionTicks,
    snapshotEveryEntries: config.snapshotEveryEntries,
    snapshotRetainEntries: config.snapshotRetainEntries,
    requestTimeoutMs: config.requestTimeoutMs,
    logger,
  });
  const eventLoopDelay = monitorEventLoopDelay({ resolution: EVENT_LOOP_SAMPLE_MS });
  eventLoopDelay.enable();

  const http = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      try {
        if (req.method === 'POST' && url.pathname === '/put') {
          const body = JSON.parse(await readBody(req)) as { key: string; value: string; op?: string };
          const op = body.op === 'append' ? 'append' : 'put';
          const result = await node.propose(encodeKvCommand({ op, key: body.key, value: body.value }));
          reply(res, 200, { index: result?.index });
        } else if (req.method === 'GET' && url.pathname === '/get') {
          const key = url.searchParams.get('key') ?? '';
          // Reads go through the leader's ReadIndex like writes go through its log.
          if (!node.isLeader()) throw new NotLeaderError(node.id, node.status().leaderId);
          await node.readIndex();
          reply(res, 200, { value: kv.get(key) });
        } else if (url.pathname === '/status') {
          reply(res, 200, node.status());
        } else {
          reply(res, 404, { error: 'not found' });
        }
      } catch (err) {
        const code = statusCodeFor(err);
        reply(res, code, {
          error: err instanceof Error ? err.message : String(err),
          leaderId: err instanceof NotLeaderError ? err.leaderId : undefined,
        });
      }
    })();
  });
  http.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve) => http.listen(config.httpPort, '127.0.0.1', resolve));

  let probing: NodeJS.Timeout | undefined;
  let probeGeneration = 0;
  const send = (message: unknown): void => {
    if (process.send) process.send(message);
  };
  process.on('message', (raw: KvServerRequest) => {
    void (async () => {
      switch (raw.type) {
        case 'status':
          send({ requestId: raw.requestId, status: node.status() });
          break;
        case 'metrics': {
          const report: MetricsReport = {
            eventLoopDelayP50Ms: delayMs(eventLoopDelay.percentile(50)),
            eventLoopDelayP99Ms: delayMs(eventLoopDelay.percentile(99)),
            eventLoopDelayMaxMs: delayMs(eventLoopDelay.max),
            rssBytes: process.memoryUsage.rss(),
          };
          if (raw.reset) eventLoopDelay.reset();
          send({ requestId: raw.requestId, metrics: report });
          break;
        }
        case 'load':
          send({
            requestId: raw.requestId,
            load: await runLoad(node, raw.proposers, raw.durationMs, raw.valueBytes),
          });
          break;
        case 'probeStop':
          probeGeneration++;
          if (probing) clearTimeout(probing);
          probing = undefined;
          send({ requestId: raw.requestId, stopped: true });
          break;
        case 'probe': {
          // Propose until a write commits here: the failover clock stops at that moment.
          if (probing) clearTimeout(probing);
          const generation = ++probeGeneration;
          const attempt = (): void => {
            probing = undefined;
            if (generation !== probeGeneration) return;
            const startedAt = Date.now();
            node.propose(encodeKvCommand({ op: 'put', key: 'probe', value: String(startedAt) })).then(
              () => send({ requestId: raw.requestId, committedAt: Date.now() }),
              () => {
                if (generation === probeGeneration) probing = setTimeout(attempt, raw.intervalMs);
              },
            );
          };
          attempt();
          break;
        }
      }
    })();
  });

  const shutdown = (): void => {
    if (probing) clearTimeout(probing);
    eventLoopDelay.disable();
    http.close();
    http.closeAllConnections();
    void node.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('disconnect', shutdown);
  send({ type: 'ready', id: config.id });
  logger.info({ id: config.id, httpPort: config.httpPort, raftPort: config.raftPort }, 'kv node started');
}

/** `proposers` concurrent loops, each proposing one 256-byte put after another for durationMs. */
async function runLoad(
  node: RaftNode<KvResult>,
  proposers: number,
  durationMs: number,
  valueBytes: number,
): Promise<LoadReport> {
  const value = randomBytes(Math.ceil(valueBytes / 2))
    .toString('hex')
    .slice(0, valueBytes);
  const latenciesMs: number[] = [];
  let failed = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  const loop = async (proposer: number): Promise<void> => {
    let seq = 0;
    while (performance.now() < deadline) {
      const t0 = performance.now();
      try {
        await node.propose(encodeKvCommand({ op: 'put', key: `k${proposer}-${seq++ % 64}`, value }));
        latenciesMs.push(performance.now() - t0);
      } catch {
        failed++;
        // Not the leader or leadership changing: back off briefly rather than spin.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: proposers }, (_, i) => loop(i)));
  return { committed: latenciesMs.length, failed, elapsedMs: performance.now() - start, latenciesMs };
}

main().catch((err: unknown) => {
  process.stderr.write(
    `kv node failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
