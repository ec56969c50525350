// Tests of the linearizability checker: hand-written histories with a known answer, and
// properties over generated histories (any history produced by a real sequential execution
// with overlapping client intervals is accepted; a sequential history with one wrong read is not).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  checkKvHistory,
  checkOperations,
  kvKeyModel,
  type KvInput,
  type KvOperation,
} from './linearizability';

function put(clientId: number, key: string, value: string, call: number, ret?: number): KvOperation {
  return {
    clientId,
    input: { op: 'put', key, value },
    call,
    return: ret,
    output: ret === undefined ? undefined : {},
  };
}

function get(clientId: number, key: string, value: string | null, call: number, ret: number): KvOperation {
  return { clientId, input: { op: 'get', key }, call, return: ret, output: { value } };
}

function cas(
  clientId: number,
  key: string,
  expected: string | null,
  value: string,
  ok: boolean | undefined,
  call: number,
  ret?: number,
): KvOperation {
  return {
    clientId,
    input: { op: 'cas', key, expected, value },
    call,
    return: ret,
    output: ok === undefined ? undefined : { ok },
  };
}

test('an empty history is linearizable', () => {
  assert.deepEqual(checkKvHistory([]), { ok: true });
});

test('a read of a key never written returns null', () => {
  assert.equal(checkKvHistory([get(1, 'k', null, 0, 1)]).ok, true);
  assert.equal(checkKvHistory([get(1, 'k', 'x', 0, 1)]).ok, false);
});

test('sequential write then read of the written value is linearizable', () => {
  const h = [put(1, 'k', 'a', 0, 1), get(2, 'k', 'a', 2, 3)];
  assert.equal(checkKvHistory(h).ok, true);
});

test('a stale read after an acknowledged write is not linearizable', () => {
  const h = [put(1, 'k', 'a', 0, 1), put(1, 'k', 'b', 2, 3), get(2, 'k', 'a', 4, 5)];
  const result = checkKvHistory(h);
  assert.equal(result.ok, false);
  assert.equal(!result.ok && result.reason, 'illegal');
  assert.equal(!result.ok && result.partition, 'k');
});

test('a lost acknowledged write is not linearizable', () => {
  // The write of 'a' was acknowledged before the read started, yet the read sees nothing.
  const h = [put(1, 'k', 'a', 0, 1), get(2, 'k', null, 5, 6)];
  assert.equal(checkKvHistory(h).ok, false);
});

test('a read concurrent with a write may see either the old or the new value', () => {
  for (const seen of [null, 'a']) {
    const h = [put(1, 'k', 'a', 0, 10), get(2, 'k', seen, 2, 3)];
    assert.equal(checkKvHistory(h).ok, true, `read ${String(seen)}`);
  }
  const h = [put(1, 'k', 'a', 0, 10), get(2, 'k', 'b', 2, 3)];
  assert.equal(checkKvHistory(h).ok, false, 'a value nobody wrote');
});

test('two concurrent writes may take effect in either order', () => {
  for (const last of ['a', 'b']) {
    const h = [put(1, 'k', 'a', 0, 10), put(2, 'k', 'b', 1, 9), get(3, 'k', last, 11, 12)];
    assert.equal(checkKvHistory(h).ok, true, `last ${last}`);
  }
});

test('two reads cannot see concurrent writes in opposite orders once both writes finished', () => {
  // Both reads start after both writes returned: they must agree on the final value.
  const h = [
    put(1, 'k', 'a', 0, 10),
    put(2, 'k', 'b', 1, 9),
    get(3, 'k', 'a', 11, 12),
    get(4, 'k', 'b', 13, 14),
  ];
  assert.equal(checkKvHistory(h).ok, false);
});

test('a value once read cannot be followed by an older value (no going back in time)', () => {
  // The write of b is concurrent with both reads, but the first read saw b and finished
  // before the second started, so the second must not see a.
  const h = [put(1, 'k', 'a', 0, 1), put(1, 'k', 'b', 2, 20), get(2, 'k', 'b', 3, 4), get(3, 'k', 'a', 5, 6)];
  assert.equal(checkKvHistory(h).ok, false);
});

test('a write with unknown outcome may or may not have taken effect', () => {
  const tookEffect = [put(1, 'k', 'a', 0, 1), put(2, 'k', 'b', 2), get(3, 'k', 'b', 10, 11)];
  const didNot = [put(1, 'k', 'a', 0, 1), put(2, 'k', 'b', 2), get(3, 'k', 'a', 10, 11)];
  assert.equal(checkKvHistory(tookEffect).ok, true);
  assert.equal(checkKvHistory(didNot).ok, true);
  // But it cannot take effect before it was invoked.
  const tooEarly = [put(1, 'k', 'a', 0, 1), get(3, 'k', 'b', 2, 3), put(2, 'k', 'b', 5)];
  assert.equal(checkKvHistory(tooEarly).ok, false);
});

test('an unknown-outcome write cannot take effect twice', () => {
  const h = [
    put(1, 'k', 'a', 0, 1),
    put(2, 'k', 'b', 2),
    get(3, 'k', 'b', 3, 4),
    put(1, 'k', 'c', 5, 6),
    get(3, 'k', 'b', 7, 8),
  ];
  assert.equal(checkKvHistory(h).ok, false);
});

test('keys are independent registers', () => {
  const h = [put(1, 'x', '1', 0, 1), put(1, 'y', '2', 2, 3), get(2, 'x', '1', 4, 5), get(2, 'y', '2', 4, 5)];
  assert.equal(checkKvHistory(h).ok, true);
  const bad = [put(1, 'x', '1', 0, 1), get(2, 'y', '1', 4, 5)];
  const result = checkKvHistory(bad);
  assert.equal(!result.ok && result.partition, 'y');
});

test('compare-and-set succeeds only against the current value', () => {
  const h = [put(1, 'k', 'a', 0, 1), cas(2, 'k', 'a', 'b', true, 2, 3), cas(3, 'k', 'a', 'c', false, 4, 5)];
  assert.equal(checkKvHistory(h).ok, true);
  const twice = [
    put(1, 'k', 'a', 0, 1),
    cas(2, 'k', 'a', 'b', true, 2, 3),
    cas(3, 'k', 'a', 'c', true, 4, 5),
  ];
  assert.equal(checkKvHistory(twice).ok, false);
  // Concurrent CASes from the same value: only one may win.
  const both = [put(1, 'k', 'a', 0, 1), cas(2, 'k', 'a', 'b', true, 2, 9), cas(3, 'k', 'a', 'c', true, 3, 8)];
  assert.equal(checkKvHistory(both).ok, false);
});

test('append concatenates in linearization order', () => {
  const ap = (c: number, v: string, call: number, ret: number): KvOperation => ({
    clientId: c,
    input: { op: 'append', key: 'k', value: v },
    call,
    return: ret,
    output: {},
  });
  assert.equal(checkKvHistory([ap(1, 'x', 0, 5), ap(2, 'y', 1, 4), get(3, 'k', 'yx', 6, 7)]).ok, true);
  assert.equal(checkKvHistory([ap(1, 'x', 0, 1), ap(2, 'y', 2, 3), get(3, 'k', 'yx', 6, 7)]).ok, false);
});

test('the search gives up with timeout instead of running forever', () => {
  // Many concurrent writes and a read of a value nobody wrote: every order must be refuted.
  const h: KvOperation[] = [];
  for (let i = 0; i < 14; i++) h.push(put(i, 'k', `v${i}`, 0, 100));
  h.push(get(99, 'k', 'nobody', 50, 60));
  const result = checkOperations(kvKeyModel, h, { maxSteps: 50 });
  assert.equal(!result.ok && result.reason, 'timeout');
  // With enough steps memoization settles it.
  const settled = checkOperations(kvKeyModel, h);
  assert.equal(!settled.ok && settled.reason, 'illegal');
});

// ---- Properties ---------------------------------------------------------------------------

interface GeneratedOp {
  kind: 'put' | 'get' | 'cas' | 'append';
  key: number;
  value: number;
  /** Where the operation takes effect, relative to others (distinct after dedup). */
  point: number;
  before: number;
  after: number;
  /** The client never hears back (only for writes). */
  unknown: boolean;
  /** With an unknown outcome: whether it took effect at all. */
  applied: boolean;
}

const genOp = fc.record({
  kind: fc.constantFrom<'put' | 'get' | 'cas' | 'append'>('put', 'get', 'cas', 'append'),
  key: fc.integer({ min: 0, max: 2 }),
  value: fc.integer({ min: 0, max: 3 }),
  point: fc.integer({ min: 0, max: 1000 }),
  before: fc.integer({ min: 0, max: 60 }),
  after: fc.integer({ min: 0, max: 60 }),
  unknown: fc.boolean(),
  applied: fc.boolean(),
});

/**
 * Executes the operations one at a time in order of their effect points (a true sequential
 * execution), then gives each an interval around its point: what a client could have observed.
 */
function historyFromExecution(generated: GeneratedOp[]): KvOperation[] {
  const ops = generated.map((g, i) => ({ ...g, point: g.point * 1000 + i }));
  ops.sort((a, b) => a.point - b.point);
  const values = new Map<string, string | null>();
  const history: KvOperation[] = [];
  for (const [i, g] of ops.entries()) {
    const key = `k${g.key}`;
    const value = `v${g.value}`;
    const current = values.get(key) ?? null;
    const unknown = g.unknown && g.kind !== 'get';
    const takesEffect = !unknown || g.applied;
    let input: KvInput;
    let output: KvOperation['output'];
    switch (g.kind) {
      case 'put':
        input = { op: 'put', key, value };
        if (takesEffect) values.set(key, value);
        output = {};
        break;
      case 'append':
        input = { op: 'append', key, value };
        if (takesEffect) values.set(key, (current ?? '') + value);
        output = {};
        break;
      case 'get':
        input = { op: 'get', key };
        output = { value: current };
        break;
      case 'cas': {
        const expected = i % 3 === 0 ? null : `v${(g.value + 1) % 4}`;
        input = { op: 'cas', key, expected, value };
        const swaps = current === expected;
        if (takesEffect && swaps) values.set(key, value);
        output = { ok: swaps };
        break;
      }
    }
    history.push({
      clientId: i,
      input,
      call: g.point - g.before * 1000,
      return: unknown ? undefined : g.point + g.after * 1000,
      output: unknown ? undefined : output,
    });
  }
  return history;
}

test('property: every history produced by a sequential execution is linearizable', () => {
  fc.assert(
    fc.property(fc.array(genOp, { minLength: 0, maxLength: 40 }), (generated) => {
      const result = checkKvHistory(historyFromExecution(generated));
      assert.deepEqual(result, { ok: true });
    }),
    { numRuns: 300, seed: 42 },
  );
});

test('property: a non-overlapping history with one wrong read is rejected', () => {
  fc.assert(
    fc.property(fc.array(genOp, { minLength: 1, maxLength: 30 }), fc.nat(), (generated, which) => {
      // No overlap and no unknown outcomes: the history has exactly one valid order.
      const sequential = generated.map((g) => ({ ...g, before: 0, after: 0, unknown: false }));
      const history = historyFromExecution(sequential);
      const reads = history.filter((op) => op.input.op === 'get');
      fc.pre(reads.length > 0);
      const victim = reads[which % reads.length];
      const truth = victim.output?.value ?? null;
      victim.output = { value: truth === 'wrong' ? null : 'wrong' };
      assert.equal(checkKvHistory(history).ok, false);
    }),
    { numRuns: 200, seed: 7 },
  );
});
