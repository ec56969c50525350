// Raft messages between managers over gRPC: one long-lived bidirectional stream per peer pair,
// bounded per-peer send queues with a priority lane, chunked snapshots, reconnect with backoff.
//
// Who dials: for each pair, the node with the lower id dials the higher one (when it knows the
// address) and both sides send on that one stream. A node also accepts a stream from any peer
// that dials it (a new member that knows us before we know its address), and if two streams to
// one peer are ever open at once, the one established last is used for sending while frames
// are still read from both. Raft tolerates lost, duplicated and reordered messages, so a
// stream that breaks loses its queue and the core is told the peer is unreachable; it will
// probe again once the stream is back.

import {
  Server,
  status as GrpcStatus,
  type ChannelCredentials,
  type ChannelOptions,
  type ServerCredentials,
  type ServerDuplexStream,
  type ClientDuplexStream,
  type ServiceError,
} from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';

import {
  RaftTransportClient,
  RaftTransportService,
  type RaftFrame,
  type RaftHello,
  type SnapshotChunk,
} from '../../gen/cluster/v1/raft';
import { MessageType, type Message, type NodeId } from '../types';
import { approximateMessageBytes, asBuffer, messageFromProto, messageToProto } from './convert';

export { messageFromProto, messageToProto, WireFormatError } from './convert';

/** Messages waiting for one peer; past this, new messages are dropped and the peer reported unreachable. */
export const MAX_QUEUED_MESSAGES_PER_PEER = 4096;
/** Bytes waiting for one peer (snapshots excluded: they are already in memory and one at a time). */
export const MAX_QUEUED_BYTES_PER_PEER = 32 * 1024 * 1024;
/** Snapshot chunk payload: far below grpc-js's default 4 MiB receive limit. */
export const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
/**
 * Appends and snapshot chunks written to a stream but not yet flushed to the socket. Past
 * this, only control messages are written, so a heartbeat waits behind at most this much.
 */
export const MAX_DATA_BYTES_IN_FLIGHT = 2 * 1024 * 1024;
/** The largest snapshot a receiver will reassemble (guards memory against a bad total_size). */
export const MAX_SNAPSHOT_BYTES = 1024 * 1024 * 1024;
/** A stream whose hello (or hello reply) does not arrive within this is abandoned. */
export const HELLO_TIMEOUT_MS = 5000;
/** Keepalive pings let a half-open stream (a host that vanished) be noticed. */
export const TRANSPORT_SERVER_OPTIONS = {
  'grpc.keepalive_time_ms': 10_000,
  'grpc.keepalive_timeout_ms': 5_000,
} as const;
export const RECONNECT_INITIAL_MS = 50;
export const RECONNECT_MAX_MS = 1000;

/** What the transport hands to its owner (the RaftNode steps these into the core). */
export interface TransportHandler {
  onMessage(message: Message): void;
  reportUnreachable(peerId: NodeId): void;
  reportSnapshot(peerId: NodeId, ok: boolean): void;
}

export interface RaftTransportOptions {
  nodeId: NodeId;
  /** Streams from another cluster are refused. */
  clusterId: string;
  /** host:port to listen on; port 0 picks a free one (see start()). */
  listenAddress: string;
  /** Mutual TLS in production: ServerCredentials.createSsl(ca, [{cert, key}], true). */
  serverCredentials: ServerCredentials;
  channelCredentials: ChannelCredentials;
  /** Extra channel options, e.g. grpc.ssl_target_name_override. */
  channelOptions?: ChannelOptions;
  /** Known peers: id → host:port. More can be added with addPeer(). */
  peers?: ReadonlyMap<NodeId, string>;
  handler: TransportHandler;
  /**
   * A server to share (a manager serves its other services on the same port): the transport
   * adds its service, then binds and later shuts it down as its own. Build it with
   * TRANSPORT_SERVER_OPTIONS so half-open streams are noticed.
   */
  server?: Server;
  /**
   * Checks an incoming stream's caller before anything else (a manager requires a manager
   * certificate: a worker's certificate is signed by the same CA). Returns why it is refused,
   * or undefined to accept.
   */
  authorize?: (call: ServerDuplexStream<RaftFrame, RaftFrame>) => string | undefined;
  logger?: Logger;
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
}

type GrpcStream = ClientDuplexStream<RaftFrame, RaftFrame> | ServerDuplexStream<RaftFrame, RaftFrame>;

type Outgoing =
  | { kind: 'message'; frame: RaftFrame; bytes: number }
  | { kind: 'snapshot'; message: Message; data: Uint8Array; offset: number };

/** A snapshot being received in chunks on one stream. */
interface Reassembly {
  snapshotIndex: number;
  buffer: Buffer;
  received: number;
}

/** One established gRPC stream to a peer (dialled by us or accepted by our server). */
class Connection {
  blocked = false;
  closed = false;
  dataBytesInFlight = 0;
  reassembly?: Reassembly;
  constructor(
    readonly peerId: NodeId,
    readonly stream: GrpcStream,
    readonly outbound: boolean,
  ) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if ('cancel' in this.stream) this.stream.cancel();
    else if (!this.stream.writableEnded) this.stream.end();
  }
}

class Peer {
  address?: string;
  client?: RaftTransportClient;
  /** The connection messages are sent on; frames are read from every open one. */
  active?: Connection;
  readonly connections = new Set<Connection>();
  readonly controlLane: Outgoing[] = [];
  readonly dataLane: Outgoing[] = [];
  queuedBytes = 0;
  snapshotQueued = false;
  dialing = false;
  reconnectTimer?: NodeJS.Timeout;
  reconnectDelayMs: number;

  constructor(
    readonly id: NodeId,
    initialDelayMs: number,
  ) {
    this.reconnectDelayMs = initialDelayMs;
  }

  queuedCount(): number {
    return this.controlLane.length + this.dataLane.length;
  }
}

/**
 * Control messages (votes, heartbeats, responses) go in a lane that is always drained first, so
 * they are never stuck behind megabytes of appends. Appends and snapshots keep their relative
 * order in the data lane: reordering appends among themselves would make followers reject.
 */
function isDataMessage(message: Message): boolean {
  return message.type === MessageType.App || message.type === MessageType.Snap;
}

export class RaftTransport {
  private readonly peers = new Map<NodeId, Peer>();
  private readonly server: Server;
  private readonly logger: Logger;
  private readonly pendingHellos = new Set<NodeJS.Timeout>();
  private readonly acceptedStreams = new Set<GrpcStream>();
  private started = false;
  private stopped = false;
  private boundPort = 0;

  constructor(private readonly options: RaftTransportOptions) {
    this.logger = (options.logger ?? pino({ level: 'warn' })).child({
      component: 'raft-transport',
      nodeId: options.nodeId,
    });
    this.server = options.server ?? new Server(TRANSPORT_SERVER_OPTIONS);
    for (const [id, address] of options.peers ?? []) this.peerFor(id).address = address;
    this.server.addService(RaftTransportService, {
      stream: (call: ServerDuplexStream<RaftFrame, RaftFrame>) => this.accept(call),
    });
  }

  /** Listens, then dials the peers this node is responsible for. Returns the bound port. */
  async start(): Promise<number> {
    if (this.started) throw new Error('transport already started');
    this.started = true;
    this.boundPort = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(this.options.listenAddress, this.options.serverCredentials, (err, port) =>
        err ? reject(err) : resolve(port),
      );
    });
    for (const peer of this.peers.values()) this.maybeDial(peer);
    return this.boundPort;
  }

  get port(): number {
    return this.boundPort;
  }

  /** Adds or re-addresses a peer (for example a member added by a conf change). */
  addPeer(id: NodeId, address: string): void {
    if (id === this.options.nodeId) return;
    const peer = this.peerFor(id);
    if (peer.address === address) return;
    peer.address = address;
    if (peer.client) {
      peer.client.close();
      peer.client = undefined;
    }
    if (this.started) this.maybeDial(peer);
  }

  /** Forgets a peer: closes its streams and drops its queue. */
  removePeer(id: NodeId): void {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    this.teardownPeer(peer);
  }

  hasPeer(id: NodeId): boolean {
    return this.peers.has(id);
  }

  /** Whether a stream to the peer is established (for tests and status). */
  isConnected(id: NodeId): boolean {
    return this.peers.get(id)?.active !== undefined;
  }

  /** Queued messages for a peer (for tests and status). */
  queuedMessages(id: NodeId): number {
    return this.peers.get(id)?.queuedCount() ?? 0;
  }

  /** Queues messages for their peers; never blocks, never grows past the per-peer bounds. */
  send(messages: readonly Message[]): void {
    if (this.stopped) return;
    const touched = new Set<Peer>();
    for (const message of messages) {
      if (message.to === this.options.nodeId) continue;
      const peer = this.peerFor(message.to);
      if (this.enqueue(peer, message)) touched.add(peer);
    }
    for (const peer of touched) this.pump(peer);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const timer of this.pendingHellos) clearTimeout(timer);
    this.pendingHellos.clear();
    for (const peer of this.peers.values()) this.teardownPeer(peer, false);
    this.peers.clear();
    for (const stream of this.acceptedStreams) if (!stream.writableEnded) stream.end();
    this.acceptedStreams.clear();
    await new Promise<void>((resolve) => {
      // Streams were ended above; forceShutdown covers any still being set up.
      this.server.tryShutdown(() => resolve());
      setImmediate(() => this.server.forceShutdown());
    });
  }

  // --- sending ---

  private enqueue(peer: Peer, message: Message): boolean {
    if (message.type === MessageType.Snap) {
      if (!message.snapshot) {
        this.logger.error({ to: message.to }, 'snap message without snapshot; dropped');
        return false;
      }
      // No stream now: fail at once rather than hold a possibly huge snapshot for a peer that
      // may never return; the leader sends a fresh one once the peer answers again.
      if (!peer.active || peer.snapshotQueued || peer.queuedCount() >= MAX_QUEUED_MESSAGES_PER_PEER) {
        this.options.handler.reportSnapshot(peer.id, false);
        return false;
      }
      peer.snapshotQueued = true;
      peer.dataLane.push({ kind: 'snapshot', message, data: message.snapshot.data, offset: 0 });
      return true;
    }
    const bytes = approximateMessageBytes(message);
    if (
      peer.queuedCount() >= MAX_QUEUED_MESSAGES_PER_PEER ||
      peer.queuedBytes + bytes > MAX_QUEUED_BYTES_PER_PEER
    ) {
      // Dropping beats growing without bound; the core goes back to probing this peer.
      this.logger.debug({ peerId: peer.id, type: message.type }, 'send queue full; message dropped');
      this.options.handler.reportUnreachable(peer.id);
      return false;
    }
    const item: Outgoing = {
      kind: 'message',
      frame: { body: { $case: 'message', value: messageToProto(message) } },
      bytes,
    };
    peer.queuedBytes += bytes;
    (isDataMessage(message) ? peer.dataLane : peer.controlLane).push(item);
    return true;
  }

  /** Writes queued frames until the stream pushes back; control lane first. */
  private pump(peer: Peer): void {
    const connection = peer.active;
    if (!connection || connection.blocked || connection.closed) return;
    for (;;) {
      const control = peer.controlLane.length > 0;
      if (!control && connection.dataBytesInFlight >= MAX_DATA_BYTES_IN_FLIGHT) return;
      const lane = control ? peer.controlLane : peer.dataLane;
      const item = lane[0];
      if (!item) return;
      let writable: boolean;
      if (item.kind === 'message') {
        lane.shift();
        peer.queuedBytes -= item.bytes;
        writable = control
          ? connection.stream.write(item.frame)
          : connection.stream.write(item.frame, this.dataFlushed(peer, connection, item.bytes));
      } else {
        writable = this.writeSnapshotChunk(peer, connection, item);
      }
      if (!writable) {
        connection.blocked = true;
        connection.stream.once('drain', () => {
          connection.blocked = false;
          if (peer.active === connection) this.pump(peer);
        });
        return;
      }
    }
  }

  /** Counts a data frame in flight until grpc-js reports it written, then resumes the pump. */
  private dataFlushed(peer: Peer, connection: Connection, bytes: number): () => void {
    connection.dataBytesInFlight += bytes;
    return () => {
      connection.dataBytesInFlight -= bytes;
      if (peer.active === connection && !connection.closed) this.pump(peer);
    };
  }

  private writeSnapshotChunk(
    peer: Peer,
    connection: Connection,
    item: Extract<Outgoing, { kind: 'snapshot' }>,
  ): boolean {
    const total = item.data.length;
    const end = Math.min(item.offset + SNAPSHOT_CHUNK_BYTES, total);
    const last = end === total;
    const chunk: SnapshotChunk = {
      snapshotIndex: item.message.snapshot?.metadata.index ?? 0,
      offset: item.offset,
      data: asBuffer(item.data.subarray(item.offset, end)),
      totalSize: total,
      message: last ? messageToProto(item.message) : undefined,
    };
    item.offset = end;
    const frame: RaftFrame = { body: { $case: 'chunk', value: chunk } };
    const flushed = this.dataFlushed(peer, connection, chunk.data.length);
    if (!last) return connection.stream.write(frame, flushed);
    peer.dataLane.shift();
    peer.snapshotQueued = false;
    // Handed to HTTP/2 is as far as we can know: the receiver sends no acknowledgement. If it
    // never arrives, the leader's probe after this report finds the follower still behind.
    return connection.stream.write(frame, (err: Error | null | undefined) => {
      flushed();
      if (this.stopped) return;
      this.options.handler.reportSnapshot(peer.id, !err);
    });
  }

  // --- connections ---

  private peerFor(id: NodeId): Peer {
    let peer = this.peers.get(id);
    if (!peer) {
      peer = new Peer(id, this.options.reconnectInitialMs ?? RECONNECT_INITIAL_MS);
      this.peers.set(id, peer);
    }
    return peer;
  }

  private maybeDial(peer: Peer): void {
    if (this.stopped || !this.started || peer.dialing || peer.reconnectTimer) return;
    if (peer.address === undefined || this.options.nodeId > peer.id) return;
    if (peer.active?.outbound) return;
    this.dial(peer);
  }

  private dial(peer: Peer): void {
    const address = peer.address;
    if (address === undefined) return;
    peer.dialing = true;
    peer.client ??= new RaftTransportClient(address, this.options.channelCredentials, {
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      // The channel's own reconnect backoff (1 s initial by default) would sit under ours and
      // slow a restarted peer's return; keep it as short as our own schedule.
      'grpc.initial_reconnect_backoff_ms': this.options.reconnectInitialMs ?? RECONNECT_INITIAL_MS,
      'grpc.max_reconnect_backoff_ms': this.options.reconnectMaxMs ?? RECONNECT_MAX_MS,
      ...this.options.channelOptions,
    });
    const stream = peer.client.stream();
    let connection: Connection | undefined;
    const helloTimer = setTimeout(() => {
      this.pendingHellos.delete(helloTimer);
      this.logger.warn({ peerId: peer.id, address }, 'no hello reply from peer; retrying');
      stream.cancel();
    }, HELLO_TIMEOUT_MS);
    this.pendingHellos.add(helloTimer);

    const onGone = (reason: string): void => {
      clearTimeout(helloTimer);
      this.pendingHellos.delete(helloTimer);
      if (connection) {
        this.connectionLost(peer, connection, reason);
      } else if (peer.dialing && this.peers.get(peer.id) === peer) {
        peer.dialing = false;
        this.logger.debug({ peerId: peer.id, address, reason }, 'dial failed');
        this.scheduleRedial(peer);
      }
    };
    stream.on('data', (frame: RaftFrame) => {
      if (connection) {
        this.receive(connection, frame);
        return;
      }
      const hello = frame.body?.$case === 'hello' ? frame.body.value : undefined;
      if (
        !hello ||
        hello.from !== peer.id ||
        hello.to !== this.options.nodeId ||
        hello.clusterId !== this.options.clusterId
      ) {
        this.logger.warn({ peerId: peer.id, address, hello }, 'peer answered with a wrong hello');
        stream.cancel();
        return;
      }
      clearTimeout(helloTimer);
      this.pendingHellos.delete(helloTimer);
      peer.dialing = false;
      peer.reconnectDelayMs = this.options.reconnectInitialMs ?? RECONNECT_INITIAL_MS;
      connection = new Connection(peer.id, stream, true);
      this.established(peer, connection);
    });
    stream.on('error', (err: ServiceError) => onGone(err.details || err.message));
    stream.on('end', () => onGone('stream ended'));
    const hello: RaftHello = { from: this.options.nodeId, to: peer.id, clusterId: this.options.clusterId };
    stream.write({ body: { $case: 'hello', value: hello } });
  }

  private scheduleRedial(peer: Peer): void {
    if (this.stopped || peer.reconnectTimer || this.peers.get(peer.id) !== peer) return;
    const maxMs = this.options.reconnectMaxMs ?? RECONNECT_MAX_MS;
    // Jitter keeps the peers of a restarted node from all redialling in lockstep.
    const delayMs = peer.reconnectDelayMs * (0.5 + Math.random() * 0.5);
    peer.reconnectDelayMs = Math.min(peer.reconnectDelayMs * 2, maxMs);
    peer.reconnectTimer = setTimeout(() => {
      peer.reconnectTimer = undefined;
      this.maybeDial(peer);
    }, delayMs);
  }

  /** The server side: the first frame must be a hello naming us and our cluster. */
  private accept(call: ServerDuplexStream<RaftFrame, RaftFrame>): void {
    if (this.stopped) {
      call.emit('error', { code: GrpcStatus.UNAVAILABLE, details: 'raft transport is stopping' });
      return;
    }
    let connection: Connection | undefined;
    const refuse = (code: GrpcStatus, details: string): void => {
      this.logger.warn({ peer: call.getPeer(), details }, 'raft stream refused');
      call.emit('error', { code, details });
    };
    const denied = this.options.authorize?.(call);
    if (denied) {
      refuse(GrpcStatus.PERMISSION_DENIED, denied);
      return;
    }
    this.acceptedStreams.add(call);
    const helloTimer = setTimeout(() => {
      this.pendingHellos.delete(helloTimer);
      refuse(GrpcStatus.DEADLINE_EXCEEDED, `no hello within ${HELLO_TIMEOUT_MS} ms`);
    }, HELLO_TIMEOUT_MS);
    this.pendingHellos.add(helloTimer);
    const onGone = (reason: string): void => {
      clearTimeout(helloTimer);
      this.pendingHellos.delete(helloTimer);
      this.acceptedStreams.delete(call);
      if (connection) {
        const peer = this.peers.get(connection.peerId);
        if (peer) this.connectionLost(peer, connection, reason);
        connection.closed = true;
      }
    };
    call.on('data', (frame: RaftFrame) => {
      if (connection) {
        this.receive(connection, frame);
        return;
      }
      clearTimeout(helloTimer);
      this.pendingHellos.delete(helloTimer);
      const hello = frame.body?.$case === 'hello' ? frame.body.value : undefined;
      if (!hello) return refuse(GrpcStatus.INVALID_ARGUMENT, 'the first frame must be a hello');
      if (hello.clusterId !== this.options.clusterId) {
        return refuse(
          GrpcStatus.PERMISSION_DENIED,
          `cluster id mismatch: this node is in cluster '${this.options.clusterId}', caller claims '${hello.clusterId}'`,
        );
      }
      if (hello.to !== this.options.nodeId) {
        return refuse(GrpcStatus.FAILED_PRECONDITION, `this is node ${this.options.nodeId}, not ${hello.to}`);
      }
      if (hello.from === 0 || hello.from === this.options.nodeId) {
        return refuse(GrpcStatus.INVALID_ARGUMENT, `invalid caller id ${hello.from}`);
      }
      const reply: RaftHello = {
        from: this.options.nodeId,
        to: hello.from,
        clusterId: this.options.clusterId,
      };
      call.write({ body: { $case: 'hello', value: reply } });
      connection = new Connection(hello.from, call, false);
      this.established(this.peerFor(hello.from), connection);
    });
    call.on('error', (err: Error) => onGone(err.message));
    call.on('cancelled', () => onGone('cancelled by peer'));
    call.on('end', () => {
      // The caller half-closed: finish our half too so the call completes.
      if (!call.writableEnded) call.end();
      onGone('stream ended by peer');
    });
  }

  private established(peer: Peer, connection: Connection): void {
    peer.connections.add(connection);
    peer.active = connection;
    this.logger.debug({ peerId: peer.id, outbound: connection.outbound }, 'raft stream established');
    this.pump(peer);
  }

  private connectionLost(peer: Peer, connection: Connection, reason: string): void {
    if (!peer.connections.delete(connection)) return;
    connection.close();
    if (peer.active !== connection) return;
    peer.active = [...peer.connections].pop();
    if (peer.active) {
      this.pump(peer);
      return;
    }
    this.logger.info({ peerId: peer.id, reason }, 'raft stream to peer lost');
    this.dropQueue(peer);
    if (!this.stopped) this.options.handler.reportUnreachable(peer.id);
    if (connection.outbound) this.scheduleRedial(peer);
    else this.maybeDial(peer);
  }

  /** Drops everything queued for a peer; a half-sent snapshot is reported as failed. */
  private dropQueue(peer: Peer, report = true): void {
    const hadSnapshot = peer.snapshotQueued;
    peer.controlLane.length = 0;
    peer.dataLane.length = 0;
    peer.queuedBytes = 0;
    peer.snapshotQueued = false;
    if (hadSnapshot && report && !this.stopped) this.options.handler.reportSnapshot(peer.id, false);
  }

  private teardownPeer(peer: Peer, report = true): void {
    if (peer.reconnectTimer) clearTimeout(peer.reconnectTimer);
    peer.reconnectTimer = undefined;
    this.dropQueue(peer, report);
    for (const connection of peer.connections) connection.close();
    peer.connections.clear();
    peer.active = undefined;
    peer.client?.close();
    peer.client = undefined;
  }

  // --- receiving ---

  private receive(connection: Connection, frame: RaftFrame): void {
    if (this.stopped) return;
    try {
      const body = frame.body;
      if (body?.$case === 'message') {
        this.deliver(connection, messageFromProto(body.value));
      } else if (body?.$case === 'chunk') {
        this.receiveChunk(connection, body.value);
      } else {
        this.logger.warn({ peerId: connection.peerId }, 'unexpected frame on an established stream');
      }
    } catch (err) {
      // A malformed frame means the peer speaks something else: close rather than guess.
      this.logger.error({ peerId: connection.peerId, err }, 'bad raft frame; closing stream');
      connection.close();
    }
  }

  private receiveChunk(connection: Connection, chunk: SnapshotChunk): void {
    if (chunk.offset === 0) {
      if (chunk.totalSize > MAX_SNAPSHOT_BYTES) {
        throw new Error(`snapshot of ${chunk.totalSize} bytes exceeds the ${MAX_SNAPSHOT_BYTES} byte limit`);
      }
      connection.reassembly = {
        snapshotIndex: chunk.snapshotIndex,
        buffer: Buffer.allocUnsafe(chunk.totalSize),
        received: 0,
      };
    }
    const reassembly = connection.reassembly;
    if (
      !reassembly ||
      reassembly.snapshotIndex !== chunk.snapshotIndex ||
      reassembly.received !== chunk.offset ||
      chunk.offset + chunk.data.length > reassembly.buffer.length
    ) {
      throw new Error(
        `snapshot chunk out of sequence (index ${chunk.snapshotIndex}, offset ${chunk.offset})`,
      );
    }
    chunk.data.copy(reassembly.buffer, chunk.offset);
    reassembly.received += chunk.data.length;
    if (!chunk.message) return;
    connection.reassembly = undefined;
    if (reassembly.received !== reassembly.buffer.length) {
      throw new Error(`snapshot ended at ${reassembly.received} of ${reassembly.buffer.length} bytes`);
    }
    this.deliver(connection, messageFromProto(chunk.message, reassembly.buffer));
  }

  private deliver(connection: Connection, message: Message): void {
    if (message.from !== connection.peerId || message.to !== this.options.nodeId) {
      this.logger.warn(
        { peerId: connection.peerId, from: message.from, to: message.to },
        'message addressed inconsistently with its stream; dropped',
      );
      return;
    }
    this.options.handler.onMessage(message);
  }
}
