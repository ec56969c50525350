// The `cluster` command: global options shared by every command, the command groups, and the
// one place where an error becomes a message on stderr and an exit code.
import { Command, CommanderError, Option } from 'commander';
import { ClusterError, toClusterError } from '../common/errors';
import { isLogLevel, LOG_LEVELS, setLogLevel } from '../common/logger';
import { OUTPUT_FORMATS, type OutputFormat } from './output';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { version } = require('../../../package.json') as { version: string };

export const DEFAULT_MANAGER_PORT = 4242;

export interface GlobalOptions {
  host?: string;
  logLevel: string;
  format: OutputFormat;
}

interface PlannedCommand {
  name: string;
  description: string;
  /** Which issue brings it; shown when someone runs it before it exists. */
  comesWith: string;
}

interface CommandGroup {
  name: string;
  description: string;
  commands: PlannedCommand[];
}

// Commands whose server side is not built yet. They are listed so that `--help` shows the shape
// of the tool, and fail with a clear message (exit 1) rather than pretending to work.
const CONTROL_PLANE = 'the manager control plane';
const GROUPS: CommandGroup[] = [
  {
    name: 'node',
    description: 'Manage cluster nodes',
    commands: [
      { name: 'ls', description: 'List nodes', comesWith: CONTROL_PLANE },
      { name: 'inspect', description: 'Show details of nodes', comesWith: CONTROL_PLANE },
      { name: 'update', description: 'Update a node (availability, labels, role)', comesWith: CONTROL_PLANE },
      { name: 'promote', description: 'Promote workers to managers', comesWith: CONTROL_PLANE },
      { name: 'demote', description: 'Demote managers to workers', comesWith: CONTROL_PLANE },
      { name: 'rm', description: 'Remove nodes from the cluster', comesWith: CONTROL_PLANE },
      { name: 'ps', description: 'List tasks running on nodes', comesWith: CONTROL_PLANE },
    ],
  },
  {
    name: 'service',
    description: 'Manage services',
    commands: [
      { name: 'create', description: 'Create a service', comesWith: CONTROL_PLANE },
      { name: 'ls', description: 'List services', comesWith: CONTROL_PLANE },
      { name: 'ps', description: 'List the tasks of services', comesWith: CONTROL_PLANE },
      { name: 'inspect', description: 'Show details of services', comesWith: CONTROL_PLANE },
      { name: 'logs', description: 'Fetch the logs of a service or task', comesWith: 'the worker agent' },
      { name: 'scale', description: 'Scale replicated services', comesWith: CONTROL_PLANE },
      { name: 'update', description: 'Update a service (rolling)', comesWith: CONTROL_PLANE },
      {
        name: 'rollback',
        description: 'Revert a service to its previous spec',
        comesWith: 'the rolling updater',
      },
      { name: 'rm', description: 'Remove services', comesWith: CONTROL_PLANE },
    ],
  },
  {
    name: 'network',
    description: 'Manage overlay networks',
    commands: [
      { name: 'create', description: 'Create a network', comesWith: 'overlay networking' },
      { name: 'ls', description: 'List networks', comesWith: 'overlay networking' },
      { name: 'inspect', description: 'Show details of networks', comesWith: 'overlay networking' },
      { name: 'rm', description: 'Remove networks', comesWith: 'overlay networking' },
    ],
  },
];

const TOP_LEVEL: PlannedCommand[] = [
  {
    name: 'init',
    description: 'Initialize a cluster with this host as its first manager',
    comesWith: CONTROL_PLANE,
  },
  { name: 'join', description: 'Join a cluster as a worker or manager', comesWith: CONTROL_PLANE },
  { name: 'join-token', description: 'Show or rotate the join tokens', comesWith: CONTROL_PLANE },
  { name: 'leave', description: 'Leave the cluster', comesWith: CONTROL_PLANE },
];

function notBuiltYet(path: string, comesWith: string): never {
  throw new ClusterError(
    'UNIMPLEMENTED',
    `'cluster ${path}' is not available in this version: it comes with ${comesWith} (see the feature table in README.md)`,
  );
}

function addPlanned(parent: Command, planned: PlannedCommand, path: string): void {
  parent
    .command(planned.name)
    .description(`${planned.description} (not available yet)`)
    .allowUnknownOption()
    .allowExcessArguments()
    .action(() => notBuiltYet(path, planned.comesWith));
}

export function buildProgram(): Command {
  const program = new Command('cluster')
    .description('Run containers on many machines as one: a Swarm-like cluster scheduler')
    .version(version, '-v, --version', 'print the version')
    .addOption(new Option('-H, --host <addr>', 'manager to talk to (host:port)').env('CLUSTER_HOST'))
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

  for (const planned of TOP_LEVEL) addPlanned(program, planned, planned.name);
  for (const group of GROUPS) {
    const groupCommand = program.command(group.name).description(group.description).exitOverride();
    for (const planned of group.commands) addPlanned(groupCommand, planned, `${group.name} ${planned.name}`);
  }
  return program;
}

/** Runs the CLI; resolves to the process exit code. Never prints a stack trace for a user mistake. */
export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
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
    process.stderr.write(`Error: ${err.message}\n`);
    return err.exitCode;
  }
}
