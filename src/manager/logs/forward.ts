// ServiceLogs on a follower: the broker lives on the leader (its agents listen there), so the
// reader's stream is relayed from the leader, one hop only, as the control API's forwarding does.
import { Metadata, type ServerWritableStream, type ServiceError } from '@grpc/grpc-js';
import { ClusterError, toClusterError } from '../../common/errors';
import {
  LogsService,
  type LogsServer,
  type ServiceLogsMessage,
  type ServiceLogsRequest,
} from '../../gen/cluster/v1/control';
import {
  FORWARDED_METADATA_KEY,
  leaderClientFor,
  type ForwardingOptions,
  type LeaderRoute,
} from '../controlapi';

function fail(call: ServerWritableStream<ServiceLogsRequest, ServiceLogsMessage>, err: unknown): void {
  if (call.cancelled || call.writableEnded) return;
  const e = toClusterError(err);
  call.emit('error', e.toServiceError());
}

/** Serves ServiceLogs on the leader, relays it from the leader elsewhere. */
export function forwardingLogs(
  local: LogsServer,
  leader: () => LeaderRoute,
  options: ForwardingOptions = {},
): LogsServer {
  const method = LogsService.serviceLogs;
  return {
    serviceLogs: (call) => {
      const route = async (): Promise<void> => {
        // The authorize hook reads only the caller's certificate, which a stream call has too.
        await options.authorize?.(call);
        const where = leader();
        if (where.isLeader) {
          local.serviceLogs(call);
          return;
        }
        const client = leaderClientFor(call.metadata, where);
        const metadata = new Metadata();
        metadata.set(FORWARDED_METADATA_KEY, options.selfName ?? 'follower');
        const upstream = client.makeServerStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          call.request,
          metadata,
          {},
        );
        call.on('cancelled', () => upstream.cancel());
        // A slow reader slows the leader's stream rather than filling this manager's memory.
        upstream.on('data', (msg: ServiceLogsMessage) => {
          if (!call.write(msg)) {
            upstream.pause();
            call.once('drain', () => upstream.resume());
          }
        });
        upstream.on('end', () => {
          if (!call.cancelled && !call.writableEnded) call.end();
        });
        upstream.on('error', (error: ServiceError) => {
          const sent = error.metadata?.get('cluster-error-code').length ?? 0;
          const converted = toClusterError(error);
          if (sent === 0 && converted.code === 'UNAVAILABLE') {
            fail(
              call,
              new ClusterError(
                'UNAVAILABLE',
                `the leader${where.leaderName ? ` (${where.leaderName})` : ''} could not be reached: ${converted.message}; retry`,
              ),
            );
          } else fail(call, converted);
        });
      };
      route().catch((err: unknown) => fail(call, err));
    },
  };
}
