// Raft benchmark: 3 node processes on loopback (mutual TLS, LevelDB with fsync on every
// persisted Ready), committed writes/s and latency for 1, 16 and 256 concurrent proposers with
// 256-byte values, then failover time after kill -9 of the leader under load.
//
//   npm run build && npm run bench:raft [-- --failover-runs 20 --seconds 5 --snapshot-every N]
//
// Proposers run inside the leader's process and call RaftNode.propose() directly: the figures
// are for the Raft path (propose → replicate → fsync on a quorum → apply → resolve), with no
// client RPC in front. The last line of output is one JSON object with the figures.

import { DEFAULT_SNAPSHOT_EVERY_ENTRIES } from '../../src/raft/node';
import { KvProcessCluster } from '../../src/raft/node/testing_cluster';
import type { MetricsReport } from '../../src/raft/node/testing_kv_server';
import type { NodeId } from '../../src/raft/types';

const VALUE_BYTES = 256;
const PROPOSER_COUNTS = [1, 16, 256] as const;

const TARGETS = {
  writesPerSec256: 10_000,
  p99Ms256: 20,
  p50Ms1: 2,
  failoverMedianMs: 1000,
  failoverMaxMs: 2000,
};
const PEERS = {
  etcd22WritesPerSec256: 4581,
  swarmFailoverMs: 12_000,
};

function argNumber(name: string, fallback: number): number {
  const at = process.argv.indexOf(`--${name}`);
  if (at < 0) return fallback;
  const value = Number(process.argv[at + 1]);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`);
  return value;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? NaN;
}

function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

function fmt(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

function mark(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}

interface ThroughputResult {
  proposers: number;
  writesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  failed: number;
  metrics: Map<NodeId, MetricsReport>;
}

async function measureThroughput(
  cluster: KvProcessCluster,
  proposers: number,
  seconds: number,
): Promise<ThroughputResult> {
  const leader = await cluster.waitForLeader();
  // Warm up (JIT, LevelDB memtables, TCP windows), then measure from a clean histogram.
  await cluster.load(leader, proposers, 1000, VALUE_BYTES);
  for (const id of cluster.ids()) await cluster.metrics(id, true);
  const report = await cluster.load(leader, proposers, seconds * 1000, VALUE_BYTES);
  const metrics = new Map<NodeId, MetricsReport>();
  for (const id of cluster.ids()) metrics.set(id, await cluster.metrics(id, true));
  const sorted = [...report.latenciesMs].sort((a, b) => a - b);
  return {
    proposers,
    writesPerSec: report.committed / (report.elapsedMs / 1000),
    p50Ms: percentile(sorted, 50),
    p99Ms: percentile(sorted, 99),
    failed: report.failed,
    metrics,
  };
}

/** Kill -9 the leader while 16 proposers write to it; time until another node commits a write. */
async function measureFailover(cluster: KvProcessCluster): Promise<number> {
  const leader = await cluster.waitForLeader();
  const survivors = cluster.ids().filter((id) => id !== leader);
  // The load dies with the leader; its IPC answer never comes.
  cluster.load(leader, 16, 60_000, VALUE_BYTES).catch(() => undefined);
  await new Promise((resolve) => setTimeout(resolve, 300));
  const killedAt = Date.now();
  const killed = cluster.kill(leader, 'SIGKILL');
  const committedAt = await Promise.any(survivors.map((id) => cluster.probe(id, 15_000)));
  for (const id of survivors) await cluster.probeStop(id);
  await killed;
  const failoverMs = committedAt - killedAt;
  // Bring the old leader back and let it catch up before the next run.
  await cluster.start(leader);
  await new Promise((resolve) => setTimeout(resolve, 700));
  return failoverMs;
}

async function main(): Promise<void> {
  const seconds = argNumber('seconds', 5);
  const failoverRuns = argNumber('failover-runs', 20);
  const snapshotEveryEntries = argNumber('snapshot-every', DEFAULT_SNAPSHOT_EVERY_ENTRIES);
  const cluster = await KvProcessCluster.create({
    size: 3,
    tickMs: 100,
    requestTimeoutMs: 5000,
    snapshotEveryEntries,
  });
  const stopOnSignal = (): void => {
    void cluster.stopAll().finally(() => process.exit(130));
  };
  process.once('SIGINT', stopOnSignal);
  process.once('SIGTERM', stopOnSignal);
  try {
    await cluster.startAll();
    const throughput: ThroughputResult[] = [];
    for (const proposers of PROPOSER_COUNTS) {
      const result = await measureThroughput(cluster, proposers, seconds);
      throughput.push(result);
      process.stderr.write(`  ${proposers} proposers: ${fmt(result.writesPerSec, 0)} writes/s\n`);
    }
    const failovers: number[] = [];
    for (let run = 0; run < failoverRuns; run++) {
      const ms = await measureFailover(cluster);
      failovers.push(ms);
      process.stderr.write(`  failover run ${run + 1}/${failoverRuns}: ${ms} ms\n`);
    }
    const at = (n: number): ThroughputResult => {
      const r = throughput.find((t) => t.proposers === n);
      if (!r) throw new Error(`no result for ${n} proposers`);
      return r;
    };
    const r1 = at(1);
    const r256 = at(256);
    const failoverMedianMs = median(failovers);
    const failoverMaxMs = Math.max(...failovers);

    const lines: string[] = [];
    lines.push('');
    lines.push(
      `Raft benchmark: 3 node processes on 127.0.0.1, mutual TLS, LevelDB fsync per Ready, ${VALUE_BYTES}-byte values, ${seconds} s per load, snapshot every ${snapshotEveryEntries} entries, tick 100 ms`,
    );
    lines.push('');
    lines.push('proposers  writes/s   p50 ms   p99 ms  failed  leader ELD p99 ms  max RSS MB');
    for (const r of throughput) {
      const eld = Math.max(...[...r.metrics.values()].map((m) => m.eventLoopDelayP99Ms));
      const rss = Math.max(...[...r.metrics.values()].map((m) => m.rssBytes)) / 2 ** 20;
      lines.push(
        `${String(r.proposers).padStart(9)}  ${fmt(r.writesPerSec, 0).padStart(8)}  ${fmt(r.p50Ms, 2).padStart(7)}  ${fmt(r.p99Ms, 2).padStart(7)}  ${String(r.failed).padStart(6)}  ${fmt(eld, 1).padStart(17)}  ${fmt(rss, 0).padStart(10)}`,
      );
    }
    lines.push('');
    lines.push('event-loop delay per node at 256 proposers (p50 / p99 / max ms), RSS MB:');
    for (const [id, m] of r256.metrics) {
      lines.push(
        `  node ${id}: ${fmt(m.eventLoopDelayP50Ms, 2)} / ${fmt(m.eventLoopDelayP99Ms, 2)} / ${fmt(m.eventLoopDelayMaxMs, 1)}, ${fmt(m.rssBytes / 2 ** 20, 0)} MB`,
      );
    }
    lines.push('');
    lines.push(
      `failover (kill -9 leader under 16-proposer load → first write committed by the new leader), ${failovers.length} runs:`,
    );
    lines.push(`  median ${failoverMedianMs} ms, max ${failoverMaxMs} ms, all: ${failovers.join(' ')}`);
    lines.push('');
    lines.push('target                                  measured       target     peer');
    lines.push(
      `writes/s at 256 proposers               ${fmt(r256.writesPerSec, 0).padStart(8)}   ≥ ${TARGETS.writesPerSec256}   etcd 2.2: ${PEERS.etcd22WritesPerSec256}  ${mark(r256.writesPerSec >= TARGETS.writesPerSec256)}`,
    );
    lines.push(
      `p99 ms at 256 proposers                 ${fmt(r256.p99Ms, 2).padStart(8)}   ≤ ${TARGETS.p99Ms256}      etcd 2.2 p90: 70  ${mark(r256.p99Ms <= TARGETS.p99Ms256)}`,
    );
    lines.push(
      `p50 ms at 1 proposer                    ${fmt(r1.p50Ms, 2).padStart(8)}   ≤ ${TARGETS.p50Ms1}       ${mark(r1.p50Ms <= TARGETS.p50Ms1)}`,
    );
    lines.push(
      `failover median ms                      ${String(failoverMedianMs).padStart(8)}   ≤ ${TARGETS.failoverMedianMs}    Docker Swarm (3 managers): ${PEERS.swarmFailoverMs}  ${mark(failoverMedianMs <= TARGETS.failoverMedianMs)}`,
    );
    lines.push(
      `failover max ms                         ${String(failoverMaxMs).padStart(8)}   ≤ ${TARGETS.failoverMaxMs}    ${mark(failoverMaxMs <= TARGETS.failoverMaxMs)}`,
    );
    lines.push('');
    process.stdout.write(lines.join('\n') + '\n');

    const eventLoopDelayP99Ms: Record<string, number> = {};
    const rssMB: Record<string, number> = {};
    for (const [id, m] of r256.metrics) {
      eventLoopDelayP99Ms[String(id)] = Number(m.eventLoopDelayP99Ms.toFixed(2));
      rssMB[String(id)] = Math.round(m.rssBytes / 2 ** 20);
    }
    const summary = {
      writesPerSec: Object.fromEntries(
        throughput.map((r) => [String(r.proposers), Math.round(r.writesPerSec)]),
      ),
      p50Ms: Number(r256.p50Ms.toFixed(2)),
      p99Ms: Number(r256.p99Ms.toFixed(2)),
      p50MsByProposers: Object.fromEntries(
        throughput.map((r) => [String(r.proposers), Number(r.p50Ms.toFixed(2))]),
      ),
      p99MsByProposers: Object.fromEntries(
        throughput.map((r) => [String(r.proposers), Number(r.p99Ms.toFixed(2))]),
      ),
      failoverMedianMs,
      failoverMaxMs,
      failoverRuns: failovers.length,
      eventLoopDelayP99MsAt256: eventLoopDelayP99Ms,
      rssMBAt256: rssMB,
    };
    process.stdout.write(JSON.stringify(summary) + '\n');
  } finally {
    await cluster.stopAll();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
