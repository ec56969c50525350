import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Metadata, status as GrpcStatus } from '@grpc/grpc-js';
import { ClusterError, conflict, exitCodeFor, notFound, toClusterError, usage } from './errors';

test('a usage mistake exits 2, a failed operation 1, an unreachable manager 3', () => {
  assert.equal(usage('bad flag').exitCode, 2);
  assert.equal(notFound('service', 'web').exitCode, 1);
  assert.equal(new ClusterError('UNAVAILABLE', 'no manager').exitCode, 3);
});

test('messages name the object a person asked for', () => {
  assert.equal(notFound('service', 'web').message, "service 'web' not found");
  assert.match(conflict('service', 'web', 4, 7).message, /version 7, you had 4/);
});

test('codes map to gRPC status codes; conflict is ABORTED', () => {
  assert.equal(notFound('node', 'n1').grpcStatus, GrpcStatus.NOT_FOUND);
  assert.equal(conflict('service', 'web', 1, 2).grpcStatus, GrpcStatus.ABORTED);
  assert.equal(new ClusterError('INVALID_ARGUMENT', 'x').grpcStatus, GrpcStatus.INVALID_ARGUMENT);
});

test('an error survives a round trip through gRPC status and metadata', () => {
  // NOT_LEADER and UNAVAILABLE share a gRPC status; the metadata keeps them apart.
  const sent = new ClusterError('NOT_LEADER', 'not the leader; leader is m2').toServiceError();
  const back = toClusterError(sent);
  assert.equal(back.code, 'NOT_LEADER');
  assert.equal(back.message, 'not the leader; leader is m2');
});

test('a plain gRPC error without our metadata maps by status', () => {
  const e = Object.assign(new Error('x'), {
    code: GrpcStatus.NOT_FOUND,
    details: 'gone',
    metadata: new Metadata(),
  });
  const back = toClusterError(e);
  assert.equal(back.code, 'NOT_FOUND');
  assert.equal(back.message, 'gone');
});

test('system errors become actionable codes', () => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:4242'), { code: 'ECONNREFUSED' });
  assert.equal(toClusterError(refused).code, 'UNAVAILABLE');
  assert.equal(exitCodeFor(refused), 3);
  const full = Object.assign(new Error('write failed'), { code: 'ENOSPC' });
  assert.equal(toClusterError(full).code, 'RESOURCE_EXHAUSTED');
  assert.equal(toClusterError('weird').code, 'INTERNAL');
});
