// The two ends of a unary gRPC call as every component uses them: a handler that turns any
// thrown error into a status carrying our ClusterError code, and a client call as a Promise
// with a deadline whose failures come back as ClusterErrors.
import { Metadata, type handleUnaryCall, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { toClusterError, type ClusterError } from './errors';
import type { Logger } from './logger';

/**
 * A unary handler around `work`. Errors become gRPC statuses through `toError`; only INTERNAL
 * ones (bugs, not refusals) are logged as errors.
 */
export function serveUnary<Req, Res>(
  logger: Logger,
  work: (call: ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
  options: { method?: string; toError?: (e: unknown) => ClusterError } = {},
): handleUnaryCall<Req, Res> {
  const toError = options.toError ?? toClusterError;
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    Promise.resolve()
      .then(() => work(call))
      .then(
        (value) => callback(null, value),
        (err: unknown) => {
          const e = toError(err);
          if (e.code === 'INTERNAL') logger.error({ method: options.method, err }, 'request failed');
          else logger.debug({ method: options.method, code: e.code, message: e.message }, 'request refused');
          callback(e.toServiceError());
        },
      );
  };
}

/** Calls a generated client's unary method (`(metadata, options, callback)` form) as a Promise. */
export function callUnary<Res>(
  invoke: (
    metadata: Metadata,
    options: { deadline: number },
    callback: (e: Error | null, r?: Res) => void,
  ) => unknown,
  deadlineMs: number,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    invoke(new Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) => {
      if (e || r === undefined) reject(toClusterError(e ?? new Error('empty response')));
      else resolve(r);
    });
  });
}
