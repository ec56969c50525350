// A binary min-heap whose top can be re-keyed in place: the scheduler takes the best node, gives
// it a task (which makes it worse), and sinks it, instead of re-sorting every node per task.

export class MinHeap<T> {
  private readonly items: T[];

  /** `less(a, b)` must be a strict total order for results to be deterministic. */
  constructor(
    private readonly less: (a: T, b: T) => boolean,
    items: Iterable<T> = [],
  ) {
    this.items = [...items];
    // Floyd's heap construction: linear, not n log n.
    for (let i = (this.items.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    this.items.push(item);
    this.siftUp(this.items.length - 1);
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      this.siftDown(0);
    }
    return top;
  }

  /** Restores the heap after the top item's key grew (it can only move down). */
  topIncreased(): void {
    this.siftDown(0);
  }

  private siftUp(index: number): void {
    const items = this.items;
    const item = items[index];
    let i = index;
    while (i > 0) {
      const parentIndex = (i - 1) >> 1;
      const parent = items[parentIndex];
      if (!this.less(item, parent)) break;
      items[i] = parent;
      i = parentIndex;
    }
    items[i] = item;
  }

  private siftDown(index: number): void {
    const items = this.items;
    const length = items.length;
    if (index >= length) return;
    const item = items[index];
    let i = index;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= length) break;
      const right = left + 1;
      let child = left;
      if (right < length && this.less(items[right], items[left])) child = right;
      const childItem = items[child];
      if (!this.less(childItem, item)) break;
      items[i] = childItem;
      i = child;
    }
    items[i] = item;
  }
}
