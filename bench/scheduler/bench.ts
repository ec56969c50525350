// Scheduler benchmark: times the pure placement of 10,000 and 100,000 pending tasks on 1,000
// nodes (a few services, some with constraints, reservations and a spread preference) and
// prints our figures beside the targets and SwarmKit's. The last line is one JSON object.
import os from 'node:os';
import { performance } from 'node:perf_hooks';

import type { Node, Task } from '../../src/gen/cluster/v1/objects';
import { NodeRole } from '../../src/gen/cluster/v1/objects';
import { placeTasks } from '../../src/manager/scheduler';
import { CPU, GiB, MiB, makeNode, makeTask, type TaskOptions } from '../../src/manager/scheduler/testing';

const NODE_COUNT = 1_000;
// Timed runs per case, after one untimed run on the same input (JIT warm-up, and the freshly
// built input moved to the old generation, as a leader's store objects are).
const RUNS = 5;

interface Case {
  readonly name: string;
  readonly jsonKey: string;
  readonly tasks: number;
  readonly targetMs: number;
  /** SwarmKit's published figure for the same sizes. */
  readonly swarmKitMs: number;
}

const CASES: readonly Case[] = [
  {
    name: '10k tasks / 1k nodes',
    jsonKey: 'tasks10kNodes1k',
    tasks: 10_000,
    targetMs: 500,
    swarmKitMs: 1_800,
  },
  {
    name: '100k tasks / 1k nodes',
    jsonKey: 'tasks100kNodes1k',
    tasks: 100_000,
    targetMs: 5_000,
    swarmKitMs: 22_600,
  },
];

// The mix of services: every task of a service shares its spec, as replicas do.
const SERVICES: readonly { readonly id: string; readonly options: TaskOptions }[] = [
  { id: 'web', options: {} },
  { id: 'api', options: {} },
  { id: 'worker', options: { constraints: ['node.role==worker'] } },
  { id: 'cache', options: { constraints: ['node.labels.zone!=c'], reserveMemoryBytes: 64 * MiB } },
  { id: 'db', options: { constraints: ['node.labels.disk==ssd'], reserveNanoCpus: CPU / 100 } },
  { id: 'batch', options: { reserveNanoCpus: CPU / 20, reserveMemoryBytes: 128 * MiB } },
  { id: 'edge', options: { spread: ['spread=node.labels.zone'] } },
  { id: 'metrics', options: { spread: ['node.labels.zone'], constraints: ['node.labels.zone!=a'] } },
];

function buildNodes(): Node[] {
  const zones = ['a', 'b', 'c'];
  return Array.from({ length: NODE_COUNT }, (_, i) =>
    makeNode(`node-${String(i).padStart(4, '0')}`, {
      role: i < 5 ? NodeRole.NODE_ROLE_MANAGER : NodeRole.NODE_ROLE_WORKER,
      labels: { zone: zones[i % zones.length], ...(i % 4 === 0 ? { disk: 'ssd' } : {}) },
      nanoCpus: 32 * CPU,
      memoryBytes: 64 * GiB,
    }),
  );
}

function buildTasks(count: number): Task[] {
  return Array.from({ length: count }, (_, i) => {
    const service = SERVICES[i % SERVICES.length];
    const slot = Math.floor(i / SERVICES.length) + 1;
    return makeTask(`${service.id}.${slot}`, service.id, { ...service.options, slot });
  });
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const round = (ms: number) => Math.round(ms * 10) / 10;
const pad = (text: string | number, width: number) => String(text).padStart(width);

function main(): void {
  const nodes = buildNodes();
  const summary: Record<string, number> = {};
  const rows: string[] = [];
  let peakRssBytes = process.memoryUsage().rss;
  for (const c of CASES) {
    const tasks = buildTasks(c.tasks);
    const timesMs: number[] = [];
    // CPU time beside wall time: on a shared machine the wall clock also counts time spent
    // waiting for a core.
    const cpuMs: number[] = [];
    let placed = 0;
    for (let run = 0; run <= RUNS; run++) {
      const cpuBefore = process.cpuUsage();
      const started = performance.now();
      const result = placeTasks({ pendingTasks: tasks, nodes, tasksOnNodes: [] });
      timesMs.push(performance.now() - started);
      const cpu = process.cpuUsage(cpuBefore);
      cpuMs.push((cpu.user + cpu.system) / 1000);
      placed = result.assignments.length;
      if (result.unplaced.length > 0) {
        throw new Error(`${c.name}: ${result.unplaced.length} tasks unplaced: ${result.unplaced[0].reason}`);
      }
      peakRssBytes = Math.max(peakRssBytes, process.memoryUsage().rss);
    }
    const [coldMs, ...warmMs] = timesMs;
    const best = Math.min(...warmMs);
    const mid = median(warmMs);
    summary[`${c.jsonKey}Ms`] = round(mid);
    summary[`${c.jsonKey}BestMs`] = round(best);
    summary[`${c.jsonKey}FirstRunMs`] = round(coldMs);
    const cpuMid = median(cpuMs.slice(1));
    summary[`${c.jsonKey}CpuMs`] = round(cpuMid);
    rows.push(
      [
        c.name.padEnd(22),
        pad(placed, 8),
        pad(round(coldMs), 10),
        pad(round(best), 9),
        pad(round(mid), 10),
        pad(round(cpuMid), 8),
        pad(c.targetMs, 10),
        pad(c.swarmKitMs, 12),
        pad(`${(c.swarmKitMs / mid).toFixed(0)}x`, 13),
        pad(mid <= c.targetMs ? 'met' : 'MISSED', 8),
      ].join(''),
    );
  }

  const rssMiB = Math.round(peakRssBytes / MiB);
  console.log(
    `scheduler placement, ${NODE_COUNT} nodes, ${SERVICES.length} services, first run, then best and median of ${RUNS} more ` +
      `(node ${process.version}, ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(1)})`,
  );
  console.log(
    [
      'case'.padEnd(22),
      pad('placed', 8),
      pad('first ms', 10),
      pad('best ms', 9),
      pad('median ms', 10),
      pad('cpu ms', 8),
      pad('target ms', 10),
      pad('SwarmKit ms', 12),
      pad('vs SwarmKit', 13),
      pad('target', 8),
    ].join(''),
  );
  for (const row of rows) console.log(row);
  console.log(`peak RSS ${rssMiB} MiB (inputs included); cpu ms is the median process CPU time of a run`);
  console.log(JSON.stringify({ ...summary, nodes: NODE_COUNT, runs: RUNS, peakRssMiB: rssMiB }));
}

main();
