import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { Coalescer } from './coalesce';

test('the first request flushes on the next turn, with what the same turn requested', async () => {
  let flushes = 0;
  const c = new Coalescer(10_000, () => flushes++);
  c.request();
  c.request();
  c.request();
  assert.equal(flushes, 0);
  await nextTurn();
  assert.equal(flushes, 1);
  c.cancel();
});

test('requests within the interval after a flush wait for it and go as one', async () => {
  let flushes = 0;
  const c = new Coalescer(50, () => flushes++);
  c.request();
  await nextTurn();
  assert.equal(flushes, 1);
  c.request();
  c.request();
  await nextTurn();
  assert.equal(flushes, 1, 'held back until the interval ends');
  while (flushes < 2) await sleep(5);
  await sleep(20);
  assert.equal(flushes, 2, 'the held requests made one flush');
  c.cancel();
});

test('cancel drops a pending flush', async () => {
  let flushes = 0;
  const c = new Coalescer(50, () => flushes++);
  c.request();
  c.cancel();
  await nextTurn();
  await sleep(60);
  assert.equal(flushes, 0);
});
