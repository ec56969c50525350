// `npm run sim -- --seeds N [--from S] [--nodes 3|5] [--steps K] [--mutation M] [--trace]`:
// runs the simulator over seeds S..S+N-1, prints what ran and every violation with the command
// that replays it, and exits non-zero when any seed found a violation.

import { performance } from 'node:perf_hooks';
import { type Mutation, runSeed, type SimOptions } from './cluster';

interface CliArgs {
  seeds: number;
  from: number;
  nodes: 3 | 5 | undefined;
  steps: number | undefined;
  mutation: Mutation;
  trace: boolean;
}

class UsageError extends Error {}

const USAGE =
  'usage: sim --seeds N [--from S] [--nodes 3|5] [--steps K] [--mutation none|lying-disk|forget-vote|forge-vote|local-read] [--trace]';

function parseArgs(argv: readonly string[]): CliArgs {
  const args: CliArgs = {
    seeds: 100,
    from: 1,
    nodes: undefined,
    steps: undefined,
    mutation: 'none',
    trace: false,
  };
  const wholeNumber = (flag: string, text: string | undefined, min: number): number => {
    const n = Number(text);
    if (text === undefined || !Number.isSafeInteger(n) || n < min) {
      throw new UsageError(`${flag} must be a whole number ≥ ${min}, got '${text ?? ''}'`);
    }
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case '--seeds':
        args.seeds = wholeNumber(flag, argv[++i], 1);
        break;
      case '--from':
        args.from = wholeNumber(flag, argv[++i], 0);
        break;
      case '--steps':
        args.steps = wholeNumber(flag, argv[++i], 1);
        break;
      case '--nodes': {
        const n = argv[++i];
        if (n !== '3' && n !== '5') throw new UsageError(`--nodes must be 3 or 5, got '${n ?? ''}'`);
        args.nodes = n === '3' ? 3 : 5;
        break;
      }
      case '--mutation': {
        const m = argv[++i];
        if (
          m !== 'none' &&
          m !== 'lying-disk' &&
          m !== 'forget-vote' &&
          m !== 'forge-vote' &&
          m !== 'local-read'
        ) {
          throw new UsageError(
            `--mutation must be none, lying-disk, forget-vote, forge-vote or local-read, got '${m ?? ''}'`,
          );
        }
        args.mutation = m;
        break;
      }
      case '--trace':
        args.trace = true;
        break;
      case '--help':
      case '-h':
        throw new UsageError(USAGE);
      default:
        throw new UsageError(`unknown argument '${flag}'\n${USAGE}`);
    }
  }
  return args;
}

function replayCommand(args: CliArgs, seed: number): string {
  const parts = ['npm run sim --', '--seeds 1', `--from ${seed}`];
  if (args.nodes !== undefined) parts.push(`--nodes ${args.nodes}`);
  if (args.steps !== undefined) parts.push(`--steps ${args.steps}`);
  if (args.mutation !== 'none') parts.push(`--mutation ${args.mutation}`);
  parts.push('--trace');
  return parts.join(' ');
}

function main(argv: readonly string[]): number {
  let args: CliArgs;
  try {
    args = parseArgs(argv);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    process.stderr.write(`${err.message}\n`);
    return 2;
  }
  const started = performance.now();
  let steps = 0;
  let violations = 0;
  const totals = {
    crashes: 0,
    partitions: 0,
    confChangesApplied: 0,
    transfers: 0,
    leaders: 0,
    snapshotsDelivered: 0,
    writesAcked: 0,
    readsAcked: 0,
    linearizabilityTimeouts: 0,
  };
  for (let seed = args.from; seed < args.from + args.seeds; seed++) {
    const options: SimOptions = {
      seed,
      nodes: args.nodes,
      steps: args.steps,
      mutation: args.mutation,
      traceLength: args.trace ? Number.POSITIVE_INFINITY : undefined,
    };
    const result = runSeed(options);
    steps += result.stats.steps;
    for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += result.stats[k];
    // The whole run, event by event, for a replay being debugged.
    if (args.trace) process.stdout.write(`${result.trace.join('\n')}\n`);
    if (args.trace || result.violation !== undefined) {
      process.stdout.write(
        `seed ${seed}: ${result.nodes} nodes, trace ${result.traceHash}, ${JSON.stringify(result.stats)}\n`,
      );
    }
    const v = result.violation;
    if (v === undefined) continue;
    violations++;
    process.stdout.write(`VIOLATION seed ${seed} step ${v.step}: ${v.invariant}: ${v.detail}\n`);
    if (!args.trace)
      process.stdout.write(`  last events:\n${v.trace.map((line) => `    ${line}`).join('\n')}\n`);
    process.stdout.write(`  replay: ${replayCommand(args, seed)}\n`);
  }
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(
    `seeds run: ${args.seeds} (${args.from}..${args.from + args.seeds - 1}), steps: ${steps}, ` +
      `violations: ${violations}, ${seconds.toFixed(1)} s\n` +
      `  totals: ${JSON.stringify(totals)}\n`,
  );
  return violations === 0 ? 0 : 1;
}

// Output piped into `head` closes early: stop quietly rather than with a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err;
  process.exit(process.exitCode ?? 0);
});
process.exitCode = main(process.argv.slice(2));
