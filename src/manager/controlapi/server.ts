// The Control service's gRPC handlers: authorization (a hook the node wiring passes in), then
// the transport-free logic of api.ts, then every error turned into a gRPC status carrying our
// ClusterError code.
import type { handleUnaryCall, ServerUnaryCall } from '@grpc/grpc-js';

import { ClusterError, toClusterError } from '../../common/errors';
import { serveUnary } from '../../common/grpc';
import { componentLogger, type Logger } from '../../common/logger';
import type { ControlServer } from '../../gen/cluster/v1/control';
import { RaftError } from '../../raft/types';
import { nodeIdentityFromPeer } from '../ca';
import { ControlApi, type ControlApiDeps } from './api';

/**
 * Decides whether the caller may use the Control service: on the TCP port the node wiring
 * checks for a manager certificate; on the unix socket (root only) everything is allowed.
 * Throws (a ClusterError PERMISSION_DENIED / UNAUTHENTICATED) to refuse.
 */
export type Authorize = (call: ServerUnaryCall<unknown, unknown>) => void | Promise<void>;

export interface ControlServerDeps extends ControlApiDeps {
  authorize?: Authorize;
}

/**
 * The TCP port's check: the caller's certificate (verified against the cluster CA by the mutual
 * TLS handshake) must be a manager's. Workers hold certificates too, and must not reach this API.
 */
export const requireManagerCertificate: Authorize = (call) => {
  const caller = nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate);
  if (caller.role !== 'manager') {
    throw new ClusterError(
      'PERMISSION_DENIED',
      `node ${caller.nodeId} holds a worker certificate: the control API accepts manager certificates only`,
      { nodeId: caller.nodeId },
    );
  }
};

/** Raft's errors as the caller should see them: all are "retry", one is "outcome unknown". */
export function toControlError(e: unknown): ClusterError {
  if (e instanceof RaftError) {
    switch (e.code) {
      case 'NOT_LEADER':
        return new ClusterError('NOT_LEADER', `${e.message}; retry`);
      case 'TIMEOUT':
        return new ClusterError('DEADLINE_EXCEEDED', e.message);
      default:
        return new ClusterError('UNAVAILABLE', e.message);
    }
  }
  return toClusterError(e);
}

/** One unary handler: authorize, run, answer; never throws into grpc-js. */
export function unaryHandler<Req, Res>(
  logic: (request: Req) => Promise<Res>,
  authorize: Authorize | undefined,
  logger: Logger,
  method: string,
): handleUnaryCall<Req, Res> {
  return serveUnary<Req, Res>(
    logger,
    async (call) => {
      await authorize?.(call);
      return logic(call.request);
    },
    { method, toError: toControlError },
  );
}

/** The Control service's handlers over the store, ready for `server.addService(ControlService, ...)`. */
export function createControlServer(deps: ControlServerDeps): ControlServer {
  const logger = deps.logger ?? componentLogger('controlapi', deps.nodeId ? { nodeId: deps.nodeId } : {});
  const api = new ControlApi({ ...deps, logger });
  const auth = deps.authorize;
  return {
    getNode: unaryHandler((r) => api.getNode(r), auth, logger, 'GetNode'),
    listNodes: unaryHandler((r) => api.listNodes(r), auth, logger, 'ListNodes'),
    updateNode: unaryHandler((r) => api.updateNode(r), auth, logger, 'UpdateNode'),
    removeNode: unaryHandler((r) => api.removeNode(r), auth, logger, 'RemoveNode'),
    createService: unaryHandler((r) => api.createService(r), auth, logger, 'CreateService'),
    getService: unaryHandler((r) => api.getService(r), auth, logger, 'GetService'),
    listServices: unaryHandler((r) => api.listServices(r), auth, logger, 'ListServices'),
    updateService: unaryHandler((r) => api.updateService(r), auth, logger, 'UpdateService'),
    removeService: unaryHandler((r) => api.removeService(r), auth, logger, 'RemoveService'),
    listTasks: unaryHandler((r) => api.listTasks(r), auth, logger, 'ListTasks'),
    createNetwork: unaryHandler((r) => api.createNetwork(r), auth, logger, 'CreateNetwork'),
    getNetwork: unaryHandler((r) => api.getNetwork(r), auth, logger, 'GetNetwork'),
    listNetworks: unaryHandler((r) => api.listNetworks(r), auth, logger, 'ListNetworks'),
    removeNetwork: unaryHandler((r) => api.removeNetwork(r), auth, logger, 'RemoveNetwork'),
    getCluster: unaryHandler((r) => api.getCluster(r), auth, logger, 'GetCluster'),
    updateCluster: unaryHandler((r) => api.updateCluster(r), auth, logger, 'UpdateCluster'),
  };
}
