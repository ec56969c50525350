// The NodeCA service on a manager's join port: hands out the root CA certificate (the joiner
// checks it against its token's digest) and signs a joiner's certificate request when its token
// is current, recording the new node in the store. Runs on the leader; other managers forward.
import os from 'node:os';
import {
  type GetRootCACertificateRequest,
  type GetRootCACertificateResponse,
  type IssueNodeCertificateRequest,
  type IssueNodeCertificateResponse,
  type NodeCAServer,
} from '../../gen/cluster/v1/ca';
import {
  NodeAvailability,
  NodeRole,
  NodeState,
  type Cluster,
  type Node as ClusterNode,
} from '../../gen/cluster/v1/objects';
import { ClusterError, invalidArgument } from '../../common/errors';
import { serveUnary } from '../../common/grpc';
import type { Logger } from '../../common/logger';
import { newId, type MemoryStore } from '../../store';
import { roleForToken, signNodeCertificate } from './index';

export interface NodeCADeps {
  store: MemoryStore;
  logger: Logger;
  /** Whether this manager leads now; when not, `forward` carries the call to the leader. */
  isLeader(): boolean;
  forward?(request: IssueNodeCertificateRequest): Promise<IssueNodeCertificateResponse>;
}

export function currentCluster(store: MemoryStore): Cluster {
  const cluster = store.view((tx) => tx.clusters.list()[0]);
  if (!cluster)
    throw new ClusterError('UNAVAILABLE', 'the cluster is still being created; retry in a moment');
  return cluster;
}

/** Manager addresses (host:port) from the store, the leader's first when known. */
export function managerAddresses(store: MemoryStore): string[] {
  const nodes = store.view((tx) => tx.nodes.list((n) => n.role === NodeRole.NODE_ROLE_MANAGER));
  return nodes
    .filter((n) => n.managerStatus?.addr)
    .sort((a, b) => Number(b.managerStatus?.leader ?? false) - Number(a.managerStatus?.leader ?? false))
    .map((n) => n.managerStatus?.addr ?? '');
}

export function createNodeCAServer(deps: NodeCADeps): NodeCAServer {
  const { store, logger } = deps;
  return {
    getRootCaCertificate: serveUnary<GetRootCACertificateRequest, GetRootCACertificateResponse>(
      logger,
      () => ({ certificate: currentCluster(store).rootCaCert }),
    ),

    issueNodeCertificate: serveUnary<IssueNodeCertificateRequest, IssueNodeCertificateResponse>(
      logger,
      async (call) => {
        const request = call.request;
        if (!request.csr) throw invalidArgument('the join request carries no certificate request');
        if (!deps.isLeader()) {
          if (!deps.forward)
            throw new ClusterError('UNAVAILABLE', 'no leader elected yet; retry in a moment');
          return deps.forward(request);
        }
        const cluster = currentCluster(store);
        const role = roleForToken(request.token, {
          worker: cluster.joinTokens?.worker ?? '',
          manager: cluster.joinTokens?.manager ?? '',
        });
        const nodeId = newId();
        const certificate = await signNodeCertificate(
          { certPem: cluster.rootCaCert, keyPem: cluster.rootCaKey },
          request.csr,
          { nodeId, role, clusterId: cluster.id },
        );
        const hostname = request.hostname || os.hostname();
        const node: ClusterNode = {
          id: nodeId,
          attachments: [],
          spec: {
            annotations: { name: hostname, labels: {} },
            desiredRole: role === 'manager' ? NodeRole.NODE_ROLE_MANAGER : NodeRole.NODE_ROLE_WORKER,
            availability: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
          },
          description: {
            hostname,
            os: '',
            architecture: '',
            runtimeName: '',
            runtimeVersion: '',
            engineLabels: {},
          },
          status: { state: NodeState.NODE_STATE_UNKNOWN, message: 'joining', addr: request.advertiseAddr },
          // A manager counts as one (quorum, MANAGER STATUS) only once it has joined the Raft
          // group; a join interrupted before that leaves a removable worker record.
          role: NodeRole.NODE_ROLE_WORKER,
        };
        await store.update((tx) => tx.nodes.create(node));
        logger.info({ nodeId, role, hostname }, 'node joined');
        return { nodeId, certificate, role, clusterId: cluster.id, managers: managerAddresses(store) };
      },
    ),
  };
}
