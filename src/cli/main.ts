// The `cluster` command: global options shared by every command, the command groups, and the
// one place where an error becomes a message on stderr and an exit code.
import { Command, CommanderError, Option } from 'commander';
import { ClusterError, toClusterError } from '../common/errors';
import { isLogLevel, LOG_LEVELS, setLogLevel } from '../common/logger';
import {
  addMembershipCommands,
  addNetworkCommands,
  addNodeCommands,
  addServiceCommands,
  type Runtime,
} from './commands';
import { logLimitsFromFlags, type LogLimits } from '../agent/runtime/oci/logfiles';
import { parseDurationNanos } from './flags';
import { addImageCommands } from './image';
import { connect, DEFAULT_DATA_DIR, DEFAULT_HOST, type Connection } from './connect';
import { OUTPUT_FORMATS, type OutputFormat } from './output';

// How main() closes the connection a program opened, whichever way its action ended.
const closers = new WeakMap<Command, () => void>();

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../../package.json') as { version: string };

export const DEFAULT_MANAGER_PORT = 4242;

export interface GlobalOptions {
  host?: string;
  tlsDir?: string;
  logLevel: string;
  format: OutputFormat;
}

/** Where output goes; tests pass their own to capture it. */
export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  isTTY: boolean;
}

const PROCESS_IO: CliIO = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
  get isTTY() {
    return process.stdout.isTTY === true;
  },
};

export interface DaemonOptions {
  dataDir: string;
  listenAddr?: string;
  advertiseAddr?: string;
  /** Undefined: docker where an engine answers on its socket, else oci. */
  runtime?: 'docker' | 'oci';
  /** From --drain-period. */
  drainMs?: number;
  /** From --lb: the load balancer's data plane. */
  lb?: 'nftables' | 'userspace';
  /** From --log-max-size and --log-max-files: the oci runtime's bound on each container's log. */
  logLimits?: LogLimits;
}

/** The daemon command's flags as commander hands them over, before they are checked. */
type DaemonFlags = DaemonOptions & { drainPeriod?: string; logMaxSize?: string; logMaxFiles?: string };

/** Resolves with the daemon's exit code when it stops (SIGTERM/SIGINT). */
type RunDaemon = (options: DaemonOptions) => Promise<number | void>;

/**
 * The daemon lives in src/node; until it is built the command exists and says so. This is the
 * one place that knows how to reach it.
 */
function loadRunDaemon(): RunDaemon {
  let loaded: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    loaded = require('../node');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND' && String(e).includes('../node')) {
      throw new ClusterError(
        'UNIMPLEMENTED',
        "'cluster daemon' is not built in this version: src/node is missing",
      );
    }
    throw e;
  }
  const run = (loaded as { runDaemon?: unknown }).runDaemon;
  if (typeof run !== 'function') {
    throw new ClusterError(
      'UNIMPLEMENTED',
      "'cluster daemon' is not built in this version: src/node has no runDaemon",
    );
  }
  return run as RunDaemon;
}

function addDaemonCommand(program: Command): void {
  program
    .command('daemon')
    .description('Run the node daemon (serves the local socket; a manager or worker once joined)')
    .option('--data-dir <dir>', 'state directory', DEFAULT_DATA_DIR)
    .option('--listen-addr <addr>', 'address to listen on for the cluster (default 0.0.0.0:4242)')
    .option('--advertise-addr <addr>', 'address other nodes reach this node at')
    .addOption(
      new Option(
        '--runtime <runtime>',
        'container runtime (default: docker where an engine answers, else oci)',
      ).choices(['docker', 'oci']),
    )
    .addOption(
      new Option(
        '--lb <data-plane>',
        'load balancer for published ports and VIPs: nftables (kernel) or userspace (a proxy; also used when nft is missing)',
      )
        .choices(['nftables', 'userspace'])
        .default('nftables'),
    )
    .option(
      '--drain-period <duration>',
      'how long a task stopped while serving stays up after leaving the load balancer, before its stop signal (default 2s)',
    )
    .option(
      '--log-max-size <size>',
      "oci runtime: a container's log file is rotated before it passes this size (k, m or g; default 20m)",
    )
    .option(
      '--log-max-files <count>',
      'oci runtime: log files kept per container, the current one included; older ones are deleted (default 5)',
    )
    .action(async (flags: DaemonFlags) => {
      const { drainPeriod, logMaxSize, logMaxFiles, ...options } = flags;
      const drainMs =
        drainPeriod === undefined
          ? undefined
          : Number(parseDurationNanos('--drain-period', drainPeriod) / 1_000_000n);
      let logLimits: LogLimits | undefined;
      try {
        logLimits = logLimitsFromFlags(logMaxSize, logMaxFiles);
      } catch (e) {
        throw new ClusterError('USAGE', (e as Error).message);
      }
      const code = await loadRunDaemon()({ ...options, drainMs, logLimits });
      if (typeof code === 'number' && code !== 0) {
        throw new ClusterError('INTERNAL', `the daemon stopped with exit code ${code}`);
      }
    });
}

export function buildProgram(io: CliIO = PROCESS_IO): Command {
  let connection: Connection | undefined;
  const program = new Command('cluster')
    .description('Run containers on many machines as one: a Swarm-like cluster scheduler')
    .version(version, '-v, --version', 'print the version')
    .addOption(
      new Option(
        '-H, --host <addr>',
        `daemon to talk to: unix:///path or host:port (default ${DEFAULT_HOST})`,
      ).env('CLUSTER_HOST'),
    )
    .option(
      '--tls-dir <dir>',
      'ca.crt, node.crt and node.key for a host:port manager (default <data-dir>/tls)',
    )
    .addOption(
      new Option('--log-level <level>', 'log level')
        .choices(LOG_LEVELS)
        .default('warn')
        .env('CLUSTER_LOG_LEVEL'),
    )
    .addOption(new Option('--format <format>', 'output format').choices(OUTPUT_FORMATS).default('table'))
    .showSuggestionAfterError()
    .exitOverride()
    .hook('preAction', (thisCommand) => {
      const opts = thisCommand.opts<GlobalOptions>();
      if (isLogLevel(opts.logLevel)) setLogLevel(opts.logLevel);
    });

  const runtime: Runtime & { close(): void } = {
    format: () => program.opts<GlobalOptions>().format,
    connection: () => {
      const opts = program.opts<GlobalOptions>();
      connection ??= connect({ host: opts.host, tlsDir: opts.tlsDir, defaultPort: DEFAULT_MANAGER_PORT });
      return connection;
    },
    out: (text) => io.stdout(text),
    err: (text) => io.stderr(text),
    isTTY: io.isTTY,
    now: () => new Date(),
    close: () => connection?.close(),
  };
  addDaemonCommand(program);
  addMembershipCommands(program, runtime);
  addNodeCommands(program, runtime);
  addServiceCommands(program, runtime);
  addNetworkCommands(program, runtime);
  addImageCommands(program, runtime);
  // Subcommands report their own usage errors through the same override as the program.
  const override = (cmd: Command): void => {
    cmd.exitOverride().configureOutput({ writeOut: (t) => io.stdout(t), writeErr: (t) => io.stderr(t) });
    cmd.commands.forEach(override);
  };
  override(program);
  closers.set(program, () => runtime.close());
  return program;
}

/** Flags that take a boolean the Docker way: bare means true, a value only after "=". */
const BOOL_FLAGS = new Set(['--init', '--read-only']);

/**
 * `--init` and `--read-only` are bare flags to Docker's users (`--init=false` to turn one off),
 * but commander lets an optional value swallow the next word (`--init IMAGE` would lose the
 * image). Before parsing, a bare one among a service command's flags becomes `--flag=true`; the
 * scan stops at `--` and, for `create`, at the image, so the container's own arguments are
 * never touched.
 */
export function bareBoolFlags(program: Command, argv: string[]): string[] {
  const at = argv.findIndex((a, i) => a === 'service' && ['create', 'update'].includes(argv[i + 1] ?? ''));
  if (at < 0) return argv;
  const verb = argv[at + 1] ?? '';
  const cmd = program.commands.find((c) => c.name() === 'service')?.commands.find((c) => c.name() === verb);
  if (cmd === undefined) return argv;
  const takesValue = new Set(
    cmd.options.filter((o) => o.required || o.optional).flatMap((o) => [o.long, o.short].filter(Boolean)),
  );
  const out = argv.slice(0, at + 2);
  for (let i = at + 2; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--' || (!arg.startsWith('-') && verb === 'create')) {
      out.push(...argv.slice(i));
      break;
    }
    if (BOOL_FLAGS.has(arg)) {
      out.push(`${arg}=true`);
    } else if (takesValue.has(arg)) {
      out.push(arg, ...argv.slice(i + 1, i + 2));
      i++;
    } else {
      out.push(arg);
    }
  }
  return out;
}

/** Runs the CLI; resolves to the process exit code. Never prints a stack trace for a user mistake. */
export async function main(argv: string[], io: CliIO = PROCESS_IO): Promise<number> {
  const program = buildProgram(io);
  try {
    await program.parseAsync(bareBoolFlags(program, argv));
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has already printed its one-line message; help and version are successes.
      if (
        e.code === 'commander.helpDisplayed' ||
        e.code === 'commander.version' ||
        e.code === 'commander.help'
      ) {
        return 0;
      }
      return 2;
    }
    const err = toClusterError(e);
    io.stderr(`Error: ${err.message}\n`);
    return err.exitCode;
  } finally {
    closers.get(program)?.();
  }
}
