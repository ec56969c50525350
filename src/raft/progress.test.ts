// Flow control: the inflight window and the probe / replicate / snapshot transitions.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { Inflights, Progress, ProgressState } from './progress';

describe('Inflights', () => {
  it('is full at the count limit and frees in order', () => {
    const inf = new Inflights(3, 0);
    inf.add(1, 10);
    inf.add(2, 10);
    assert.equal(inf.full(), false);
    inf.add(5, 10);
    assert.equal(inf.full(), true);
    assert.throws(() => inf.add(6, 10), /full/);
    inf.freeLE(2);
    assert.equal(inf.count, 1);
    assert.equal(inf.bytes, 10);
    inf.add(6, 1);
    inf.add(7, 1);
    assert.equal(inf.full(), true, 'wraps around the ring');
    inf.freeFirstOne();
    assert.equal(inf.count, 2);
    inf.freeLE(100);
    assert.equal(inf.count, 0);
    assert.equal(inf.bytes, 0);
  });

  it('is full once the byte limit is reached', () => {
    const inf = new Inflights(100, 1000);
    inf.add(1, 600);
    assert.equal(inf.full(), false);
    inf.add(2, 600);
    assert.equal(inf.full(), true);
    inf.freeLE(1);
    assert.equal(inf.full(), false);
  });

  it('never holds more than the count limit nor more than bytes limit plus one message (property)', () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant('add' as const), bytes: fc.integer({ min: 1, max: 500 }) }),
      fc.record({ kind: fc.constant('free' as const), upTo: fc.nat(60) }),
      fc.record({ kind: fc.constant('freeFirst' as const) }),
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 2000 }),
        fc.array(op, { maxLength: 200 }),
        (maxCount, maxBytes, ops) => {
          const inf = new Inflights(maxCount, maxBytes);
          const model: Array<{ index: number; bytes: number }> = [];
          let next = 1;
          for (const o of ops) {
            if (o.kind === 'add') {
              if (inf.full()) continue; // the leader checks before sending
              inf.add(next, o.bytes);
              model.push({ index: next, bytes: o.bytes });
              next++;
            } else if (o.kind === 'free') {
              inf.freeLE(o.upTo);
              while (model.length > 0 && model[0].index <= o.upTo) model.shift();
            } else {
              inf.freeFirstOne();
              model.shift();
            }
            assert.equal(inf.count, model.length);
            assert.equal(
              inf.bytes,
              model.reduce((n, m) => n + m.bytes, 0),
            );
            assert.ok(inf.count <= maxCount);
            if (maxBytes > 0)
              assert.ok(inf.bytes < maxBytes + 500, 'bytes exceed the limit by at most one message');
          }
        },
      ),
    );
  });
});

describe('Progress', () => {
  const make = (): Progress => new Progress(6, 4, 0, false);

  it('an ack moves match and next forward; a stale ack changes nothing', () => {
    const pr = make();
    pr.match = 3;
    assert.equal(pr.maybeUpdate(5), true);
    assert.equal(pr.match, 5);
    assert.equal(pr.next, 6);
    assert.equal(pr.maybeUpdate(4), false);
    assert.equal(pr.match, 5);
  });

  it('a probing rejection moves next back to the hint, never below match+1', () => {
    const pr = make();
    pr.match = 2;
    pr.next = 10;
    assert.equal(pr.maybeDecrTo(8, 5), false, 'not the index we probed: stale');
    assert.equal(pr.maybeDecrTo(9, 5), true);
    assert.equal(pr.next, 6);
    pr.next = 10;
    assert.equal(pr.maybeDecrTo(9, 0), true);
    assert.equal(pr.next, 3);
  });

  it('a replicating rejection above match goes back to match+1', () => {
    const pr = make();
    pr.match = 4;
    pr.becomeReplicate();
    pr.optimisticUpdate(20);
    assert.equal(pr.maybeDecrTo(3, 0), false, 'at or below match: stale');
    assert.equal(pr.maybeDecrTo(10, 0), true);
    assert.equal(pr.next, 5);
  });

  it('paused: probe after one send, replicate when the window is full, always in snapshot', () => {
    const pr = make();
    assert.equal(pr.isPaused(), false);
    pr.probeSent = true;
    assert.equal(pr.isPaused(), true);
    pr.becomeReplicate();
    assert.equal(pr.isPaused(), false);
    for (let i = 1; i <= 4; i++) pr.inflights.add(pr.next + i, 1);
    assert.equal(pr.isPaused(), true);
    pr.becomeSnapshot(50);
    assert.equal(pr.isPaused(), true);
    assert.equal(pr.state, ProgressState.Snapshot);
  });

  it('leaving snapshot state resumes after the snapshot; a failed one resumes after match', () => {
    const ok = make();
    ok.match = 3;
    ok.becomeSnapshot(50);
    ok.becomeProbe();
    assert.equal(ok.next, 51);
    const failed = make();
    failed.match = 3;
    failed.becomeSnapshot(50);
    failed.pendingSnapshot = 0;
    failed.becomeProbe();
    assert.equal(failed.next, 4);
  });
});
