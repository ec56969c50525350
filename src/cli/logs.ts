// `cluster service logs`: reads the ServiceLogs stream and prints each line as Docker does,
// "web.1.abc123def456@node-2    | text", stdout lines on stdout and stderr lines on stderr.
import { Metadata, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { ClusterError, toClusterError } from '../common/errors';
import {
  LogsService,
  ServiceLogsRequest,
  type LogEntry,
  type ServiceLogsMessage,
} from '../gen/cluster/v1/control';
import type { Connection } from './connect';
import { badValue, parseDurationNanos } from './flags';

export interface LogsFlags {
  follow?: boolean;
  tail?: string;
  since?: string;
  timestamps?: boolean;
  /** Commander's negation of --no-trunc. */
  trunc?: boolean;
  /** Commander's negation of --no-task-ids. */
  taskIds?: boolean;
}

export interface LogFormat {
  timestamps: boolean;
  noTrunc: boolean;
  taskIds: boolean;
  /** Digits of the widest slot printed, so the "|" columns line up as Docker's. */
  slotWidth: number;
}

/** "all" or a whole number; undefined (all) when not given. */
export function parseTail(text: string | undefined): number {
  if (text === undefined || text === 'all') return -1;
  if (!/^\d+$/.test(text)) throw badValue('--tail', text, 'must be a whole number of lines or "all"');
  return Number(text);
}

/** Docker's --since: a Unix time in seconds, an RFC 3339 time, or a duration back from now ("10m"). */
export function parseSince(text: string | undefined, nowMs: number): number {
  if (text === undefined || text === '') return 0;
  if (/^\d+(\.\d+)?$/.test(text)) return Math.floor(Number(text) * 1000);
  if (/^[\d.]+(ns|us|µs|μs|ms|s|m|h)/.test(text)) {
    return nowMs - Number(parseDurationNanos('--since', text) / 1_000_000n);
  }
  const t = Date.parse(text);
  if (Number.isNaN(t)) {
    throw badValue(
      '--since',
      text,
      'must be a Unix time (1700000000), an RFC 3339 time (2026-11-22T14:00:00Z) or a duration back from now (10m)',
    );
  }
  return t;
}

/** Docker's prefix: task name (service.slot.id), "@node", padding to the widest slot, "    | ". */
export function formatLogLine(entry: LogEntry, format: LogFormat): string {
  const c = entry.context;
  const service = c?.serviceName || c?.serviceId || '';
  const slot = c?.slot ?? 0;
  const taskId = c?.taskId ?? '';
  let name = slot > 0 ? `${service}.${slot}` : `${service}.${c?.nodeId ?? ''}`;
  if (format.taskIds) name += `.${format.noTrunc ? taskId : taskId.slice(0, 12)}`;
  const padding = ' '.repeat(Math.max(0, format.slotWidth - String(slot).length));
  const prefix = `${name}@${c?.nodeName || c?.nodeId || ''}${padding}    | `;
  const time = format.timestamps ? `${new Date(Number(entry.timeMs)).toISOString()} ` : '';
  return `${time}${prefix}${entry.text}\n`;
}

export interface LogsOutput {
  out(text: string): void;
  err(text: string): void;
}

/**
 * Streams the target's lines until the managers end the stream (every node sent its lines), or
 * forever with follow (Ctrl-C ends the process). Unknown targets fail with NOT_FOUND.
 */
export function streamLogs(
  connection: () => Connection,
  target: string,
  flags: LogsFlags,
  output: LogsOutput,
  nowMs: number,
  signal?: AbortSignal,
): Promise<void> {
  const request = ServiceLogsRequest.fromPartial({
    target,
    follow: flags.follow ?? false,
    tail: parseTail(flags.tail),
    sinceMs: parseSince(flags.since, nowMs),
  });
  const format: LogFormat = {
    timestamps: flags.timestamps ?? false,
    noTrunc: flags.trunc === false,
    taskIds: flags.taskIds !== false,
    slotWidth: 1,
  };
  const method = LogsService.serviceLogs;
  // Flags are checked before any connection: a usage mistake needs no daemon.
  const conn = connection();
  return new Promise<void>((resolve, reject) => {
    const call: ClientReadableStream<ServiceLogsMessage> = conn.control.makeServerStreamRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      new Metadata(),
      {},
    );
    const onAbort = () => call.cancel();
    signal?.addEventListener('abort', onAbort, { once: true });
    call.on('data', (msg: ServiceLogsMessage) => {
      for (const entry of msg.entries) {
        format.slotWidth = Math.max(format.slotWidth, String(entry.context?.slot ?? 0).length);
        const line = formatLogLine(entry, format);
        if (entry.stream === 'stderr') output.err(line);
        else output.out(line);
      }
      for (const w of msg.warnings) output.err(`warning: ${w}\n`);
    });
    call.on('end', () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    });
    call.on('error', (error: ServiceError) => {
      signal?.removeEventListener('abort', onAbort);
      if (signal?.aborted) {
        resolve();
        return;
      }
      const err = toClusterError(error);
      const fromServer = (error.metadata?.get('cluster-error-code').length ?? 0) > 0;
      if (!fromServer && err.code === 'UNAVAILABLE') {
        reject(
          new ClusterError(
            'UNAVAILABLE',
            `cannot reach the manager at ${conn.target.address}: ${err.message}`,
          ),
        );
      } else reject(err);
    });
  });
}
