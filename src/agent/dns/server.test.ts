// The embedded DNS server over real UDP and TCP sockets on 127.0.0.1: service VIPs, dnsrr
// rotation, tasks. names, aliases, NXDOMAIN in the cluster's domain, forwarding to an upstream
// the test runs itself, updates seen by the next query, truncation over UDP.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';

import {
  RCODE_FORMERR,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  RCODE_SERVFAIL,
  TYPE_AAAA,
  decodeQuery,
  decodeResponse,
  encodeQuery,
  encodeResponse,
  type DecodedResponse,
} from './message';
import { DnsServer, upstreamsFromResolvConf } from './server';

const HOST = '127.0.0.1';

let nextId = 1;

async function udpAsk(port: number, name: string, type?: number): Promise<DecodedResponse> {
  return decodeResponse(await udpExchange(port, encodeQuery(nextId++, name, type)));
}

function udpExchange(port: number, msg: Buffer, timeoutMs = 3000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error('no DNS reply'));
    }, timeoutMs);
    socket.on('message', (reply) => {
      clearTimeout(timer);
      socket.close();
      resolve(reply);
    });
    socket.send(msg, port, HOST);
  });
}

function tcpAsk(port: number, names: string[]): Promise<DecodedResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, HOST);
    const replies: DecodedResponse[] = [];
    let buffered = Buffer.alloc(0);
    socket.on('connect', () => {
      // All queries in one write: the server must split the stream by length prefix.
      socket.write(
        Buffer.concat(
          names.map((name) => {
            const query = encodeQuery(nextId++, name);
            const prefix = Buffer.alloc(2);
            prefix.writeUInt16BE(query.length, 0);
            return Buffer.concat([prefix, query]);
          }),
        ),
      );
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        replies.push(decodeResponse(buffered.subarray(2, 2 + buffered.readUInt16BE(0))));
        buffered = buffered.subarray(2 + buffered.readUInt16BE(0));
      }
      if (replies.length === names.length) {
        socket.end();
        resolve(replies);
      }
    });
    socket.on('error', reject);
  });
}

/** An upstream resolver on loopback that knows one name, and counts what it was asked. */
class FakeUpstream {
  readonly socket = dgram.createSocket('udp4');
  readonly tcp = net.createServer((conn) => {
    conn.on('data', (data: Buffer) => {
      // One query per connection, in one segment: enough for the forwarder's use.
      const reply = this.answer(data.subarray(2), 'tcp');
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(reply.length, 0);
      conn.end(Buffer.concat([prefix, reply]));
    });
  });
  readonly asked: string[] = [];

  private answer(msg: Buffer, transport: string): Buffer {
    const query = decodeQuery(msg);
    this.asked.push(`${transport}:${query.question.name}`);
    const known = query.question.name === 'outside.example';
    return encodeResponse(query, {
      rcode: known ? RCODE_NOERROR : RCODE_NXDOMAIN,
      answers: known ? [{ name: query.question.name, ttlSeconds: 60, address: '198.51.100.7' }] : [],
    });
  }

  async start(): Promise<number> {
    this.socket.on('message', (msg, rinfo) => {
      this.socket.send(this.answer(msg, 'udp'), rinfo.port, rinfo.address);
    });
    await new Promise<void>((resolve) => this.socket.bind(0, HOST, resolve));
    const port = this.socket.address().port;
    await new Promise<void>((resolve) => this.tcp.listen(port, HOST, resolve));
    return port;
  }
  async stop(): Promise<void> {
    await new Promise<void>((resolve) => this.socket.close(() => resolve()));
    await new Promise<void>((resolve) => this.tcp.close(() => resolve()));
  }
}

describe('dns server', () => {
  const upstream = new FakeUpstream();
  // A socket that never answers: forwarding to it must time out, then try the next upstream.
  const silent = dgram.createSocket('udp4');
  let server: DnsServer;
  let port = 0;

  before(async () => {
    const upstreamPort = await upstream.start();
    await new Promise<void>((resolve) => silent.bind(0, HOST, resolve));
    server = new DnsServer({
      host: HOST,
      port: 0,
      upstreams: [
        { host: HOST, port: silent.address().port },
        { host: HOST, port: upstreamPort },
      ],
      forwardTimeoutMs: 200,
    });
    port = await server.start();
    server.update({
      services: [
        { name: 'web', vip: '10.0.0.2/24', taskIps: ['10.0.0.5', '10.0.0.6'] },
        { name: 'db', taskIps: ['10.0.0.7', '10.0.0.8', '10.0.0.9'] },
      ],
      aliases: { cache: ['10.0.0.20'] },
    });
  });

  after(async () => {
    await server.stop();
    await upstream.stop();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });

  it('answers a VIP-mode service name with its VIP, case-insensitively and under the domain', async () => {
    for (const name of ['web', 'WEB', 'web.cluster', 'web.cluster.']) {
      const reply = await udpAsk(port, name);
      assert.equal(reply.rcode, RCODE_NOERROR, name);
      assert.ok(reply.authoritative);
      assert.deepEqual(reply.addresses, ['10.0.0.2'], name);
    }
  });

  it('answers tasks.SERVICE with every task address', async () => {
    assert.deepEqual((await udpAsk(port, 'tasks.web')).addresses, ['10.0.0.5', '10.0.0.6']);
  });

  it('rotates the order of a dnsrr service per query', async () => {
    const orders = [];
    for (let i = 0; i < 3; i++) orders.push((await udpAsk(port, 'db')).addresses);
    assert.deepEqual(orders, [
      ['10.0.0.7', '10.0.0.8', '10.0.0.9'],
      ['10.0.0.8', '10.0.0.9', '10.0.0.7'],
      ['10.0.0.9', '10.0.0.7', '10.0.0.8'],
    ]);
  });

  it('answers network aliases', async () => {
    assert.deepEqual((await udpAsk(port, 'cache')).addresses, ['10.0.0.20']);
  });

  it('says NXDOMAIN for unknown cluster names without asking upstream', async () => {
    const before = upstream.asked.length;
    assert.equal((await udpAsk(port, 'nosuch')).rcode, RCODE_NXDOMAIN);
    assert.equal((await udpAsk(port, 'tasks.nosuch.cluster')).rcode, RCODE_NXDOMAIN);
    assert.equal(upstream.asked.length, before);
  });

  it('gives no data, not NXDOMAIN, for other record types of a known name', async () => {
    const reply = await udpAsk(port, 'web', TYPE_AAAA);
    assert.equal(reply.rcode, RCODE_NOERROR);
    assert.deepEqual(reply.addresses, []);
  });

  it('forwards other names to the upstreams in order, past one that does not answer', async () => {
    const reply = await udpAsk(port, 'outside.example');
    assert.equal(reply.rcode, RCODE_NOERROR);
    assert.deepEqual(reply.addresses, ['198.51.100.7']);
    assert.equal((await udpAsk(port, 'missing.example')).rcode, RCODE_NXDOMAIN);
    assert.ok(upstream.asked.includes('udp:outside.example'));
  });

  it('sees an update on the very next query', async () => {
    server.update({ services: [{ name: 'web', vip: '10.0.0.3', taskIps: ['10.0.0.5'] }] });
    assert.deepEqual((await udpAsk(port, 'web')).addresses, ['10.0.0.3']);
    assert.deepEqual((await udpAsk(port, 'tasks.web')).addresses, ['10.0.0.5']);
    assert.equal((await udpAsk(port, 'db')).rcode, RCODE_NXDOMAIN, 'db was removed');
    assert.equal((await udpAsk(port, 'cache')).rcode, RCODE_NXDOMAIN, 'aliases replaced too');
  });

  it('answers over TCP, several queries on one connection', async () => {
    const replies = await tcpAsk(port, ['web', 'tasks.web', 'nosuch']);
    assert.deepEqual(
      replies.map((r) => [r.rcode, r.addresses]),
      [
        [RCODE_NOERROR, ['10.0.0.3']],
        [RCODE_NOERROR, ['10.0.0.5']],
        [RCODE_NXDOMAIN, []],
      ],
    );
  });

  it('forwards a TCP query over TCP', async () => {
    const [reply] = await tcpAsk(port, ['outside.example']);
    assert.deepEqual(reply?.addresses, ['198.51.100.7']);
    assert.ok(upstream.asked.includes('tcp:outside.example'));
  });

  it('truncates a large answer over UDP and gives it whole over TCP', async () => {
    const many = Array.from({ length: 60 }, (_, i) => `10.0.1.${i + 1}`);
    server.update({ services: [{ name: 'big', taskIps: many }] });
    const udp = await udpAsk(port, 'tasks.big');
    assert.ok(udp.truncated);
    assert.ok(udp.addresses.length > 0 && udp.addresses.length < many.length);
    const [tcp] = await tcpAsk(port, ['tasks.big']);
    assert.equal(tcp?.truncated, false);
    assert.deepEqual(tcp?.addresses, many);
  });

  it('answers a malformed query with FORMERR', async () => {
    const broken = encodeQuery(77, 'web').subarray(0, 14);
    const reply = decodeResponse(await udpExchange(port, broken));
    assert.equal(reply.id, 77);
    assert.equal(reply.rcode, RCODE_FORMERR);
  });
});

describe('dns server without a reachable upstream', () => {
  it('answers SERVFAIL when every upstream times out, and stops with no handle left', async () => {
    const silent = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, HOST, resolve));
    const server = new DnsServer({
      host: HOST,
      port: 0,
      upstreams: [{ host: HOST, port: silent.address().port }],
      forwardTimeoutMs: 100,
    });
    const port = await server.start();
    try {
      assert.equal((await udpAsk(port, 'far.example')).rcode, RCODE_SERVFAIL);
    } finally {
      await server.stop();
      await new Promise<void>((resolve) => silent.close(() => resolve()));
    }
  });
});

describe('resolv.conf', () => {
  it('gives the IPv4 nameservers in order, skipping IPv6, comments and other options', () => {
    const text = [
      '# generated',
      'search example.internal',
      'nameserver 192.0.2.53',
      'nameserver 2001:db8::1',
      ';nameserver 192.0.2.99',
      'nameserver 198.51.100.53 # second',
      'options ndots:2',
    ].join('\n');
    assert.deepEqual(upstreamsFromResolvConf(text), [
      { host: '192.0.2.53', port: 53 },
      { host: '198.51.100.53', port: 53 },
    ]);
  });
});
