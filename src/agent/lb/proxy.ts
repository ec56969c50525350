// The userspace fallback for nodes without nftables: a TCP and UDP proxy in this process with
// the same endpoint-set semantics as the kernel data plane. New connections walk the weighted
// ring of non-draining backends; a connection, once made, stays on its backend until it ends
// (as conntrack keeps it in the kernel), whatever later updates do to the set.
import dgram from 'node:dgram';
import net from 'node:net';
import { ClusterError } from '../../common/errors';
import {
  activeBackends,
  frontendKey,
  validateConfig,
  weightedRing,
  type LbBackend,
  type LbConfig,
  type LbFrontend,
  type LoadBalancer,
} from './types';

/** A UDP "connection" (client address → chosen backend) ends after this long without traffic. */
export const UDP_SESSION_IDLE_MS = 30_000;
const UDP_SWEEP_INTERVAL_MS = 5_000;
/** Read buffer per proxied connection for the backend-to-client direction. */
const READ_BUFFER_BYTES = 16 * 1024;
/** Limit on concurrent UDP sessions per frontend; beyond it new clients are dropped. */
export const MAX_UDP_SESSIONS = 4096;

interface Ring {
  backends: LbBackend[];
  next: number;
}

function pick(ring: Ring): LbBackend | undefined {
  if (ring.backends.length === 0) return undefined;
  const chosen = ring.backends[ring.next % ring.backends.length];
  ring.next = (ring.next + 1) % ring.backends.length;
  return chosen;
}

function ringOf(fe: LbFrontend): Ring {
  return { backends: weightedRing(activeBackends(fe)), next: 0 };
}

function listenAddress(fe: LbFrontend): string {
  return fe.kind === 'vip' ? (fe.address ?? '0.0.0.0') : '0.0.0.0';
}

/**
 * Copies src to dst with backpressure. Lighter than stream.pipe, which adds listeners and
 * bookkeeping on every chunk; this is the proxy's hot path.
 */
function relay(src: net.Socket, dst: net.Socket): void {
  src.on('data', (chunk: Buffer) => {
    if (!dst.write(chunk)) src.pause();
  });
  dst.on('drain', () => src.resume());
  src.on('end', () => dst.end());
}

interface ProxyFrontend {
  update(fe: LbFrontend): void;
  /** Stops taking new connections; established ones finish on their own. */
  stopAccepting(): Promise<void>;
  /** Ends everything at once. */
  destroy(): Promise<void>;
}

class TcpFrontend implements ProxyFrontend {
  private ring: Ring;
  private snatTo: string | undefined;
  private readonly sockets = new Set<net.Socket>();
  private readonly server: net.Server;

  constructor(fe: LbFrontend) {
    this.ring = ringOf(fe);
    this.snatTo = fe.snatTo;
    this.server = net.createServer({ noDelay: true }, (client) => this.onConnection(client));
  }

  listen(fe: LbFrontend): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: listenAddress(fe), port: fe.port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  update(fe: LbFrontend): void {
    // Only new connections see the new ring; established pipes keep their backend.
    const next = ringOf(fe);
    next.next = this.ring.next % Math.max(next.backends.length, 1);
    this.ring = next;
    this.snatTo = fe.snatTo;
  }

  private onConnection(client: net.Socket): void {
    const backend = pick(this.ring);
    if (backend === undefined) {
      client.resetAndDestroy(); // no endpoint: refuse like the kernel's reject
      return;
    }
    // Replies are read straight into a per-connection buffer (onread) instead of through the
    // stream machinery: the reply direction carries most bytes, and this saves CPU per request.
    const upstream = net.connect({
      host: backend.ip,
      port: backend.port,
      localAddress: this.snatTo,
      noDelay: true,
      onread: {
        buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
        callback: (bytes: number, buffer: Uint8Array): boolean =>
          // The copy lets the buffer be reused while a write that did not complete holds its data.
          client.write(Buffer.from(buffer.subarray(0, bytes))),
      },
    });
    client.on('drain', () => upstream.resume());
    upstream.on('end', () => client.end());
    this.sockets.add(client);
    this.sockets.add(upstream);
    relay(client, upstream);
    const done = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', done);
    upstream.on('error', () => {
      // A refused or reset backend connection resets the client's too, so it sees a failure.
      if (!client.destroyed) client.resetAndDestroy();
      done();
    });
    client.on('close', done);
    upstream.on('close', done);
  }

  stopAccepting(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.server.listening) resolve();
      else this.server.close(() => resolve());
    });
  }

  async destroy(): Promise<void> {
    const closing = this.stopAccepting();
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closing;
  }
}

interface UdpSession {
  upstream: dgram.Socket;
  lastActiveMs: number;
}

class UdpFrontend implements ProxyFrontend {
  private ring: Ring;
  private snatTo: string | undefined;
  private readonly socket = dgram.createSocket('udp4');
  private readonly sessions = new Map<string, UdpSession>();
  private readonly sweeper: NodeJS.Timeout;
  private accepting = true;

  constructor(fe: LbFrontend) {
    this.ring = ringOf(fe);
    this.snatTo = fe.snatTo;
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.sweeper = setInterval(() => this.sweep(), UDP_SWEEP_INTERVAL_MS);
  }

  listen(fe: LbFrontend): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind({ address: listenAddress(fe), port: fe.port }, () => {
        this.socket.off('error', reject);
        this.socket.on('error', () => undefined); // per-datagram errors (ICMP unreachable) are not fatal
        resolve();
      });
    });
  }

  update(fe: LbFrontend): void {
    const next = ringOf(fe);
    next.next = this.ring.next % Math.max(next.backends.length, 1);
    this.ring = next;
    this.snatTo = fe.snatTo;
  }

  private onMessage(msg: Buffer, client: dgram.RemoteInfo): void {
    const id = `${client.address}:${client.port}`;
    let session = this.sessions.get(id);
    if (session === undefined) {
      if (!this.accepting || this.sessions.size >= MAX_UDP_SESSIONS) return;
      const backend = pick(this.ring);
      if (backend === undefined) return;
      const upstream = dgram.createSocket('udp4');
      upstream.on('error', () => undefined);
      upstream.on('message', (reply) => {
        const current = this.sessions.get(id);
        if (current !== undefined) current.lastActiveMs = Date.now();
        this.socket.send(reply, client.port, client.address);
      });
      const created: UdpSession = { upstream, lastActiveMs: Date.now() };
      session = created;
      this.sessions.set(id, created);
      // Connect the upstream socket (bound to snatTo when given) so only that backend's replies count.
      upstream.bind({ address: this.snatTo ?? '0.0.0.0', port: 0 }, () => {
        upstream.connect(backend.port, backend.ip, () => upstream.send(msg));
      });
      return;
    }
    session.lastActiveMs = Date.now();
    try {
      session.upstream.send(msg);
    } catch {
      // not connected yet: the first datagram is still on its way; drop this one like a lossy link
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const [id, session] of this.sessions) {
      if (now - session.lastActiveMs > UDP_SESSION_IDLE_MS) {
        session.upstream.close();
        this.sessions.delete(id);
      }
    }
  }

  stopAccepting(): Promise<void> {
    // A UDP socket cannot keep old sessions and refuse new ones; we stop making new sessions and
    // close the socket once the existing ones have gone idle.
    this.accepting = false;
    return Promise.resolve();
  }

  destroy(): Promise<void> {
    clearInterval(this.sweeper);
    for (const session of this.sessions.values()) session.upstream.close();
    this.sessions.clear();
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

export class UserspaceLoadBalancer implements LoadBalancer {
  private readonly frontends = new Map<string, ProxyFrontend>();
  /** Frontends removed from the config whose established connections are still finishing. */
  private readonly retiring = new Set<ProxyFrontend>();
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  apply(desired: LbConfig): Promise<void> {
    const run = this.queue.then(() => this.applyNow(desired));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async applyNow(desired: LbConfig): Promise<void> {
    if (this.closed) throw new ClusterError('FAILED_PRECONDITION', 'userspace load balancer is closed');
    validateConfig(desired);
    const wanted = new Map(desired.frontends.map((fe) => [frontendKey(fe), fe]));
    for (const [key, runtime] of this.frontends) {
      if (wanted.has(key)) continue;
      this.frontends.delete(key);
      this.retiring.add(runtime);
      await runtime.stopAccepting();
    }
    for (const [key, fe] of wanted) {
      const existing = this.frontends.get(key);
      if (existing !== undefined) {
        existing.update(fe);
        continue;
      }
      const runtime = fe.protocol === 'tcp' ? new TcpFrontend(fe) : new UdpFrontend(fe);
      try {
        await runtime.listen(fe);
      } catch (err) {
        await runtime.destroy();
        const reason = err instanceof Error ? err.message : String(err);
        throw new ClusterError('UNAVAILABLE', `cannot listen for ${key}: ${reason}`);
      }
      this.frontends.set(key, runtime);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    const all = [...this.frontends.values(), ...this.retiring];
    this.frontends.clear();
    this.retiring.clear();
    await Promise.all(all.map((runtime) => runtime.destroy()));
  }
}
