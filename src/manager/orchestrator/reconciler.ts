// The thin shell around a pure planner: reads the whole store, plans, writes the plan in
// transactions below the size limit, then sleeps until the store changes (gathering changes for
// a few ms, as SwarmKit's scheduler does) or until the plan's wake-up time. The first pass
// reconciles everything a previous leader left; every later pass again plans from the whole
// store (level-triggered), so a lost event or a refused write only delays convergence.
import { ClusterError } from '../../common/errors';
import type { Logger } from '../../common/logger';
import { Node, Service, Task } from '../../gen/cluster/v1/objects';
import type { LeaderLoop } from '../../node/leader_loops';
import {
  MAX_TRANSACTION_BYTES,
  type Frozen,
  type MemoryStore,
  type TableName,
  type WriteTx,
} from '../../store';
import { Plan, type ClusterState } from './plan';
import { abortableSleep } from '../../common/sleep';

/** How long changes are gathered before a pass: one pass for a burst of events. */
export const DEFAULT_BATCH_WINDOW_MS = 10;
/** Each transaction carries at most this many encoded bytes of objects: half the store's limit leaves room for framing. */
export const PLAN_BATCH_BYTES = MAX_TRANSACTION_BYTES / 2;
/** Longest sleep between passes even with nothing to do: a safety net against a missed wake-up. */
export const MAX_IDLE_MS = 30_000;

export type Planner = (state: ClusterState, plan: Plan, nowMs: number) => void;

export interface ReconcilerOptions {
  nowMs?: () => number;
  batchWindowMs?: number;
  logger?: Logger;
}

/**
 * The store's objects as they are stored: frozen and shared, not copied. Every pass reads the
 * whole store, and copying every task each time cost more than the planning (GC included).
 * Planners never change what they read: they clone (structuredClone) the objects they write,
 * and an accidental write to a frozen object throws instead of corrupting the store.
 */
export function readClusterState(store: MemoryStore): ClusterState {
  return store.view((tx) => {
    const services: Frozen<'services'>[] = [];
    const tasks: Frozen<'tasks'>[] = [];
    const nodes: Frozen<'nodes'>[] = [];
    // The predicate sees the stored object; returning false keeps list() from copying it.
    tx.services.list((s) => (services.push(s), false));
    tx.tasks.list((t) => (tasks.push(t), false));
    tx.nodes.list((n) => (nodes.push(n), false));
    return {
      services: services as unknown as Service[],
      tasks: tasks as unknown as Task[],
      nodes: nodes as unknown as Node[],
    };
  });
}

interface Write {
  bytes: number;
  /** Applies the write unless the object changed since it was planned; false when stale. */
  apply(tx: WriteTx): boolean;
}

function versionOf(obj: { meta?: { version: number } | undefined }): number {
  return obj.meta?.version ?? 0;
}

function writesOf(plan: Plan): Write[] {
  const writes: Write[] = [];
  for (const service of plan.updatedServices.values()) {
    writes.push({
      bytes: Service.encode(service).finish().length,
      apply: (tx) => {
        const current = tx.services.get(service.id);
        if (current === undefined || versionOf(current) !== versionOf(service)) return false;
        tx.services.update(service);
        return true;
      },
    });
  }
  for (const task of plan.deletedTasks.values()) {
    writes.push({
      bytes: 64,
      apply: (tx) => {
        const current = tx.tasks.get(task.id);
        if (current === undefined || versionOf(current) !== versionOf(task)) return false;
        tx.tasks.delete(task.id);
        return true;
      },
    });
  }
  for (const task of plan.updatedTasks.values()) {
    writes.push({
      bytes: Task.encode(task).finish().length,
      apply: (tx) => {
        const current = tx.tasks.get(task.id);
        if (current === undefined || versionOf(current) !== versionOf(task)) return false;
        tx.tasks.update(task);
        return true;
      },
    });
  }
  for (const task of plan.createdTasks) {
    writes.push({
      bytes: Task.encode(task).finish().length,
      apply: (tx) => {
        tx.tasks.create(task);
        return true;
      },
    });
  }
  return writes;
}

const RETRYABLE = new Set(['CONFLICT', 'NOT_FOUND', 'ALREADY_EXISTS']);

/**
 * Writes the plan in batches. Returns false when part of it was stale (an object changed after
 * the plan read it): the caller plans again. Other errors (leadership lost) are thrown.
 */
export async function writePlan(store: MemoryStore, plan: Plan, signal?: AbortSignal): Promise<boolean> {
  const writes = writesOf(plan);
  let clean = true;
  let start = 0;
  while (start < writes.length) {
    if (signal?.aborted) return false;
    let end = start;
    let bytes = 0;
    while (end < writes.length && (end === start || bytes + (writes[end]?.bytes ?? 0) <= PLAN_BATCH_BYTES)) {
      bytes += writes[end]?.bytes ?? 0;
      end++;
    }
    const batch = writes.slice(start, end);
    start = end;
    try {
      const result = await store.update((tx) => {
        let stale = 0;
        for (const write of batch) if (!write.apply(tx)) stale++;
        return stale;
      });
      if (result.value > 0) clean = false;
    } catch (err) {
      // Applied after another change to the same object: the next pass reads it again.
      if (err instanceof ClusterError && RETRYABLE.has(err.code)) clean = false;
      else throw err;
    }
  }
  return clean;
}

/** Wakes a sleeping loop when the store changes; a change during a pass is remembered. */
class Waker {
  private pending = false;
  private resolve: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    const resolve = this.resolve;
    this.resolve = undefined;
    resolve?.();
  }

  /** Resolves on a change, after `timeoutMs` (never when undefined), or on abort. */
  wait(timeoutMs: number | undefined, signal: AbortSignal): Promise<void> {
    if (this.pending || signal.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.resolve = undefined;
        this.pending = false;
        resolve();
      };
      const timer = timeoutMs === undefined ? undefined : setTimeout(done, timeoutMs);
      this.resolve = done;
      signal.addEventListener('abort', done, { once: true });
    });
  }
}

/** A leader loop that runs `planner` over the whole store on every change of `tables`. */
export function reconcilerLoop(
  name: string,
  store: MemoryStore,
  tables: readonly TableName[],
  planner: Planner,
  options: ReconcilerOptions = {},
): LeaderLoop {
  const nowMs = options.nowMs ?? Date.now;
  const batchWindowMs = options.batchWindowMs ?? DEFAULT_BATCH_WINDOW_MS;
  return {
    name,
    async run(signal: AbortSignal): Promise<void> {
      if (signal.aborted) return;
      const waker = new Waker();
      const watcher = store.watch({ tables, signal });
      let pumpError: Error | undefined;
      const pump = (async () => {
        try {
          while (!(await watcher.next()).done) waker.notify();
        } catch (err) {
          pumpError = err instanceof Error ? err : new Error(String(err));
          waker.notify();
        }
      })();
      try {
        while (!signal.aborted) {
          if (pumpError !== undefined) throw pumpError;
          const plan = new Plan();
          planner(readClusterState(store), plan, nowMs());
          const clean = plan.empty ? true : await writePlan(store, plan, signal);
          if (!plan.empty) {
            options.logger?.debug(
              {
                loop: name,
                created: plan.createdTasks.length,
                updated: plan.updatedTasks.size,
                deleted: plan.deletedTasks.size,
                services: plan.updatedServices.size,
                clean,
              },
              'control loop pass written',
            );
          }
          const wakeInMs =
            plan.wakeAtMs === undefined
              ? MAX_IDLE_MS
              : Math.min(MAX_IDLE_MS, Math.max(0, plan.wakeAtMs - nowMs()));
          // A stale plan is redone after the batch window; its own writes also wake the loop.
          await waker.wait(clean ? wakeInMs : 0, signal);
          await abortableSleep(batchWindowMs, signal);
        }
      } finally {
        watcher.close();
        await pump;
      }
    },
  };
}
