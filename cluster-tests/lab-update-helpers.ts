// What the rolling-update lab tests share (lab-update*.test.ts): an HTTP client that sends
// requests without pause, a new connection each, to the published port of every lab host in
// turn; the service's tasks and update state as the CLI shows them; and the zero-drop check
// around a change (every request answers 200, and the answers switch from one version to the
// other).
import assert from 'node:assert/strict';
import http from 'node:http';
import { eventually, jsonLines, sleep, type Lab } from './lib/lab';

export const CONVERGE_TIMEOUT_MS = 120_000;
/** Generous: the machine is shared and noisy; a stuck connection still counts as a failure. */
export const REQUEST_TIMEOUT_MS = 5_000;

export interface TaskRow {
  ID: string;
  Name: string;
  Image: string;
  CurrentState: string;
  DesiredState: string;
}

export interface Outcome {
  addr: string;
  /** "200 hello v1", or "ERR <reason>" / "HTTP <code>" for a failed request. */
  reply: string;
}

export function get(addr: string, port: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const req = http.get(
      { host: addr, port, path: '/', agent: false, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () =>
          resolve({
            addr,
            reply: res.statusCode === 200 ? `200 ${body.trim()}` : `HTTP ${res.statusCode ?? 0}`,
          }),
        );
        res.on('error', (err) => resolve({ addr, reply: `ERR ${err.message}` }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS} ms`)));
    req.on('error', (err) => resolve({ addr, reply: `ERR ${err.message}` }));
  });
}

/** Requests one after another, round-robin over the addresses, until stop() is awaited. */
export function startClient(addrs: readonly string[], port: number) {
  const outcomes: Outcome[] = [];
  let stopping = false;
  const loop = (async () => {
    for (let i = 0; !stopping; i++) outcomes.push(await get(addrs[i % addrs.length] ?? '', port));
  })();
  return {
    outcomes,
    async stop(): Promise<Outcome[]> {
      stopping = true;
      await loop;
      return outcomes;
    },
  };
}

/** "web.3" or " \\_ web.3" (an older task of the slot) → 3. */
export function slotOf(row: TaskRow): number {
  return Number(row.Name.slice(row.Name.lastIndexOf('.') + 1));
}

/**
 * Slots where a task of `image` exists while a task of another image still runs: stop-first
 * creates the new task only once the old one has stopped, so this stays empty.
 */
export function overlapping(rows: readonly TaskRow[], image: string): number[] {
  const slots = new Set<number>();
  for (const row of rows) {
    if (row.Image !== image) continue;
    const slot = slotOf(row);
    if (rows.some((o) => slotOf(o) === slot && o.Image !== image && /^Running/.test(o.CurrentState)))
      slots.add(slot);
  }
  return [...slots].sort((a, b) => a - b);
}

/**
 * The helpers bound to one test file's lab, asking `manager()` (a manager host, manager1 unless
 * told; a function so that a test may pick one once the lab is up) by default.
 */
export function updateHelpers(theLab: () => Lab, manager: () => string = () => 'manager1') {
  async function tasks(service: string, on = manager()): Promise<TaskRow[]> {
    return jsonLines<TaskRow>(
      await theLab().ok(on, '--format', 'json', 'service', 'ps', '--no-trunc', service),
    );
  }

  async function updateState(service: string, on = manager()): Promise<string> {
    const out = await theLab().ok(on, 'service', 'inspect', service);
    const [inspected] = JSON.parse(out) as { updateStatus?: { state?: string } }[];
    return inspected?.updateStatus?.state ?? '';
  }

  /** Waits until the service's update_status is `state` (STATE_COMPLETED, ...). */
  async function waitUpdateState(service: string, state: string, on = manager()): Promise<void> {
    await eventually(
      `${service}: ${state}`,
      CONVERGE_TIMEOUT_MS,
      async () => ((await updateState(service, on)) === state ? true : undefined),
      500,
    );
  }

  /** All desired-running tasks run `image`, and every other task has stopped (drained and gone). */
  async function settledOn(
    service: string,
    image: string,
    replicas: number,
    on = manager(),
  ): Promise<true | undefined> {
    const rows = await tasks(service, on);
    const live = rows.filter((r) => r.DesiredState === 'Running');
    const onImage = live.filter((r) => r.Image === image && /^Running/.test(r.CurrentState));
    const stillUp = rows.filter((r) => r.DesiredState !== 'Running' && /^Running/.test(r.CurrentState));
    return onImage.length === replicas && live.length === replicas && stillUp.length === 0 ? true : undefined;
  }

  async function waitSettled(
    service: string,
    image: string,
    replicas: number,
    on = manager(),
  ): Promise<void> {
    await eventually(
      `${service} ${replicas}/${replicas} on ${image}, nothing else running`,
      CONVERGE_TIMEOUT_MS,
      () => settledOn(service, image, replicas, on),
      500,
    );
  }

  /**
   * Reads `service ps` again and again until stop(), handing each snapshot to `look` (a
   * snapshot that fails, while no leader is elected, is skipped). stop() returns the count.
   */
  function sampleTasks(service: string, look: (rows: TaskRow[]) => void) {
    let sampling = true;
    let count = 0;
    const loop = (async () => {
      while (sampling) {
        let rows: TaskRow[] | undefined;
        try {
          rows = await tasks(service);
        } catch {
          rows = undefined;
        }
        if (rows !== undefined) {
          count++;
          look(rows);
        }
        await sleep(200);
      }
    })();
    return {
      async stop(): Promise<number> {
        sampling = false;
        await loop;
        return count;
      },
    };
  }

  async function waitAnswers(addrs: readonly string[], port: number, body: string): Promise<void> {
    await eventually(
      `every host answers '${body}' on ${port}`,
      60_000,
      async () => {
        const replies = await Promise.all(addrs.map((a) => get(a, port)));
        return replies.every((r) => r.reply === `200 ${body}`) ? true : undefined;
      },
      500,
    );
  }

  /** Runs `change` under continuous traffic and checks no request failed and the answer switched. */
  async function underTraffic(
    port: number,
    from: string,
    to: string,
    change: () => Promise<void>,
  ): Promise<Outcome[]> {
    const addrs = theLab()
      .hosts()
      .map((h) => h.address);
    await waitAnswers(addrs, port, from);
    const client = startClient(addrs, port);
    try {
      await change();
    } finally {
      await client.stop();
    }
    const outcomes = client.outcomes;
    const failed = outcomes.filter((o) => !o.reply.startsWith('200 '));
    assert.deepEqual(failed, [], `${failed.length} of ${outcomes.length} requests failed`);
    assert.equal(outcomes[0]?.reply, `200 ${from}`, 'answers start on the old version');
    assert.equal(outcomes.at(-1)?.reply, `200 ${to}`, 'answers end on the new version');
    if (from !== to) {
      const lastOld = outcomes.map((o) => o.reply).lastIndexOf(`200 ${from}`);
      assert.ok(
        outcomes.slice(lastOld + 1).length >= addrs.length,
        'after the switch every host answers the new version',
      );
    }
    return outcomes;
  }

  /**
   * The 6-replica zero-drop update: `web` on local/busybox:1 behind `port`, updated to
   * local/busybox:2 with parallelism 2 (stop-first) under traffic until every old task stopped.
   * `createArgs` go before the image (runtime-specific flags). Returns the request count.
   */
  async function sixReplicasStopFirst(port: number, createArgs: readonly string[]): Promise<number> {
    await theLab().ok(
      manager(),
      'service',
      'create',
      '-d',
      '--name',
      'web',
      '--replicas',
      '6',
      '--publish',
      `${port}:80`,
      '--update-monitor',
      '2s',
      ...createArgs,
      'local/busybox:1',
    );
    await waitSettled('web', 'local/busybox:1', 6);
    const overlaps: string[] = [];
    const sampler = sampleTasks('web', (rows) => {
      const both = overlapping(rows, 'local/busybox:2');
      if (both.length > 0) overlaps.push(`slots ${both.join(',')}: ${JSON.stringify(rows)}`);
    });
    let outcomes: Outcome[];
    try {
      outcomes = await underTraffic(port, 'hello v1', 'hello v2', async () => {
        await theLab().ok(
          manager(),
          'service',
          'update',
          '-d',
          '--image',
          'local/busybox:2',
          '--update-parallelism',
          '2',
          'web',
        );
        await waitUpdateState('web', 'STATE_COMPLETED');
        // Keep the traffic until the old tasks have drained and stopped too.
        await waitSettled('web', 'local/busybox:2', 6);
      });
    } finally {
      await sampler.stop();
    }
    assert.deepEqual(overlaps, [], 'stop-first: no new task beside a running old one');
    return outcomes.length;
  }

  return {
    tasks,
    updateState,
    waitUpdateState,
    settledOn,
    waitSettled,
    waitAnswers,
    underTraffic,
    sampleTasks,
    sixReplicasStopFirst,
  };
}
