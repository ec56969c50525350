// The node's data directory: who this node is (node.json), its TLS material (tls/), and the
// folders the Raft log and the agent keep. Created with restrictive permissions; problems
// (not writable, disk full) are reported with the path and what to do.
import fs from 'node:fs';
import path from 'node:path';
import { ClusterError } from '../common/errors';
import type { NodeRoleName, NodeTls } from '../manager/ca';

export const DEFAULT_DATA_DIR = '/var/lib/cluster';
export const STATE_FILE = 'node.json';
const STATE_VERSION = 1;

export interface NodeState {
  version: number;
  nodeId: string;
  clusterId: string;
  role: NodeRoleName;
  /** This manager's id in the Raft group (managers only). */
  raftId?: number;
  /** host:port other nodes reach this node's manager port at (managers), or its address (workers). */
  advertiseAddr: string;
  /** host:port the manager port listens on. */
  listenAddr: string;
  /** Manager addresses (host:port) last known, for workers to connect and fail over. */
  managers: string[];
}

export interface DataDirLayout {
  root: string;
  stateFile: string;
  tlsDir: string;
  raftDir: string;
  /** The other Raft members' addresses as last seen in the store, for a restart (managers). */
  raftPeersFile: string;
  agentDir: string;
  socketPath: string;
}

export function layout(root: string): DataDirLayout {
  return {
    root,
    stateFile: path.join(root, STATE_FILE),
    tlsDir: path.join(root, 'tls'),
    raftDir: path.join(root, 'raft'),
    raftPeersFile: path.join(root, 'raft-peers.json'),
    agentDir: path.join(root, 'agent'),
    socketPath: path.join(root, 'cluster.sock'),
  };
}

function describeFsError(e: unknown, what: string, where: string): ClusterError {
  const errno = (e as NodeJS.ErrnoException).code;
  if (errno === 'ENOSPC') {
    return new ClusterError(
      'RESOURCE_EXHAUSTED',
      `cannot ${what} ${where}: the disk is full; free space and retry`,
    );
  }
  if (errno === 'EACCES' || errno === 'EPERM' || errno === 'EROFS') {
    return new ClusterError(
      'PERMISSION_DENIED',
      `cannot ${what} ${where}: permission denied (run as root, or pick another --data-dir)`,
    );
  }
  return new ClusterError('INTERNAL', `cannot ${what} ${where}: ${(e as Error).message}`);
}

/** Creates the data directory (mode 0700) and checks that it can be written. */
export function prepareDataDir(root: string): DataDirLayout {
  const dirs = layout(root);
  try {
    fs.mkdirSync(root, { recursive: true, mode: 0o700 });
    fs.chmodSync(root, 0o700);
    const probe = path.join(root, `.write-test-${process.pid}`);
    fs.writeFileSync(probe, 'ok');
    fs.rmSync(probe);
  } catch (e) {
    throw describeFsError(e, 'use the data directory', root);
  }
  return dirs;
}

/** Writes a file so that a crash leaves either the old or the new content, never a mix. */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    const fd = fs.openSync(tmp, 'w', mode);
    try {
      fs.writeFileSync(fd, data);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    const dirFd = fs.openSync(path.dirname(file), 'r');
    try {
      fs.fsyncSync(dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw describeFsError(e, 'write', file);
  }
}

function isNodeState(value: unknown): value is NodeState {
  if (typeof value !== 'object' || value === null) return false;
  const v = value as Record<string, unknown>;
  return (
    v.version === STATE_VERSION &&
    typeof v.nodeId === 'string' &&
    typeof v.clusterId === 'string' &&
    (v.role === 'manager' || v.role === 'worker') &&
    typeof v.advertiseAddr === 'string' &&
    typeof v.listenAddr === 'string' &&
    Array.isArray(v.managers) &&
    (v.raftId === undefined || typeof v.raftId === 'number')
  );
}

/** The saved identity, or undefined for a node that is in no cluster yet. */
export function loadState(dirs: DataDirLayout): NodeState | undefined {
  let text: string;
  try {
    text = fs.readFileSync(dirs.stateFile, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw describeFsError(e, 'read', dirs.stateFile);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!isNodeState(parsed)) {
    throw new ClusterError(
      'FAILED_PRECONDITION',
      `${dirs.stateFile} is damaged or from another version: restore it from a backup, or remove the data directory and join the cluster again`,
    );
  }
  return parsed;
}

export function saveState(dirs: DataDirLayout, state: Omit<NodeState, 'version'>): NodeState {
  const full: NodeState = { version: STATE_VERSION, ...state };
  writeFileAtomic(dirs.stateFile, JSON.stringify(full, null, 2) + '\n');
  return full;
}

export function saveTls(dirs: DataDirLayout, tls: NodeTls): void {
  try {
    fs.mkdirSync(dirs.tlsDir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw describeFsError(e, 'create', dirs.tlsDir);
  }
  writeFileAtomic(path.join(dirs.tlsDir, 'ca.crt'), tls.caCertPem, 0o644);
  writeFileAtomic(path.join(dirs.tlsDir, 'node.crt'), tls.certPem, 0o644);
  writeFileAtomic(path.join(dirs.tlsDir, 'node.key'), tls.keyPem, 0o600);
}

export function loadTls(tlsDir: string): NodeTls {
  const read = (name: string) => {
    const file = path.join(tlsDir, name);
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new ClusterError(
          'FAILED_PRECONDITION',
          `${file} is missing: this node has no cluster certificate`,
        );
      }
      throw describeFsError(e, 'read', file);
    }
  };
  return { caCertPem: read('ca.crt'), certPem: read('node.crt'), keyPem: read('node.key') };
}

/** Removes what joining a cluster wrote, so the node can init or join again (`leave`). */
export function clearClusterState(dirs: DataDirLayout): void {
  for (const p of [dirs.stateFile, dirs.tlsDir, dirs.raftDir, dirs.raftPeersFile, dirs.agentDir]) {
    fs.rmSync(p, { recursive: true, force: true });
  }
}

/**
 * The Raft peers (raft id → host:port) saved by a running manager. A restarted manager needs
 * them: the Raft log names only members added by a membership change, never the founding
 * one, and only the lower id of a pair dials. Missing or damaged: an empty map (the log and the
 * peers that dial in still connect it).
 */
export function loadRaftPeers(dirs: DataDirLayout): Map<number, string> {
  const peers = new Map<number, string>();
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(dirs.raftPeersFile, 'utf8'));
  } catch {
    return peers;
  }
  if (typeof parsed !== 'object' || parsed === null) return peers;
  for (const [id, addr] of Object.entries(parsed as Record<string, unknown>)) {
    const raftId = Number(id);
    if (Number.isSafeInteger(raftId) && raftId > 0 && typeof addr === 'string' && addr)
      peers.set(raftId, addr);
  }
  return peers;
}

export function saveRaftPeers(dirs: DataDirLayout, peers: ReadonlyMap<number, string>): void {
  const out: Record<string, string> = {};
  for (const [id, addr] of [...peers].sort((a, b) => a[0] - b[0])) out[String(id)] = addr;
  writeFileAtomic(dirs.raftPeersFile, JSON.stringify(out, null, 2) + '\n');
}
