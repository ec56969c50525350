// The HTTP/TCP probe program as the agent runs it (a node process, exit code and one line), against
// real servers on 127.0.0.1 on ports the kernel picked: answers, refusals, errors and silence.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { parseProbeArgs, PROBE_USAGE } from './probe-main';

const PROBE_MAIN = path.join(__dirname, 'probe-main.js');

/** Runs the program; its exit code and stdout. The generous kill is only a backstop. */
function probe(...args: string[]): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [PROBE_MAIN, ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
      timeout: 60_000,
    });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout }));
  });
}

const sockets = new Set<net.Socket>();
// Answers by path: /ok 200, /moved 302, /broken 500; /silent never answers.
const web = http.createServer((req, res) => {
  if (req.url === '/silent') return;
  if (req.url === '/moved') {
    res.writeHead(302, { location: '/ok' });
  } else res.statusCode = req.url === '/ok' ? 200 : 500;
  res.end();
});
web.on('connection', (s) => {
  sockets.add(s);
  s.once('close', () => sockets.delete(s));
});
let webPort = 0;
/** A port nothing listens on: the kernel gave it to a server we closed. */
let closedPort = 0;

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)),
  );
}

before(async () => {
  webPort = await listen(web);
  const gone = net.createServer();
  closedPort = await listen(gone);
  await new Promise((resolve) => gone.close(resolve));
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((resolve) => web.close(resolve));
});

test('http: a 2xx or 3xx answer passes', async () => {
  const ok = await probe('http', String(webPort), '/ok', '20000');
  assert.equal(ok.code, 0);
  assert.equal(ok.stdout, `GET http://127.0.0.1:${webPort}/ok: HTTP 200 OK\n`);
  const moved = await probe('http', String(webPort), '/moved', '20000');
  assert.equal(moved.code, 0, 'a redirect is not followed, and passes');
  assert.match(moved.stdout, /HTTP 302 Found\n$/);
});

test('http: a 500 fails with its status', async () => {
  const r = await probe('http', String(webPort), '/broken', '20000');
  assert.equal(r.code, 1);
  assert.equal(r.stdout, `GET http://127.0.0.1:${webPort}/broken: HTTP 500 Internal Server Error\n`);
});

test('http: a refused connection fails with the error', async () => {
  const r = await probe('http', String(closedPort), '/', '20000');
  assert.equal(r.code, 1);
  assert.match(r.stdout, /^GET http:\/\/127\.0\.0\.1:\d+\/: connect ECONNREFUSED 127\.0\.0\.1:\d+\n$/);
});

test('http: no answer within the timeout fails', async () => {
  const r = await probe('http', String(webPort), '/silent', '300');
  assert.equal(r.code, 1);
  assert.equal(r.stdout, `no answer from 127.0.0.1:${webPort} within 300 ms\n`);
});

test('tcp: an open connection passes, a refused one fails', async () => {
  const ok = await probe('tcp', String(webPort), '20000');
  assert.equal(ok.code, 0);
  assert.equal(ok.stdout, `connected to 127.0.0.1:${webPort}\n`);
  const refused = await probe('tcp', String(closedPort), '20000');
  assert.equal(refused.code, 1);
  assert.match(refused.stdout, /^connect to 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
});

test('bad arguments: exit 2 with the usage, no connection tried', async () => {
  for (const args of [
    [],
    ['http', '80', '/'],
    ['tcp', '0', '100'],
    ['udp', '53', '100'],
    ['http', '80', 'x', '100'],
  ]) {
    const r = await probe(...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.stdout, `${PROBE_USAGE}\n`);
  }
});

test('argument forms', () => {
  assert.deepEqual(parseProbeArgs(['http', '8080', '/a?b=1', '500']), {
    kind: 'http',
    port: 8080,
    path: '/a?b=1',
    timeoutMs: 500,
  });
  assert.deepEqual(parseProbeArgs(['tcp', '65535', '1']), { kind: 'tcp', port: 65535, timeoutMs: 1 });
  assert.equal(parseProbeArgs(['tcp', '65536', '1']), undefined);
  assert.equal(parseProbeArgs(['tcp', '80', '0']), undefined);
  assert.equal(parseProbeArgs(['tcp', '80', '1.5']), undefined);
  assert.equal(parseProbeArgs(['tcp', '80']), undefined);
});
