// Healthchecks the agent runs itself: Docker's rules (interval, timeout, retries, start period) as
// a pure state machine, and the probe loop that feeds it. Command checks go through the runtime's
// `exec` where the runtime has no verdict of its own (on Docker the engine's verdict is used);
// HTTP and TCP probes (Docker has none) run on every runtime from the agent, inside the task's
// network namespace, through probe-main.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { captureOutput } from '../common/child';
import { portOf } from './probe-main';
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

/** The probe command as argv, or undefined when the spec defines no command check. */
export function probeArgv(config: HealthConfig | undefined): string[] | undefined {
  const [form, ...rest] = config?.test ?? [];
  if (form === 'CMD' && rest.length > 0) return rest;
  if (form === 'CMD-SHELL' && rest[0]) return ['/bin/sh', '-c', rest[0]];
  return undefined;
}

/** A check the agent makes from outside the container's processes: ours, not Docker's. */
export type NetworkProbe = { kind: 'http'; port: number; path: string } | { kind: 'tcp'; port: number };

/** `["HTTP", PORT, PATH]` or `["TCP", PORT]` (the manager validated them), else undefined. */
export function networkProbe(config: HealthConfig | undefined): NetworkProbe | undefined {
  const [form, port, probePath, ...extra] = config?.test ?? [];
  const number = portOf(port);
  if (number === undefined || extra.length > 0) return undefined;
  if (form === 'HTTP' && probePath?.startsWith('/')) return { kind: 'http', port: number, path: probePath };
  if (form === 'TCP' && probePath === undefined) return { kind: 'tcp', port: number };
  return undefined;
}

/** Whether the config defines a check the agent can run (not empty, not ["NONE"]). */
function definesCheck(config: HealthConfig | undefined): boolean {
  return probeArgv(config) !== undefined || networkProbe(config) !== undefined;
}

/** Whether the task's spec defines a check (not empty, not ["NONE"]). */
export function specHasHealthcheck(task: Task): boolean {
  return definesCheck(task.spec?.container?.healthcheck);
}

/** The probe program, next to this file once built. */
export const PROBE_MAIN = path.join(__dirname, 'probe-main.js');
/** Bounds what one probe may print (its first line is the reason). */
const PROBE_OUTPUT_MAX_CHARS = 4096;

/** The command that runs a network probe inside the network namespace of process `pid`. */
export function networkProbeArgv(probe: NetworkProbe, pid: number, timeoutMs: number): string[] {
  const args =
    probe.kind === 'http'
      ? ['http', String(probe.port), probe.path, String(timeoutMs)]
      : ['tcp', String(probe.port), String(timeoutMs)];
  return ['nsenter', `--net=/proc/${pid}/ns/net`, process.execPath, PROBE_MAIN, ...args];
}

/**
 * Runs a network probe in the container's network namespace (`pid`: its process on this host):
 * exit 0 passes, anything else fails, and the probe's line is the output. Killed at the timeout.
 */
export function runNetworkProbe(probe: NetworkProbe, pid: number, timeoutMs: number): Promise<ExecResult> {
  const [command = 'nsenter', ...args] = networkProbeArgv(probe, pid, timeoutMs);
  return new Promise((resolve) => {
    // nsenter execs node in place (only the network namespace changes): the kill reaches the probe.
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: timeoutMs,
      killSignal: 'SIGKILL',
    });
    const output = captureOutput(child, PROBE_OUTPUT_MAX_CHARS);
    child.once('error', (err) => resolve({ exitCode: -1, output: `health probe: ${err.message}` }));
    child.once('close', (code, signal) => {
      const text = output().trim();
      if (signal === 'SIGKILL')
        resolve({ exitCode: -1, output: `health check exceeded timeout (${timeoutMs} ms)` });
      else resolve({ exitCode: code ?? -1, output: text });
    });
  });
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
  /** Runs one check (a command in the container, or a network probe); exit code 0 passes. */
  check(timeoutMs: number): Promise<ExecResult>;
  /** Resolves after `ms` or when the signal fires. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  nowMs(): number;
  /** Each change of status (the first, "starting", included). */
  onChange(status: HealthStatus, lastOutput: string): void;
}

/** Runs one probe: a pass is exit code 0 within the timeout; anything else fails. */
async function probe(deps: ProbeLoopDeps, timeoutMs: number): Promise<{ passed: boolean; output: string }> {
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<ExecResult>((resolve) => {
    timer = setTimeout(
      () => resolve({ exitCode: -1, output: `health check exceeded timeout (${timeoutMs} ms)` }),
      timeoutMs,
    );
  });
  try {
    const result = await Promise.race([deps.check(timeoutMs), timedOut]);
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
  if (!definesCheck(config)) return '';
  const rules = healthRules(config);
  const verdict = new HealthVerdict(rules, deps.nowMs());
  deps.onChange(verdict.status, '');
  while (!signal.aborted) {
    await deps.sleep(rules.intervalMs, signal);
    if (signal.aborted) break;
    const startedMs = deps.nowMs();
    const result = await probe(deps, rules.timeoutMs);
    if (signal.aborted) break;
    const before = verdict.status;
    const after = verdict.record(result.passed, startedMs);
    if (after !== before) deps.onChange(after, result.output);
    if (after === 'unhealthy') return after;
  }
  return verdict.status;
}
