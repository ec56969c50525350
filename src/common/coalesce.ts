// Gathering many small changes into few messages without making the first one wait.
import { performance } from 'node:perf_hooks';

/**
 * Calls `flush` soon after the first request: on the next turn of the event loop, so what one
 * store transaction changed travels together. Later requests are gathered until `intervalMs`
 * has passed since the last flush, so a flood costs at most one flush per interval.
 */
export class Coalescer {
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private lastFlush = -Infinity;

  constructor(
    private readonly intervalMs: number,
    private readonly flush: () => void,
  ) {}

  request(): void {
    if (this.immediate || this.timer) return;
    const wait = this.lastFlush + this.intervalMs - performance.now();
    if (wait <= 0) this.immediate = setImmediate(this.run);
    else this.timer = setTimeout(this.run, wait);
  }

  cancel(): void {
    clearImmediate(this.immediate);
    clearTimeout(this.timer);
    this.immediate = undefined;
    this.timer = undefined;
  }

  private readonly run = (): void => {
    this.immediate = undefined;
    this.timer = undefined;
    this.lastFlush = performance.now();
    this.flush();
  };
}
