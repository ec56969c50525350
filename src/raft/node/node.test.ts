// RaftNode end to end in one process: three members on loopback over mutual TLS, each with its
// own LevelDB data directory. Election, replication, follower refusal, restart from disk,
// snapshots sent to a lagging member, removal of the leader, and proposals that cannot commit.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { pino } from 'pino';

import { ProposalDroppedError, StateRole, type NodeId } from '../types';
import {
  TEST_CHANNEL_OPTIONS,
  channelCredentials,
  createTestPki,
  serverCredentials,
  type TestPki,
} from '../transport/testing_tls';
import {
  NotLeaderError,
  ProposalLostError,
  ProposalTimeoutError,
  RaftNode,
  type RaftNodeOptions,
} from './index';
import { KvStateMachine, encodeKvCommand, type KvResult } from './testing_kv';
import { freePort } from '../../common/ports';

// Elections after 0.5-1 s of silence: far above the event-loop stalls of a loaded CI machine.
const TICK_MS = 50;
const ELECTION_TICKS = 10;

async function eventually<T>(what: string, probe: () => T | undefined, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function put(key: string, value: string): Uint8Array {
  return encodeKvCommand({ op: 'put', key, value });
}

/** A test cluster: members keep their ports and data dirs across restarts. */
class Cluster {
  readonly nodes = new Map<NodeId, RaftNode<KvResult>>();
  readonly kvs = new Map<NodeId, KvStateMachine>();
  readonly ports = new Map<NodeId, number>();

  constructor(
    private readonly root: string,
    private readonly pki: TestPki,
    private readonly overrides: Partial<RaftNodeOptions<KvResult>> = {},
  ) {}

  async init(ids: NodeId[]): Promise<void> {
    for (const id of ids) this.ports.set(id, await freePort());
  }

  async start(id: NodeId, bootstrap = true): Promise<RaftNode<KvResult>> {
    const files = this.pki.node(`node-${id}`);
    const kv = new KvStateMachine();
    const peers = new Map([...this.ports].map(([peer, port]) => [peer, `127.0.0.1:${port}`]));
    const node = await RaftNode.start<KvResult>({
      id,
      clusterId: 'node-test',
      dataDir: join(this.root, `node-${id}`),
      listenAddress: `127.0.0.1:${this.ports.get(id) ?? 0}`,
      peers,
      bootstrapVoters: bootstrap ? [...this.ports.keys()] : undefined,
      serverCredentials: serverCredentials(files),
      channelCredentials: channelCredentials(files),
      channelOptions: TEST_CHANNEL_OPTIONS,
      stateMachine: kv,
      tickMs: TICK_MS,
      electionTicks: ELECTION_TICKS,
      logger: pino({ level: 'silent' }),
      ...this.overrides,
    });
    this.nodes.set(id, node);
    this.kvs.set(id, kv);
    return node;
  }

  async stop(id: NodeId): Promise<void> {
    await this.nodes.get(id)?.stop();
    this.nodes.delete(id);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.nodes.keys()].map((id) => this.stop(id)));
  }

  async leader(exclude?: NodeId): Promise<RaftNode<KvResult>> {
    return eventually('a leader', () => {
      const leaders = [...this.nodes.values()].filter((n) => n.id !== exclude && n.isLeader());
      return leaders.length === 1 ? leaders[0] : undefined;
    });
  }

  /** Writes through whoever leads, retrying while leadership moves (not what these tests test). */
  async write(key: string, value: string): Promise<void> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const leader = await this.leader();
      try {
        await leader.propose(put(key, value));
        return;
      } catch (err) {
        const retriable =
          err instanceof NotLeaderError ||
          err instanceof ProposalLostError ||
          err instanceof ProposalDroppedError;
        if (!retriable || Date.now() > deadline) throw err;
      }
    }
  }

  async allHave(key: string, value: string, ids: NodeId[] = [...this.nodes.keys()]): Promise<void> {
    await eventually(`${key}=${value} on ${ids.join(',')}`, () =>
      ids.every((id) => this.kvs.get(id)?.get(key) === value) ? true : undefined,
    );
  }
}

describe('RaftNode over TLS with LevelDB', () => {
  let pki: TestPki;
  let root: string;
  const clusters: Cluster[] = [];

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'raft-node-test-'));
    pki = createTestPki(root);
  });
  after(async () => {
    for (const c of clusters) await c.stopAll();
    rmSync(root, { recursive: true, force: true });
  });

  async function cluster(
    name: string,
    ids: NodeId[],
    overrides: Partial<RaftNodeOptions<KvResult>> = {},
  ): Promise<Cluster> {
    const c = new Cluster(join(root, name), pki, overrides);
    clusters.push(c);
    await c.init(ids);
    for (const id of ids) await c.start(id);
    return c;
  }

  test('three nodes elect one leader and replicate; followers refuse proposals naming the leader', async () => {
    const c = await cluster('basic', [1, 2, 3]);
    const leader = await c.leader();
    const result = await leader.propose(put('a', '1'));
    assert.ok(result && result.index > 0, 'the proposal resolves with the index it applied at');
    await c.allHave('a', '1');

    const follower = [...c.nodes.values()].find((n) => n.id !== leader.id);
    assert.ok(follower);
    await eventually('the follower to learn the leader', () =>
      follower.status().leaderId === leader.id ? true : undefined,
    );
    await assert.rejects(follower.propose(put('a', '2')), (err: unknown) => {
      assert.ok(err instanceof NotLeaderError);
      assert.equal(err.leaderId, leader.id);
      assert.match(err.message, new RegExp(`the leader is node ${leader.id}`));
      return true;
    });

    // Many proposals in flight at once are batched and all resolve, in log order.
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) => leader.propose(put(`k${i % 7}`, `v${i}`))),
    );
    const indexes = results.map((r) => r?.index ?? 0);
    assert.deepEqual(
      [...indexes].sort((x, y) => x - y),
      indexes,
    );
    await c.allHave('k6', 'v195');

    await leader.readIndex();
    assert.equal(c.kvs.get(leader.id)?.get('k6'), 'v195');
    await c.stopAll();
  });

  test('a cluster restarted from its data directories has its state and keeps working', async () => {
    const c = await cluster('restart', [1, 2, 3]);
    const leader = await c.leader();
    for (let i = 0; i < 20; i++) await c.write('x', String(i));
    await c.allHave('x', '19');
    const termBefore = leader.status().term;
    await c.stopAll();

    for (const id of [1, 2, 3]) await c.start(id);
    // Committed entries are re-applied from the log on start.
    await c.allHave('x', '19');
    const again = await c.leader();
    assert.ok(again.status().term > termBefore, 'the term survives the restart and moves on');
    await c.write('x', 'after-restart');
    await c.allHave('x', 'after-restart');
    await c.stopAll();
  });

  test('a member that fell behind a compaction catches up by snapshot', async () => {
    const c = await cluster('snapshot', [1, 2, 3], { snapshotEveryEntries: 20, snapshotRetainEntries: 2 });
    const leader = await c.leader();
    const lagging = [1, 2, 3].find((id) => id !== leader.id) ?? 0;
    await c.stop(lagging);
    for (let i = 0; i < 80; i++) await c.write(`s${i % 5}`, `v${i}`);
    await c.allHave('s4', 'v79');
    await c.start(lagging);
    await c.allHave('s4', 'v79', [lagging]);
    for (let i = 0; i < 5; i++) assert.equal(c.kvs.get(lagging)?.get(`s${i}`), `v${75 + i}`);
    await c.stopAll();
  });

  test('a member added by addMember catches up and then counts toward the quorum', async () => {
    const c = await cluster('add', [1, 2, 3]);
    const leader = await c.leader();
    await c.write('early', 'yes');
    // Node 4 starts empty, with no bootstrap membership: it waits to hear from the leader.
    c.ports.set(4, await freePort());
    const joiner = await c.start(4, false);
    assert.deepEqual(joiner.status().voters, []);
    await leader.addMember(4, `127.0.0.1:${c.ports.get(4) ?? 0}`);
    await c.allHave('early', 'yes', [4]);
    assert.deepEqual([...leader.status().voters].sort(), [1, 2, 3, 4]);
    // The joiner learned the founders from the log, not only itself: otherwise it could count
    // its own vote as a quorum and elect itself (split brain).
    assert.deepEqual([...joiner.status().voters].sort(), [1, 2, 3, 4]);
    // With 4 voters the quorum is 3: with one original follower down, node 4's vote is needed.
    const others = [1, 2, 3].filter((id) => id !== leader.id);
    await c.write('four', 'voters');
    await c.allHave('four', 'voters', [4]);
    await c.stop(others[0] ?? 0);
    await c.write('quorum', 'leader+4+one');
    await c.allHave('quorum', 'leader+4+one', [4]);
    await c.stopAll();
  });

  test('a removed leader steps down and the others elect a new leader', async () => {
    const c = await cluster('remove', [1, 2, 3]);
    const leader = await c.leader();
    await c.write('before', 'yes');
    await leader.removeMember(leader.id);
    const successor = await c.leader(leader.id);
    assert.notEqual(successor.id, leader.id);
    await eventually('the old leader to step down', () => (leader.isLeader() ? undefined : true));
    assert.equal(leader.status().removed, true);
    assert.deepEqual(
      [...successor.status().voters].sort(),
      [1, 2, 3].filter((id) => id !== leader.id).sort(),
    );
    await c.write('after', 'yes');
    const remaining = [1, 2, 3].filter((id) => id !== leader.id);
    await c.allHave('after', 'yes', remaining);
    await assert.rejects(leader.propose(put('x', 'y')), /removed|not the leader/);
    await c.stopAll();
  });

  test('a proposal that cannot commit fails with a clear timeout instead of hanging', async () => {
    // A long election timeout (1.5 s) keeps the isolated leader leading while the proposal waits.
    const c = await cluster('timeout', [1, 2, 3], { requestTimeoutMs: 400, electionTicks: 75 });
    const leader = await c.leader();
    for (const id of [1, 2, 3]) if (id !== leader.id) await c.stop(id);
    assert.equal(leader.isLeader(), true);
    const started = Date.now();
    await assert.rejects(leader.propose(put('lonely', '1')), (err: unknown) => {
      assert.ok(err instanceof ProposalTimeoutError);
      assert.match(err.message, /did not complete within 400 ms; its outcome is unknown/);
      return true;
    });
    assert.ok(Date.now() - started < 2000);
    // With check-quorum the isolated leader steps down.
    await eventually(
      'the isolated leader to step down',
      () => (leader.status().role !== StateRole.Leader ? true : undefined),
      10_000,
    );
    await c.stopAll();
  });
});
