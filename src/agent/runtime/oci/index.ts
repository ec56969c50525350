// The embedded OCI runtime: the agent's own minimal container engine for hosts without a Docker
// engine. Per task: an overlayfs writable layer over a local image, a generated bundle run by
// Debian's runc (crun refuses this machine's hybrid cgroup layout), a detached shim that
// captures output and records the exit code, and a state file that lets a restarted agent adopt
// the container. Everything lives under <data-dir>/oci: images/, containers/, volumes/, runc/.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Mount_Type, type Task } from '../../../gen/cluster/v1/objects';
import { captureOutput } from '../../../common/child';
import { abortableSleep } from '../../../common/sleep';
import {
  hostDescription,
  RuntimeUnavailableError,
  TaskRuntimeError,
  type ContainerInfo,
  type ExecResult,
  type LogLine,
  type LogOptions,
  type Runtime,
  type RuntimeDescription,
} from '../index';
import { bundleConfig } from './bundle';
import { ImageStore, normalizeRef } from './images';
import { checkLogLimits, DEFAULT_LOG_LIMITS, LOG_FILE, readContainerLog, type LogLimits } from './logfiles';
import { installShim } from './shim';

export { ImageStore, normalizeRef, splitRef } from './images';
export {
  DEFAULT_LOG_LIMITS,
  parseLogLine,
  parseLogMaxFiles,
  parseLogMaxSize,
  type LogLimits,
} from './logfiles';

/**
 * The pids limit of a task that sets none (`--limit-pids` 0): a guard against a fork bomb taking
 * the host, where Docker leaves it unlimited.
 */
export const DEFAULT_PIDS_LIMIT = 4096;
/** Static tini builds a task with `init` may use, in order: Debian's `tini` package, then docker.io's. */
export const INIT_CANDIDATES = ['/usr/bin/tini-static', '/usr/bin/docker-init'];
/** Ordinary runc calls (state, kill, delete, start). */
const RUNC_TIMEOUT_MS = 30_000;
/** runc create through the shim: namespaces, cgroups, mounts. */
const CREATE_TIMEOUT_MS = 60_000;
/** How often stop/remove/follow look for the exit or new output. */
const POLL_MS = 100;
/** wait() sleeps on inotify; this is only its fallback re-check (a shim that died unseen). */
const WAIT_RECHECK_MS = 2000;
/** How long a killed container may take to be reaped before remove goes on regardless. */
const KILL_WAIT_MS = 10_000;
/** Output kept from one exec. */
const EXEC_OUTPUT_MAX_BYTES = 64 * 1024;

/** What the runtime keeps per container (state.json): enough to adopt it after a restart. */
export interface ContainerState {
  id: string;
  taskId: string;
  serviceId: string;
  nodeId: string;
  image: string;
  imageId: string;
  createdMs: number;
  stopSignal: string;
  /** Set once the shim ran runc create successfully. */
  shimPid?: number;
  startedMs?: number;
}

interface ExitRecord {
  exitCode: number;
  signal: number;
  finishedAtMs: number;
}

export interface OciRuntimeOptions {
  /** The node's data dir; the runtime keeps everything in <dataDir>/oci. */
  dataDir: string;
  runcPath?: string;
  perlPath?: string;
  /** The pids limit of tasks that set none (default DEFAULT_PIDS_LIMIT). */
  defaultPidsLimit?: number;
  /** Where to look for the static tini of `init` tasks (default INIT_CANDIDATES). */
  initCandidates?: string[];
  /** When a container's log file rotates and how many files it keeps (default 20 MiB × 5). */
  logLimits?: LogLimits;
}

interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

function exists(p: string): boolean {
  try {
    fs.accessSync(p);
    return true;
  } catch {
    return false;
  }
}

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

function writeJsonAtomic(file: string, value: unknown): void {
  const tmp = `${file}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(value)}\n`);
  fs.renameSync(tmp, file);
}

/** runc ids allow [\w+-.]; ours are the task id, which a restarted agent finds again. */
export function containerIdFor(taskId: string): string {
  return `t-${taskId.replace(/[^A-Za-z0-9_.+-]/g, '_')}`;
}

/** Whether `dir` is a mount point in this process's mount namespace. */
function isMountPoint(dir: string): boolean {
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === dir);
}

/** runc needs the cgroup hierarchies; `ip netns exec` remounts /sys and hides them. */
function cgroupsVisible(): boolean {
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => / - cgroup2? /.test(line));
}

/** Resolves on the next change in `dir` (inotify), after `limitMs`, or when `signal` fires. */
function watchDir(
  dir: string,
  limitMs: number,
  signal: AbortSignal,
): { next: Promise<void>; close: () => void } {
  let watcher: fs.FSWatcher | undefined;
  let wake = () => {};
  const next = new Promise<void>((resolve) => {
    wake = resolve;
  });
  const timer = setTimeout(() => wake(), limitMs);
  const close = () => {
    clearTimeout(timer);
    watcher?.close();
    signal.removeEventListener('abort', wake);
    wake();
  };
  signal.addEventListener('abort', wake, { once: true });
  try {
    watcher = fs.watch(dir, { persistent: false }, () => wake());
    watcher.on('error', () => wake());
  } catch {
    // The folder is gone: the caller finds out when it looks.
    wake();
  }
  return { next, close };
}

/** The first of `candidates` that is an executable file here, or undefined. */
function firstExecutable(candidates: readonly string[]): string | undefined {
  for (const candidate of candidates) {
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // Not here: the next one.
    }
  }
  return undefined;
}

/** The path `name` runs from (PATH searched when it has no slash), or undefined. */
function findExecutable(name: string): string | undefined {
  if (name.includes('/')) return firstExecutable([name]);
  const dirs = (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':');
  return firstExecutable(dirs.map((dir) => path.join(dir, name)));
}
export class OciRuntime implements Runtime {
  readonly name = 'oci';
  readonly ociDir: string;
  readonly images: ImageStore;
  private readonly containersDir: string;
  private readonly volumesDir: string;
  private readonly runcRoot: string;
  private readonly runcPath: string;
  private readonly perlPath: string;
  private readonly defaultPidsLimit: number;
  private readonly initCandidates: string[];
  private readonly logLimits: LogLimits;
  private shimPath: string | undefined;

  constructor(options: OciRuntimeOptions) {
    this.ociDir = path.join(path.resolve(options.dataDir), 'oci');
    if (/[,:]/.test(this.ociDir))
      throw new Error(
        `the oci runtime cannot use ${this.ociDir}: overlayfs options forbid ',' and ':' in paths`,
      );
    this.images = new ImageStore(this.ociDir);
    this.containersDir = path.join(this.ociDir, 'containers');
    this.volumesDir = path.join(this.ociDir, 'volumes');
    this.runcRoot = path.join(this.ociDir, 'runc');
    this.runcPath = options.runcPath ?? 'runc';
    this.perlPath = options.perlPath ?? 'perl';
    this.defaultPidsLimit = options.defaultPidsLimit ?? DEFAULT_PIDS_LIMIT;
    this.initCandidates = options.initCandidates ?? INIT_CANDIDATES;
    this.logLimits = checkLogLimits(options.logLimits ?? DEFAULT_LOG_LIMITS);
  }

  /** The first executable static tini on this host, symlinks resolved (bind mounts need a file). */
  private findInit(): string | undefined {
    const found = firstExecutable(this.initCandidates);
    return found === undefined ? undefined : fs.realpathSync(found);
  }

  private dirOf(id: string): string {
    if (!/^[A-Za-z0-9_.+-]+$/.test(id)) throw new Error(`invalid container id "${id}"`);
    return path.join(this.containersDir, id);
  }

  private state(id: string): ContainerState | undefined {
    return readJson<ContainerState>(path.join(this.dirOf(id), 'state.json'));
  }

  private exitRecord(id: string): ExitRecord | undefined {
    return readJson<ExitRecord>(path.join(this.dirOf(id), 'exit.json'));
  }

  private ensureDirs(): void {
    for (const dir of [this.ociDir, this.containersDir, this.volumesDir, this.runcRoot]) {
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    }
    this.shimPath ??= installShim(this.ociDir);
  }

  private cmd(file: string, args: string[], timeoutMs = RUNC_TIMEOUT_MS): Promise<CmdResult> {
    return new Promise((resolve, reject) => {
      execFile(
        file,
        args,
        { timeout: timeoutMs, maxBuffer: 16 << 20, killSignal: 'SIGKILL' },
        (err, stdout, stderr) => {
          if (err && (err as NodeJS.ErrnoException).code === 'ENOENT') {
            reject(
              new RuntimeUnavailableError(
                `${file} not found: the oci runtime needs Debian's runc (apt-get install runc)`,
              ),
            );
            return;
          }
          const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
          resolve({ code, stdout, stderr });
        },
      );
    });
  }

  private runc(args: string[], timeoutMs = RUNC_TIMEOUT_MS): Promise<CmdResult> {
    return this.cmd(this.runcPath, ['--root', this.runcRoot, ...args], timeoutMs);
  }

  /** runc's view: undefined when runc does not know the container. */
  private async runcState(id: string): Promise<{ status: string; pid: number } | undefined> {
    const r = await this.runc(['state', id]);
    if (r.code !== 0) return undefined;
    const s = JSON.parse(r.stdout) as { status: string; pid: number };
    return { status: s.status, pid: s.pid };
  }

  private shimAlive(id: string, pid: number | undefined): boolean {
    if (!pid) return false;
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(this.dirOf(id));
    } catch {
      return false;
    }
  }

  /** The embedded runtime answers while runc is there to run and the data directory is writable. */
  async ping(): Promise<void> {
    const runc = findExecutable(this.runcPath);
    if (runc === undefined) {
      throw new RuntimeUnavailableError(`runc (${this.runcPath}) is not installed: apt-get install runc`);
    }
    // The data directory holds images, layers and runc's state (made as they are needed).
    const dataDir = path.dirname(this.ociDir);
    try {
      await fs.promises.access(dataDir, fs.constants.W_OK);
    } catch (err) {
      throw new RuntimeUnavailableError(
        `the oci runtime's data directory ${dataDir} is not writable: ${err instanceof Error ? err.message : String(err)}`,
      );
    }
  }

  async describe(): Promise<RuntimeDescription> {
    const r = await this.cmd(this.runcPath, ['--version']);
    const version = /runc version (\S+)/.exec(r.stdout)?.[1] ?? 'unknown';
    return hostDescription('oci', `runc ${version}`);
  }

  /** Containers (ids) whose image is `ref`: an image in use is neither removed nor replaced. */
  containersUsing(ref: string): string[] {
    let ids: string[];
    try {
      ids = fs.readdirSync(this.containersDir);
    } catch {
      return [];
    }
    return ids.filter((id) => this.state(id)?.image === ref);
  }

  prepare(task: Task, nodeId: string): Promise<string> {
    // The executor's throw rejects the promise: every failure reaches the caller the same way.
    return new Promise((resolve) => resolve(this.prepareNow(task, nodeId)));
  }

  private prepareNow(task: Task, nodeId: string): string {
    const spec = task.spec?.container;
    if (!spec?.image) throw new TaskRuntimeError(`task ${task.id} has no container image`);
    let ref: string;
    try {
      ref = normalizeRef(spec.image);
    } catch (err) {
      throw new TaskRuntimeError((err as Error).message);
    }
    const image = this.images.get(ref);
    if (!image)
      throw new TaskRuntimeError(
        `image ${ref} is not on this node: import it with 'cluster image import FILE.tar ${ref}' (the oci runtime pulls from no registry)`,
      );
    this.ensureDirs();
    const id = containerIdFor(task.id);
    const dir = this.dirOf(id);
    const existing = this.state(id);
    if (existing?.taskId === task.id) return id;
    // What a crash in the middle of a prepare left: no state file, so not a container yet.
    fs.rmSync(dir, { recursive: true, force: true });
    for (const m of spec.mounts) {
      if (m.type === Mount_Type.TYPE_BIND && m.source.startsWith('/') && !exists(m.source))
        throw new TaskRuntimeError(`bind source path does not exist: ${m.source}`);
    }
    try {
      fs.mkdirSync(dir, { mode: 0o700 });
      for (const sub of ['upper', 'work', 'rootfs', 'etc', 'bundle']) fs.mkdirSync(path.join(dir, sub));
      const lower = this.images.rootfs(ref);
      const readImageFile = (name: string): string => {
        try {
          return fs.readFileSync(path.join(lower, 'etc', name), 'utf8');
        } catch {
          return '';
        }
      };
      const hostname = (spec.hostname || task.id.slice(0, 12)).slice(0, 63);
      const ip = task.networks.find((n) => n.addresses.length > 0)?.addresses[0]?.split('/')[0];
      fs.writeFileSync(
        path.join(dir, 'etc', 'hosts'),
        `127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip ?? '127.0.1.1'}\t${hostname}\n`,
      );
      fs.writeFileSync(path.join(dir, 'etc', 'hostname'), `${hostname}\n`);
      const dns = spec.dnsConfig;
      let resolv: string;
      if (dns?.nameservers.length) {
        resolv = dns.nameservers.map((n) => `nameserver ${n}\n`).join('');
        if (dns.search.length) resolv += `search ${dns.search.join(' ')}\n`;
        if (dns.options.length) resolv += `options ${dns.options.join(' ')}\n`;
      } else {
        try {
          resolv = fs.readFileSync('/etc/resolv.conf', 'utf8');
        } catch {
          resolv = '';
        }
      }
      fs.writeFileSync(path.join(dir, 'etc', 'resolv.conf'), resolv);
      const config = bundleConfig({
        task,
        image: image.config,
        rootfs: path.join(dir, 'rootfs'),
        defaultHostname: hostname,
        volumePath: (name) => path.join(this.volumesDir, name),
        etcFiles: {
          hosts: path.join(dir, 'etc', 'hosts'),
          resolvConf: path.join(dir, 'etc', 'resolv.conf'),
          hostname: path.join(dir, 'etc', 'hostname'),
        },
        // A task on an overlay network gets a namespace of its own, which the network driver
        // plumbs; one without shares the host's (host-mode ports then work as they are).
        network: task.networks.some((n) => n.addresses.length > 0) ? 'new' : 'host',
        cgroupsPath: `/cluster-oci-${id}`,
        defaultPidsLimit: this.defaultPidsLimit,
        initBinary: spec.init ? this.findInit() : undefined,
        passwd: readImageFile('passwd'),
        group: readImageFile('group'),
      });
      for (const m of spec.mounts) {
        if (m.type === Mount_Type.TYPE_VOLUME)
          fs.mkdirSync(path.join(this.volumesDir, m.source), { recursive: true });
      }
      fs.writeFileSync(path.join(dir, 'bundle', 'config.json'), JSON.stringify(config, null, 1));
      const state: ContainerState = {
        id,
        taskId: task.id,
        serviceId: task.serviceId,
        nodeId,
        image: ref,
        imageId: image.id,
        createdMs: Date.now(),
        stopSignal: spec.stopSignal || 'SIGTERM',
      };
      // Written last: a container exists once its state file does.
      writeJsonAtomic(path.join(dir, 'state.json'), state);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    return id;
  }

  private async mountRootfs(id: string, state: ContainerState): Promise<void> {
    const dir = this.dirOf(id);
    const rootfs = path.join(dir, 'rootfs');
    if (isMountPoint(rootfs)) return;
    const lower = this.images.rootfs(state.image);
    if (!exists(lower))
      throw new TaskRuntimeError(
        `image ${state.image} was removed from this node: import it with 'cluster image import FILE.tar ${state.image}'`,
      );
    const r = await this.cmd('mount', [
      '-t',
      'overlay',
      'overlay',
      '-o',
      `lowerdir=${lower},upperdir=${path.join(dir, 'upper')},workdir=${path.join(dir, 'work')}`,
      rootfs,
    ]);
    if (r.code !== 0) throw new Error(`cannot mount the overlay of container ${id}: ${r.stderr.trim()}`);
  }

  /** Runs runc create under a new detached shim; resolves once the shim says how it went. */
  private async createWithShim(id: string): Promise<number> {
    const dir = this.dirOf(id);
    const shim = this.shimPath ?? installShim(this.ociDir);
    const pidFile = path.join(dir, 'pid');
    const child = spawn(
      this.perlPath,
      [
        shim,
        path.join(dir, LOG_FILE),
        path.join(dir, 'exit.json'),
        pidFile,
        '--log-max-size',
        String(this.logLimits.maxSizeBytes),
        '--log-max-files',
        String(this.logLimits.maxFiles),
        '--',
        this.runcPath,
        '--root',
        this.runcRoot,
        'create',
        '--bundle',
        path.join(dir, 'bundle'),
        '--pid-file',
        pidFile,
        id,
      ],
      // Its own session: the shim (and the container under it) outlive the agent.
      { detached: true, stdio: ['ignore', 'pipe', 'pipe'], cwd: dir },
    );
    const result = await new Promise<{ ok: boolean; error?: string; shimPid?: number }>((resolve, reject) => {
      let out = '';
      let err = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`runc create of ${id} did not finish within ${CREATE_TIMEOUT_MS} ms`));
      }, CREATE_TIMEOUT_MS);
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(
          e.code === 'ENOENT'
            ? new RuntimeUnavailableError(
                `${this.perlPath} not found: the oci runtime's shim needs perl (perl-base)`,
              )
            : e,
        );
      });
      // The shim closes its stdout once it has reported; it keeps running.
      child.stdout.on('end', () => {
        clearTimeout(timer);
        const line = out.split('\n')[0] ?? '';
        try {
          resolve(JSON.parse(line) as { ok: boolean; error?: string; shimPid?: number });
        } catch {
          reject(new Error(`the shim of ${id} failed: ${err.trim() || out.trim() || 'no report'}`));
        }
      });
    });
    child.stderr.destroy();
    child.unref();
    if (!result.ok) {
      // runc's message, e.g. exec: "nope": executable file not found in $PATH.
      const message = (result.error ?? '').trim().split('\n').filter(Boolean).pop() ?? 'runc create failed';
      throw new TaskRuntimeError(message.replace(/^time="[^"]*" level=\w+ msg="(.*)"$/, '$1'));
    }
    return result.shimPid ?? child.pid ?? 0;
  }

  async start(containerId: string): Promise<void> {
    const state = this.state(containerId);
    if (!state) throw new TaskRuntimeError(`no such container: ${containerId}`);
    this.ensureDirs();
    let current = await this.runcState(containerId);
    if (current?.status === 'running' || this.exitRecord(containerId)) return;
    if (!current) {
      if (!cgroupsVisible())
        throw new RuntimeUnavailableError(
          'no cgroup hierarchy is mounted in this mount namespace (a daemon started with `ip netns exec` sees a fresh /sys): run the daemon in the host mount namespace (e.g. nsenter --net=... instead)',
        );
      await this.mountRootfs(containerId, state);
      const shimPid = await this.createWithShim(containerId);
      writeJsonAtomic(path.join(this.dirOf(containerId), 'state.json'), {
        ...state,
        shimPid,
        startedMs: Date.now(),
      });
      current = await this.runcState(containerId);
    }
    if (current?.status !== 'created') return;
    const r = await this.runc(['start', containerId]);
    if (r.code !== 0) throw new TaskRuntimeError(`runc start ${containerId}: ${r.stderr.trim()}`);
  }

  async wait(containerId: string, signal: AbortSignal): Promise<number> {
    const dir = this.dirOf(containerId);
    for (;;) {
      if (signal.aborted) throw new Error(`wait for ${containerId} aborted`);
      // Watch first, then look: an exit record written in between still wakes us.
      const change = watchDir(dir, WAIT_RECHECK_MS, signal);
      try {
        const exit = this.exitRecord(containerId);
        if (exit) return exit.exitCode;
        const state = this.state(containerId);
        if (!state) throw new Error(`container ${containerId} was removed`);
        if (!this.shimAlive(containerId, state.shimPid)) {
          // The shim is gone (the exit record may have landed meanwhile): the code is lost.
          const info = await this.inspect(containerId);
          if (info?.status === 'exited') return info.exitCode;
        }
        await change.next;
      } finally {
        change.close();
      }
    }
  }

  private async waitExited(containerId: string, limitMs: number): Promise<boolean> {
    const deadline = Date.now() + limitMs;
    const never = new AbortController().signal;
    for (;;) {
      const info = await this.inspect(containerId);
      if (!info || info.status !== 'running') return true;
      if (Date.now() >= deadline) return false;
      await abortableSleep(POLL_MS, never);
    }
  }

  async stop(containerId: string, graceMs: number): Promise<void> {
    const state = this.state(containerId);
    if (!state) return;
    const info = await this.inspect(containerId);
    if (!info || info.status !== 'running') return;
    await this.runc(['kill', containerId, state.stopSignal]);
    if (await this.waitExited(containerId, graceMs)) return;
    await this.runc(['kill', '--all', containerId, 'SIGKILL']);
    await this.waitExited(containerId, KILL_WAIT_MS);
  }

  async remove(containerId: string): Promise<void> {
    const dir = this.dirOf(containerId);
    if (!exists(dir)) return;
    const state = this.state(containerId);
    const current = await this.runcState(containerId);
    if (current && current.status !== 'stopped') {
      await this.runc(['kill', '--all', containerId, 'SIGKILL']);
      await this.waitExited(containerId, KILL_WAIT_MS);
    }
    if (current) {
      const r = await this.runc(['delete', '--force', containerId]);
      if (r.code !== 0 && (await this.runcState(containerId)))
        throw new Error(`runc delete ${containerId}: ${r.stderr.trim()}`);
    }
    // Let the shim write its exit record and let go of the log before the folder goes.
    const deadline = Date.now() + KILL_WAIT_MS;
    const never = new AbortController().signal;
    while (state && this.shimAlive(containerId, state.shimPid) && Date.now() < deadline) {
      await abortableSleep(POLL_MS, never);
    }
    const rootfs = path.join(dir, 'rootfs');
    if (isMountPoint(rootfs)) {
      const r = await this.cmd('umount', [rootfs]);
      // Busy (a process still in there): detach it now, the kernel frees it when it is let go.
      if (r.code !== 0) await this.cmd('umount', ['-l', rootfs]);
    }
    if (isMountPoint(rootfs)) throw new Error(`cannot unmount ${rootfs}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }

  async inspect(containerId: string): Promise<ContainerInfo | undefined> {
    const state = this.state(containerId);
    if (!state) return undefined;
    const base = { id: containerId, taskId: state.taskId, raw: state };
    const exit = this.exitRecord(containerId);
    if (exit) return { ...base, status: 'exited', exitCode: exit.exitCode, pid: 0, error: '' };
    const current = await this.runcState(containerId);
    if (!current) {
      if (!state.startedMs) return { ...base, status: 'created', exitCode: 0, pid: 0, error: '' };
      if (this.exitRecord(containerId)) return this.inspect(containerId);
      return {
        ...base,
        status: 'exited',
        exitCode: 255,
        pid: 0,
        error: 'the container is gone from runc and left no exit code',
      };
    }
    switch (current.status) {
      case 'created':
        return { ...base, status: 'created', exitCode: 0, pid: current.pid, error: '' };
      case 'running':
      case 'paused':
        return { ...base, status: 'running', exitCode: 0, pid: current.pid, error: '' };
      default: {
        // Stopped: the shim is recording the exit code, or it died and the code is lost.
        if (this.shimAlive(containerId, state.shimPid))
          return { ...base, status: 'running', exitCode: 0, pid: 0, error: '' };
        const late = this.exitRecord(containerId);
        if (late) return { ...base, status: 'exited', exitCode: late.exitCode, pid: 0, error: '' };
        return {
          ...base,
          status: 'exited',
          exitCode: 255,
          pid: 0,
          error: "the container's shim died: exit code unknown",
        };
      }
    }
  }

  async adopt(nodeId: string): Promise<ContainerInfo[]> {
    let ids: string[];
    try {
      ids = fs.readdirSync(this.containersDir);
    } catch {
      return [];
    }
    const found: ContainerInfo[] = [];
    for (const id of ids) {
      if (this.state(id)?.nodeId !== nodeId) continue;
      const info = await this.inspect(id);
      if (info) found.push(info);
    }
    return found;
  }

  async exec(containerId: string, argv: string[], timeoutMs: number): Promise<ExecResult> {
    if (argv.length === 0) throw new Error('exec needs a command');
    const dir = this.dirOf(containerId);
    const pidFile = path.join(dir, `exec-${process.pid}-${Math.floor(Math.random() * 1e9)}.pid`);
    const child = spawn(
      this.runcPath,
      ['--root', this.runcRoot, 'exec', '--pid-file', pidFile, containerId, ...argv],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const output = captureOutput(child, EXEC_OUTPUT_MAX_BYTES);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      // The process in the container first (runc exec cannot pass SIGKILL on), then runc.
      try {
        const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
        if (pid > 0) process.kill(pid, 'SIGKILL');
      } catch {
        // Not started yet, or gone.
      }
      child.kill('SIGKILL');
    }, timeoutMs);
    try {
      const code = await new Promise<number>((resolve, reject) => {
        child.on('error', reject);
        child.on('close', (c, sig) => resolve(c ?? 128 + (sig ? os.constants.signals[sig] : 0)));
      });
      if (timedOut) throw new Error(`exec in ${containerId} timed out after ${timeoutMs} ms`);
      return { exitCode: code, output: output() };
    } finally {
      clearTimeout(timer);
      fs.rmSync(pidFile, { force: true });
    }
  }

  async *logs(containerId: string, options: LogOptions): AsyncIterable<LogLine> {
    yield* readContainerLog(this.dirOf(containerId), {
      ...options,
      pollMs: POLL_MS * 2,
      // The shim writes the exit record after the last output: nothing more comes.
      finished: () => this.exitRecord(containerId) !== undefined || !this.state(containerId),
    });
  }
}
