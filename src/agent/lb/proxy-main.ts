// Runs the userspace load balancer as its own process (e.g. inside a network namespace with
// `ip netns exec`): one JSON request per stdin line, one JSON answer per stdout line. Ends,
// closing every listener, when stdin closes or on SIGTERM.
import readline from 'node:readline';
import { UserspaceLoadBalancer } from './proxy';
import type { LbConfig } from './types';

export interface ProxyRequest {
  id: number;
  op: 'apply' | 'close';
  config?: LbConfig;
}

export interface ProxyAnswer {
  id: number;
  ok: boolean;
  error?: string;
}

function main(): void {
  const lb = new UserspaceLoadBalancer();
  const answer = (reply: ProxyAnswer): void => {
    process.stdout.write(`${JSON.stringify(reply)}\n`);
  };
  let exiting = false;
  const exit = (): void => {
    if (exiting) return;
    exiting = true;
    lb.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (line) => {
    let request: ProxyRequest;
    try {
      request = JSON.parse(line) as ProxyRequest;
    } catch {
      answer({ id: -1, ok: false, error: `not JSON: ${line.slice(0, 80)}` });
      return;
    }
    if (request.op === 'close') {
      lb.close().then(
        () => {
          answer({ id: request.id, ok: true });
          process.exit(0);
        },
        (err: unknown) => answer({ id: request.id, ok: false, error: String(err) }),
      );
      return;
    }
    lb.apply(request.config ?? { frontends: [] }).then(
      () => answer({ id: request.id, ok: true }),
      (err: unknown) =>
        answer({ id: request.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
    );
  });
  lines.on('close', exit);
  process.on('SIGTERM', exit);
  process.on('SIGINT', exit);
}

main();
