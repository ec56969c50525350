// The container runtime interface the agent drives: one small surface (describe the node; per
// task prepare, start, wait, stop, remove, inspect, adopt) so the Docker engine and the
// embedded OCI runtime are interchangeable under the same task controller.
import os from 'node:os';
import type { Task } from '../../gen/cluster/v1/objects';

/** Labels every container of ours carries: adoption after an agent restart finds them by these. */
export const TASK_ID_LABEL = 'cluster.task.id';
export const SERVICE_ID_LABEL = 'cluster.service.id';
export const NODE_ID_LABEL = 'cluster.node.id';

export interface RuntimeDescription {
  hostname: string;
  os: string;
  architecture: string;
  nanoCpus: number;
  memoryBytes: number;
  runtimeName: string;
  runtimeVersion: string;
}

/** The node as the host itself describes it (name, OS, CPUs, memory), with the runtime's name and version. */
export function hostDescription(runtimeName: string, runtimeVersion: string): RuntimeDescription {
  return {
    hostname: os.hostname(),
    os: os.platform(),
    architecture: os.arch() === 'x64' ? 'x86_64' : os.arch(),
    nanoCpus: os.cpus().length * 1e9,
    memoryBytes: os.totalmem(),
    runtimeName,
    runtimeVersion,
  };
}

export type ContainerStatus = 'created' | 'running' | 'exited' | 'other';

export interface ContainerInfo {
  id: string;
  taskId: string;
  status: ContainerStatus;
  /** Meaningful once exited. */
  exitCode: number;
  pid: number;
  /** The runtime's own error for a container that could not run (e.g. "executable not found"). */
  error: string;
  /** The container's configuration as the runtime recorded it (for tests and `inspect`). */
  raw?: unknown;
}

/** A failure that is the task's own (bad image, bad command), not the runtime's. */
export class TaskRuntimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TaskRuntimeError';
  }
}

/** The runtime itself does not answer (engine down or restarting): retry later, the task is not at fault. */
export class RuntimeUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuntimeUnavailableError';
  }
}

/** Health as Docker reports it: "" when the container has no healthcheck. */
export type HealthStatus = '' | 'starting' | 'healthy' | 'unhealthy';

export interface ExecResult {
  exitCode: number;
  /** stdout and stderr, interleaved, possibly truncated. */
  output: string;
}

export interface LogOptions {
  follow: boolean;
  /** Last N lines; undefined for all. */
  tail?: number;
  /** Unix milliseconds; lines before are skipped. */
  sinceMs?: number;
  /** Ends a followed stream. */
  signal?: AbortSignal;
}

export interface LogLine {
  stream: 'stdout' | 'stderr';
  /** Unix milliseconds when the runtime captured the line. */
  timeMs: number;
  /** Without the trailing newline. */
  text: string;
}

/** Hears a one-line account of a runtime step in progress (the task status message). */
export type ProgressListener = (message: string) => void;

export interface PrepareOptions {
  /**
   * Hears where a long step stands ("pulling image x:1: 1 of 2 layers, ..."), as often as it
   * changes: the caller paces what it reports.
   */
  onProgress?: ProgressListener;
  /** Fires when the task no longer wants a container: a pull in progress is given up. */
  signal?: AbortSignal;
}

export interface Runtime {
  readonly name: string;
  describe(): Promise<RuntimeDescription>;
  /**
   * Resolves when the runtime answers; rejects with RuntimeUnavailableError, saying why, when it
   * does not. Cheap: the agent asks every second (a node whose runtime is down takes no new tasks).
   */
  ping(): Promise<void>;
  /** Makes the task's container (image present or pulled once; created, not started); its id. */
  prepare(task: Task, nodeId: string, options?: PrepareOptions): Promise<string>;
  start(containerId: string): Promise<void>;
  /** Resolves with the exit code once the container exits; rejects when `signal` aborts. */
  wait(containerId: string, signal: AbortSignal): Promise<number>;
  /** Stop signal, then a kill after `graceMs`. A container already stopped is fine. */
  stop(containerId: string, graceMs: number): Promise<void>;
  /** Removes the container (and its anonymous volumes); a missing container is fine. */
  remove(containerId: string): Promise<void>;
  /** Undefined when the container does not exist. */
  inspect(containerId: string): Promise<ContainerInfo | undefined>;
  /** Containers of this node's tasks, found by label: what a restarted agent takes back. */
  adopt(nodeId: string): Promise<ContainerInfo[]>;
  /**
   * The runtime's own health verdict (Docker's HEALTHCHECK); absent on a runtime that runs no
   * healthchecks itself, where the agent probes with `exec`.
   */
  health?(containerId: string): Promise<HealthStatus>;
  /** Runs a command inside the running container (healthchecks on runtimes without their own). */
  exec?(containerId: string, argv: string[], timeoutMs: number): Promise<ExecResult>;
  /** The container's output, in order; a followed stream ends when the container is removed or the signal aborts. */
  logs?(containerId: string, options: LogOptions): AsyncIterable<LogLine>;
}
