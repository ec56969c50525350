// The HTTP and TCP healthcheck probe: the agent runs it once per check inside the task's network
// namespace (`nsenter --net=/proc/PID/ns/net node probe-main.js ...`), so 127.0.0.1 is the
// container's own loopback whatever its network. Exit 0 healthy, 1 not, 2 on bad arguments; one
// line on stdout says why. Node's built-ins only: it starts once per check.
import http from 'node:http';
import net from 'node:net';

export const PROBE_HOST = '127.0.0.1';
export const PROBE_USAGE = 'usage: probe-main http PORT PATH TIMEOUT_MS | tcp PORT TIMEOUT_MS';

export type ProbeRequest =
  | { kind: 'http'; port: number; path: string; timeoutMs: number }
  | { kind: 'tcp'; port: number; timeoutMs: number };

/** A TCP port from its text (1–65535), else undefined. */
export function portOf(text: string | undefined): number | undefined {
  const port = Number(text);
  return /^\d+$/.test(text ?? '') && port >= 1 && port <= 65535 ? port : undefined;
}

function timeoutOf(text: string | undefined): number | undefined {
  const ms = Number(text);
  return /^\d+$/.test(text ?? '') && ms >= 1 ? ms : undefined;
}

/** The probe the arguments ask for, or undefined when they do not read as one. */
export function parseProbeArgs(args: readonly string[]): ProbeRequest | undefined {
  const [kind, ...rest] = args;
  if (kind === 'http' && rest.length === 3) {
    const [port, path, timeoutMs] = [portOf(rest[0]), rest[1] ?? '', timeoutOf(rest[2])];
    if (port === undefined || timeoutMs === undefined || !path.startsWith('/')) return undefined;
    return { kind, port, path, timeoutMs };
  }
  if (kind === 'tcp' && rest.length === 2) {
    const [port, timeoutMs] = [portOf(rest[0]), timeoutOf(rest[1])];
    if (port === undefined || timeoutMs === undefined) return undefined;
    return { kind, port, timeoutMs };
  }
  return undefined;
}

/** Runs one probe: whether it passed and the one-line reason. Settles once, within the timeout. */
export function runProbe(request: ProbeRequest): Promise<{ passed: boolean; reason: string }> {
  return new Promise((resolve) => {
    const where = `${PROBE_HOST}:${request.port}`;
    let cleanup: () => void = () => undefined;
    let settled = false;
    const timer = setTimeout(
      () => settle(false, `no answer from ${where} within ${request.timeoutMs} ms`),
      request.timeoutMs,
    );
    function settle(passed: boolean, reason: string): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      cleanup();
      resolve({ passed, reason });
    }
    if (request.kind === 'tcp') {
      const socket = net.connect({ host: PROBE_HOST, port: request.port });
      cleanup = () => socket.destroy();
      socket.once('connect', () => settle(true, `connected to ${where}`));
      socket.once('error', (err) => settle(false, `connect to ${where}: ${err.message}`));
      return;
    }
    const req = http.get({
      host: PROBE_HOST,
      port: request.port,
      path: request.path,
      agent: false,
      headers: { 'user-agent': 'cluster-healthcheck', connection: 'close' },
    });
    cleanup = () => req.destroy();
    req.once('response', (res) => {
      res.resume();
      const status = res.statusCode ?? 0;
      const line = `GET http://${where}${request.path}: HTTP ${status} ${res.statusMessage ?? ''}`.trim();
      settle(status >= 200 && status < 400, line);
    });
    req.once('error', (err) => settle(false, `GET http://${where}${request.path}: ${err.message}`));
  });
}

function main(args: string[]): void {
  const request = parseProbeArgs(args);
  if (!request) {
    process.stdout.write(`${PROBE_USAGE}\n`, () => process.exit(2));
    return;
  }
  void runProbe(request).then(({ passed, reason }) => {
    process.stdout.write(`${reason}\n`, () => process.exit(passed ? 0 : 1));
  });
}

if (require.main === module) main(process.argv.slice(2));
