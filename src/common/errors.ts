// Typed errors with a code and a message a person can act on, and the one place where codes
// map to gRPC status codes and CLI exit codes.
import { status as GrpcStatus, Metadata, type ServiceError } from '@grpc/grpc-js';

export type ErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'ALREADY_EXISTS'
  | 'CONFLICT'
  | 'FAILED_PRECONDITION'
  | 'NOT_LEADER'
  | 'UNAVAILABLE'
  | 'PERMISSION_DENIED'
  | 'UNAUTHENTICATED'
  | 'DEADLINE_EXCEEDED'
  | 'RESOURCE_EXHAUSTED'
  | 'INTERNAL'
  | 'UNIMPLEMENTED'
  | 'USAGE';

interface CodeMapping {
  grpc: GrpcStatus;
  /** Exit code of the `cluster` CLI when this error ends a command. */
  exit: number;
}

// Exit codes: 1 for a failed operation, 2 for a usage mistake (as commander and most Unix tools),
// 3 for "cannot reach a working manager" so scripts can retry only that.
const MAPPING: Record<ErrorCode, CodeMapping> = {
  INVALID_ARGUMENT: { grpc: GrpcStatus.INVALID_ARGUMENT, exit: 1 },
  NOT_FOUND: { grpc: GrpcStatus.NOT_FOUND, exit: 1 },
  ALREADY_EXISTS: { grpc: GrpcStatus.ALREADY_EXISTS, exit: 1 },
  CONFLICT: { grpc: GrpcStatus.ABORTED, exit: 1 },
  FAILED_PRECONDITION: { grpc: GrpcStatus.FAILED_PRECONDITION, exit: 1 },
  NOT_LEADER: { grpc: GrpcStatus.UNAVAILABLE, exit: 3 },
  UNAVAILABLE: { grpc: GrpcStatus.UNAVAILABLE, exit: 3 },
  PERMISSION_DENIED: { grpc: GrpcStatus.PERMISSION_DENIED, exit: 1 },
  UNAUTHENTICATED: { grpc: GrpcStatus.UNAUTHENTICATED, exit: 1 },
  DEADLINE_EXCEEDED: { grpc: GrpcStatus.DEADLINE_EXCEEDED, exit: 3 },
  RESOURCE_EXHAUSTED: { grpc: GrpcStatus.RESOURCE_EXHAUSTED, exit: 1 },
  INTERNAL: { grpc: GrpcStatus.INTERNAL, exit: 1 },
  UNIMPLEMENTED: { grpc: GrpcStatus.UNIMPLEMENTED, exit: 1 },
  USAGE: { grpc: GrpcStatus.INVALID_ARGUMENT, exit: 2 },
};

// gRPC status → our code, for errors that come back over the wire. ABORTED is our CONFLICT.
const FROM_GRPC = new Map<GrpcStatus, ErrorCode>([
  [GrpcStatus.INVALID_ARGUMENT, 'INVALID_ARGUMENT'],
  [GrpcStatus.NOT_FOUND, 'NOT_FOUND'],
  [GrpcStatus.ALREADY_EXISTS, 'ALREADY_EXISTS'],
  [GrpcStatus.ABORTED, 'CONFLICT'],
  [GrpcStatus.FAILED_PRECONDITION, 'FAILED_PRECONDITION'],
  [GrpcStatus.UNAVAILABLE, 'UNAVAILABLE'],
  [GrpcStatus.PERMISSION_DENIED, 'PERMISSION_DENIED'],
  [GrpcStatus.UNAUTHENTICATED, 'UNAUTHENTICATED'],
  [GrpcStatus.DEADLINE_EXCEEDED, 'DEADLINE_EXCEEDED'],
  [GrpcStatus.RESOURCE_EXHAUSTED, 'RESOURCE_EXHAUSTED'],
  [GrpcStatus.UNIMPLEMENTED, 'UNIMPLEMENTED'],
]);

// The metadata key that carries our exact code across gRPC (several codes share a status).
const CODE_METADATA_KEY = 'cluster-error-code';

export class ClusterError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ClusterError';
  }

  get exitCode(): number {
    return MAPPING[this.code].exit;
  }

  get grpcStatus(): GrpcStatus {
    return MAPPING[this.code].grpc;
  }

  /** The error in the shape a grpc-js handler passes to its callback. */
  toServiceError(): Partial<ServiceError> {
    const metadata = new Metadata();
    metadata.set(CODE_METADATA_KEY, this.code);
    return { code: this.grpcStatus, details: this.message, message: this.message, metadata };
  }
}

export const invalidArgument = (message: string, details?: Record<string, unknown>) =>
  new ClusterError('INVALID_ARGUMENT', message, details);
export const notFound = (kind: string, ref: string) =>
  new ClusterError('NOT_FOUND', `${kind} '${ref}' not found`, { kind, ref });
export const conflict = (kind: string, ref: string, expected: number, actual: number) =>
  new ClusterError(
    'CONFLICT',
    `${kind} '${ref}' was changed by someone else (version ${actual}, you had ${expected}): inspect it again and retry`,
    { kind, ref, expected, actual },
  );
export const usage = (message: string) => new ClusterError('USAGE', message);

function isServiceErrorLike(e: unknown): e is { code: number; details?: string; metadata?: Metadata } {
  return typeof e === 'object' && e !== null && typeof (e as { code: unknown }).code === 'number';
}

/** Turns anything thrown (ours, a gRPC client error, a system error) into a ClusterError. */
export function toClusterError(e: unknown): ClusterError {
  if (e instanceof ClusterError) return e;
  if (isServiceErrorLike(e)) {
    const sent = e.metadata?.get(CODE_METADATA_KEY)[0];
    const code =
      typeof sent === 'string' && sent in MAPPING
        ? (sent as ErrorCode)
        : (FROM_GRPC.get(e.code) ?? 'INTERNAL');
    const text = e.details || (e instanceof Error ? e.message : 'unknown error');
    return new ClusterError(code, text);
  }
  if (e instanceof Error) {
    const errno = (e as NodeJS.ErrnoException).code;
    if (errno === 'ECONNREFUSED' || errno === 'EHOSTUNREACH' || errno === 'ETIMEDOUT') {
      return new ClusterError('UNAVAILABLE', e.message);
    }
    if (errno === 'ENOSPC') return new ClusterError('RESOURCE_EXHAUSTED', `disk full: ${e.message}`);
    if (errno === 'EACCES' || errno === 'EPERM') {
      return new ClusterError('PERMISSION_DENIED', e.message);
    }
    return new ClusterError('INTERNAL', e.message);
  }
  return new ClusterError('INTERNAL', String(e));
}

/** CLI exit code for anything thrown. */
export function exitCodeFor(e: unknown): number {
  return toClusterError(e).exitCode;
}
