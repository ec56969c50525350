// The userspace load balancer in a child process (proxy-main), so it can listen inside another
// network namespace and so its CPU shows up as its own process. Same LoadBalancer interface.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { ClusterError } from '../../common/errors';
import type { ProxyAnswer, ProxyRequest } from './proxy-main';
import { validateConfig, type LbConfig, type LoadBalancer } from './types';

export interface ProxyProcessOptions {
  /** Run the proxy inside this network namespace. */
  netns?: string;
}

/** How long an apply may take before we call the proxy process stuck. */
const REQUEST_TIMEOUT_MS = 10_000;

export class ProxyProcess implements LoadBalancer {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending = new Map<
    number,
    { resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout }
  >();
  private nextId = 1;
  private readonly exited: Promise<void>;
  private stderr = '';

  constructor(options: ProxyProcessOptions = {}) {
    const main = path.join(__dirname, 'proxy-main.js');
    const argv =
      options.netns === undefined
        ? [process.execPath, main]
        : ['ip', 'netns', 'exec', options.netns, process.execPath, main];
    const [command, ...args] = argv as [string, ...string[]];
    this.child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-2000);
    });
    this.child.stdin.on('error', () => undefined); // a dead child is reported through 'exit'
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => this.onAnswer(line));
    this.exited = new Promise((resolve) => {
      this.child.on('exit', () => {
        for (const [id, waiter] of this.pending) {
          clearTimeout(waiter.timer);
          waiter.reject(
            new ClusterError('UNAVAILABLE', `userspace proxy process exited: ${this.stderr.trim()}`),
          );
          this.pending.delete(id);
        }
        resolve();
      });
      this.child.on('error', () => resolve());
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  async apply(desired: LbConfig): Promise<void> {
    // Validate here so a bad config fails with its own error code, not as a proxy failure.
    validateConfig(desired);
    await this.request({ id: this.nextId++, op: 'apply', config: desired });
  }

  async close(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await this.request({ id: this.nextId++, op: 'close' }).catch(() => undefined);
      const timer = setTimeout(() => this.child.kill('SIGKILL'), REQUEST_TIMEOUT_MS);
      await this.exited;
      clearTimeout(timer);
    }
  }

  private request(request: ProxyRequest): Promise<void> {
    return new Promise((resolve, reject) => {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        reject(new ClusterError('UNAVAILABLE', `userspace proxy process has exited: ${this.stderr.trim()}`));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(request.id);
        reject(
          new ClusterError(
            'DEADLINE_EXCEEDED',
            `userspace proxy did not answer ${request.op} within ${REQUEST_TIMEOUT_MS} ms`,
          ),
        );
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(request.id, { resolve, reject, timer });
      this.child.stdin.write(`${JSON.stringify(request)}\n`);
    });
  }

  private onAnswer(line: string): void {
    let reply: ProxyAnswer;
    try {
      reply = JSON.parse(line) as ProxyAnswer;
    } catch {
      return;
    }
    const waiter = this.pending.get(reply.id);
    if (waiter === undefined) return;
    this.pending.delete(reply.id);
    clearTimeout(waiter.timer);
    if (reply.ok) waiter.resolve();
    else waiter.reject(new ClusterError('UNAVAILABLE', `userspace proxy: ${reply.error ?? 'failed'}`));
  }
}
