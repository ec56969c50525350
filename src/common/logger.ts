// Structured logging with pino: JSON to stderr by default, readable lines when stderr is a
// terminal (or CLUSTER_LOG_PRETTY=1). One child logger per component, tagged `component`.
// pino is loaded on first use: a short CLI run that logs nothing does not pay for it.
import type { Logger, LevelWithSilent } from 'pino';

export type { Logger };

export const LOG_LEVELS: readonly LevelWithSilent[] = [
  'fatal',
  'error',
  'warn',
  'info',
  'debug',
  'trace',
  'silent',
];

export function isLogLevel(value: string): value is LevelWithSilent {
  return (LOG_LEVELS as readonly string[]).includes(value);
}

function wantsPretty(): boolean {
  const forced = process.env.CLUSTER_LOG_PRETTY;
  if (forced !== undefined) return forced === '1';
  return process.stderr.isTTY === true;
}

let root: Logger | undefined;
/** A level set before any logger was made: the root logger starts with it. */
let presetLevel: LevelWithSilent | undefined;

function createRoot(level: LevelWithSilent): Logger {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const pino = require('pino') as typeof import('pino');
  if (wantsPretty()) {
    // pino-pretty as a synchronous stream (no worker thread), so short CLI runs exit promptly.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const pretty = require('pino-pretty') as (opts: object) => NodeJS.WritableStream;
    return pino({ level }, pretty({ destination: 2, sync: true, colorize: true }));
  }
  return pino({ level }, pino.destination({ fd: 2, sync: true }));
}

/** Sets the level of the root logger and of component loggers made after this call. */
export function setLogLevel(level: LevelWithSilent): void {
  if (root) root.level = level;
  else presetLevel = level;
}

function rootLogger(): Logger {
  if (!root) {
    const env = process.env.CLUSTER_LOG_LEVEL ?? 'info';
    root = createRoot(presetLevel ?? (isLogLevel(env) ? env : 'info'));
  }
  return root;
}

/** The logger of one component: every line it writes carries `component`. */
export function componentLogger(component: string, fields: Record<string, unknown> = {}): Logger {
  return rootLogger().child({ component, ...fields });
}
