// The Docker Engine runtime: the Engine API over its unix socket with node's own http client
// (no client library: the handful of calls we make are plain JSON). Restarts are ours, so
// containers get Docker's restart policy "no"; networking is Docker's default bridge until our
// network driver plumbs containers (host-mode published ports are bound here).
import http from 'node:http';
import os from 'node:os';
import {
  Mount_Type,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  type PortConfig,
  type Task,
} from '../../gen/cluster/v1/objects';
import type { Duration } from '../../gen/google/protobuf/duration';
import {
  NODE_ID_LABEL,
  SERVICE_ID_LABEL,
  TASK_ID_LABEL,
  RuntimeUnavailableError,
  TaskRuntimeError,
  type ContainerInfo,
  type ContainerStatus,
  type HealthStatus,
  type LogLine,
  type LogOptions,
  type PrepareOptions,
  type ProgressListener,
  type Runtime,
  type RuntimeDescription,
} from './index';
import { DockerLogDemuxer, dockerSince } from './docker-logs';
import { PullProgress, pullFailureMessage } from './docker-pull';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';
/** The Engine API version we speak: Debian bookworm's docker.io 20.10 serves 1.41. */
export const DOCKER_API_VERSION = 'v1.41';
/** Ordinary calls; wait and pull have their own limits. */
const REQUEST_TIMEOUT_MS = 30_000;
/** A ping the engine does not answer in this time counts as down. */
const PING_TIMEOUT_MS = 5_000;
/**
 * One pull attempt gives up after this long without a word from the Engine (it streams progress
 * while layers download): a missing registry fails fast, a stalled one does not hold a task forever.
 */
export const PULL_TIMEOUT_MS = 60_000;

type Json = Record<string, unknown>;

/** The engine's reason in an error body: its JSON `message`, else the text itself. */
function engineMessage(body: string): string {
  try {
    const message = (JSON.parse(body) as { message?: unknown }).message;
    if (typeof message === 'string' && message) return message;
  } catch {
    // Not JSON: the text is the reason.
  }
  return body.trim();
}

/** Socket errors meaning the engine is down or restarting, not that the request was wrong. */
const ENGINE_DOWN_CODES = new Set(['ENOENT', 'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'EACCES']);

interface DockerResponse {
  status: number;
  body: string;
}

export class DockerApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'DockerApiError';
  }
}

function durationMs(d: Duration | undefined): number {
  if (!d) return 0;
  return d.seconds * 1000 + Math.floor(d.nanos / 1e6);
}

function durationNs(d: Duration | undefined): number {
  if (!d) return 0;
  return d.seconds * 1e9 + d.nanos;
}

/** "busybox" → busybox:latest; "reg:5000/x" keeps its registry port; digests are left alone. */
export function splitImage(image: string): { repo: string; tag: string } {
  if (image.includes('@')) {
    const [repo = image, digest = ''] = image.split('@');
    return { repo, tag: digest };
  }
  const slash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  if (colon > slash) return { repo: image.slice(0, colon), tag: image.slice(colon + 1) };
  return { repo: image, tag: 'latest' };
}

function hostPorts(task: Task): PortConfig[] {
  const ports = task.endpoint?.ports.length ? task.endpoint.ports : (task.endpoint?.spec?.ports ?? []);
  return ports.filter(
    (p) => p.publishMode === PortConfig_PublishMode.PUBLISH_MODE_HOST && p.publishedPort > 0,
  );
}

/** The container a task asks for, in the Engine API's create body. Pure, so it is tested alone. */
export function containerConfig(task: Task, nodeId: string): Json {
  const spec = task.spec?.container;
  if (!spec?.image) throw new TaskRuntimeError(`task ${task.id} has no container image`);
  const limits = task.spec?.resources?.limits;
  const labels: Record<string, string> = {
    ...spec.labels,
    [TASK_ID_LABEL]: task.id,
    [SERVICE_ID_LABEL]: task.serviceId,
    [NODE_ID_LABEL]: nodeId,
  };
  const exposed: Record<string, Json> = {};
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const port of hostPorts(task)) {
    const key = `${port.targetPort}/${port.protocol === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp'}`;
    exposed[key] = {};
    (bindings[key] ??= []).push({ HostIp: '0.0.0.0', HostPort: String(port.publishedPort) });
  }
  const mounts = spec.mounts.map((m) => {
    const mount: Json = { Target: m.target, ReadOnly: m.readOnly };
    if (m.type === Mount_Type.TYPE_TMPFS) {
      mount.Type = 'tmpfs';
      if (m.tmpfsSizeBytes > 0) mount.TmpfsOptions = { SizeBytes: m.tmpfsSizeBytes };
    } else {
      mount.Type = m.type === Mount_Type.TYPE_VOLUME ? 'volume' : 'bind';
      mount.Source = m.source;
    }
    return mount;
  });
  const health = spec.healthcheck;
  const hostConfig: Json = {
    RestartPolicy: { Name: 'no' },
    Mounts: mounts,
    PortBindings: bindings,
    ReadonlyRootfs: spec.readOnly,
    Init: spec.init,
    // A task on an overlay network gets its interface from the agent (the routing mesh), not Docker.
    NetworkMode: task.networks.some((n) => n.addresses.length > 0) ? 'none' : 'bridge',
  };
  if (limits?.memoryBytes) hostConfig.Memory = limits.memoryBytes;
  if (limits?.nanoCpus) hostConfig.NanoCpus = limits.nanoCpus;
  // Docker reads 0 and -1 as unlimited; ours is 0, so only a positive limit is sent.
  if (limits?.pids) hostConfig.PidsLimit = limits.pids;
  const dns = spec.dnsConfig;
  if (dns?.nameservers.length) hostConfig.Dns = dns.nameservers;
  if (dns?.search.length) hostConfig.DnsSearch = dns.search;
  if (dns?.options.length) hostConfig.DnsOptions = dns.options;
  const config: Json = {
    Image: spec.image,
    Env: spec.env,
    Labels: labels,
    Hostname: spec.hostname || undefined,
    User: spec.user || undefined,
    WorkingDir: spec.dir || undefined,
    ExposedPorts: exposed,
    HostConfig: hostConfig,
  };
  // Swarm's meaning: `command` replaces the image's entrypoint, `args` its cmd.
  if (spec.command.length) config.Entrypoint = spec.command;
  if (spec.args.length) config.Cmd = spec.args;
  if (spec.stopSignal) config.StopSignal = spec.stopSignal;
  const graceMs = durationMs(spec.stopGracePeriod);
  if (graceMs > 0) config.StopTimeout = Math.ceil(graceMs / 1000);
  if (health?.test[0] === 'HTTP' || health?.test[0] === 'TCP') {
    // Our probe forms: the agent runs them (Docker has none); the image's own check is replaced.
    config.Healthcheck = { Test: ['NONE'] };
  } else if (health?.test.length) {
    config.Healthcheck = {
      Test: health.test,
      Interval: durationNs(health.interval),
      Timeout: durationNs(health.timeout),
      Retries: health.retries,
      StartPeriod: durationNs(health.startPeriod),
    };
  }
  return config;
}

/** Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; ours read as Swarm's: service-ish.slot.taskid. */
export function containerName(task: Task): string {
  const base = (task.annotations?.name || `task.${task.slot}`).replace(/[^a-zA-Z0-9_.-]/g, '-');
  return `cluster.${base}.${task.id}`.slice(0, 200);
}

export interface DockerRuntimeOptions {
  socketPath?: string;
  /** Overrides PULL_TIMEOUT_MS (tests). */
  pullTimeoutMs?: number;
}

export class DockerRuntime implements Runtime {
  readonly name = 'docker';
  private readonly socketPath: string;
  private readonly pullTimeoutMs: number;
  private readonly agent: http.Agent;

  constructor(options: DockerRuntimeOptions = {}) {
    this.socketPath = options.socketPath ?? DEFAULT_DOCKER_SOCKET;
    this.pullTimeoutMs = options.pullTimeoutMs ?? PULL_TIMEOUT_MS;
    // keepAlive off: a pooled idle socket would keep a test (or a stopping agent) alive.
    this.agent = new http.Agent({ keepAlive: false });
  }

  private request(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal } = {},
  ): Promise<DockerResponse> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method,
          path: `/${DOCKER_API_VERSION}${path}`,
          headers: payload
            ? { 'Content-Type': 'application/json', 'Content-Length': String(payload.length) }
            : undefined,
          signal: opts.signal,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
          );
          // The engine went away mid-answer (a wait held open while it stops): the engine is down,
          // not the container ended or the request wrong.
          res.on('error', (err: NodeJS.ErrnoException) => reject(this.mapSocketError(err)));
          res.on('close', () => {
            if (!res.complete && !opts.signal?.aborted)
              reject(this.unavailable(new Error('the connection closed before the answer ended')));
          });
        },
      );
      const timeoutMs = opts.timeoutMs ?? REQUEST_TIMEOUT_MS;
      if (timeoutMs > 0) {
        req.setTimeout(timeoutMs, () =>
          req.destroy(new Error(`docker ${method} ${path}: no answer within ${timeoutMs} ms`)),
        );
      }
      req.on('error', (err: NodeJS.ErrnoException) => reject(this.mapSocketError(err)));
      req.end(payload);
    });
  }

  private unavailable(err: Error): RuntimeUnavailableError {
    return new RuntimeUnavailableError(
      `the Docker engine does not answer on ${this.socketPath}: ${err.message}`,
    );
  }

  /** Socket errors meaning the engine is down become RuntimeUnavailableError; others stay. */
  private mapSocketError(err: NodeJS.ErrnoException): Error {
    return err.code !== undefined && ENGINE_DOWN_CODES.has(err.code) ? this.unavailable(err) : err;
  }

  private async call(
    method: string,
    path: string,
    body?: unknown,
    opts: { timeoutMs?: number; signal?: AbortSignal; ok?: number[] } = {},
  ): Promise<DockerResponse> {
    const res = await this.request(method, path, body, opts);
    const ok = opts.ok ?? [];
    if ((res.status >= 200 && res.status < 300) || ok.includes(res.status)) return res;
    throw new DockerApiError(
      res.status,
      `docker ${method} ${path.split('?')[0] ?? path}: ${engineMessage(res.body)}`,
    );
  }

  async describe(): Promise<RuntimeDescription> {
    const [version, info] = await Promise.all([this.call('GET', '/version'), this.call('GET', '/info')]);
    const v = JSON.parse(version.body) as { Version?: string; Os?: string; Arch?: string };
    const i = JSON.parse(info.body) as { NCPU?: number; MemTotal?: number; Name?: string };
    return {
      hostname: os.hostname() || i.Name || '',
      os: v.Os ?? os.platform(),
      architecture: v.Arch ?? os.arch(),
      nanoCpus: (i.NCPU ?? os.cpus().length) * 1e9,
      memoryBytes: i.MemTotal ?? os.totalmem(),
      runtimeName: 'docker',
      runtimeVersion: v.Version ?? '',
    };
  }

  async ping(): Promise<void> {
    try {
      await this.call('GET', '/_ping', undefined, { timeoutMs: PING_TIMEOUT_MS });
    } catch (err) {
      if (err instanceof RuntimeUnavailableError) throw err;
      // Up but not answering well (starting, hung): not usable either.
      throw new RuntimeUnavailableError(
        `the Docker engine on ${this.socketPath} is not ready: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }

  private async imagePresent(image: string): Promise<boolean> {
    const res = await this.call('GET', `/images/${encodeURIComponent(image)}/json`, undefined, { ok: [404] });
    return res.status !== 404;
  }

  /**
   * One pull attempt, read as the Engine streams it: `onProgress` hears each new summary line.
   * Resolves with the reason when it failed (an HTTP error, or an "error" inside the stream),
   * undefined when it succeeded; rejects only when the Engine itself does not answer. `signal`
   * hangs up, and the Engine gives the pull up (unless another client waits for the same one).
   */
  private pull(
    image: string,
    onProgress: ProgressListener | undefined,
    signal: AbortSignal | undefined,
  ): Promise<string | undefined> {
    const { repo, tag } = splitImage(image);
    const path = `/images/create?fromImage=${encodeURIComponent(repo)}&tag=${encodeURIComponent(tag)}`;
    const progress = new PullProgress(image);
    let lastMessage = '';
    const tell = () => {
      const message = progress.message();
      if (message === lastMessage) return;
      lastMessage = message;
      onProgress?.(message);
    };
    const idleMessage = `no progress from the engine's pull for ${this.pullTimeoutMs} ms`;
    return new Promise((resolve, reject) => {
      let settled = false;
      let timedOut = false;
      const finish = (reason: string | undefined) => {
        if (settled) return;
        settled = true;
        resolve(reason);
      };
      const engineDown = (why: string) => {
        if (settled) return;
        settled = true;
        reject(this.unavailable(new Error(why)));
      };
      const req = http.request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method: 'POST',
          path: `/${DOCKER_API_VERSION}${path}`,
          signal,
        },
        (res) => {
          res.setEncoding('utf8');
          if ((res.statusCode ?? 0) !== 200) {
            // Refused before streaming (a bad name, a registry that does not answer): one JSON body.
            let body = '';
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => finish(engineMessage(body) || `HTTP ${res.statusCode ?? 0}`));
            res.on('error', (err) => finish(err.message));
            return;
          }
          tell();
          res.on('data', (chunk: string) => {
            progress.push(chunk);
            tell();
          });
          res.on('end', () => {
            progress.end();
            finish(progress.error);
          });
          // Cut before its end: our own limit or hang-up, else the engine went away (it may be
          // restarting: the task waits for it rather than failing).
          const cut = () => {
            if (progress.error !== undefined) finish(progress.error);
            else if (timedOut) finish(idleMessage);
            else if (signal?.aborted) finish('the pull was given up');
            else if (!res.complete) engineDown('the pull stream was cut');
          };
          res.on('error', cut);
          res.on('close', cut);
        },
      );
      req.setTimeout(this.pullTimeoutMs, () => {
        timedOut = true;
        req.destroy(new Error(idleMessage));
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (timedOut) finish(idleMessage);
        else if (err.code !== undefined && ENGINE_DOWN_CODES.has(err.code)) engineDown(err.message);
        else finish(err.message);
      });
      req.end();
    });
  }

  async prepare(task: Task, nodeId: string, options: PrepareOptions = {}): Promise<string> {
    const config = containerConfig(task, nodeId);
    const image = String(config.Image);
    if (!(await this.imagePresent(image))) {
      const pullError = await this.pull(image, options.onProgress, options.signal);
      // Given up because the task went away: no failure of the task's own.
      options.signal?.throwIfAborted();
      if (pullError !== undefined || !(await this.imagePresent(image))) {
        throw new TaskRuntimeError(pullFailureMessage(image, pullError ?? 'image still missing'));
      }
    }
    const name = containerName(task);
    let res: DockerResponse;
    try {
      res = await this.call('POST', `/containers/create?name=${encodeURIComponent(name)}`, config);
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 409) {
        // A container of this task exists already (made before a crash): take it.
        const existing = await this.inspect(name);
        if (existing && existing.taskId === task.id) return existing.id;
      }
      if (err instanceof DockerApiError && err.status >= 400 && err.status < 500) {
        throw new TaskRuntimeError(err.message);
      }
      throw err;
    }
    return (JSON.parse(res.body) as { Id: string }).Id;
  }

  async start(containerId: string): Promise<void> {
    try {
      // 304: already started, which is what we want.
      await this.call('POST', `/containers/${containerId}/start`, undefined, { ok: [304] });
    } catch (err) {
      // "executable file not found" and friends are the task's fault.
      if (err instanceof DockerApiError && err.status >= 400 && err.status < 500)
        throw new TaskRuntimeError(err.message);
      if (err instanceof DockerApiError && /exec|no such file|permission denied/i.test(err.message)) {
        throw new TaskRuntimeError(err.message);
      }
      throw err;
    }
  }

  async wait(containerId: string, signal: AbortSignal): Promise<number> {
    const res = await this.call('POST', `/containers/${containerId}/wait?condition=not-running`, undefined, {
      timeoutMs: 0,
      signal,
    });
    return (JSON.parse(res.body) as { StatusCode: number }).StatusCode;
  }

  async stop(containerId: string, graceMs: number): Promise<void> {
    const seconds = Math.max(0, Math.ceil(graceMs / 1000));
    // 304: not running; 404: gone. Both leave the container stopped.
    await this.call('POST', `/containers/${containerId}/stop?t=${seconds}`, undefined, {
      ok: [304, 404],
      timeoutMs: REQUEST_TIMEOUT_MS + graceMs,
    });
  }

  async remove(containerId: string): Promise<void> {
    await this.call('DELETE', `/containers/${containerId}?force=true&v=true`, undefined, { ok: [404] });
  }

  async inspect(containerId: string): Promise<ContainerInfo | undefined> {
    const res = await this.call('GET', `/containers/${encodeURIComponent(containerId)}/json`, undefined, {
      ok: [404],
    });
    if (res.status === 404) return undefined;
    const c = JSON.parse(res.body) as {
      Id: string;
      State?: { Status?: string; ExitCode?: number; Pid?: number; Error?: string };
      Config?: { Labels?: Record<string, string> };
    };
    return {
      id: c.Id,
      taskId: c.Config?.Labels?.[TASK_ID_LABEL] ?? '',
      status: toStatus(c.State?.Status),
      exitCode: c.State?.ExitCode ?? 0,
      pid: c.State?.Pid ?? 0,
      error: c.State?.Error ?? '',
      raw: c,
    };
  }

  /** Docker's own verdict from State.Health ("" when the container has no healthcheck). */
  async health(containerId: string): Promise<HealthStatus> {
    const res = await this.call('GET', `/containers/${encodeURIComponent(containerId)}/json`, undefined, {
      ok: [404],
    });
    if (res.status === 404) return '';
    const c = JSON.parse(res.body) as { State?: { Health?: { Status?: string } } };
    return toHealth(c.State?.Health?.Status);
  }

  /** The container's output from /containers/{id}/logs (multiplexed frames, timestamps on). */
  async *logs(containerId: string, options: LogOptions): AsyncIterable<LogLine> {
    const query = new URLSearchParams({
      stdout: '1',
      stderr: '1',
      timestamps: '1',
      follow: options.follow ? '1' : '0',
      tail: options.tail === undefined || options.tail < 0 ? 'all' : String(options.tail),
    });
    if (options.sinceMs) query.set('since', dockerSince(options.sinceMs));
    const path = `/containers/${encodeURIComponent(containerId)}/logs?${query.toString()}`;
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method: 'GET',
          path: `/${DOCKER_API_VERSION}${path}`,
          signal: options.signal,
        },
        resolve,
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== undefined && ENGINE_DOWN_CODES.has(err.code)) {
          reject(
            new RuntimeUnavailableError(
              `the Docker engine does not answer on ${this.socketPath}: ${err.message}`,
            ),
          );
        } else reject(err);
      });
      req.end();
    });
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks).toString('utf8');
      throw new DockerApiError(
        res.statusCode ?? 0,
        `docker GET /containers/${containerId}/logs: ${engineMessage(body)}`,
      );
    }
    const demux = new DockerLogDemuxer();
    try {
      for await (const chunk of res) yield* demux.push(chunk as Buffer);
    } catch (err) {
      // A followed stream cut by its reader ends quietly.
      if (options.signal?.aborted) return;
      throw err;
    }
    yield* demux.end();
  }

  async adopt(nodeId: string): Promise<ContainerInfo[]> {
    const filters = encodeURIComponent(
      JSON.stringify({ label: [`${NODE_ID_LABEL}=${nodeId}`, TASK_ID_LABEL] }),
    );
    const res = await this.call('GET', `/containers/json?all=true&filters=${filters}`);
    const list = JSON.parse(res.body) as { Id: string }[];
    const found: ContainerInfo[] = [];
    for (const c of list) {
      const info = await this.inspect(c.Id);
      if (info) found.push(info);
    }
    return found;
  }
}

export function toHealth(status: string | undefined): HealthStatus {
  if (status === 'starting' || status === 'healthy' || status === 'unhealthy') return status;
  // "none" or absent: no healthcheck.
  return '';
}

function toStatus(status: string | undefined): ContainerStatus {
  if (status === 'created' || status === 'running' || status === 'exited') return status;
  // "restarting"/"paused" count as running; "dead"/"removing" as exited.
  if (status === 'paused' || status === 'restarting') return 'running';
  if (status === 'dead' || status === 'removing') return 'exited';
  return 'other';
}
