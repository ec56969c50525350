// Role changes and standing of node certificates. A certificate names a node and a role and
// stays valid until it expires, so the store has the last word: a node removed from the
// cluster (Cluster.removedNodes) is refused everywhere, a manager certificate of a node the
// cluster no longer counts as a manager is refused where a manager is needed, and a node whose
// role changed (node promote / demote) gets a certificate for its new role from the leader
// through NodeCertificates.Renew, which it keeps open as a long poll.
import type { ServerUnaryCall } from '@grpc/grpc-js';
import type {
  NodeCertificatesServer,
  RenewNodeCertificateRequest,
  RenewNodeCertificateResponse,
} from '../../gen/cluster/v1/ca';
import { NodeRole, type Node as ClusterNode } from '../../gen/cluster/v1/objects';
import { ClusterError, invalidArgument } from '../../common/errors';
import { serveUnary } from '../../common/grpc';
import type { Logger } from '../../common/logger';
import type { DeepReadonly, MemoryStore, ReadTx } from '../../store';
import { nodeIdentityFromPeer, signNodeCertificate, type NodeIdentity, type NodeRoleName } from './index';
import { currentCluster, managerAddresses } from './service';

/** The longest the leader holds a Renew call that has nothing to say. */
export const MAX_RENEW_WAIT_MS = 30_000;

type ReadableNode = DeepReadonly<ClusterNode>;

/**
 * The role a node's certificate should carry when it differs from `certRole`, else undefined.
 * A worker is promoted as soon as its desired role is manager (it then joins Raft with the new
 * certificate); a manager becomes a worker only once the leader has taken it out of Raft and
 * recorded it as a worker.
 */
export function roleChangeFor(node: ReadableNode, certRole: NodeRoleName): NodeRoleName | undefined {
  const desired = node.spec?.desiredRole;
  if (certRole === 'worker' && desired === NodeRole.NODE_ROLE_MANAGER) return 'manager';
  if (
    certRole === 'manager' &&
    desired === NodeRole.NODE_ROLE_WORKER &&
    node.role === NodeRole.NODE_ROLE_WORKER
  )
    return 'worker';
  return undefined;
}

/** Whether the cluster counts the node as a manager (or one on its way in or out). */
export function countsAsManager(node: ReadableNode): boolean {
  return node.role === NodeRole.NODE_ROLE_MANAGER || node.spec?.desiredRole === NodeRole.NODE_ROLE_MANAGER;
}

export function isRemoved(tx: ReadTx, nodeId: string): boolean {
  return tx.clusters.list().some((c) => c.removedNodes.includes(nodeId));
}

/**
 * Why the store refuses this certificate's holder, or undefined when it may go on. Removed
 * nodes are refused always; with `manager`, a manager certificate of a node recorded as a
 * worker (demoted) is refused too. A node this store does not know yet (a lagging follower) is
 * not refused here: only removal and demotion, which the store records, are grounds.
 */
export function standingRefusal(
  store: MemoryStore,
  who: NodeIdentity,
  need: 'any' | 'manager',
): string | undefined {
  return store.view((tx) => {
    if (isRemoved(tx, who.nodeId))
      return `node ${who.nodeId} was removed from the cluster: its certificate is no longer accepted`;
    if (need !== 'manager') return undefined;
    if (who.role !== 'manager') return `node ${who.nodeId} is a worker: this needs a manager`;
    const node = tx.nodes.get(who.nodeId);
    if (node && !countsAsManager(node))
      return `node ${who.nodeId} was demoted to a worker: its manager certificate is no longer accepted`;
    return undefined;
  });
}

/** Throws PERMISSION_DENIED when the store refuses the holder (see standingRefusal). */
export function requireStanding(store: MemoryStore, who: NodeIdentity, need: 'any' | 'manager'): void {
  const why = standingRefusal(store, who, need);
  if (why) throw new ClusterError('PERMISSION_DENIED', why);
}

export interface NodeCertificatesDeps {
  store: MemoryStore;
  logger: Logger;
  isLeader(): boolean;
  leaderAddress(): string | undefined;
  /** Who is calling; the peer certificate by default (unit tests inject identities). */
  identify?: (
    call: ServerUnaryCall<RenewNodeCertificateRequest, RenewNodeCertificateResponse>,
  ) => NodeIdentity;
}

export function createNodeCertificatesServer(deps: NodeCertificatesDeps): NodeCertificatesServer {
  const { store, logger } = deps;
  const identify =
    deps.identify ?? ((call) => nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate));

  function notLeader(): ClusterError {
    const addr = deps.leaderAddress();
    return new ClusterError(
      'NOT_LEADER',
      addr ? `this manager is not the leader: ask ${addr}` : 'no leader elected yet; retry in a moment',
      addr ? { leaderAddr: addr } : {},
    );
  }

  /** The answer now: a new certificate when the role changed, else undefined. */
  async function answer(who: NodeIdentity, csr: string): Promise<RenewNodeCertificateResponse | undefined> {
    if (!deps.isLeader()) throw notLeader();
    requireStanding(store, who, 'any');
    const node = store.view((tx) => tx.nodes.get(who.nodeId));
    if (!node)
      throw new ClusterError('PERMISSION_DENIED', `node ${who.nodeId} is not a member of this cluster`);
    const role = roleChangeFor(node, who.role);
    if (!role) return undefined;
    const cluster = currentCluster(store);
    const certificate = await signNodeCertificate(
      { certPem: cluster.rootCaCert, keyPem: cluster.rootCaKey },
      csr,
      { nodeId: who.nodeId, role, clusterId: cluster.id },
    );
    logger.info({ nodeId: who.nodeId, from: who.role, to: role }, 'issued a certificate for a new role');
    return { role, certificate, managers: managerAddresses(store) };
  }

  return {
    renew: serveUnary<RenewNodeCertificateRequest, RenewNodeCertificateResponse>(logger, async (call) => {
      const who = identify(call);
      if (who.clusterId !== store.view((tx) => tx.clusters.list()[0]?.id ?? who.clusterId))
        throw new ClusterError('PERMISSION_DENIED', `node ${who.nodeId} belongs to another cluster`);
      const csr = call.request.csr;
      if (!csr) throw invalidArgument('the renew request carries no certificate request (csr)');
      const waitMs = Math.min(MAX_RENEW_WAIT_MS, call.request.waitMs);
      const abort = new AbortController();
      const onCancel = () => abort.abort();
      call.on('cancelled', onCancel);
      // Watch first, then look: a change between the two is not missed.
      const watcher = store.watch({ tables: ['nodes', 'clusters'], signal: abort.signal });
      const timer = setTimeout(() => abort.abort(), waitMs);
      try {
        const now = await answer(who, csr);
        if (now) return now;
        // The manager list is news too: the caller keeps it to find the cluster after a restart.
        const managersAtStart = managerAddresses(store).join(',');
        for await (const event of watcher) {
          const aboutManagers =
            event.table === 'nodes' &&
            (event.object.role === NodeRole.NODE_ROLE_MANAGER ||
              event.oldObject?.role === NodeRole.NODE_ROLE_MANAGER);
          const managers = aboutManagers ? managerAddresses(store) : undefined;
          if (managers && managers.join(',') !== managersAtStart) {
            if (!deps.isLeader()) throw notLeader();
            return { role: who.role, certificate: '', managers };
          }
          // Only this node's record or the cluster object (its removal) can change the role.
          if (event.table === 'nodes' && event.object.id !== who.nodeId) continue;
          const changed = await answer(who, csr);
          if (changed) return changed;
        }
        // Nothing changed within the wait (or the caller went away).
        if (!deps.isLeader()) throw notLeader();
        return { role: who.role, certificate: '', managers: managerAddresses(store) };
      } finally {
        clearTimeout(timer);
        abort.abort();
        call.removeListener('cancelled', onCancel);
      }
    }),
  };
}
