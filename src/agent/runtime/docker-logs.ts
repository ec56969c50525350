// Docker's log stream for a container without a TTY: frames of an 8-byte header (stream type,
// three zero bytes, big-endian payload length) and the payload; with timestamps=1 every line
// starts with an RFC 3339 nano timestamp and a space. Pure, so it is tested alone.
import type { LogLine } from './index';

const HEADER_BYTES = 8;
/** A line longer than this is cut (Docker itself splits lines at 16 KiB). */
export const MAX_LOG_LINE_BYTES = 64 * 1024;

/** "2026-11-22T14:49:05.123456789Z" → Unix ms; NaN when it is not a timestamp. */
export function parseDockerTime(text: string): number {
  // Date.parse wants at most millisecond digits.
  const trimmed = text.replace(/(\.\d{3})\d+/, '$1');
  return Date.parse(trimmed);
}

/** Docker's `since`: "seconds.nanoseconds" (the part after the dot is nanoseconds, not a fraction). */
export function dockerSince(sinceMs: number): string {
  const seconds = Math.floor(sinceMs / 1000);
  const nanos = Math.round((sinceMs - seconds * 1000) * 1e6);
  return `${seconds}.${String(nanos).padStart(9, '0')}`;
}

/** Splits a timestamped line ("<time> <text>"); a line without one keeps its text and gets `fallbackMs`. */
function splitTimestamp(line: string, fallbackMs: number): { timeMs: number; text: string } {
  const space = line.indexOf(' ');
  if (space > 0) {
    const timeMs = parseDockerTime(line.slice(0, space));
    if (!Number.isNaN(timeMs)) return { timeMs, text: line.slice(space + 1) };
  }
  return { timeMs: fallbackMs, text: line };
}

/** Takes chunks as they arrive (frames may span chunks, lines may span frames); gives whole lines. */
export class DockerLogDemuxer {
  private pending: Buffer = Buffer.alloc(0);
  private readonly partial: Record<'stdout' | 'stderr', Buffer[]> = { stdout: [], stderr: [] };
  private readonly partialBytes = { stdout: 0, stderr: 0 };

  constructor(private readonly nowMs: () => number = Date.now) {}

  push(chunk: Buffer): LogLine[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const lines: LogLine[] = [];
    while (this.pending.length >= HEADER_BYTES) {
      const size = this.pending.readUInt32BE(4);
      if (this.pending.length < HEADER_BYTES + size) break;
      const type = this.pending[0];
      const payload = this.pending.subarray(HEADER_BYTES, HEADER_BYTES + size);
      this.pending = this.pending.subarray(HEADER_BYTES + size);
      // 0 is stdin (never sent for logs); 3 is the engine's own error stream.
      const stream = type === 2 || type === 3 ? 'stderr' : 'stdout';
      this.take(stream, payload, lines);
    }
    return lines;
  }

  /** The stream ended: a last line without its newline is still a line. */
  end(): LogLine[] {
    const lines: LogLine[] = [];
    for (const stream of ['stdout', 'stderr'] as const) {
      if (this.partialBytes[stream] > 0) lines.push(this.line(stream, this.flushPartial(stream)));
    }
    return lines;
  }

  private take(stream: 'stdout' | 'stderr', payload: Buffer, out: LogLine[]): void {
    let start = 0;
    for (;;) {
      const nl = payload.indexOf(0x0a, start);
      if (nl < 0) break;
      this.partial[stream].push(payload.subarray(start, nl));
      out.push(this.line(stream, this.flushPartial(stream)));
      start = nl + 1;
    }
    if (start < payload.length) {
      const rest = payload.subarray(start);
      this.partial[stream].push(rest);
      this.partialBytes[stream] += rest.length;
      if (this.partialBytes[stream] >= MAX_LOG_LINE_BYTES)
        out.push(this.line(stream, this.flushPartial(stream)));
    }
  }

  private flushPartial(stream: 'stdout' | 'stderr'): string {
    const text = Buffer.concat(this.partial[stream]).toString('utf8');
    this.partial[stream] = [];
    this.partialBytes[stream] = 0;
    return text.endsWith('\r') ? text.slice(0, -1) : text;
  }

  private line(stream: 'stdout' | 'stderr', raw: string): LogLine {
    const { timeMs, text } = splitTimestamp(raw, this.nowMs());
    return { stream, timeMs, text };
  }
}
