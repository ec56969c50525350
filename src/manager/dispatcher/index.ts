// The dispatcher: the leader's end of every worker's session. It records a node READY when its
// session opens, marks it DOWN when heartbeats stop, streams each node's task assignments (a
// full set, then changes), and writes the agents' task status reports in batched transactions.
import {
  Metadata,
  type ServiceError,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServerWritableStream,
} from '@grpc/grpc-js';
import {
  AssignmentsMessage,
  MeshState,
  SessionMessage,
  type AssignmentsRequest,
  type DispatcherServer,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type SessionRequest,
  type UpdateTaskStatusRequest,
  type UpdateTaskStatusResponse,
} from '../../gen/cluster/v1/dispatcher';
import {
  NodeAvailability,
  NodeRole,
  NodeState,
  Task,
  TaskState,
  type Node as ClusterNode,
  type NodeDescription,
  type TaskStatus,
} from '../../gen/cluster/v1/objects';
import { Coalescer } from '../../common/coalesce';
import { ClusterError, toClusterError } from '../../common/errors';
import type { Logger } from '../../common/logger';
import type { LeaderLoop } from '../../node/leader_loops';
import { newId, thaw, type DeepReadonly, type MemoryStore, type StoreEvent } from '../../store';
import { managerAddresses } from '../ca/service';
import { nodeIdentityFromPeer, type NodeIdentity } from '../ca';
import { standingRefusal } from '../ca/renew';
import { meshStateFor } from '../allocator/mesh';

/**
 * Heartbeat period. Half a second (Swarm: 5 s) so that a silent node is found in 2 s and its
 * tasks run elsewhere within about 3 s of its death (issue 4), while 4 periods of silence
 * still ride out a sub-second network blip together with TCP's retransmission backoff.
 */
export const DEFAULT_HEARTBEAT_PERIOD_MS = 500;
/** Missed heartbeat periods after which a node is marked DOWN. */
export const NODE_DOWN_AFTER_HEARTBEATS = 4;
/**
 * Periods a node whose session connection closed (its daemon died: the kernel closed the
 * socket) has to open a new session before it is marked DOWN. A blip does not close a TCP
 * connection; an agent restarting its own session opens the next one at once.
 */
export const SESSION_LOST_AFTER_HEARTBEATS = 1;
export const SESSION_LOST_MESSAGE = 'session connection closed';
/**
 * The shortest time between two assignment messages on one stream. The first change after a
 * quiet spell goes at once; changes in a burst are gathered into one message per period.
 */
export const DEFAULT_BATCH_MS = 50;
/** Retries of a node record write that lost a version race with another writer. */
const NODE_WRITE_ATTEMPTS = 5;
/** The metadata key naming the leader on an UNAVAILABLE answer from a follower. */
export const LEADER_ADDR_METADATA = 'cluster-leader-addr';

/** A follower's answer to a worker's call: the leader's address when known (also in metadata). */
export function notLeaderError(addr: string | undefined): ClusterError {
  return new ClusterError(
    'UNAVAILABLE',
    addr
      ? `this manager is not the leader: reconnect to ${addr}`
      : 'no leader elected yet; retry in a moment',
    addr ? { leaderAddr: addr } : {},
  );
}

/** The gRPC error for `err`, carrying the leader's address in LEADER_ADDR_METADATA when it names one. */
export function redirectingServiceError(err: unknown): Partial<ServiceError> {
  const e = toClusterError(err);
  const out = e.toServiceError();
  const leaderAddr = e.details.leaderAddr;
  if (typeof leaderAddr === 'string') {
    const md = out.metadata ?? new Metadata();
    md.set(LEADER_ADDR_METADATA, leaderAddr);
    out.metadata = md;
  }
  return out;
}
export const HEARTBEAT_FAILURE_MESSAGE = 'heartbeat failure';

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown>;

export interface DispatcherOptions {
  store: MemoryStore;
  isLeader(): boolean;
  leaderAddress(): string | undefined;
  heartbeatPeriodMs?: number;
  batchMs?: number;
  logger: Logger;
  /** Who is calling; the node certificate by default (unit tests inject identities). */
  identify?: (call: AnyCall) => NodeIdentity;
  nowMs?: () => number;
}

export interface Dispatcher {
  server: DispatcherServer;
  loop: LeaderLoop;
  /** Ends every open stream (for a manager shutting down). */
  close(): void;
}

interface Session {
  id: string;
  nodeId: string;
  lastHeartbeatMs: number;
  /** When the agent's end of the session stream went away (cancelled, connection closed). */
  closedAtMs?: number;
  /** Ends the session's streams; the agent then opens a new session. */
  end(error: ClusterError): void;
  /** How to end each open stream of the session. */
  streams: Set<(error: ClusterError) => void>;
}

interface PendingStatus {
  nodeId: string;
  taskId: string;
  status: TaskStatus;
}

/** Peer strings look like "ipv4:10.0.0.2:5000", "ipv6:[::1]:5000" or "10.0.0.2:5000". */
export function peerHost(peer: string): string {
  const text = peer.replace(/^(ipv4|ipv6|unix):/, '');
  const bracketed = /^\[([^\]]+)\]/.exec(text);
  if (bracketed?.[1]) return bracketed[1];
  const colon = text.lastIndexOf(':');
  return colon > 0 ? text.slice(0, colon) : text;
}

function isTaskForNode(task: DeepReadonly<Task> | undefined, nodeId: string): boolean {
  return task !== undefined && task.nodeId === nodeId;
}

/** States of a node that has a session: the ones silence turns DOWN. */
function isConnectedState(state: NodeState | undefined): boolean {
  return state === NodeState.NODE_STATE_READY || state === NodeState.NODE_STATE_NOT_READY;
}

export function createDispatcher(options: DispatcherOptions): Dispatcher {
  const { store, logger } = options;
  const periodMs = options.heartbeatPeriodMs ?? DEFAULT_HEARTBEAT_PERIOD_MS;
  const batchMs = options.batchMs ?? DEFAULT_BATCH_MS;
  const now = options.nowMs ?? Date.now;
  const identify =
    options.identify ?? ((call: AnyCall) => nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate));
  const sessions = new Map<string, Session>();
  /** When a node was last heard of; nodes connected (READY or NOT_READY) in the store but absent get a grace from leadership start. */
  const lastSeen = new Map<string, number>();
  let pending: PendingStatus[] = [];
  let waiters: { resolve(): void; reject(e: Error): void }[] = [];
  let flushing: Promise<void> = Promise.resolve();
  let flushQueued = false;

  const notLeader = () => notLeaderError(options.leaderAddress());

  function serviceError(err: unknown): Partial<ServiceError> {
    const out = redirectingServiceError(err);
    if (toClusterError(err).code === 'INTERNAL') logger.error({ err }, 'dispatcher request failed');
    return out;
  }

  function checkLeader(): void {
    if (!options.isLeader()) throw notLeader();
  }

  function sessionOf(nodeId: string, sessionId: string): Session {
    const session = sessions.get(nodeId);
    if (!session || session.id !== sessionId) {
      throw new ClusterError(
        'NOT_FOUND',
        `session '${sessionId}' of node ${nodeId} is not open: open a new session`,
      );
    }
    return session;
  }

  function endStream(stream: ServerWritableStream<unknown, unknown>, error?: ClusterError): void {
    if (stream.cancelled || stream.writableEnded) return;
    if (error) stream.emit('error', serviceError(error));
    else stream.end();
  }

  async function writeNode(
    nodeId: string,
    change: (node: ClusterNode | undefined) => ClusterNode | undefined,
    createIfMissing: boolean,
  ): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await store.update((tx) => {
          const current = tx.nodes.get(nodeId);
          const next = change(current);
          if (!next) return;
          if (current) tx.nodes.update(next);
          else if (createIfMissing) tx.nodes.create(next);
        });
        return;
      } catch (err) {
        // Another writer (the control API, a node update) changed the record: read again.
        if (toClusterError(err).code !== 'CONFLICT' || attempt >= NODE_WRITE_ATTEMPTS) throw err;
      }
    }
  }

  /**
   * A connected node whose runtime answers is READY; one whose runtime does not is NOT_READY
   * (no new tasks; its tasks stay), with the agent's reason.
   */
  function runtimeStatus(runtimeError: string): { state: NodeState; message: string } {
    return runtimeError
      ? { state: NodeState.NODE_STATE_NOT_READY, message: `container runtime unavailable: ${runtimeError}` }
      : { state: NodeState.NODE_STATE_READY, message: '' };
  }

  /** A heartbeat saying the runtime went down or came back moves the node between READY and NOT_READY. */
  function noteRuntime(nodeId: string, runtimeError: string): void {
    const wanted = runtimeStatus(runtimeError);
    const current = store.view((tx) => tx.nodes.get(nodeId)?.status);
    if (!isConnectedState(current?.state) || current?.state === wanted.state) return;
    writeNode(
      nodeId,
      (node) => {
        if (!node || !isConnectedState(node.status?.state) || node.status?.state === wanted.state)
          return undefined;
        logger.info(
          { nodeId, state: NodeState[wanted.state], reason: runtimeError },
          'node readiness changed',
        );
        node.status = { ...wanted, addr: node.status?.addr ?? '' };
        return node;
      },
      false,
    ).catch((err: unknown) => logger.warn({ nodeId, err }, 'node readiness not written'));
  }

  // ------------------------------------------------------------------ Session
  async function openSession(
    call: ServerWritableStream<SessionRequest, SessionMessage>,
    who: NodeIdentity,
  ): Promise<void> {
    const description: NodeDescription | undefined = call.request.description;
    const addr = peerHost(call.getPeer());
    // Every member's record is made when it joins (or at init): a node without one was removed,
    // and its still-valid certificate must not bring it back.
    const refusal = standingRefusal(store, who, 'any');
    if (refusal) throw new ClusterError('PERMISSION_DENIED', `${refusal}: leave and join again`);
    if (!store.view((tx) => tx.nodes.get(who.nodeId))) {
      throw new ClusterError(
        'PERMISSION_DENIED',
        `node ${who.nodeId} is not a member of this cluster (it was removed): leave and join again`,
      );
    }
    await writeNode(
      who.nodeId,
      (node) => {
        const next = node ?? {
          id: who.nodeId,
          attachments: [],
          spec: {
            annotations: { name: '', labels: {} },
            desiredRole: who.role === 'manager' ? NodeRole.NODE_ROLE_MANAGER : NodeRole.NODE_ROLE_WORKER,
            availability: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
          },
          role: who.role === 'manager' ? NodeRole.NODE_ROLE_MANAGER : NodeRole.NODE_ROLE_WORKER,
        };
        if (description) next.description = description;
        next.status = { ...runtimeStatus(call.request.runtimeError), addr };
        return next;
      },
      false,
    );
    checkLeader();
    const previous = sessions.get(who.nodeId);
    previous?.end(new ClusterError('UNAVAILABLE', 'a newer session of this node replaced this one'));
    const session: Session = {
      id: newId(),
      nodeId: who.nodeId,
      lastHeartbeatMs: now(),
      streams: new Set(),
      end(error) {
        if (sessions.get(who.nodeId) === session) sessions.delete(who.nodeId);
        const enders = [...session.streams];
        session.streams.clear();
        for (const end of enders) end(error);
      },
    };
    sessions.set(who.nodeId, session);
    lastSeen.set(who.nodeId, now());
    const stream = call as ServerWritableStream<unknown, unknown>;
    const ender = (error: ClusterError) => endStream(stream, error);
    session.streams.add(ender);
    call.on('cancelled', () => {
      session.streams.delete(ender);
      // Still the node's current session: unless a new one opens soon, the node is gone.
      if (sessions.get(who.nodeId) === session) session.closedAtMs = now();
    });
    logger.info({ nodeId: who.nodeId, addr, sessionId: session.id }, 'node session opened');
    call.write(SessionMessage.fromPartial({ sessionId: session.id, managers: managerAddresses(store) }));
  }

  const session: DispatcherServer['session'] = (call) => {
    Promise.resolve()
      .then(() => {
        checkLeader();
        return openSession(call, identify(call));
      })
      .catch((err: unknown) =>
        endStream(call as ServerWritableStream<unknown, unknown>, toClusterError(err)),
      );
  };

  // ------------------------------------------------------------------ Heartbeat
  const heartbeat: DispatcherServer['heartbeat'] = (
    call: ServerUnaryCall<HeartbeatRequest, HeartbeatResponse>,
    callback: sendUnaryData<HeartbeatResponse>,
  ) => {
    try {
      checkLeader();
      const who = identify(call);
      const s = sessionOf(who.nodeId, call.request.sessionId);
      s.lastHeartbeatMs = now();
      lastSeen.set(who.nodeId, s.lastHeartbeatMs);
      noteRuntime(who.nodeId, call.request.runtimeError);
      callback(null, {
        period: { seconds: Math.floor(periodMs / 1000), nanos: (periodMs % 1000) * 1_000_000 },
      });
    } catch (err) {
      callback(serviceError(err));
    }
  };

  // ------------------------------------------------------------------ Assignments
  const assignments: DispatcherServer['assignments'] = (
    call: ServerWritableStream<AssignmentsRequest, AssignmentsMessage>,
  ) => {
    const stream = call as ServerWritableStream<unknown, unknown>;
    let s: Session;
    let nodeId: string;
    try {
      checkLeader();
      nodeId = identify(call).nodeId;
      s = sessionOf(nodeId, call.request.sessionId);
    } catch (err) {
      endStream(stream, toClusterError(err));
      return;
    }
    const abort = new AbortController();
    const stop = () => {
      abort.abort();
      s.streams.delete(ender);
    };
    const ender = (error: ClusterError) => {
      stop();
      endStream(stream, error);
    };
    s.streams.add(ender);
    call.on('cancelled', stop);
    const { value: initial, watcher } = store.viewAndWatch((tx) => tx.tasks.find('nodeId', nodeId), {
      tables: ['tasks', 'nodes', 'services', 'networks'],
      signal: abort.signal,
    });
    // The routing mesh as last sent to this node: a message carries it only when it changed.
    let meshSent = '';
    const meshUpdate = (): MeshState | undefined => {
      const mesh = store.view((tx) => meshStateFor(tx, nodeId));
      const text = JSON.stringify(MeshState.toJSON(mesh));
      if (text === meshSent) return undefined;
      meshSent = text;
      return mesh;
    };
    let meshDirty = false;
    // What this stream last sent per task: a change of status alone (the agent's own report)
    // is not worth a message, a new desired state or spec is.
    const sent = new Map<string, { desiredState: TaskState; specVersion: number; forceUpdate: number }>();
    const remember = (t: DeepReadonly<Task>) =>
      sent.set(t.id, {
        desiredState: t.desiredState,
        specVersion: t.specVersion,
        forceUpdate: t.spec?.forceUpdate ?? 0,
      });
    for (const t of initial) remember(t);
    call.write(
      AssignmentsMessage.fromPartial({
        full: true,
        updatedTasks: initial,
        removedTaskIds: [],
        mesh: meshUpdate(),
      }),
    );

    let updated = new Map<string, Task>();
    let removed = new Set<string>();
    const flush = () => {
      if (abort.signal.aborted) return;
      const mesh = meshDirty ? meshUpdate() : undefined;
      meshDirty = false;
      if (updated.size === 0 && removed.size === 0 && mesh === undefined) return;
      const message = AssignmentsMessage.fromPartial({
        full: false,
        updatedTasks: [...updated.values()],
        removedTaskIds: [...removed],
        mesh,
      });
      updated = new Map();
      removed = new Set();
      call.write(message);
    };
    const coalescer = new Coalescer(batchMs, flush);
    abort.signal.addEventListener('abort', () => coalescer.cancel(), { once: true });
    const onEvent = (event: StoreEvent) => {
      // Any change may move the mesh (a task running, a node's address): recomputed at flush.
      meshDirty = true;
      coalescer.request();
      if (event.table !== 'tasks') return;
      const task = event.object;
      const mine = isTaskForNode(task, nodeId);
      const wasMine = isTaskForNode(event.oldObject, nodeId);
      if (event.kind === 'delete' || (!mine && wasMine)) {
        if (!mine && !wasMine) return;
        if (!sent.delete(task.id)) return;
        updated.delete(task.id);
        removed.add(task.id);
      } else if (mine) {
        const last = sent.get(task.id);
        if (
          last &&
          last.desiredState === task.desiredState &&
          last.specVersion === task.specVersion &&
          last.forceUpdate === (task.spec?.forceUpdate ?? 0)
        ) {
          return;
        }
        remember(task);
        removed.delete(task.id);
        updated.set(task.id, thaw<Task>(task));
      } else {
        return;
      }
      coalescer.request();
    };
    (async () => {
      for await (const event of watcher) onEvent(event);
    })().then(
      () => {
        stop();
        endStream(stream);
      },
      (err: unknown) => {
        stop();
        endStream(stream, toClusterError(err));
      },
    );
  };

  // ------------------------------------------------------------------ UpdateTaskStatus
  async function flushStatus(): Promise<void> {
    const items = pending;
    const done = waiters;
    pending = [];
    waiters = [];
    if (items.length === 0) return;
    // Several reports of one task in a batch: the furthest state wins.
    const latest = new Map<string, PendingStatus>();
    for (const item of items) {
      const seen = latest.get(item.taskId);
      if (!seen || item.status.state >= seen.status.state) latest.set(item.taskId, item);
    }
    try {
      const result = await store.updateEach(latest.values(), (tx, item) => {
        const task = tx.tasks.get(item.taskId);
        if (!task || task.nodeId !== item.nodeId) return;
        const current = task.status?.state ?? TaskState.TASK_STATE_NEW;
        // Status moves forward only: a late or repeated report is dropped.
        if (item.status.state < current) return;
        // A change of health alone is news (the load balancer takes healthy tasks only).
        if (
          item.status.state === current &&
          (task.status?.message ?? '') === item.status.message &&
          (task.status?.health ?? '') === item.status.health
        )
          return;
        task.status = item.status;
        tx.tasks.update(task);
      });
      for (const f of result.failed) {
        logger.warn({ taskId: f.item.taskId, err: f.error }, 'task status update not written');
      }
      for (const w of done) w.resolve();
    } catch (err) {
      for (const w of done) w.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }

  /**
   * Group commit: the first report goes to the store at once (on the next turn, with whatever
   * else that turn received); reports arriving while a write is in flight go in the next one.
   */
  function scheduleFlush(): void {
    if (flushQueued) return;
    flushQueued = true;
    flushing = flushing
      .then(() => new Promise<void>((resolve) => setImmediate(resolve)))
      .then(() => {
        flushQueued = false;
        return flushStatus();
      });
  }

  const updateTaskStatus: DispatcherServer['updateTaskStatus'] = (
    call: ServerUnaryCall<UpdateTaskStatusRequest, UpdateTaskStatusResponse>,
    callback: sendUnaryData<UpdateTaskStatusResponse>,
  ) => {
    let written: Promise<void>;
    try {
      checkLeader();
      const who = identify(call);
      sessionOf(who.nodeId, call.request.sessionId);
      const foreign = store.view((tx) =>
        call.request.updates.filter((u) => {
          const task = tx.tasks.get(u.taskId);
          return task !== undefined && task.nodeId !== who.nodeId;
        }),
      );
      if (foreign.length > 0) {
        throw new ClusterError(
          'PERMISSION_DENIED',
          `task ${foreign[0]?.taskId ?? ''} is not assigned to node ${who.nodeId}: a node reports only its own tasks`,
        );
      }
      for (const u of call.request.updates) {
        if (!u.status) throw new ClusterError('INVALID_ARGUMENT', `update of task ${u.taskId} has no status`);
        pending.push({ nodeId: who.nodeId, taskId: u.taskId, status: u.status });
      }
      written = new Promise<void>((resolve, reject) => waiters.push({ resolve, reject }));
      scheduleFlush();
    } catch (err) {
      callback(serviceError(err));
      return;
    }
    written.then(
      () => callback(null, {}),
      (err: unknown) => callback(serviceError(err)),
    );
  };

  // ------------------------------------------------------------------ leader loop
  async function markDown(nodeId: string, message: string): Promise<void> {
    await writeNode(
      nodeId,
      (node) => {
        if (!node || !isConnectedState(node.status?.state)) return undefined;
        node.status = { state: NodeState.NODE_STATE_DOWN, message, addr: node.status?.addr ?? '' };
        return node;
      },
      false,
    );
  }

  /**
   * One check: nodes connected (READY or NOT_READY) in the store but silent for the grace are marked DOWN, and so are
   * nodes whose session connection closed without a new session following. `floorMs` is when
   * this leader could first have heard from everyone (its start, or the end of a stall of its
   * own event loop): nobody is counted silent before it.
   */
  async function checkHeartbeats(floorMs: number): Promise<void> {
    const graceMs = NODE_DOWN_AFTER_HEARTBEATS * periodMs;
    const lostMs = SESSION_LOST_AFTER_HEARTBEATS * periodMs;
    const t = now();
    const ready = store.view((tx) =>
      tx.nodes.list((n) => isConnectedState(n.status?.state)).map((n) => n.id),
    );
    // A node removed while connected (`node rm --force`): its session ends now.
    for (const [nodeId, session] of [...sessions]) {
      if (store.view((tx) => tx.nodes.get(nodeId)) !== undefined) continue;
      logger.warn({ nodeId }, 'node removed from the cluster: ending its session');
      session.end(new ClusterError('PERMISSION_DENIED', `node ${nodeId} was removed from the cluster`));
    }
    for (const nodeId of ready) {
      const session = sessions.get(nodeId);
      const heard = Math.max(lastSeen.get(nodeId) ?? 0, session?.lastHeartbeatMs ?? 0, floorMs);
      let message: string;
      if (session?.closedAtMs !== undefined && t - Math.max(session.closedAtMs, floorMs) >= lostMs) {
        message = SESSION_LOST_MESSAGE;
      } else if (t - heard >= graceMs) {
        message = HEARTBEAT_FAILURE_MESSAGE;
      } else {
        continue;
      }
      logger.warn({ nodeId, silentMs: t - heard, why: message }, 'node lost: marking it down');
      session?.end(new ClusterError('UNAVAILABLE', `session expired: ${message}`));
      lastSeen.delete(nodeId);
      try {
        await markDown(nodeId, message);
      } catch (err) {
        logger.warn({ nodeId, err }, 'could not mark node down; will retry');
      }
    }
  }

  const loop: LeaderLoop = {
    name: 'dispatcher',
    async run(signal: AbortSignal): Promise<void> {
      // A new leader has not heard from anyone: everyone gets one grace from its start.
      let floorMs = now();
      const checkEveryMs = Math.max(10, Math.floor(periodMs / 4));
      let lastTickMs = floorMs;
      await new Promise<void>((resolve) => {
        let checking = false;
        const timer = setInterval(() => {
          const t = now();
          // Our own event loop stood still (GC, a large snapshot, an overloaded host): the
          // heartbeats that arrived meanwhile wait behind this timer, so silence is not theirs.
          if (t - lastTickMs > checkEveryMs + periodMs) {
            logger.warn(
              { stalledMs: t - lastTickMs },
              'dispatcher check ran late: heartbeat grace restarted',
            );
            floorMs = t;
          }
          lastTickMs = t;
          if (checking) return;
          checking = true;
          checkHeartbeats(floorMs)
            .catch((err: unknown) => logger.error({ err }, 'heartbeat check failed'))
            .finally(() => {
              checking = false;
            });
        }, checkEveryMs);
        signal.addEventListener(
          'abort',
          () => {
            clearInterval(timer);
            resolve();
          },
          { once: true },
        );
      });
      // Leadership is gone: every session must move to the new leader.
      closeAll(notLeader());
    },
  };

  function closeAll(error: ClusterError): void {
    for (const s of [...sessions.values()]) s.end(error);
    sessions.clear();
    lastSeen.clear();
    const stranded = waiters;
    pending = [];
    waiters = [];
    for (const w of stranded) w.reject(error);
  }

  return {
    server: { session, heartbeat, assignments, updateTaskStatus },
    loop,
    close: () => closeAll(new ClusterError('UNAVAILABLE', 'the manager is shutting down')),
  };
}

/** What the dispatcher needs of a manager (structurally src/node's Manager). */
export interface DispatcherHost {
  store: MemoryStore;
  raft: { isLeader(): boolean };
  leaderAddress(): string | undefined;
}

const perManager = new WeakMap<DispatcherHost, Dispatcher>();

/**
 * The one dispatcher of a manager: its gRPC handlers (on the manager port) and its leader loop
 * must be the same instance, and ManagerOptions asks for them through two separate callbacks.
 */
export function dispatcherFor(
  manager: DispatcherHost,
  options: { logger: Logger; heartbeatPeriodMs?: number },
): Dispatcher {
  let dispatcher = perManager.get(manager);
  if (!dispatcher) {
    dispatcher = createDispatcher({
      store: manager.store,
      isLeader: () => manager.raft.isLeader(),
      leaderAddress: () => manager.leaderAddress(),
      heartbeatPeriodMs: options.heartbeatPeriodMs,
      logger: options.logger,
    });
    perManager.set(manager, dispatcher);
  }
  return dispatcher;
}
