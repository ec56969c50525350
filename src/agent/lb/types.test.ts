// Validation of load balancer configs and the weighted ring both data planes walk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ClusterError } from '../../common/errors';
import { validateConfig, weightedRing, type LbFrontend } from './types';

const base: LbFrontend = {
  kind: 'vip',
  protocol: 'tcp',
  address: '10.0.9.10',
  port: 80,
  backends: [{ ip: '10.0.0.5', port: 8080 }],
};

function rejects(fe: Partial<LbFrontend>, pattern: RegExp, extra: LbFrontend[] = []): void {
  assert.throws(
    () => validateConfig({ frontends: [{ ...base, ...fe }, ...extra] }),
    (err: unknown) =>
      err instanceof ClusterError && err.code === 'INVALID_ARGUMENT' && pattern.test(err.message),
  );
}

test('a valid config passes', () => {
  validateConfig({ frontends: [base, { kind: 'published', protocol: 'udp', port: 53, backends: [] }] });
});

test('bad configs are rejected with a message naming the frontend', () => {
  rejects({ address: 'web' }, /vip\/tcp\/web\/80: a vip frontend needs an IPv4 address/);
  rejects({ port: 0 }, /port must be a port 1-65535/);
  rejects({ allPorts: true }, /only a vip frontend may take every port, and then its port is 0/);
  rejects({ allPorts: true, port: 0 }, /backend 10.0.0.5 port must be 0/);
  validateConfig({
    frontends: [{ ...base, allPorts: true, port: 0, backends: [{ ip: '10.0.0.5', port: 0 }] }],
  });
  rejects({ backends: [{ ip: '10.0.0.5', port: 8080, weight: 0 }] }, /weight must be a whole number ≥ 1/);
  rejects(
    {
      backends: [
        { ip: '10.0.0.5', port: 8080 },
        { ip: '10.0.0.5', port: 8080 },
      ],
    },
    /listed twice/,
  );
  rejects({}, /defined twice/, [base]);
  rejects({ backends: [{ ip: '10.0.0.5', port: 8080, weight: 2000 }] }, /exceeds 1024/);
  rejects({ snatTo: '10.0.0.1' }, /reached with snatTo/, [{ ...base, port: 81, snatTo: '10.0.0.2' }]);
});

test('weighted ring: 2:1 is a b a, not a a b', () => {
  const ring = weightedRing([
    { name: 'a', weight: 2 },
    { name: 'b', weight: 1 },
  ]);
  assert.deepEqual(
    ring.map((b) => b.name),
    ['a', 'b', 'a'],
  );
});

test('property: each backend appears exactly weight times in the ring', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 6 }), { maxLength: 6 }), (weights) => {
      const ring = weightedRing(weights.map((weight, id) => ({ id, weight })));
      assert.equal(
        ring.length,
        weights.reduce((a, b) => a + b, 0),
      );
      weights.forEach((weight, id) => assert.equal(ring.filter((b) => b.id === id).length, weight));
    }),
  );
});
