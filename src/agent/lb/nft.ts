// The kernel data plane: one nftables table of our own per instance, programmed with one atomic
// `nft -f` transaction per update (incremental after the first). Conntrack keeps established
// connections on their backend, so removing or draining a backend only stops new connections.
import { spawn } from 'node:child_process';
import { ClusterError } from '../../common/errors';
import { desiredState, fullScript, incrementalScript, type NftState } from './nftrules';
import { validateConfig, type LbConfig, type LoadBalancer } from './types';

export interface NftLoadBalancerOptions {
  /** Table name (`ip` family); one per instance so instances and tests can run side by side. */
  table: string;
  /** Run nft inside this network namespace (`ip netns exec`); the caller's namespace otherwise. */
  netns?: string;
  /** Path of the nft binary. */
  nftPath?: string;
}

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const TABLE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,30}$/;
/** An nft call that takes longer than this is stuck (the kernel answers in milliseconds). */
const NFT_TIMEOUT_MS = 10_000;

export class NftLoadBalancer implements LoadBalancer {
  private applied: NftState | undefined;
  private queue: Promise<void> = Promise.resolve();
  private closed = false;

  constructor(private readonly options: NftLoadBalancerOptions) {
    if (!TABLE_NAME.test(options.table)) {
      throw new ClusterError(
        'INVALID_ARGUMENT',
        `nft table name must match ${TABLE_NAME.source}, got '${options.table}'`,
      );
    }
  }

  /** Resolves when nft is installed and we may change rules in the target namespace. */
  async checkAvailable(): Promise<void> {
    const result = await this.nft(['list', 'tables']);
    if (result.code !== 0) {
      throw new ClusterError(
        'FAILED_PRECONDITION',
        `nft cannot list tables (${result.stderr.trim() || `exit ${result.code}`}); the kernel load balancer needs root (CAP_NET_ADMIN) and nf_tables; use the userspace proxy instead`,
      );
    }
  }

  apply(desired: LbConfig): Promise<void> {
    // Updates are serialized: each diff is computed against what the previous one programmed.
    const run = this.queue.then(() => this.applyNow(desired));
    this.queue = run.catch(() => undefined);
    return run;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.queue;
    // Deleting the table removes every chain, map and rule we made; `destroy` is not in nft
    // 1.0.6, so an `add` first makes the delete succeed even if the table is gone already.
    const result = await this.nft(
      ['-f', '-'],
      `add table ip ${this.options.table}\ndelete table ip ${this.options.table}\n`,
    );
    this.applied = undefined;
    if (result.code !== 0)
      throw new ClusterError(
        'INTERNAL',
        `nft: removing table ${this.options.table} failed: ${result.stderr.trim()}`,
      );
  }

  private async applyNow(desired: LbConfig): Promise<void> {
    if (this.closed)
      throw new ClusterError('FAILED_PRECONDITION', `load balancer ${this.options.table} is closed`);
    validateConfig(desired);
    const script =
      this.applied === undefined
        ? fullScript(this.options.table, desired)
        : incrementalScript(this.options.table, this.applied, desired);
    if (script === '') return;
    const result = await this.nft(['-f', '-'], script);
    if (result.code !== 0) {
      // The transaction did not commit, but we no longer trust our picture of the table (someone
      // may have changed it): the next apply rewrites it whole.
      this.applied = undefined;
      throw new ClusterError(
        'INTERNAL',
        `nft rejected the update of table ${this.options.table}: ${result.stderr.trim()}`,
        { script },
      );
    }
    this.applied = desiredState(desired);
  }

  private nft(args: string[], stdin?: string): Promise<RunResult> {
    const nftPath = this.options.nftPath ?? 'nft';
    const argv =
      this.options.netns === undefined
        ? [nftPath, ...args]
        : ['ip', 'netns', 'exec', this.options.netns, nftPath, ...args];
    return run(argv, stdin);
  }
}

function run(argv: string[], stdin?: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const [command, ...args] = argv;
    if (command === undefined) {
      reject(new Error('empty command'));
      return;
    }
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), NFT_TIMEOUT_MS);
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        err.code === 'ENOENT'
          ? new ClusterError(
              'FAILED_PRECONDITION',
              `${command} not found: install nftables (apt-get install nftables) or use the userspace proxy`,
            )
          : err,
      );
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
    child.stdin.on('error', () => undefined); // the exit code tells what happened
    child.stdin.end(stdin ?? '');
  });
}
