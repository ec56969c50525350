// Healthchecks the agent runs itself, for runtimes without their own (the embedded OCI runtime):
// Docker's rules (interval, timeout, retries, start period) as a pure state machine, and the probe
// loop that feeds it through the runtime's `exec`. On Docker the engine's own verdict is used.
import type { HealthConfig, Task } from '../gen/cluster/v1/objects';
import type { Duration } from '../gen/google/protobuf/duration';
import type { ExecResult, HealthStatus } from './runtime';

/** Docker's defaults when the spec leaves a field at zero. */
export const DEFAULT_HEALTH_INTERVAL_MS = 30_000;
export const DEFAULT_HEALTH_TIMEOUT_MS = 30_000;
export const DEFAULT_HEALTH_RETRIES = 3;
/** How often the engine's own verdict is read (Docker runs the probes; we only look). */
export const ENGINE_HEALTH_POLL_MS = 1000;

export interface HealthRules {
  intervalMs: number;
  timeoutMs: number;
  retries: number;
  startPeriodMs: number;
}

function ms(d: Duration | undefined): number {
  return d ? d.seconds * 1000 + Math.floor(d.nanos / 1e6) : 0;
}

/** The probe command as argv, or undefined when the spec defines no check of its own. */
export function probeArgv(config: HealthConfig | undefined): string[] | undefined {
  const [form, ...rest] = config?.test ?? [];
  if (form === 'CMD' && rest.length > 0) return rest;
  if (form === 'CMD-SHELL' && rest[0]) return ['/bin/sh', '-c', rest[0]];
  return undefined;
}

/** Whether the task's spec defines a check (not empty, not ["NONE"]). */
export function specHasHealthcheck(task: Task): boolean {
  return probeArgv(task.spec?.container?.healthcheck) !== undefined;
}

export function healthRules(config: HealthConfig | undefined): HealthRules {
  return {
    intervalMs: ms(config?.interval) || DEFAULT_HEALTH_INTERVAL_MS,
    timeoutMs: ms(config?.timeout) || DEFAULT_HEALTH_TIMEOUT_MS,
    retries: config?.retries || DEFAULT_HEALTH_RETRIES,
    startPeriodMs: ms(config?.startPeriod),
  };
}

/**
 * Docker's verdict from probe results: "starting" until the first pass; healthy after a pass;
 * unhealthy after `retries` failures in a row. Failures while still starting and inside the
 * start period do not count.
 */
export class HealthVerdict {
  status: Exclude<HealthStatus, ''> = 'starting';
  failingStreak = 0;

  constructor(
    private readonly rules: HealthRules,
    private readonly startedAtMs: number,
  ) {}

  /** Takes one probe's result (`probeStartMs`: when it began); returns the status after it. */
  record(passed: boolean, probeStartMs: number): HealthStatus {
    if (passed) {
      this.failingStreak = 0;
      this.status = 'healthy';
      return this.status;
    }
    if (this.status === 'starting' && probeStartMs - this.startedAtMs < this.rules.startPeriodMs) {
      return this.status;
    }
    this.failingStreak++;
    if (this.failingStreak >= this.rules.retries) this.status = 'unhealthy';
    return this.status;
  }
}

export interface ProbeLoopDeps {
  exec(argv: string[], timeoutMs: number): Promise<ExecResult>;
  /** Resolves after `ms` or when the signal fires. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  nowMs(): number;
  /** Each change of status (the first, "starting", included). */
  onChange(status: HealthStatus, lastOutput: string): void;
}

/** Runs one probe: a pass is exit code 0 within the timeout; anything else fails. */
async function probe(
  deps: ProbeLoopDeps,
  argv: string[],
  timeoutMs: number,
): Promise<{ passed: boolean; output: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<ExecResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ exitCode: -1, output: `health check exceeded timeout (${timeoutMs} ms)` }),
      timeoutMs,
    );
  });
  try {
    const result = await Promise.race([deps.exec(argv, timeoutMs), timedOut]);
    return { passed: result.exitCode === 0, output: result.output };
  } catch (err) {
    return { passed: false, output: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Probes every interval (the first one interval after start, as Docker) until the signal fires
 * or the task turns unhealthy; resolves with the last status.
 */
export async function runProbeLoop(
  config: HealthConfig | undefined,
  deps: ProbeLoopDeps,
  signal: AbortSignal,
): Promise<HealthStatus> {
  const argv = probeArgv(config);
  if (!argv) return '';
  const rules = healthRules(config);
  const verdict = new HealthVerdict(rules, deps.nowMs());
  deps.onChange(verdict.status, '');
  while (!signal.aborted) {
    await deps.sleep(rules.intervalMs, signal);
    if (signal.aborted) break;
    const startedMs = deps.nowMs();
    const result = await probe(deps, argv, rules.timeoutMs);
    if (signal.aborted) break;
    const before = verdict.status;
    const after = verdict.record(result.passed, startedMs);
    if (after !== before) deps.onChange(after, result.output);
    if (after === 'unhealthy') return after;
  }
  return verdict.status;
}
