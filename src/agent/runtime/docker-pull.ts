// The Engine's pull stream (POST /images/create: one JSON object per line, per layer "Pulling fs
// layer", "Downloading" with progressDetail, ..., "Pull complete"; an "error" ends it) read as it
// arrives and summed up into one short line for the task status. Pure, so it is tested alone.

/** One line of the stream, as the Engine writes it (jsonmessage.JSONMessage). */
export interface PullEvent {
  status?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string };
}

interface LayerProgress {
  done: boolean;
  /** Bytes downloaded so far, and of how many (0 until the Engine says). */
  currentBytes: number;
  totalBytes: number;
}

/** A line longer than this is not an Engine event: it is dropped rather than held in memory. */
export const MAX_PULL_LINE_CHARS = 64 * 1024;

/** Layer statuses after which the layer's bytes are all downloaded. */
const DOWNLOADED = new Set(['Verifying Checksum', 'Download complete', 'Extracting', 'Pull complete']);
/** Layer statuses that end the layer: pulled now, or present from another image. */
const LAYER_DONE = new Set(['Pull complete', 'Already exists']);

/** Bytes in Docker's decimal units, one decimal: "812 B", "1.2 MB", "3.0 GB". */
export function humanBytes(bytes: number): string {
  if (bytes < 1000) return `${Math.max(0, Math.round(bytes))} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 999.95 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit] ?? 'TB'}`;
}

/**
 * Takes the stream in chunks of text (lines may be cut anywhere), keeps per-layer progress and
 * the first error, and says where the pull is in one line: "pulling image reg:5000/x:1: 2 of 3
 * layers, 1.2 MB of 2.0 MB".
 */
export class PullProgress {
  private readonly layers = new Map<string, LayerProgress>();
  private partial = '';
  private failure: string | undefined;

  constructor(readonly image: string) {}

  /** The Engine's reason when the stream reported a failure. */
  get error(): string | undefined {
    return this.failure;
  }

  push(chunk: string): void {
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    if (this.partial.length > MAX_PULL_LINE_CHARS) this.partial = '';
    for (const line of lines) this.take(line);
  }

  /** The stream ended: a last line without its newline counts too. */
  end(): void {
    const last = this.partial;
    this.partial = '';
    this.take(last);
  }

  private take(line: string): void {
    const text = line.trim();
    if (text === '') return;
    let event: PullEvent;
    try {
      event = JSON.parse(text) as PullEvent;
    } catch {
      return; // Not an event (a cut line): the next ones still count.
    }
    this.apply(event);
  }

  apply(event: PullEvent): void {
    const error = event.error ?? event.errorDetail?.message;
    if (error !== undefined && error !== '') {
      this.failure ??= error;
      return;
    }
    const status = event.status ?? '';
    // "Pulling from repo" carries the tag as its id; "Digest: ..." and "Status: ..." carry none.
    if (!event.id || status === '' || status.startsWith('Pulling from')) return;
    let layer = this.layers.get(event.id);
    if (!layer) {
      layer = { done: false, currentBytes: 0, totalBytes: 0 };
      this.layers.set(event.id, layer);
    }
    const detail = event.progressDetail;
    if (status === 'Downloading' && detail) {
      if (typeof detail.total === 'number' && detail.total > 0) layer.totalBytes = detail.total;
      if (typeof detail.current === 'number') layer.currentBytes = detail.current;
    }
    if (DOWNLOADED.has(status)) layer.currentBytes = layer.totalBytes;
    if (LAYER_DONE.has(status)) layer.done = true;
  }

  message(): string {
    const head = `pulling image ${this.image}`;
    if (this.layers.size === 0) return head;
    let done = 0;
    let currentBytes = 0;
    let totalBytes = 0;
    for (const layer of this.layers.values()) {
      if (layer.done) done++;
      currentBytes += Math.min(layer.currentBytes, layer.totalBytes);
      totalBytes += layer.totalBytes;
    }
    const layers = `${done} of ${this.layers.size} layer${this.layers.size === 1 ? '' : 's'}`;
    if (totalBytes === 0) return `${head}: ${layers}`;
    return `${head}: ${layers}, ${humanBytes(currentBytes)} of ${humanBytes(totalBytes)}`;
  }
}

/** Reasons meaning no registry answered (as opposed to one that answered with a refusal). */
const UNREACHABLE =
  /connection refused|no such host|dial tcp|i\/o timeout|network is unreachable|no route to host|TLS handshake timeout|Client\.Timeout|context deadline exceeded|connection reset|no progress from the engine/i;

/** The task's error for an image that is not here and could not be pulled. */
export function pullFailureMessage(image: string, reason: string): string {
  if (UNREACHABLE.test(reason))
    return `image ${image} not found locally and no registry is reachable (pull failed: ${reason})`;
  return `image ${image} not found locally and the pull failed: ${reason}`;
}
