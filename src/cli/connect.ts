// How the CLI reaches a daemon: the local unix socket (insecure credentials: the socket's file
// mode is the access control, as Docker's), or a manager's host:port over mutual TLS with this
// node's certificate. Every unary call carries a deadline and fails as a ClusterError.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import {
  credentials as grpcCredentials,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type ClientUnaryCall,
  type ServiceError,
} from '@grpc/grpc-js';
import { ClusterError, toClusterError } from '../common/errors';
import { ControlClient } from '../gen/cluster/v1/control';
import { LocalClient } from '../gen/cluster/v1/local';
import type * as Ca from '../manager/ca';

/**
 * The CA module, loaded on first TCP use only: its X.509 library costs ~70 ms of start-up that
 * every command over the unix socket would otherwise pay.
 */
function ca(): typeof Ca {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- deliberately lazy
  return require('../manager/ca') as typeof Ca;
}

export const DEFAULT_DATA_DIR = '/var/lib/cluster';
export const DEFAULT_HOST = `unix://${DEFAULT_DATA_DIR}/cluster.sock`;
/** Deadline of every unary call: long enough for a leader election and a forwarded write. */
export const CALL_TIMEOUT_MS = 15_000;

const TLS_SERVER_NAME = 'cluster-manager';

export type Target =
  { kind: 'unix'; socketPath: string; address: string } | { kind: 'tcp'; hostPort: string; address: string };

/** "unix:///path", "unix:/path", "host:port" or "host" (port 4242). */
export function parseHost(host: string | undefined, defaultPort: number): Target {
  const value = (host ?? '').trim() || DEFAULT_HOST;
  if (value.startsWith('unix:')) {
    const socketPath = value.replace(/^unix:(\/\/)?/, '');
    if (!socketPath.startsWith('/')) {
      throw new ClusterError(
        'USAGE',
        `invalid --host "${value}": a unix socket needs an absolute path, e.g. unix:///var/lib/cluster/cluster.sock`,
      );
    }
    return { kind: 'unix', socketPath, address: `unix://${socketPath}` };
  }
  const match = /^(?:tcp:\/\/)?(\[[0-9a-fA-F:.]+\]|[^:/\s]+)(?::(\d+))?$/.exec(value);
  if (!match?.[1]) {
    throw new ClusterError(
      'USAGE',
      `invalid --host "${value}": use unix:///path/to/cluster.sock or host:port`,
    );
  }
  const port = match[2] === undefined ? defaultPort : Number(match[2]);
  if (port < 1 || port > 65535)
    throw new ClusterError('USAGE', `invalid --host "${value}": port must be from 1 to 65535`);
  const hostPort = `${match[1]}:${port}`;
  return { kind: 'tcp', hostPort, address: hostPort };
}

export interface ConnectOptions {
  host?: string;
  tlsDir?: string;
  defaultPort: number;
  callTimeoutMs?: number;
}

interface TlsFiles {
  caCertPem: string;
  certPem: string;
  keyPem: string;
}

function readTls(dir: string): TlsFiles {
  const read = (name: string) => {
    const file = path.join(dir, name);
    try {
      return readFileSync(file, 'utf8');
    } catch (e) {
      throw new ClusterError(
        'USAGE',
        `cannot read ${file} (${toClusterError(e).message}): --tls-dir must hold this node's ca.crt, node.crt and node.key`,
      );
    }
  };
  return { caCertPem: read('ca.crt'), certPem: read('node.crt'), keyPem: read('node.key') };
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** A connection to one daemon: the Control and Local clients on one address. */
export class Connection {
  readonly control: ControlClient;
  private localClient: LocalClient | undefined;
  private readonly creds: ChannelCredentials;
  /** This node's id when it is known without a call (from the TLS certificate). */
  readonly certNodeId: string | undefined;

  constructor(
    readonly target: Target,
    private readonly callTimeoutMs: number,
    tls?: TlsFiles,
  ) {
    if (target.kind === 'unix') {
      this.creds = grpcCredentials.createInsecure();
    } else {
      if (!tls) throw new ClusterError('USAGE', 'a TCP --host needs --tls-dir with the node certificate');
      this.creds = ca().clientCredentials(tls, 'manager');
      this.certNodeId = ca().nodeIdentityFromCert(tls.certPem).nodeId;
    }
    // Managers are dialled by IP and identified by their certificate (clientCredentials checks
    // it), so the TLS server name is a fixed label: Node warns when SNI carries an IP address.
    const options = target.kind === 'tcp' ? { 'grpc.ssl_target_name_override': TLS_SERVER_NAME } : {};
    this.control = new ControlClient(target.address, this.creds, options);
  }

  get local(): LocalClient {
    if (this.target.kind !== 'unix') {
      throw new ClusterError(
        'USAGE',
        `this command talks to the daemon on this host: use the unix socket (--host unix:///var/lib/cluster/cluster.sock), not ${this.target.address}`,
      );
    }
    this.localClient ??= new LocalClient(this.target.address, this.creds);
    return this.localClient;
  }

  /** One unary call with the deadline; any failure becomes a ClusterError. */
  call<Req, Res>(method: Unary<Req, Res>, request: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      method(request, new Metadata(), { deadline: Date.now() + this.callTimeoutMs }, (error, response) => {
        if (error) reject(this.explain(error));
        else resolve(response);
      });
    });
  }

  private explain(error: ServiceError): ClusterError {
    const fromServer = error.metadata?.get('cluster-error-code').length > 0;
    const err = toClusterError(error);
    // A transport failure (nothing answered) rather than a manager saying UNAVAILABLE.
    if (!fromServer && err.code === 'DEADLINE_EXCEEDED') {
      return new ClusterError(
        'UNAVAILABLE',
        `the manager at ${this.target.address} did not answer in time: it may have lost its quorum, or be overloaded (${err.message})`,
      );
    }
    if (!fromServer && err.code === 'UNAVAILABLE') {
      const hint =
        this.target.kind === 'unix'
          ? 'is `cluster daemon` running?'
          : 'is a manager running there and is the address right?';
      return new ClusterError(
        'UNAVAILABLE',
        `cannot reach the manager at ${this.target.address}: ${hint} (${err.message})`,
      );
    }
    return err;
  }

  close(): void {
    this.control.close();
    this.localClient?.close();
  }
}

export function connect(options: ConnectOptions): Connection {
  const target = parseHost(options.host, options.defaultPort);
  const timeout = options.callTimeoutMs ?? CALL_TIMEOUT_MS;
  if (target.kind === 'unix') {
    // Fail before gRPC's reconnect machinery: the common case is "daemon not started".
    if (!existsSync(target.socketPath)) {
      throw new ClusterError(
        'UNAVAILABLE',
        `cannot reach the manager at ${target.address}: is \`cluster daemon\` running? (no socket at ${target.socketPath})`,
      );
    }
    return new Connection(target, timeout);
  }
  return new Connection(target, timeout, readTls(options.tlsDir ?? path.join(DEFAULT_DATA_DIR, 'tls')));
}
