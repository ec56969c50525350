import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { ClusterError } from '../common/errors';
import { formatHostPort, joinAddress, parseHostPort } from './addr';
import {
  clearClusterState,
  loadRaftPeers,
  loadState,
  loadTls,
  prepareDataDir,
  saveRaftPeers,
  saveState,
  saveTls,
} from './datadir';
import { LeaderLoops, type LeaderLoop } from './leader_loops';
import { staleManagerStatus } from './manager_status';
import { demotionStep } from './roles';
import { NodeRole, type Node as ClusterNode } from '../gen/cluster/v1/objects';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'node-test-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('addresses: host, host:port and [v6]:port, with the manager port by default', () => {
  assert.deepEqual(parseHostPort('10.0.0.5'), { host: '10.0.0.5', port: 4242 });
  assert.deepEqual(parseHostPort('10.0.0.5:5000'), { host: '10.0.0.5', port: 5000 });
  assert.deepEqual(parseHostPort('[::1]:7'), { host: '::1', port: 7 });
  assert.equal(formatHostPort({ host: '::1', port: 7 }), '[::1]:7');
  assert.equal(joinAddress('10.0.0.5:4242'), '10.0.0.5:4243');
  assert.throws(() => parseHostPort('10.0.0.5:0'), /port must be 1-65535/);
  assert.throws(() => parseHostPort('bad host!'), /expected an IP address or host name/);
  assert.throws(
    () => parseHostPort(''),
    (e: unknown) => e instanceof ClusterError && e.code === 'INVALID_ARGUMENT',
  );
});

test('the data directory is created private, and state round-trips atomically', (t) => {
  const root = path.join(tempDir(t), 'data');
  const dirs = prepareDataDir(root);
  assert.equal(fs.statSync(root).mode & 0o777, 0o700);
  assert.equal(loadState(dirs), undefined, 'a new node is in no cluster');
  const saved = saveState(dirs, {
    nodeId: 'n1',
    clusterId: 'c1',
    role: 'manager',
    raftId: 7,
    advertiseAddr: '10.0.0.5:4242',
    listenAddr: '0.0.0.0:4242',
    managers: ['10.0.0.5:4242'],
  });
  assert.deepEqual(loadState(dirs), saved);
  assert.equal(fs.statSync(dirs.stateFile).mode & 0o777, 0o600);
  assert.deepEqual(
    fs.readdirSync(root).filter((f) => f.includes('.tmp-')),
    [],
    'no temporary file left behind',
  );
});

test('a damaged state file is reported, never used', (t) => {
  const dirs = prepareDataDir(path.join(tempDir(t), 'data'));
  fs.writeFileSync(dirs.stateFile, '{"version":1,"nodeId":');
  assert.throws(() => loadState(dirs), /damaged or from another version/);
  fs.writeFileSync(dirs.stateFile, JSON.stringify({ version: 1, nodeId: 'x', role: 'king' }));
  assert.throws(() => loadState(dirs), /damaged/);
});

test('TLS material is saved with the key private, and leave clears it all', (t) => {
  const dirs = prepareDataDir(path.join(tempDir(t), 'data'));
  saveTls(dirs, { caCertPem: 'CA', certPem: 'CERT', keyPem: 'KEY' });
  assert.deepEqual(loadTls(dirs.tlsDir), { caCertPem: 'CA', certPem: 'CERT', keyPem: 'KEY' });
  assert.equal(fs.statSync(path.join(dirs.tlsDir, 'node.key')).mode & 0o777, 0o600);
  fs.mkdirSync(dirs.raftDir);
  saveState(dirs, {
    nodeId: 'n1',
    clusterId: 'c1',
    role: 'worker',
    advertiseAddr: '10.0.0.6',
    listenAddr: '0.0.0.0:4242',
    managers: [],
  });
  clearClusterState(dirs);
  assert.equal(loadState(dirs), undefined);
  assert.throws(() => loadTls(dirs.tlsDir), /no cluster certificate/);
  assert.equal(fs.existsSync(dirs.raftDir), false);
});

test('an unusable data directory gives a clear error', (t) => {
  const file = path.join(tempDir(t), 'not-a-dir');
  fs.writeFileSync(file, 'x');
  assert.throws(() => prepareDataDir(path.join(file, 'data')), /cannot use the data directory/);
});

test('leader loops run while leading, stop on losing leadership, and restart after a failure', async () => {
  const log = pino({ level: 'silent' });
  let runs = 0;
  let failures = 0;
  const stopped: string[] = [];
  const steady: LeaderLoop = {
    name: 'steady',
    run: (signal) =>
      new Promise<void>((resolve) => {
        runs++;
        signal.addEventListener('abort', () => {
          stopped.push('steady');
          resolve();
        });
      }),
  };
  const flaky: LeaderLoop = {
    name: 'flaky',
    run: (signal) => {
      failures++;
      if (failures === 1) return Promise.reject(new Error('boom'));
      return new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve()));
    },
  };
  const loops = new LeaderLoops([steady, flaky], log);
  await loops.setLeader(false);
  assert.equal(runs, 0, 'nothing runs on a follower');
  await loops.setLeader(true);
  await loops.setLeader(true);
  assert.equal(runs, 1, 'a second observation of leadership starts nothing new');
  for (let waitedMs = 0; failures < 2 && waitedMs < 10_000; waitedMs += 20) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  assert.equal(failures, 2, 'a failed loop is restarted after a pause');
  await loops.setLeader(false);
  assert.deepEqual(stopped, ['steady']);
  assert.equal(loops.active, false);
});

test('manager status follows what Raft sees: one leader, unreachable peers marked', () => {
  const manager = (id: string, raftId: number, leader: boolean, reachability: string): ClusterNode => ({
    attachments: [],
    id,
    role: NodeRole.NODE_ROLE_MANAGER,
    managerStatus: { raftId, addr: `10.0.0.${raftId}:4242`, leader, reachability },
  });
  const worker: ClusterNode = { id: 'w', role: NodeRole.NODE_ROLE_WORKER, attachments: [] };
  const nodes = [
    manager('a', 1, true, 'reachable'),
    manager('b', 2, false, 'reachable'),
    manager('c', 3, false, 'reachable'),
    worker,
  ];
  // Node 2 now leads and cannot reach node 1 (the old leader, killed).
  const view = { selfRaftId: 2, isLeader: () => true, peerConnected: (id: number) => id !== 1 };
  const changed = staleManagerStatus(nodes, view);
  assert.deepEqual(
    changed.map((n) => [n.id, n.managerStatus?.leader, n.managerStatus?.reachability]),
    [
      ['a', false, 'unreachable'],
      ['b', true, 'reachable'],
    ],
  );
  assert.deepEqual(staleManagerStatus(changed.concat(nodes.slice(2)), view), [], 'nothing left to change');
});

test('demotion steps: remove a follower, hand over leadership first, wait rather than lose quorum', () => {
  const demoted = (raftId: number): ClusterNode => ({
    id: 'd',
    attachments: [],
    role: NodeRole.NODE_ROLE_MANAGER,
    spec: { desiredRole: NodeRole.NODE_ROLE_WORKER, availability: 0 },
    managerStatus: { raftId, addr: 'x:1', leader: false, reachability: 'reachable' },
  });
  const raft = (voters: number[], down: number[] = [], self = 1) => ({
    selfRaftId: self,
    voters: () => voters,
    peerConnected: (id: number) => !down.includes(id),
  });
  assert.deepEqual(demotionStep(demoted(4), raft([1, 2, 3, 4])), { kind: 'remove', raftId: 4 });
  assert.deepEqual(demotionStep(demoted(1), raft([1, 2, 3, 4])), { kind: 'transfer', to: 2 });
  assert.deepEqual(demotionStep(demoted(4), raft([1, 2, 3])), { kind: 'record' }, 'already out of Raft');
  assert.equal(demotionStep(demoted(4), raft([1, 2, 3, 4], [2, 3])).kind, 'wait', '1 of 3 reachable');
  assert.equal(demotionStep(demoted(1), raft([1])).kind, 'wait', 'the last manager');
});

test('raft peers saved for a restart round-trip; a missing or damaged file is an empty map', (t) => {
  const dirs = prepareDataDir(path.join(tempDir(t), 'data'));
  assert.equal(loadRaftPeers(dirs).size, 0, 'no file yet');
  saveRaftPeers(
    dirs,
    new Map([
      [7, '10.0.0.7:4242'],
      [3, '10.0.0.3:4242'],
    ]),
  );
  assert.deepEqual(
    [...loadRaftPeers(dirs)].sort((a, b) => a[0] - b[0]),
    [
      [3, '10.0.0.3:4242'],
      [7, '10.0.0.7:4242'],
    ],
  );
  fs.writeFileSync(dirs.raftPeersFile, '{"x": 5, "9": 42, "4": "10.0.0.4:4242"');
  assert.equal(loadRaftPeers(dirs).size, 0, 'damaged: nothing');
  fs.writeFileSync(dirs.raftPeersFile, '{"x": "a:1", "9": 42, "4": "10.0.0.4:4242"}');
  assert.deepEqual([...loadRaftPeers(dirs)], [[4, '10.0.0.4:4242']], 'only well-formed entries');
  clearClusterState(dirs);
  assert.equal(fs.existsSync(dirs.raftPeersFile), false, 'leave removes it');
});
