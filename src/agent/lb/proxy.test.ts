// The userspace proxy in this process, on 127.0.0.1: byte-exact relaying with backpressure,
// rotation and draining, UDP sessions. The namespace tests (cluster-tests/lb.test.ts) cover
// VIPs, published ports and snatTo on real interfaces.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { UserspaceLoadBalancer } from './proxy';
import type { LbBackend, LbConfig } from './types';
import { freePort } from '../../common/ports';

const servers: Array<net.Server | dgram.Socket> = [];

after(async () => {
  for (const server of servers) {
    await new Promise<void>((resolve) =>
      server instanceof net.Server ? server.close(() => resolve()) : server.close(() => resolve()),
    );
  }
});

/** A TCP backend that writes `payload` to each connection and closes, or answers its name to each line. */
async function tcpBackend(onConnection: (socket: net.Socket) => void): Promise<LbBackend> {
  const server = net.createServer(onConnection);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  assert.ok(address !== null && typeof address === 'object');
  return { ip: '127.0.0.1', port: address.port };
}

function tcpConfig(port: number, backends: LbBackend[]): LbConfig {
  return { frontends: [{ kind: 'vip', protocol: 'tcp', address: '127.0.0.1', port, backends }] };
}

/** Connects through the proxy, sends `line`, returns everything received until the server closes. */
function exchange(port: number, line: string, slowReader = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(line));
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      if (slowReader && chunks.length % 16 === 0) {
        // Stop reading for a moment so the proxy's buffers fill and backpressure kicks in.
        socket.pause();
        setTimeout(() => socket.resume(), 5);
      }
    });
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
  });
}

test('relays a large reply byte for byte to a slow reader', async () => {
  const payload = Buffer.alloc(8 * 1024 * 1024);
  for (let i = 0; i < payload.length; i += 4) payload.writeUInt32LE(i, i);
  const backend = await tcpBackend((socket) => {
    socket.once('data', () => socket.end(payload));
  });
  const lb = new UserspaceLoadBalancer();
  const port = await freePort();
  try {
    await lb.apply(tcpConfig(port, [backend]));
    const received = await exchange(port, 'go', true);
    assert.equal(received.length, payload.length);
    const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
    assert.equal(digest(received), digest(payload));
  } finally {
    await lb.close();
  }
});

test('rotates over backends; a draining one gets no new connections while an open one finishes', async () => {
  const named = (name: string) =>
    tcpBackend((socket) => {
      socket.on('data', (data: Buffer) => {
        if (data.toString().includes('bye')) socket.end(name);
        else socket.write(name);
      });
    });
  const a = await named('a');
  const b = await named('b');
  const lb = new UserspaceLoadBalancer();
  const port = await freePort();
  try {
    await lb.apply(tcpConfig(port, [a, b]));
    const first = await Promise.all([exchange(port, 'bye'), exchange(port, 'bye')]);
    assert.deepEqual(first.map(String).sort(), ['a', 'b']);

    // Hold a connection open on a backend, then drain that backend.
    const held = net.connect(port, '127.0.0.1');
    const heldName = await new Promise<string>((resolve) => {
      held.once('data', (d: Buffer) => resolve(d.toString()));
      held.write('hello');
    });
    const drained = heldName === 'a' ? a : b;
    await lb.apply(
      tcpConfig(
        port,
        [a, b].map((be) => (be === drained ? { ...be, draining: true } : be)),
      ),
    );
    const after = await Promise.all([1, 2, 3, 4].map(() => exchange(port, 'bye')));
    assert.ok(!after.map(String).includes(heldName), `draining ${heldName} got a new connection`);
    const last = await new Promise<string>((resolve) => {
      held.once('data', (d: Buffer) => resolve(d.toString()));
      held.write('bye');
    });
    assert.equal(last, heldName, 'the established connection still reaches its backend');
    held.destroy();
  } finally {
    await lb.close();
  }
});

test('UDP: each client keeps its backend; new clients rotate', async () => {
  const udpBackend = async (name: string): Promise<LbBackend> => {
    const socket = dgram.createSocket('udp4');
    servers.push(socket);
    socket.on('message', (_m, r) => socket.send(name, r.port, r.address));
    await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
    return { ip: '127.0.0.1', port: socket.address().port };
  };
  const backends = [await udpBackend('a'), await udpBackend('b')];
  const lb = new UserspaceLoadBalancer();
  const port = await freePort();
  const ask = async (socket: dgram.Socket): Promise<string> =>
    new Promise((resolve) => {
      socket.once('message', (m) => resolve(m.toString()));
      socket.send('hi', port, '127.0.0.1');
    });
  const clients = [dgram.createSocket('udp4'), dgram.createSocket('udp4')];
  try {
    await lb.apply({ frontends: [{ kind: 'vip', protocol: 'udp', address: '127.0.0.1', port, backends }] });
    const firsts = [await ask(clients[0]), await ask(clients[1])];
    assert.deepEqual([...firsts].sort(), ['a', 'b']);
    assert.equal(await ask(clients[0]), firsts[0], 'same client, same backend');
  } finally {
    for (const client of clients) client.close();
    await lb.close();
  }
});

test('apply rejects an invalid config with a typed error and leaves the proxy usable', async () => {
  const lb = new UserspaceLoadBalancer();
  try {
    await assert.rejects(lb.apply(tcpConfig(0, [])), /port must be a port 1-65535/);
    await lb.apply({ frontends: [] });
  } finally {
    await lb.close();
  }
});
