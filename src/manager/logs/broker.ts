// The log broker (SwarmKit's logbroker): `cluster service logs` reaches the leader, which finds
// the tasks and the nodes holding them, sends each node's agent a subscription on its listen
// stream, and relays what the agents publish back to the reader. Without follow the reader's
// stream ends once every node has said it is done; with follow it ends when the reader leaves.
import {
  type handleClientStreamingCall,
  type ServerReadableStream,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import {
  LogSubscription,
  type ListenSubscriptionsRequest,
  type LogBrokerServer,
  type PublishLogsMessage,
  type PublishLogsResponse,
} from '../../gen/cluster/v1/dispatcher';
import {
  ServiceLogsMessage,
  type LogContext,
  type LogEntry,
  type LogsServer,
  type ServiceLogsRequest,
} from '../../gen/cluster/v1/control';
import { TaskState, type Task } from '../../gen/cluster/v1/objects';
import { ClusterError, toClusterError } from '../../common/errors';
import type { Logger } from '../../common/logger';
import type { LeaderLoop } from '../../node/leader_loops';
import { newId, thaw, type DeepReadonly, type MemoryStore } from '../../store';
import { nodeIdentityFromPeer, type NodeIdentity } from '../ca';
import { notLeaderError, redirectingServiceError } from '../dispatcher';

/** Lines per message to the reader. */
export const MAX_ENTRIES_PER_MESSAGE = 500;
/** Readers served at once; more are refused (each holds a subscription on every node it reads). */
export const MAX_SUBSCRIPTIONS = 256;

type AnyCall = ServerWritableStream<unknown, unknown> | ServerReadableStream<unknown, unknown>;

export interface LogBrokerOptions {
  store: MemoryStore;
  isLeader(): boolean;
  leaderAddress(): string | undefined;
  logger: Logger;
  /** Who is calling on the agent side; the node certificate by default (tests inject identities). */
  identify?: (call: AnyCall) => NodeIdentity;
}

export interface LogBroker {
  /** The agents' side (on the manager port, next to the dispatcher). */
  agents: LogBrokerServer;
  /** The readers' side: ServiceLogs, on the leader (followers forward, see forward.ts). */
  readers: LogsServer;
  /** Ends listeners and readers when leadership is lost. */
  loop: LeaderLoop;
  close(): void;
}

interface Listener {
  nodeId: string;
  send(sub: LogSubscription): void;
  end(error: ClusterError): void;
}

interface Subscription {
  id: string;
  /** Tasks asked of each node. */
  byNode: Map<string, Set<string>>;
  /** Nodes that have not said they are done. */
  waiting: Set<string>;
  /** Sends lines to the reader; `resume` is called once a full reader can take more. */
  deliver(nodeId: string, entries: LogEntry[], pause: () => void, resume: () => void): void;
  warn(text: string): void;
  nodeDone(nodeId: string): void;
}

/** Tasks whose container may still exist on a node: assigned and not yet removed. */
function hasContainer(task: DeepReadonly<Task>): boolean {
  const state = task.status?.state ?? TaskState.TASK_STATE_NEW;
  return (
    task.nodeId !== '' && state >= TaskState.TASK_STATE_ACCEPTED && state !== TaskState.TASK_STATE_REJECTED
  );
}

/** What a target names: a service (every task of it) or one task. */
export interface LogTarget {
  tasks: Task[];
  /** Set when the target is a service: a followed reader also gets its tasks started later. */
  serviceId?: string;
  taskId?: string;
}

/** The tasks a target names: a service (every task of it) or one task. NOT_FOUND otherwise. */
export function tasksOfTarget(store: MemoryStore, target: string): LogTarget {
  if (target === '') throw new ClusterError('INVALID_ARGUMENT', 'a service or task name or id is required');
  return store.view((tx): LogTarget => {
    try {
      const service = tx.services.lookup(target);
      const tasks = tx.tasks
        .find('serviceId', service.id)
        .filter(hasContainer)
        .map((t) => thaw<Task>(t));
      return { tasks, serviceId: service.id };
    } catch (err) {
      const e = toClusterError(err);
      if (e.code !== 'NOT_FOUND') throw e;
    }
    try {
      const task = tx.tasks.lookup(target);
      return { tasks: hasContainer(task) ? [task] : [], taskId: task.id };
    } catch (err) {
      const e = toClusterError(err);
      if (e.code !== 'NOT_FOUND') throw e;
    }
    throw new ClusterError('NOT_FOUND', `no such service or task: '${target}'`);
  });
}

export function createLogBroker(options: LogBrokerOptions): LogBroker {
  const { store, logger } = options;
  const identify =
    options.identify ?? ((call: AnyCall) => nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate));
  const listeners = new Map<string, Listener>();
  const subscriptions = new Map<string, Subscription>();

  const notLeader = () => notLeaderError(options.leaderAddress());

  const serviceError = redirectingServiceError;

  function endStream(stream: ServerWritableStream<unknown, unknown>, error?: ClusterError): void {
    if (stream.cancelled || stream.writableEnded) return;
    if (error) stream.emit('error', serviceError(error));
    else stream.end();
  }

  // ------------------------------------------------------------------ agents
  const listenSubscriptions: LogBrokerServer['listenSubscriptions'] = (
    call: ServerWritableStream<ListenSubscriptionsRequest, LogSubscription>,
  ) => {
    const stream = call as ServerWritableStream<unknown, unknown>;
    let nodeId: string;
    try {
      if (!options.isLeader()) throw notLeader();
      nodeId = identify(stream).nodeId;
    } catch (err) {
      endStream(stream, toClusterError(err));
      return;
    }
    const listener: Listener = {
      nodeId,
      send: (sub) => call.write(sub),
      end: (error) => endStream(stream, error),
    };
    listeners
      .get(nodeId)
      ?.end(new ClusterError('UNAVAILABLE', 'a newer listener of this node replaced this one'));
    listeners.set(nodeId, listener);
    logger.debug({ nodeId }, 'log listener connected');
    const gone = () => {
      if (listeners.get(nodeId) !== listener) return;
      listeners.delete(nodeId);
      // Readers waiting on this node would wait forever.
      for (const sub of subscriptions.values()) {
        if (!sub.byNode.has(nodeId)) continue;
        sub.warn(`node ${nodeId} disconnected: its lines may be incomplete`);
        sub.nodeDone(nodeId);
      }
    };
    call.on('cancelled', gone);
    call.on('close', gone);
    // Subscriptions of followed readers opened before this node (re)connected.
    for (const sub of subscriptions.values()) {
      const tasks = sub.byNode.get(nodeId);
      const follow = subscriptionRequests.get(sub.id)?.follow ?? false;
      if (tasks && (follow || sub.waiting.has(nodeId))) call.write(subscriptionFor(sub, tasks));
    }
  };

  const subscriptionRequests = new Map<string, ServiceLogsRequest>();
  function subscriptionFor(sub: Subscription, tasks: Set<string>): LogSubscription {
    const r = subscriptionRequests.get(sub.id);
    return LogSubscription.fromPartial({
      id: sub.id,
      taskIds: [...tasks],
      follow: r?.follow ?? false,
      tail: r?.tail ?? -1,
      sinceMs: r?.sinceMs ?? 0,
    });
  }

  const publishLogs: handleClientStreamingCall<PublishLogsMessage, PublishLogsResponse> = (
    call,
    callback,
  ) => {
    let nodeId: string;
    try {
      if (!options.isLeader()) throw notLeader();
      nodeId = identify(call).nodeId;
    } catch (err) {
      callback(serviceError(err));
      return;
    }
    let subId = '';
    let answered = false;
    const answer = (err?: ClusterError) => {
      if (answered) return;
      answered = true;
      if (err) callback(serviceError(err));
      else callback(null, {});
    };
    call.on('data', (msg: PublishLogsMessage) => {
      subId ||= msg.subscriptionId;
      const sub = subscriptions.get(msg.subscriptionId);
      // The reader left: tell the agent to stop by ending its stream.
      if (!sub) {
        answer();
        return;
      }
      const allowed = sub.byNode.get(nodeId);
      if (!allowed) {
        answer(
          new ClusterError(
            'PERMISSION_DENIED',
            `subscription ${msg.subscriptionId} asked nothing of node ${nodeId}`,
          ),
        );
        return;
      }
      const entries: LogEntry[] = [];
      for (const line of msg.lines) {
        if (!allowed.has(line.taskId)) continue;
        entries.push({
          context: contextOf(line.taskId, nodeId),
          stream: line.stream,
          timeMs: line.timeMs,
          text: line.text,
        });
      }
      // A slow reader slows the agents (gRPC flow control) instead of filling the leader's memory.
      if (entries.length)
        sub.deliver(
          nodeId,
          entries,
          () => call.pause(),
          () => call.resume(),
        );
      if (msg.error) sub.warn(`node ${nodeName(nodeId)}: ${msg.error}`);
      if (msg.done) sub.nodeDone(nodeId);
    });
    call.on('end', () => {
      const sub = subscriptions.get(subId);
      if (sub?.waiting.has(nodeId) && !subscriptionRequests.get(subId)?.follow) sub.nodeDone(nodeId);
      answer();
    });
    call.on('error', () => answer());
  };

  // ------------------------------------------------------------------ context of lines
  const contexts = new Map<string, LogContext>();
  function nodeName(nodeId: string): string {
    return store.view((tx) => {
      const node = tx.nodes.get(nodeId);
      return node?.spec?.annotations?.name || node?.description?.hostname || nodeId;
    });
  }
  function contextOf(taskId: string, nodeId: string): LogContext {
    const known = contexts.get(taskId);
    if (known) return known;
    const context = store.view((tx) => {
      const task = tx.tasks.get(taskId);
      const service = task ? tx.services.get(task.serviceId) : undefined;
      return {
        serviceId: task?.serviceId ?? '',
        serviceName: service?.spec?.annotations?.name ?? task?.serviceId ?? '',
        taskId,
        slot: task?.slot ?? 0,
        nodeId,
        nodeName: nodeName(nodeId),
      };
    });
    // Bounded: contexts are cheap, and a long-lived leader forgets them all at once.
    if (contexts.size >= 10_000) contexts.clear();
    contexts.set(taskId, context);
    return context;
  }

  // ------------------------------------------------------------------ readers
  const serviceLogs: LogsServer['serviceLogs'] = (
    call: ServerWritableStream<ServiceLogsRequest, ServiceLogsMessage>,
  ) => {
    const stream = call as ServerWritableStream<unknown, unknown>;
    let target: LogTarget;
    try {
      if (!options.isLeader()) throw notLeader();
      if (subscriptions.size >= MAX_SUBSCRIPTIONS) {
        throw new ClusterError(
          'RESOURCE_EXHAUSTED',
          `${MAX_SUBSCRIPTIONS} log readers are open already; retry later`,
        );
      }
      target = tasksOfTarget(store, call.request.target);
    } catch (err) {
      endStream(stream, toClusterError(err));
      return;
    }
    const request = call.request;
    const byNode = new Map<string, Set<string>>();
    const include = (t: DeepReadonly<Task>): Set<string> => {
      let set = byNode.get(t.nodeId);
      if (!set) byNode.set(t.nodeId, (set = new Set()));
      set.add(t.id);
      return set;
    };
    for (const t of target.tasks) include(t);
    let ended = false;
    const following = new AbortController();
    const finish = () => {
      if (ended) return;
      ended = true;
      following.abort();
      subscriptions.delete(sub.id);
      subscriptionRequests.delete(sub.id);
      // Agents still publishing stop: a closing subscription, and their publish stream is ended.
      for (const nodeId of byNode.keys()) {
        listeners.get(nodeId)?.send(LogSubscription.fromPartial({ id: sub.id, close: true }));
      }
    };
    const sub: Subscription = {
      id: newId(),
      byNode,
      waiting: new Set(byNode.keys()),
      deliver(_nodeId, entries, pause, resume) {
        if (ended) return;
        let full = false;
        for (let i = 0; i < entries.length; i += MAX_ENTRIES_PER_MESSAGE) {
          const more = call.write(
            ServiceLogsMessage.fromPartial({ entries: entries.slice(i, i + MAX_ENTRIES_PER_MESSAGE) }),
          );
          full ||= !more;
        }
        if (full) {
          pause();
          call.once('drain', resume);
          // A reader that leaves never drains: the publisher must not stay paused.
          following.signal.addEventListener('abort', resume, { once: true });
        }
      },
      warn(text) {
        if (!ended) call.write(ServiceLogsMessage.fromPartial({ warnings: [text] }));
      },
      nodeDone(nodeId) {
        sub.waiting.delete(nodeId);
        if (sub.waiting.size === 0 && !request.follow) {
          finish();
          endStream(stream);
        }
      },
    };
    subscriptions.set(sub.id, sub);
    subscriptionRequests.set(sub.id, request);
    call.on('cancelled', finish);
    call.on('close', finish);
    for (const [nodeId, taskIds] of byNode) {
      const listener = listeners.get(nodeId);
      if (listener) listener.send(subscriptionFor(sub, taskIds));
      else {
        sub.warn(`node ${nodeName(nodeId)} is not connected: lines of its tasks are missing`);
        if (!request.follow) sub.waiting.delete(nodeId);
      }
    }
    if (sub.waiting.size === 0 && !request.follow) {
      finish();
      endStream(stream);
    }
    if (request.follow) followTasks(sub, target, include, following.signal);
  };

  /**
   * A followed reader also gets tasks that start after it began (a replacement, a scale-up, an
   * update), as Docker's: each node is asked again when one of its tasks of the target runs.
   */
  function followTasks(
    sub: Subscription,
    target: LogTarget,
    include: (t: DeepReadonly<Task>) => Set<string>,
    signal: AbortSignal,
  ): void {
    const watcher = store.watch({ tables: ['tasks'], signal });
    (async () => {
      for await (const event of watcher) {
        if (event.table !== 'tasks' || event.kind === 'delete') continue;
        const t = event.object;
        if (target.serviceId ? t.serviceId !== target.serviceId : t.id !== target.taskId) continue;
        if (!hasContainer(t)) continue;
        const known = sub.byNode.get(t.nodeId)?.has(t.id) ?? false;
        const nowRunning =
          t.status?.state === TaskState.TASK_STATE_RUNNING &&
          event.oldObject?.status?.state !== TaskState.TASK_STATE_RUNNING;
        if (known && !nowRunning) continue;
        const tasks = include(t);
        listeners.get(t.nodeId)?.send(subscriptionFor(sub, tasks));
      }
    })().catch((err: unknown) =>
      logger.warn({ err, subscriptionId: sub.id }, 'a followed reader no longer sees new tasks'),
    );
  }

  function closeAll(error: ClusterError): void {
    for (const l of [...listeners.values()]) l.end(error);
    listeners.clear();
    contexts.clear();
    for (const sub of [...subscriptions.values()]) {
      sub.warn(error.message);
      // Readers end: a new leader has none of their subscriptions.
      sub.waiting.clear();
    }
    subscriptions.clear();
    subscriptionRequests.clear();
    for (const end of readerEnders) end(error);
    readerEnders.clear();
  }
  const readerEnders = new Set<(error: ClusterError) => void>();
  const readers: LogsServer = {
    serviceLogs: (call) => {
      const ender = (error: ClusterError) => endStream(call, error);
      readerEnders.add(ender);
      call.on('close', () => readerEnders.delete(ender));
      call.on('cancelled', () => readerEnders.delete(ender));
      serviceLogs(call);
    },
  };

  const loop: LeaderLoop = {
    name: 'logbroker',
    async run(signal: AbortSignal): Promise<void> {
      await new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener('abort', () => resolve(), { once: true });
      });
      closeAll(notLeader());
    },
  };

  return {
    agents: { listenSubscriptions, publishLogs },
    readers,
    loop,
    close: () => closeAll(new ClusterError('UNAVAILABLE', 'the manager is shutting down')),
  };
}
