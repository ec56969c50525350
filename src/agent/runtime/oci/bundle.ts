// The OCI bundle of one task: the runtime-spec config.json runc runs, made from the service spec,
// the image's own config and where this node keeps things. Pure (no I/O), so it is tested alone.
import { Mount_Type, type Mount, type Task } from '../../../gen/cluster/v1/objects';
import { TaskRuntimeError } from '../index';

/** What `cluster image import --change` recorded, as Docker's image config. */
export interface ImageConfig {
  entrypoint: string[];
  cmd: string[];
  env: string[];
  workingDir: string;
  user: string;
}

export const EMPTY_IMAGE_CONFIG: ImageConfig = { entrypoint: [], cmd: [], env: [], workingDir: '', user: '' };

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** CPU bandwidth period (µs) the quota is a share of: the kernel's and Docker's default. */
export const CPU_PERIOD_US = 100_000;
/** Where Docker puts its init (tini) in a container started with `--init`; ours goes there too. */
export const INIT_PATH_IN_CONTAINER = '/sbin/docker-init';
/** Docker's default capability set: what a container process may do as root inside. */
export const DEFAULT_CAPABILITIES = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

export interface BundleInputs {
  task: Task;
  image: ImageConfig;
  /** Absolute path of the mounted root filesystem (the overlay). */
  rootfs: string;
  /** Hostname when the spec gives none (Docker: the short container id). */
  defaultHostname: string;
  /** Where named volume `name` lives on this node. */
  volumePath: (name: string) => string;
  /** Files the node writes for the container and bind-mounts read-only into /etc. */
  etcFiles: { hosts: string; resolvConf: string; hostname: string };
  /** A new network namespace (plumbed by the network driver) or the host's. */
  network: 'new' | 'host';
  /** cgroup path below each hierarchy's root. */
  cgroupsPath: string;
  /** The pids limit of a task whose spec sets none (limits.pids 0). */
  defaultPidsLimit: number;
  /** The host's static tini (Debian's `tini`), for tasks with `init`; undefined when absent. */
  initBinary: string | undefined;
  /** The image's /etc/passwd and /etc/group, to resolve a user or group given by name. */
  passwd: string;
  group: string;
}

export interface OciMount {
  destination: string;
  type: string;
  source: string;
  options?: string[];
}

export interface OciConfig {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: Record<'bounding' | 'effective' | 'permitted', string[]>;
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  linux: {
    namespaces: { type: string }[];
    cgroupsPath: string;
    resources: {
      memory?: { limit: number; swap: number };
      cpu?: { quota: number; period: number };
      pids: { limit: number };
      devices: { allow: boolean; access: string }[];
    };
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

/** Shell form → ["/bin/sh", "-c", text]; JSON array form → the array (Dockerfile's rules). */
export function parseCommandForm(value: string): string[] {
  const text = value.trim();
  if (text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new TaskRuntimeError(`invalid JSON array form: ${text}`);
    }
    if (!Array.isArray(parsed) || !parsed.every((x) => typeof x === 'string'))
      throw new TaskRuntimeError(`the JSON array form must hold strings only: ${text}`);
    return parsed;
  }
  return text ? ['/bin/sh', '-c', text] : [];
}

/**
 * Applies one `docker import --change` instruction (CMD, ENTRYPOINT, ENV, WORKDIR, USER; EXPOSE
 * and LABEL are accepted and have no effect here) to an image config.
 */
export function applyChange(config: ImageConfig, change: string): ImageConfig {
  const match = /^\s*([A-Za-z]+)\s+(.*)$/s.exec(change);
  if (!match) throw new TaskRuntimeError(`invalid --change "${change}": expected INSTRUCTION ARGUMENTS`);
  const instruction = (match[1] ?? '').toUpperCase();
  const rest = (match[2] ?? '').trim();
  switch (instruction) {
    case 'CMD':
      return { ...config, cmd: parseCommandForm(rest) };
    case 'ENTRYPOINT':
      return { ...config, entrypoint: parseCommandForm(rest) };
    case 'ENV': {
      // "ENV K=V K2=V2" or the old "ENV K V".
      const pairs = rest.includes('=') ? rest.split(/\s+/) : [rest.replace(/\s+/, '=')];
      let env = config.env;
      for (const pair of pairs) {
        const key = pair.split('=')[0] ?? '';
        if (!key || !pair.includes('='))
          throw new TaskRuntimeError(`invalid ENV "${rest}": expected KEY=VALUE`);
        env = [...env.filter((e) => e.split('=')[0] !== key), pair];
      }
      return { ...config, env };
    }
    case 'WORKDIR':
      if (!rest.startsWith('/'))
        throw new TaskRuntimeError(`WORKDIR must be an absolute path, got "${rest}"`);
      return { ...config, workingDir: rest };
    case 'USER':
      return { ...config, user: rest };
    case 'EXPOSE':
    case 'LABEL':
      return config;
    default:
      throw new TaskRuntimeError(
        `--change ${instruction} is not supported (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL)`,
      );
  }
}

/** Later entries win over earlier ones with the same key, as Docker merges image and spec env. */
export function mergeEnv(...lists: string[][]): string[] {
  const byKey = new Map<string, string>();
  for (const list of lists) {
    for (const entry of list) byKey.set(entry.split('=')[0] ?? entry, entry);
  }
  return [...byKey.values()];
}

function lookup(file: string, name: string, field: number): number | undefined {
  for (const line of file.split('\n')) {
    const parts = line.split(':');
    if (parts[0] === name && parts[field] !== undefined && /^\d+$/.test(parts[field]))
      return Number(parts[field]);
  }
  return undefined;
}

/** "uid", "name", "uid:gid", "name:group" → numeric ids, names resolved in the image's files. */
export function resolveUser(user: string, passwd: string, group: string): { uid: number; gid: number } {
  if (!user) return { uid: 0, gid: 0 };
  const [u = '', g] = user.split(':');
  let uid: number;
  let gid: number | undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    // A numeric user's primary group is the passwd entry's when there is one, as Docker does.
    for (const line of passwd.split('\n')) {
      const parts = line.split(':');
      if (parts[2] === u && parts[3] !== undefined && /^\d+$/.test(parts[3])) gid = Number(parts[3]);
    }
  } else {
    const found = lookup(passwd, u, 2);
    if (found === undefined) throw new TaskRuntimeError(`user "${u}" not found in the image's /etc/passwd`);
    uid = found;
    gid = lookup(passwd, u, 3);
  }
  if (g !== undefined && g !== '') {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const found = lookup(group, g, 2);
      if (found === undefined) throw new TaskRuntimeError(`group "${g}" not found in the image's /etc/group`);
      gid = found;
    }
  }
  return { uid, gid: gid ?? 0 };
}

/**
 * The process the task runs: Swarm's meaning, `command` replaces the entrypoint, `args` the cmd;
 * with `init`, Docker's way: the init is PID 1 and runs the command (`docker-init -- CMD...`).
 */
export function processArgs(task: Task, image: ImageConfig): string[] {
  const spec = task.spec?.container;
  const entrypoint = spec?.command.length ? spec.command : image.entrypoint;
  // A new entrypoint drops the image's cmd, as Docker does.
  const cmd = spec?.args.length ? spec.args : spec?.command.length ? [] : image.cmd;
  const args = [...entrypoint, ...cmd];
  if (args.length === 0)
    throw new TaskRuntimeError(
      `no command: the service gives none and image ${spec?.image ?? ''} has no CMD or ENTRYPOINT`,
    );
  return spec?.init ? [INIT_PATH_IN_CONTAINER, '--', ...args] : args;
}

/** The read-only bind of the host's tini at Docker's path, for a task with `init`. */
function initMount(task: Task, initBinary: string | undefined): OciMount[] {
  if (!task.spec?.container?.init) return [];
  if (initBinary === undefined)
    throw new TaskRuntimeError(
      "--init needs a static tini on this node (/usr/bin/tini-static or /usr/bin/docker-init): install Debian's package 'tini'",
    );
  return [{ destination: INIT_PATH_IN_CONTAINER, type: 'bind', source: initBinary, options: ['bind', 'ro'] }];
}

function mountOf(m: Mount, volumePath: (name: string) => string): OciMount {
  if (!m.target.startsWith('/'))
    throw new TaskRuntimeError(`mount target must be an absolute path, got "${m.target}"`);
  if (m.type === Mount_Type.TYPE_TMPFS) {
    const options = ['nosuid', 'nodev', 'mode=1777'];
    if (m.tmpfsSizeBytes > 0) options.push(`size=${m.tmpfsSizeBytes}`);
    if (m.readOnly) options.push('ro');
    return { destination: m.target, type: 'tmpfs', source: 'tmpfs', options };
  }
  let source: string;
  if (m.type === Mount_Type.TYPE_VOLUME) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(m.source))
      throw new TaskRuntimeError(`invalid volume name "${m.source}" (letters, digits, _ . -)`);
    source = volumePath(m.source);
  } else {
    if (!m.source.startsWith('/'))
      throw new TaskRuntimeError(`bind mount source must be an absolute path, got "${m.source}"`);
    source = m.source;
  }
  return { destination: m.target, type: 'bind', source, options: ['rbind', m.readOnly ? 'ro' : 'rw'] };
}

/** The config.json of a task's bundle. */
export function bundleConfig(inputs: BundleInputs): OciConfig {
  const { task, image } = inputs;
  const spec = task.spec?.container;
  if (!spec?.image) throw new TaskRuntimeError(`task ${task.id} has no container image`);
  const user = resolveUser(spec.user || image.user, inputs.passwd, inputs.group);
  const hostname = spec.hostname || inputs.defaultHostname;
  const cwd = spec.dir || image.workingDir || '/';
  if (!cwd.startsWith('/')) throw new TaskRuntimeError(`working directory must be absolute, got "${cwd}"`);
  const limits = task.spec?.resources?.limits;
  const resources: OciConfig['linux']['resources'] = {
    pids: { limit: limits?.pids ? limits.pids : inputs.defaultPidsLimit },
    // Deny all devices but the default set runc always adds (null, zero, full, tty, random, ...).
    devices: [{ allow: false, access: 'rwm' }],
  };
  // Swap as large as memory means no swap beyond the limit (Docker's --memory-swap = --memory).
  if (limits?.memoryBytes) resources.memory = { limit: limits.memoryBytes, swap: limits.memoryBytes };
  if (limits?.nanoCpus) {
    resources.cpu = {
      quota: Math.max(1000, Math.round((limits.nanoCpus / 1e9) * CPU_PERIOD_US)),
      period: CPU_PERIOD_US,
    };
  }
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (inputs.network === 'new') namespaces.push({ type: 'network' });
  const taskMounts = spec.mounts.map((m) => mountOf(m, inputs.volumePath));
  const taken = new Set(taskMounts.map((m) => m.destination.replace(/\/+$/, '')));
  const etc: OciMount[] = [
    { destination: '/etc/hosts', source: inputs.etcFiles.hosts },
    { destination: '/etc/resolv.conf', source: inputs.etcFiles.resolvConf },
    { destination: '/etc/hostname', source: inputs.etcFiles.hostname },
  ]
    .filter((m) => !taken.has(m.destination))
    .map((m) => ({ ...m, type: 'bind', options: ['rbind', 'ro'] }));
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user,
      args: processArgs(task, image),
      env: mergeEnv([DEFAULT_PATH, `HOSTNAME=${hostname}`], image.env, spec.env),
      cwd,
      capabilities: {
        bounding: DEFAULT_CAPABILITIES,
        effective: DEFAULT_CAPABILITIES,
        permitted: DEFAULT_CAPABILITIES,
      },
      noNewPrivileges: false,
    },
    root: { path: inputs.rootfs, readonly: spec.readOnly },
    hostname,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      {
        destination: '/dev',
        type: 'tmpfs',
        source: 'tmpfs',
        options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
      },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      {
        destination: '/dev/mqueue',
        type: 'mqueue',
        source: 'mqueue',
        options: ['nosuid', 'noexec', 'nodev'],
      },
      // A bind of the host's /sys, read-only: a sysfs mount needs a network namespace of its own.
      {
        destination: '/sys',
        type: 'none',
        source: '/sys',
        options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
      },
      {
        destination: '/sys/fs/cgroup',
        type: 'cgroup',
        source: 'cgroup',
        options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'],
      },
      ...etc,
      ...taskMounts,
      // Last, so no task mount hides it (Docker mounts its init the same way).
      ...initMount(task, inputs.initBinary),
    ],
    linux: {
      namespaces,
      cgroupsPath: inputs.cgroupsPath,
      resources,
      maskedPaths: [
        '/proc/acpi',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/proc/scsi',
        '/sys/firmware',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}
