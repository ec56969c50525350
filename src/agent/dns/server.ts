// The embedded DNS server containers on an overlay network use (one per network, bound to the
// node's address on that network): service names, `tasks.` names and network aliases answered
// from a record set the agent replaces whenever endpoints change; other names forwarded to the
// host's resolvers.
import dgram from 'node:dgram';
import net from 'node:net';

import type { Logger } from '../../common/logger';
import {
  DnsFormatError,
  MAX_UDP_RESPONSE_BYTES,
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  RCODE_SERVFAIL,
  TYPE_A,
  decodeQuery,
  encodeResponse,
  type Answer,
  type Query,
} from './message';

/** Answers carry TTL 0 so a change of endpoints is seen by the next lookup, not after a cache. */
export const RECORD_TTL_SECONDS = 0;
export const DEFAULT_DOMAIN = 'cluster';
export const DEFAULT_FORWARD_TIMEOUT_MS = 2000;
/** Forwarded queries waiting for an upstream at once; more are answered SERVFAIL. */
export const MAX_PENDING_FORWARDS = 256;
/** TCP connections held at once, and how long an idle one is kept. */
export const MAX_TCP_CONNECTIONS = 64;
export const TCP_IDLE_TIMEOUT_MS = 10_000;
/** A DNS message over TCP is at most 65535 bytes (2-byte length prefix). */
const MAX_TCP_MESSAGE_BYTES = 65535;

export interface ServiceRecord {
  readonly name: string;
  /** VIP mode: the service name resolves to this address. Absent in dnsrr mode. */
  readonly vip?: string | undefined;
  /** The healthy, running tasks' addresses on this network. */
  readonly taskIps: readonly string[];
}

export interface DnsRecordSet {
  readonly services: readonly ServiceRecord[];
  /** Network aliases: name → addresses (a service alias maps to its VIP, a task's to its IP). */
  readonly aliases?: Readonly<Record<string, readonly string[]>>;
}

export interface Upstream {
  readonly host: string;
  readonly port: number;
}

export interface DnsServerOptions {
  /** The address to listen on (the node's IP on the network; 127.0.0.1 in tests). */
  readonly host: string;
  /** 53 in production; 0 picks a free port (UDP and TCP share it). */
  readonly port: number;
  /** Resolvers for names outside the cluster, tried in order (the host's resolv.conf). */
  readonly upstreams: readonly Upstream[];
  /** Names under this domain are the cluster's: `web.cluster` is `web`. */
  readonly domain?: string;
  readonly forwardTimeoutMs?: number;
  readonly logger?: Logger;
}

/**
 * The upstreams a host's resolv.conf names (IPv4 `nameserver` lines, port 53), for forwarding
 * names outside the cluster as the host would resolve them.
 */
export function upstreamsFromResolvConf(text: string): Upstream[] {
  const upstreams: Upstream[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*(?:[#;].*)?$/.exec(line);
    if (match?.[1] !== undefined) upstreams.push({ host: match[1], port: 53 });
  }
  return upstreams;
}

type Lookup = { kind: 'answer'; addresses: readonly string[] } | { kind: 'nxdomain' } | { kind: 'forward' };

export class DnsServer {
  private records = new Map<string, readonly string[]>();
  /** Names whose order rotates per query (dnsrr services and multi-address aliases). */
  private rotating = new Set<string>();
  private readonly rotation = new Map<string, number>();
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly connections = new Set<net.Socket>();
  private readonly pending = new Set<() => void>();
  private readonly domain: string;
  private stopped = false;

  constructor(private readonly options: DnsServerOptions) {
    this.domain = (options.domain ?? DEFAULT_DOMAIN).toLowerCase().replace(/\.$/, '');
  }

  /** Replaces the whole record set; the next query sees it. */
  update(records: DnsRecordSet): void {
    const next = new Map<string, readonly string[]>();
    const rotating = new Set<string>();
    for (const [alias, addresses] of Object.entries(records.aliases ?? {})) {
      const name = alias.toLowerCase();
      next.set(name, [...addresses]);
      if (addresses.length > 1) rotating.add(name);
    }
    // Service names win over aliases of the same name, as in Docker.
    for (const service of records.services) {
      const name = service.name.toLowerCase();
      if (service.vip) {
        next.set(name, [service.vip.split('/')[0] ?? service.vip]);
      } else {
        next.set(name, [...service.taskIps]);
        rotating.add(name);
      }
      next.set(`tasks.${name}`, [...service.taskIps]);
    }
    this.records = next;
    this.rotating = rotating;
    for (const name of this.rotation.keys()) if (!next.has(name)) this.rotation.delete(name);
  }

  /** Binds UDP and TCP on the same port; resolves with that port. */
  async start(): Promise<number> {
    const udp = dgram.createSocket({ type: 'udp4' });
    this.udp = udp;
    udp.on('message', (msg, rinfo) => {
      this.handle(msg, 'udp')
        .then((reply) => {
          if (reply && !this.stopped) udp.send(reply, rinfo.port, rinfo.address);
        })
        .catch((e: unknown) => this.options.logger?.warn({ err: e }, 'dns: udp query failed'));
    });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(this.options.port, this.options.host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    udp.on('error', (e) => this.options.logger?.warn({ err: e }, 'dns: udp socket error'));
    const port = udp.address().port;

    const tcp = net.createServer((socket) => this.serveTcp(socket));
    tcp.maxConnections = MAX_TCP_CONNECTIONS;
    this.tcp = tcp;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(port, this.options.host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    return port;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const cancel of [...this.pending]) cancel();
    for (const socket of this.connections) socket.destroy();
    const udp = this.udp;
    const tcp = this.tcp;
    this.udp = undefined;
    this.tcp = undefined;
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (tcp) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  /** What a name resolves to from the records (exported for the agent's checks and tests). */
  lookup(rawName: string): Lookup {
    const name = rawName.toLowerCase().replace(/\.$/, '');
    const suffix = `.${this.domain}`;
    const inDomain = name.endsWith(suffix) || name === this.domain;
    const local = inDomain ? name.slice(0, -suffix.length) : name;
    const addresses = this.records.get(local);
    if (addresses !== undefined) return { kind: 'answer', addresses: this.ordered(local, addresses) };
    // Single labels are container and service names: no upstream knows them either.
    if (inDomain || !local.includes('.')) return { kind: 'nxdomain' };
    return { kind: 'forward' };
  }

  private ordered(name: string, addresses: readonly string[]): readonly string[] {
    if (!this.rotating.has(name) || addresses.length < 2) return addresses;
    const turn = this.rotation.get(name) ?? 0;
    this.rotation.set(name, (turn + 1) % addresses.length);
    const start = turn % addresses.length;
    return [...addresses.slice(start), ...addresses.slice(0, start)];
  }

  /** The reply to one message, or undefined when it deserves none (garbage, a response). */
  private async handle(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    let query: Query;
    try {
      query = decodeQuery(msg);
    } catch (e) {
      if (!(e instanceof DnsFormatError) || msg.length < 12 || msg.readUInt16BE(2) & 0x8000) {
        return undefined;
      }
      const id = msg.readUInt16BE(0);
      return encodeResponse(
        { id, flags: 0, question: { name: '', type: TYPE_A, qclass: 1 } },
        { rcode: RCODE_FORMERR },
      );
    }
    const found = this.lookup(query.question.name);
    if (found.kind === 'forward') {
      return (await this.forward(msg, transport)) ?? encodeResponse(query, { rcode: RCODE_SERVFAIL });
    }
    if (found.kind === 'nxdomain') {
      return encodeResponse(query, { rcode: RCODE_NXDOMAIN, authoritative: true });
    }
    // A known name asked for another type (AAAA...): no data, but not NXDOMAIN, so resolvers
    // that ask A and AAAA together keep the A answer.
    const answers: Answer[] =
      query.question.type === TYPE_A
        ? found.addresses.map((address) => ({
            name: query.question.name,
            ttlSeconds: RECORD_TTL_SECONDS,
            address,
          }))
        : [];
    return encodeResponse(query, {
      rcode: RCODE_NOERROR,
      answers,
      authoritative: true,
      maxBytes: transport === 'udp' ? MAX_UDP_RESPONSE_BYTES : MAX_TCP_MESSAGE_BYTES,
    });
  }

  /**
   * Relays the raw query to each upstream in turn, over the transport the client used (so a
   * TCP client gets an answer too large for UDP); the first reply with the query's id wins.
   */
  private async forward(msg: Buffer, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    if (this.pending.size >= MAX_PENDING_FORWARDS) return undefined;
    for (const upstream of this.options.upstreams) {
      if (this.stopped) return undefined;
      const reply =
        transport === 'udp' ? await this.forwardUdp(msg, upstream) : await this.forwardTcp(msg, upstream);
      if (reply) return reply;
    }
    return undefined;
  }

  /** Runs one exchange with a timeout, registered so stop() can cancel it. */
  private exchange(
    start: (finish: (reply: Buffer | undefined) => void) => () => void,
  ): Promise<Buffer | undefined> {
    const timeoutMs = this.options.forwardTimeoutMs ?? DEFAULT_FORWARD_TIMEOUT_MS;
    return new Promise((resolve) => {
      let finished = false;
      let cleanup = () => {};
      const finish = (reply: Buffer | undefined) => {
        if (finished) return;
        finished = true;
        clearTimeout(timer);
        this.pending.delete(cancel);
        cleanup();
        resolve(reply);
      };
      const cancel = () => finish(undefined);
      const timer = setTimeout(cancel, timeoutMs);
      this.pending.add(cancel);
      cleanup = start(finish);
    });
  }

  private forwardUdp(msg: Buffer, upstream: Upstream): Promise<Buffer | undefined> {
    const id = msg.readUInt16BE(0);
    return this.exchange((finish) => {
      // A socket per query: its random source port is what matches the reply to the query.
      const socket = dgram.createSocket({ type: 'udp4' });
      socket.on('error', () => finish(undefined));
      socket.on('message', (reply, rinfo) => {
        if (rinfo.address === upstream.host && reply.length >= 12 && reply.readUInt16BE(0) === id) {
          finish(reply);
        }
      });
      socket.send(msg, upstream.port, upstream.host, (e) => {
        if (e) finish(undefined);
      });
      return () => socket.close();
    });
  }

  private forwardTcp(msg: Buffer, upstream: Upstream): Promise<Buffer | undefined> {
    const id = msg.readUInt16BE(0);
    return this.exchange((finish) => {
      const socket = net.connect(upstream.port, upstream.host);
      let buffered = Buffer.alloc(0);
      socket.on('error', () => finish(undefined));
      socket.on('close', () => finish(undefined));
      socket.on('connect', () => {
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(msg.length, 0);
        socket.write(Buffer.concat([prefix, msg]));
      });
      socket.on('data', (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        if (buffered.length < 2 || buffered.length < 2 + buffered.readUInt16BE(0)) return;
        const reply = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
        finish(reply.length >= 12 && reply.readUInt16BE(0) === id ? reply : undefined);
      });
      return () => socket.destroy();
    });
  }

  private serveTcp(socket: net.Socket): void {
    this.connections.add(socket);
    socket.setTimeout(TCP_IDLE_TIMEOUT_MS, () => socket.destroy());
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    let buffered = Buffer.alloc(0);
    // Replies go out in query order, as RFC 7766 allows but simple clients expect.
    let chain = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const length = buffered.readUInt16BE(0);
        if (buffered.length < 2 + length) break;
        const msg = buffered.subarray(2, 2 + length);
        buffered = buffered.subarray(2 + length);
        chain = chain.then(async () => {
          const reply = await this.handle(msg, 'tcp');
          if (!reply || socket.destroyed) return;
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(reply.length, 0);
          socket.write(Buffer.concat([prefix, reply]));
        });
        chain.catch(() => socket.destroy());
      }
    });
  }
}
