// The heap yields items in order, including after the top item's key grows in place.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import fc from 'fast-check';

import { MinHeap } from './heap';

interface Item {
  key: number;
  id: number;
}
const less = (a: Item, b: Item) => a.key < b.key || (a.key === b.key && a.id < b.id);
const drain = (heap: MinHeap<Item>) => {
  const out: Item[] = [];
  for (let item = heap.pop(); item !== undefined; item = heap.pop()) out.push(item);
  return out;
};
const sorted = (items: Item[]) => [...items].sort((a, b) => a.key - b.key || a.id - b.id);

describe('MinHeap', () => {
  it('is empty when built from nothing', () => {
    const heap = new MinHeap(less);
    assert.equal(heap.size, 0);
    assert.equal(heap.peek(), undefined);
    assert.equal(heap.pop(), undefined);
  });

  it('pops in order whether built at once or pushed one by one', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 20 }), { maxLength: 60 }), (keys) => {
        const items = keys.map((key, id) => ({ key, id }));
        assert.deepEqual(drain(new MinHeap(less, items)), sorted(items));
        const pushed = new MinHeap(less);
        for (const item of items) pushed.push(item);
        assert.deepEqual(drain(pushed), sorted(items));
      }),
    );
  });

  it('keeps order when the top grows in place, as the scheduler charges its best node', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 10 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 80 }),
        (keys, increments) => {
          const items = keys.map((key, id) => ({ key, id }));
          const heap = new MinHeap(less, items);
          for (const increment of increments) {
            const top = heap.peek();
            assert.ok(top !== undefined);
            assert.deepEqual(top, sorted(items)[0], 'the top is the least item');
            top.key += increment;
            heap.topIncreased();
          }
          assert.deepEqual(drain(heap), sorted(items));
        },
      ),
    );
  });
});
