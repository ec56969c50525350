// Followers do not serve the Control service themselves: every call goes to the leader, where
// writes can be proposed and reads see everything committed (SwarmKit's raft proxy does the
// same). One hop only: a forwarded call that reaches a manager that is no longer the leader is
// answered UNAVAILABLE (retry) rather than forwarded again, so two managers with stale views of
// each other cannot bounce a call between them.
import {
  Metadata,
  type handleUnaryCall,
  type MethodDefinition,
  type Deadline,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';

import { ClusterError, toClusterError } from '../../common/errors';
import { ControlService, type ControlClient, type ControlServer } from '../../gen/cluster/v1/control';
import type { Authorize } from './server';

/** Metadata key marking a call a follower forwarded. */
export const FORWARDED_METADATA_KEY = 'cluster-forwarded-by';

export interface LeaderRoute {
  isLeader: boolean;
  /** A Control client connected to the leader (mutual TLS in production); unknown during an election. */
  leaderClient?: ControlClient;
  /** The leader's name or address, for messages. */
  leaderName?: string;
}

export interface ForwardingOptions {
  /**
   * Checks the caller before anything else, forwarded or not. Pass it here rather than to
   * createControlServer when wrapping, so that it runs once.
   */
  authorize?: Authorize;
  /** Names this manager in the forwarded-by metadata (logs on the leader). */
  selfName?: string;
}

/**
 * How much sooner than its caller a forwarded call gives up: a follower cut off from its leader
 * then answers "the leader could not be reached" before the client's own deadline turns it into
 * a bare timeout with no word of why.
 */
export const FORWARD_MARGIN_MS = 2000;

/** A follower with no leader: an election is under way, or it is cut off from the majority. */
export const NO_LEADER_MESSAGE =
  'this manager knows no leader: an election is under way, or it is cut off from the majority of managers (no quorum here); retry, or ask another manager';

function forwardDeadline(deadline: Deadline): Deadline {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  if (!Number.isFinite(at)) return deadline;
  return at - Math.min(FORWARD_MARGIN_MS, Math.max(0, at - Date.now()) / 2);
}

/**
 * The leader's client for a call this follower passes on. One hop only: a call that was already
 * forwarded reached a manager that is no longer the leader, and is answered "retry".
 */
export function leaderClientFor(metadata: Metadata, where: LeaderRoute): ControlClient {
  if (metadata.get(FORWARDED_METADATA_KEY).length > 0) {
    throw new ClusterError(
      'UNAVAILABLE',
      'this manager is no longer the leader (leadership is changing): retry',
    );
  }
  if (where.leaderClient === undefined) throw new ClusterError('UNAVAILABLE', NO_LEADER_MESSAGE);
  return where.leaderClient;
}

function forwarder<Req, Res>(
  method: MethodDefinition<Req, Res>,
  local: handleUnaryCall<Req, Res>,
  leader: () => LeaderRoute,
  options: ForwardingOptions,
): handleUnaryCall<Req, Res> {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    const fail = (e: unknown) => callback(toClusterError(e).toServiceError());
    const route = async (): Promise<void> => {
      await options.authorize?.(call);
      const where = leader();
      if (where.isLeader) {
        local(call, callback);
        return;
      }
      const client = leaderClientFor(call.metadata, where);
      const metadata = new Metadata();
      metadata.set(FORWARDED_METADATA_KEY, options.selfName ?? 'follower');
      client.makeUnaryRequest(
        method.path,
        method.requestSerialize,
        method.responseDeserialize,
        call.request,
        metadata,
        { deadline: forwardDeadline(call.getDeadline()) },
        (error: ServiceError | null, response?: Res) => {
          if (error) {
            const converted = toClusterError(error);
            // The leader's own answer carries our code; a transport failure says where it failed.
            const sent = error.metadata?.get('cluster-error-code').length ?? 0;
            const name = where.leaderName ? ` (${where.leaderName})` : '';
            if (sent === 0 && converted.code === 'UNAVAILABLE') {
              fail(
                new ClusterError(
                  'UNAVAILABLE',
                  `the leader${name} could not be reached: ${converted.message}; retry`,
                ),
              );
            } else if (sent === 0 && converted.code === 'DEADLINE_EXCEEDED') {
              fail(
                new ClusterError(
                  'UNAVAILABLE',
                  `the leader${name} did not answer in time: this manager may be cut off from the majority (no quorum here), or the leader is overloaded; retry, or ask another manager`,
                ),
              );
            } else fail(converted);
            return;
          }
          callback(null, response);
        },
      );
    };
    route().catch(fail);
  };
}

/** Wraps the local handlers: served here on the leader, forwarded to the leader elsewhere. */
export function forwardingControl(
  local: ControlServer,
  leader: () => LeaderRoute,
  options: ForwardingOptions = {},
): ControlServer {
  const s = ControlService;
  return {
    getNode: forwarder(s.getNode, local.getNode, leader, options),
    listNodes: forwarder(s.listNodes, local.listNodes, leader, options),
    updateNode: forwarder(s.updateNode, local.updateNode, leader, options),
    removeNode: forwarder(s.removeNode, local.removeNode, leader, options),
    createService: forwarder(s.createService, local.createService, leader, options),
    getService: forwarder(s.getService, local.getService, leader, options),
    listServices: forwarder(s.listServices, local.listServices, leader, options),
    updateService: forwarder(s.updateService, local.updateService, leader, options),
    removeService: forwarder(s.removeService, local.removeService, leader, options),
    listTasks: forwarder(s.listTasks, local.listTasks, leader, options),
    createNetwork: forwarder(s.createNetwork, local.createNetwork, leader, options),
    getNetwork: forwarder(s.getNetwork, local.getNetwork, leader, options),
    listNetworks: forwarder(s.listNetworks, local.listNetworks, leader, options),
    removeNetwork: forwarder(s.removeNetwork, local.removeNetwork, leader, options),
    getCluster: forwarder(s.getCluster, local.getCluster, leader, options),
    updateCluster: forwarder(s.updateCluster, local.updateCluster, leader, options),
  };
}
