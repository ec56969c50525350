// The agent's end of the log broker: it listens for subscriptions from the leader (on the same
// manager as its dispatcher session) and publishes the asked tasks' lines back, one client
// stream per subscription; without follow the stream ends with "done" once every task's lines
// are sent, with follow it lasts until the broker closes the subscription.
import {
  Metadata,
  type ClientReadableStream,
  type ClientWritableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import {
  PublishLogsMessage,
  type LogBrokerClient,
  type LogSubscription,
  type PublishedLogLine,
} from '../gen/cluster/v1/dispatcher';
import type { Logger } from '../common/logger';
import type { Runtime } from './runtime';

/** Lines per PublishLogs message. */
export const MAX_LINES_PER_PUBLISH = 200;
/** Pause before listening again after the listen stream failed while the session lives. */
export const RELISTEN_DELAY_MS = 1000;
/** Subscriptions served at once; more are answered with an error. */
export const MAX_ACTIVE_SUBSCRIPTIONS = 64;

export interface LogPublisherDeps {
  runtime: Runtime;
  /** The container of a task this agent runs, if any. */
  containerOf(taskId: string): string | undefined;
  logger: Logger;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** A subscription being served: its abort, and a way to add tasks to a followed one. */
interface ActiveSubscription {
  abort: AbortController;
  /** Starts reading tasks not read yet (or whose followed stream ended before they ran). */
  add(taskIds: readonly string[]): void;
}

/** One task's reading within a subscription. */
interface TaskReading {
  active: boolean;
  /** Time of the last line sent: a reading started again continues after it. */
  lastMs: number;
}

export class LogPublisher {
  private readonly active = new Map<string, ActiveSubscription>();

  constructor(private readonly deps: LogPublisherDeps) {}

  /** Listens for subscriptions until the returned function is called (the session ended). */
  listen(client: LogBrokerClient, sessionId: string): () => void {
    let stopped = false;
    let stream: ClientReadableStream<LogSubscription> | undefined;
    let retry: NodeJS.Timeout | undefined;
    const open = () => {
      retry = undefined;
      if (stopped) return;
      const s = client.listenSubscriptions({ sessionId });
      stream = s;
      s.on('data', (sub: LogSubscription) => this.take(client, sub));
      const again = (err?: ServiceError) => {
        if (stopped || stream !== s) return;
        stream = undefined;
        this.deps.logger.debug({ err: err?.message }, 'log subscriptions stream ended; listening again');
        retry = setTimeout(open, RELISTEN_DELAY_MS);
      };
      s.on('error', again);
      s.on('end', () => again());
    };
    open();
    return () => {
      stopped = true;
      clearTimeout(retry);
      stream?.cancel();
      stream = undefined;
      for (const sub of this.active.values()) sub.abort.abort();
      this.active.clear();
    };
  }

  private take(client: LogBrokerClient, sub: LogSubscription): void {
    const existing = this.active.get(sub.id);
    if (sub.close) {
      existing?.abort.abort();
      this.active.delete(sub.id);
      return;
    }
    // A followed subscription named again: tasks that started since.
    if (existing) {
      existing.add(sub.taskIds);
      return;
    }
    const abort = new AbortController();
    const served: ActiveSubscription = { abort, add: () => undefined };
    this.active.set(sub.id, served);
    const forget = () => {
      if (this.active.get(sub.id) === served) this.active.delete(sub.id);
    };
    this.publish(client, sub, served).then(forget, (err: unknown) => {
      forget();
      this.deps.logger.warn({ subscriptionId: sub.id, err }, 'publishing logs failed');
    });
  }

  private async publish(
    client: LogBrokerClient,
    sub: LogSubscription,
    served: ActiveSubscription,
  ): Promise<void> {
    const { abort } = served;
    const signal = abort.signal;
    const call: ClientWritableStream<PublishLogsMessage> = client.publishLogs(new Metadata(), (err) => {
      // The broker answered: the reader left (or the broker went away). Stop reading.
      if (err)
        this.deps.logger.debug({ subscriptionId: sub.id, err: err.message }, 'log publish stream ended');
      abort.abort();
    });
    call.on('error', () => abort.abort());
    const write = async (msg: PublishLogsMessage): Promise<void> => {
      if (signal.aborted) return;
      if (!call.write(msg)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            call.off('drain', done);
            signal.removeEventListener('abort', done);
            resolve();
          };
          call.on('drain', done);
          signal.addEventListener('abort', done, { once: true });
        });
      }
    };
    if (this.active.size > MAX_ACTIVE_SUBSCRIPTIONS) {
      await write(
        PublishLogsMessage.fromPartial({
          subscriptionId: sub.id,
          done: true,
          error: `this node serves ${MAX_ACTIVE_SUBSCRIPTIONS} log readers already`,
        }),
      );
      call.end();
      return;
    }
    // The first message names the subscription, so the broker knows the stream at once.
    await write(PublishLogsMessage.fromPartial({ subscriptionId: sub.id }));
    let buffer: PublishedLogLine[] = [];
    const flush = async () => {
      if (buffer.length === 0) return;
      const lines = buffer;
      buffer = [];
      await write(PublishLogsMessage.fromPartial({ subscriptionId: sub.id, lines }));
    };
    let flushTimer: NodeJS.Timeout | undefined;
    const errors: string[] = [];
    const { runtime } = this.deps;
    const readings = new Map<string, TaskReading>();
    const initial = new Set(sub.taskIds);
    const readTask = async (taskId: string, containerId: string, reading: TaskReading): Promise<void> => {
      if (!runtime.logs) {
        errors.push(`the ${runtime.name} runtime keeps no logs (task ${taskId})`);
        return;
      }
      const again = reading.lastMs > 0;
      // A task named after the subscription began started since: all of its lines.
      const fromStart = again || !initial.has(taskId) || sub.tail < 0;
      try {
        // A task whose container is gone has no lines left: nothing to say about it.
        if (!(await runtime.inspect(containerId))) return;
        const lines = runtime.logs(containerId, {
          follow: sub.follow,
          // Read again (a followed task that started since): everything after the last line sent.
          tail: fromStart ? undefined : sub.tail,
          sinceMs: again
            ? Math.max(sub.sinceMs, reading.lastMs + 1)
            : sub.sinceMs > 0
              ? sub.sinceMs
              : undefined,
          signal,
        });
        for await (const line of lines) {
          if (signal.aborted) return;
          reading.lastMs = Math.max(reading.lastMs, line.timeMs);
          buffer.push({ taskId, stream: line.stream, timeMs: line.timeMs, text: line.text });
          if (buffer.length >= MAX_LINES_PER_PUBLISH) {
            clearTimeout(flushTimer);
            flushTimer = undefined;
            await flush();
          } else {
            // Lines that trickle in (follow) go out together shortly after.
            flushTimer ??= setTimeout(() => {
              flushTimer = undefined;
              void flush();
            }, 20);
          }
        }
      } catch (err) {
        if (!signal.aborted) errors.push(`task ${taskId}: ${message(err)}`);
      } finally {
        reading.active = false;
      }
    };
    const started: Promise<void>[] = [];
    const add = (taskIds: readonly string[]) => {
      for (const taskId of taskIds) {
        const reading = readings.get(taskId) ?? { active: false, lastMs: 0 };
        if (reading.active || signal.aborted) continue;
        // No container yet (still preparing): a later naming of the task starts it.
        const containerId = this.deps.containerOf(taskId);
        if (!containerId) continue;
        reading.active = true;
        readings.set(taskId, reading);
        started.push(readTask(taskId, containerId, reading));
      }
    };
    add(sub.taskIds);
    try {
      if (sub.follow) {
        served.add = add;
        // Followed: open until the reader leaves, whatever the tasks do meanwhile.
        await new Promise<void>((resolve) => {
          if (signal.aborted) resolve();
          else signal.addEventListener('abort', () => resolve(), { once: true });
        });
      }
      await Promise.all(started);
    } finally {
      clearTimeout(flushTimer);
    }
    await flush();
    if (!signal.aborted) {
      await write(
        PublishLogsMessage.fromPartial({ subscriptionId: sub.id, done: true, error: errors.join('; ') }),
      );
    }
    call.end();
  }
}
