// Pacing of a task's progress messages (an image pull while PREPARING): each report is a Raft
// write through the dispatcher, so a pull that streams hundreds of events a second reports at
// most one line per interval, and only when the text changed. Pure (the clock is a parameter).

/** At most one progress report per task this often. */
export const PROGRESS_REPORT_INTERVAL_MS = 500;

export class ProgressThrottle {
  private lastText: string | undefined;
  private lastAtMs = -Infinity;
  /** A newer text that came too soon after the last report; it goes out at dueAtMs. */
  private held: string | undefined;

  constructor(private readonly intervalMs: number = PROGRESS_REPORT_INTERVAL_MS) {}

  /** The text to report now, or undefined: the same as the last report, or held for later. */
  offer(text: string, nowMs: number): string | undefined {
    if (text === this.lastText) {
      this.held = undefined;
      return undefined;
    }
    if (nowMs - this.lastAtMs >= this.intervalMs) return this.send(text, nowMs);
    this.held = text;
    return undefined;
  }

  /** When the held text may go out (undefined: nothing held). */
  get dueAtMs(): number | undefined {
    return this.held === undefined ? undefined : this.lastAtMs + this.intervalMs;
  }

  /** The held text once its time has come, else undefined. */
  flush(nowMs: number): string | undefined {
    const held = this.held;
    if (held === undefined || nowMs - this.lastAtMs < this.intervalMs) return undefined;
    return this.send(held, nowMs);
  }

  private send(text: string, nowMs: number): string {
    this.lastText = text;
    this.lastAtMs = nowMs;
    this.held = undefined;
    return text;
  }
}
