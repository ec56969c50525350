// Linearizability of a 3-node KV on the real RaftNode: separate node processes, real LevelDB,
// gRPC over mutual TLS on loopback. Concurrent clients append, put and get while nodes are
// SIGKILLed and restarted; at the end the whole cluster is SIGKILLed at once and restarted, and
// the final reads join the history. The history must be linearizable. Appends make a lost
// write visible (a put overwritten before anyone reads it would hide its own loss): every
// acknowledged append must be in the final value exactly once, an unknown one at most once.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { checkKvHistory, type KvOperation } from '../sim/linearizability';
import type { NodeId } from '../types';
import { KvProcessCluster } from './testing_cluster';

const CLIENTS = 6;
/** Appends go to these keys, so a lost write stays visible in the final value. */
const APPEND_KEYS = ['a', 'b', 'c'];
/** A plain register, written with put. */
const PUT_KEY = 'p';
const KEYS = [...APPEND_KEYS, PUT_KEY];
const RUN_MS = 18_000;
const REQUEST_TIMEOUT_MS = 1500;
/** When (ms into the run) a node is SIGKILLed; each is restarted 0.5-1.5 s later. */
const KILL_AT_MS = [3000, 8000, 13_000];

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

test(
  'a 3-process KV cluster stays linearizable through SIGKILLs and loses no acknowledged write',
  { timeout: 90_000 },
  async (t) => {
    const cluster = await KvProcessCluster.create({
      size: 3,
      tickMs: 50,
      requestTimeoutMs: REQUEST_TIMEOUT_MS,
      // Frequent snapshots and a short retained log: restarted nodes recover from their own
      // snapshot and, when they fell behind the compaction, are sent the leader's.
      snapshotEveryEntries: 150,
      snapshotRetainEntries: 20,
    });
    const history: KvOperation[] = [];
    const acknowledgedWrites: Array<{ key: string; value: string; op: 'put' | 'append' }> = [];
    const unknownAppends: Array<{ key: string; value: string }> = [];
    const finalValues = new Map<string, string | null>();
    const start = performance.now();
    const now = (): number => performance.now() - start;
    let leaderHint: NodeId = 1;
    let stopping = false;
    let kills = 0;
    let unknown = 0;
    try {
      await cluster.startAll();
      leaderHint = await cluster.waitForLeader();

      const pickTarget = (): NodeId => {
        if (cluster.isRunning(leaderHint)) return leaderHint;
        const running = cluster.ids().filter((id) => cluster.isRunning(id));
        return running[Math.floor(Math.random() * running.length)] ?? 1;
      };

      const client = async (clientId: number): Promise<void> => {
        let seq = 0;
        while (!stopping) {
          const key = KEYS[Math.floor(Math.random() * KEYS.length)] ?? 'a';
          const roll = Math.random();
          const isPut = roll < 0.6;
          const writeOp: 'put' | 'append' = key === PUT_KEY ? 'put' : 'append';
          const value = `c${clientId}-${seq++};`;
          const target = pickTarget();
          const call = now();
          try {
            const reply = isPut
              ? await cluster.http(
                  target,
                  'POST',
                  '/put',
                  { key, value, op: writeOp },
                  REQUEST_TIMEOUT_MS + 500,
                )
              : await cluster.http(target, 'GET', `/get?key=${key}`, undefined, REQUEST_TIMEOUT_MS + 500);
            const ret = now();
            if (reply.status === 200) {
              if (isPut) {
                history.push({ clientId, input: { op: writeOp, key, value }, call, return: ret, output: {} });
                acknowledgedWrites.push({ key, value, op: writeOp });
              } else {
                history.push({
                  clientId,
                  input: { op: 'get', key },
                  call,
                  return: ret,
                  output: { value: reply.body.value ?? null },
                });
              }
            } else if (reply.status === 421 || reply.status === 409) {
              // Definitely not executed: not the leader, or the entry lost its place in the log.
              if (reply.body.leaderId) leaderHint = reply.body.leaderId;
              else leaderHint = (leaderHint % 3) + 1;
              await sleep(20);
            } else {
              throw new Error(`status ${reply.status}: ${reply.body.error ?? ''}`);
            }
          } catch {
            // No answer, or an answer that does not say: the write may or may not have happened.
            unknown++;
            if (isPut) history.push({ clientId, input: { op: writeOp, key, value }, call });
            if (isPut && writeOp === 'append') unknownAppends.push({ key, value });
            leaderHint = (leaderHint % 3) + 1;
            await sleep(20);
          }
          await sleep(Math.random() * 5);
        }
      };

      const nemesis = async (): Promise<void> => {
        for (const killAt of KILL_AT_MS) {
          await sleep(Math.max(0, killAt - now()));
          // Half the time the leader, otherwise anyone.
          const victim = Math.random() < 0.5 ? leaderHint : Math.floor(Math.random() * 3) + 1;
          await cluster.kill(victim, 'SIGKILL');
          kills++;
          await sleep(500 + Math.random() * 1000);
          await cluster.start(victim);
        }
      };

      const clients = Array.from({ length: CLIENTS }, (_, i) => client(i + 1));
      await Promise.all([nemesis(), sleep(RUN_MS).then(() => undefined)]);
      stopping = true;
      await Promise.all(clients);

      // Crash everything at once: only what was fsynced survives.
      for (const id of cluster.ids()) await cluster.kill(id, 'SIGKILL');
      await cluster.startAll();
      const leader = await cluster.waitForLeader(15_000);
      for (const key of KEYS) {
        let read: string | null | undefined;
        const call = now();
        for (let attempt = 0; attempt < 20 && read === undefined; attempt++) {
          const reply = await cluster
            .http(leader, 'GET', `/get?key=${key}`, undefined, 5000)
            .catch(() => undefined);
          if (reply?.status === 200) read = reply.body.value ?? null;
          else await sleep(100);
        }
        assert.notEqual(read, undefined, `the final read of ${key} did not succeed`);
        history.push({
          clientId: 0,
          input: { op: 'get', key },
          call,
          return: now(),
          output: { value: read ?? null },
        });
        finalValues.set(key, read ?? null);
      }
    } finally {
      stopping = true;
      await cluster.stopAll();
    }

    const puts = history.filter((op) => op.input.op !== 'get').length;
    const gets = history.length - puts;
    assert.equal(kills, KILL_AT_MS.length);
    assert.ok(
      acknowledgedWrites.length >= 100,
      `too few acknowledged writes (${acknowledgedWrites.length}) to mean anything`,
    );
    assert.ok(gets >= 50, `too few successful reads (${gets})`);
    t.diagnostic(
      `${kills} kills; ${puts} writes (${acknowledgedWrites.length} acknowledged, ${unknown} unknown outcomes), ${gets} reads`,
    );

    // No acknowledged append lost, none applied twice (an unknown one at most once).
    const tokens = new Map<string, string[]>();
    for (const [key, value] of finalValues)
      tokens.set(
        key,
        (value ?? '').split(';').filter((x) => x.length > 0),
      );
    for (const w of acknowledgedWrites) {
      if (w.op !== 'append') continue;
      const count = (tokens.get(w.key) ?? []).filter((tok) => `${tok};` === w.value).length;
      assert.equal(
        count,
        1,
        `acknowledged append ${w.value} to ${w.key} appears ${count} times in the final value`,
      );
    }
    for (const u of unknownAppends) {
      const count = (tokens.get(u.key) ?? []).filter((tok) => `${tok};` === u.value).length;
      assert.ok(count <= 1, `append ${u.value} to ${u.key} was applied ${count} times`);
    }
    // An unknown-outcome append whose token is absent from the final value never took effect
    // (appends are never erased): drop it. Left in, it stays a candidate at every point of the
    // search and can make it explode.
    const checked = history.filter((op) => {
      if (op.input.op !== 'append' || op.return !== undefined) return true;
      const value = op.input.value;
      return (tokens.get(op.input.key) ?? []).some((tok) => `${tok};` === value);
    });
    const checkStart = performance.now();
    const result = checkKvHistory(checked);
    t.diagnostic(`linearizability check took ${Math.round(performance.now() - checkStart)} ms`);
    assert.deepEqual(
      result,
      { ok: true },
      `history of ${history.length} operations (${unknown} unknown) is not linearizable`,
    );
  },
);
