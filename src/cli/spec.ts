// `service create` and `service update` flags, and the pure functions that turn them into a
// ServiceSpec (create) or apply them to a copy of the current spec (update). No I/O here except
// reading --env-file, which goes through an injectable reader so tests need no files.
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { ClusterError, toClusterError } from '../common/errors';
import {
  EndpointSpec_ResolutionMode,
  PortConfig,
  RestartPolicy_Condition,
  ServiceSpec,
  UpdateConfig,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
  type ContainerSpec,
  type Mount,
  type TaskSpec,
} from '../gen/cluster/v1/objects';
import { parseConstraint, parseSpreadPreference } from '../manager/scheduler/constraint';
import {
  badValue,
  parseBytes,
  parseChoice,
  parseDuration,
  parseEnvEntry,
  parseEnvFile,
  parseHealthHttp,
  parseHealthTcp,
  parseKeyValue,
  parseMount,
  parseNanoCpus,
  parsePublish,
  parseRatio,
  parseWholeNumber,
} from './flags';

/** Flags shared by create and update (scalars: the last one given wins). */
export interface CommonServiceFlags {
  replicas?: string;
  limitCpu?: string;
  limitMemory?: string;
  limitPids?: string;
  reserveCpu?: string;
  reserveMemory?: string;
  restartCondition?: string;
  restartDelay?: string;
  restartMaxAttempts?: string;
  restartWindow?: string;
  stopGracePeriod?: string;
  stopSignal?: string;
  healthCmd?: string;
  healthHttp?: string;
  healthTcp?: string;
  healthInterval?: string;
  healthTimeout?: string;
  healthRetries?: string;
  healthStartPeriod?: string;
  /** Commander's negation of --no-healthcheck: false when it was given. */
  healthcheck?: boolean;
  hostname?: string;
  user?: string;
  workdir?: string;
  entrypoint?: string;
  readOnly?: string | boolean;
  init?: string | boolean;
  endpointMode?: string;
  updateParallelism?: string;
  updateDelay?: string;
  updateFailureAction?: string;
  updateMonitor?: string;
  updateMaxFailureRatio?: string;
  updateOrder?: string;
  rollbackParallelism?: string;
  rollbackDelay?: string;
  rollbackFailureAction?: string;
  rollbackMonitor?: string;
  rollbackMaxFailureRatio?: string;
  rollbackOrder?: string;
}

export interface CreateServiceFlags extends CommonServiceFlags {
  name?: string;
  mode?: string;
  publish?: string[];
  env?: string[];
  envFile?: string[];
  label?: string[];
  containerLabel?: string[];
  mount?: string[];
  network?: string[];
  constraint?: string[];
  placementPref?: string[];
  dns?: string[];
  dnsSearch?: string[];
  dnsOption?: string[];
}

export interface UpdateServiceFlags extends CommonServiceFlags {
  image?: string;
  args?: string;
  envAdd?: string[];
  envRm?: string[];
  publishAdd?: string[];
  publishRm?: string[];
  labelAdd?: string[];
  labelRm?: string[];
  containerLabelAdd?: string[];
  containerLabelRm?: string[];
  mountAdd?: string[];
  mountRm?: string[];
  networkAdd?: string[];
  networkRm?: string[];
  constraintAdd?: string[];
  constraintRm?: string[];
  placementPrefAdd?: string[];
  placementPrefRm?: string[];
  dnsAdd?: string[];
  dnsRm?: string[];
  dnsSearchAdd?: string[];
  dnsSearchRm?: string[];
  dnsOptionAdd?: string[];
  dnsOptionRm?: string[];
  force?: boolean;
}

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

function addCommonFlags(cmd: Command): Command {
  return cmd
    .option('--replicas <n>', 'number of tasks')
    .option('--limit-cpu <cpus>', 'CPU limit, e.g. 0.5')
    .option('--limit-memory <bytes>', 'memory limit, e.g. 64m')
    .option(
      '--limit-pids <n>',
      "most processes per task (0: the runtime's default, unlimited on docker, 4096 on oci)",
    )
    .option('--reserve-cpu <cpus>', 'CPUs reserved on the node')
    .option('--reserve-memory <bytes>', 'memory reserved on the node')
    .option('--restart-condition <condition>', 'restart when: none, on-failure or any')
    .option('--restart-delay <duration>', 'delay between restart attempts, e.g. 5s')
    .option('--restart-max-attempts <n>', 'maximum restarts per window (0: unlimited)')
    .option('--restart-window <duration>', 'window in which restarts are counted')
    .option('--stop-grace-period <duration>', 'time to wait before killing a container')
    .option('--stop-signal <signal>', 'signal that stops the container')
    .option('--health-cmd <command>', 'command to run to check health (run by a shell)')
    .option(
      '--health-http <port[/path]>',
      "check health with an HTTP GET to the task's own port (2xx/3xx passes)",
    )
    .option('--health-tcp <port>', "check health by opening a TCP connection to the task's own port")
    .option('--health-interval <duration>', 'time between health checks')
    .option('--health-timeout <duration>', 'maximum time one check may run')
    .option('--health-retries <n>', 'consecutive failures before unhealthy')
    .option('--health-start-period <duration>', 'start period during which failures do not count')
    .option('--no-healthcheck', "disable the image's health check")
    .option('--hostname <name>', 'container hostname')
    .option('-u, --user <user>', 'user[:group] to run as')
    .option('-w, --workdir <dir>', 'working directory inside the container')
    .option('--entrypoint <command>', "override the image's entrypoint")
    .option('--read-only [bool]', 'mount the root file system read-only')
    .option('--init [bool]', 'run an init process in the container')
    .option('--endpoint-mode <mode>', 'vip or dnsrr')
    .option('--update-parallelism <n>', 'tasks updated at once (0: all)')
    .option('--update-delay <duration>', 'delay between updates')
    .option('--update-failure-action <action>', 'pause, continue or rollback')
    .option('--update-monitor <duration>', 'time to watch each updated task for failure')
    .option('--update-max-failure-ratio <ratio>', 'failure rate tolerated during an update')
    .option('--update-order <order>', 'stop-first or start-first')
    .option('--rollback-parallelism <n>', 'tasks rolled back at once (0: all)')
    .option('--rollback-delay <duration>', 'delay between rollbacks')
    .option('--rollback-failure-action <action>', 'pause or continue')
    .option('--rollback-monitor <duration>', 'time to watch each rolled back task')
    .option('--rollback-max-failure-ratio <ratio>', 'failure rate tolerated during a rollback')
    .option('--rollback-order <order>', 'stop-first or start-first');
}

export function addCreateFlags(cmd: Command): Command {
  addCommonFlags(cmd)
    .option('--name <name>', 'service name')
    .addOption(new Option('--mode <mode>', 'replicated or global'))
    .option(
      '-p, --publish <port>',
      'publish a port: published:target[/proto] or mode=...,target=...',
      collect,
    )
    .option('-e, --env <KEY=VALUE>', 'set an environment variable', collect)
    .option('--env-file <file>', 'read environment variables from a file', collect)
    .option('-l, --label <key=value>', 'service label', collect)
    .option('--container-label <key=value>', 'container label', collect)
    .option('--mount <spec>', 'type=bind|volume|tmpfs,src=...,dst=...[,readonly]', collect)
    .option('--network <name>', 'attach to a network', collect)
    .option('--constraint <expr>', 'placement constraint, e.g. node.labels.zone==a', collect)
    .option('--placement-pref <pref>', 'placement preference, e.g. spread=node.labels.zone', collect)
    .option('--dns <ip>', 'DNS server', collect)
    .option('--dns-search <domain>', 'DNS search domain', collect)
    .option('--dns-option <option>', 'DNS option', collect);
  return cmd;
}

export function addUpdateFlags(cmd: Command): Command {
  addCommonFlags(cmd)
    .option('--image <image>', 'new image')
    .option('--args <command>', 'new command arguments (space separated)')
    .option('--env-add <KEY=VALUE>', 'add or change an environment variable', collect)
    .option('--env-rm <KEY>', 'remove an environment variable', collect)
    .option('--publish-add <port>', 'publish a port', collect)
    .option('--publish-rm <port>', 'stop publishing a target port (80 or 80/udp or 8080:80)', collect)
    .option('--label-add <key=value>', 'add or change a service label', collect)
    .option('--label-rm <key>', 'remove a service label', collect)
    .option('--container-label-add <key=value>', 'add or change a container label', collect)
    .option('--container-label-rm <key>', 'remove a container label', collect)
    .option('--mount-add <spec>', 'add a mount', collect)
    .option('--mount-rm <target>', 'remove the mount at this target path', collect)
    .option('--network-add <name>', 'attach to a network', collect)
    .option('--network-rm <name>', 'detach from a network', collect)
    .option('--constraint-add <expr>', 'add a placement constraint', collect)
    .option('--constraint-rm <expr>', 'remove a placement constraint', collect)
    .option('--placement-pref-add <pref>', 'add a placement preference', collect)
    .option('--placement-pref-rm <pref>', 'remove a placement preference', collect)
    .option('--dns-add <ip>', 'add a DNS server', collect)
    .option('--dns-rm <ip>', 'remove a DNS server', collect)
    .option('--dns-search-add <domain>', 'add a DNS search domain', collect)
    .option('--dns-search-rm <domain>', 'remove a DNS search domain', collect)
    .option('--dns-option-add <option>', 'add a DNS option', collect)
    .option('--dns-option-rm <option>', 'remove a DNS option', collect)
    .option('--force', 'redeploy the tasks even if nothing changed');
  return cmd;
}

// ------------------------------------------------------------------ shared spec edits

function asUsage(flag: string, value: string, e: unknown): ClusterError {
  const err = toClusterError(e);
  return err.code === 'USAGE' ? err : badValue(flag, value, err.message);
}

function validateConstraint(flag: string, expression: string): string {
  try {
    parseConstraint(expression);
  } catch (e) {
    throw asUsage(flag, expression, e);
  }
  return expression;
}

function spreadDescriptor(flag: string, text: string): string {
  if (!text.trim().startsWith('spread=')) {
    throw badValue(flag, text, 'must be spread=node.labels.<name>');
  }
  try {
    parseSpreadPreference(text);
  } catch (e) {
    throw asUsage(flag, text, e);
  }
  // Stored as the bare descriptor ("node.labels.zone"), as the Placement message says.
  return text.trim().slice('spread='.length).trim();
}

function parseBoolFlag(flag: string, value: string | boolean): boolean {
  if (typeof value === 'boolean') return value;
  const v = value.toLowerCase();
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw badValue(flag, value, 'must be true or false');
}

const RESTART_CONDITIONS = ['none', 'on-failure', 'any'] as const;
const FAILURE_ACTIONS = ['pause', 'continue', 'rollback'] as const;
const ORDERS = ['stop-first', 'start-first'] as const;

function container(task: TaskSpec): ContainerSpec {
  task.container ??= {
    image: '',
    command: [],
    args: [],
    env: [],
    labels: {},
    hostname: '',
    user: '',
    dir: '',
    mounts: [],
    stopSignal: '',
    readOnly: false,
    init: false,
  };
  return task.container;
}

function applyUpdateConfig(
  current: UpdateConfig | undefined,
  prefix: 'update' | 'rollback',
  flags: CommonServiceFlags,
): UpdateConfig | undefined {
  const parallelism = flags[`${prefix}Parallelism`];
  const delay = flags[`${prefix}Delay`];
  const action = flags[`${prefix}FailureAction`];
  const monitor = flags[`${prefix}Monitor`];
  const ratio = flags[`${prefix}MaxFailureRatio`];
  const order = flags[`${prefix}Order`];
  if ([parallelism, delay, action, monitor, ratio, order].every((v) => v === undefined)) return current;
  // Docker's defaults: one task at a time, pause on failure, 5 s monitor.
  const config = current
    ? UpdateConfig.fromPartial(current)
    : UpdateConfig.fromPartial({ parallelism: 1, monitor: { seconds: 5, nanos: 0 } });
  if (parallelism !== undefined)
    config.parallelism = parseWholeNumber(`--${prefix}-parallelism`, parallelism);
  if (delay !== undefined) config.delay = parseDuration(`--${prefix}-delay`, delay);
  if (action !== undefined) {
    const allowed = prefix === 'update' ? FAILURE_ACTIONS : (['pause', 'continue'] as const);
    const chosen = parseChoice(`--${prefix}-failure-action`, action, allowed);
    config.failureAction =
      chosen === 'pause'
        ? UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE
        : chosen === 'continue'
          ? UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE
          : UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK;
  }
  if (monitor !== undefined) config.monitor = parseDuration(`--${prefix}-monitor`, monitor);
  if (ratio !== undefined) config.maxFailureRatio = parseRatio(`--${prefix}-max-failure-ratio`, ratio);
  if (order !== undefined) {
    config.order =
      parseChoice(`--${prefix}-order`, order, ORDERS) === 'start-first'
        ? UpdateConfig_Order.ORDER_START_FIRST
        : UpdateConfig_Order.ORDER_STOP_FIRST;
  }
  return config;
}

/** Applies the flags both commands share to `spec` in place. */
function applyCommon(spec: ServiceSpec, flags: CommonServiceFlags): void {
  const task = (spec.task ??= { networks: [], forceUpdate: 0 });
  const c = container(task);

  if (flags.replicas !== undefined) {
    const replicas = parseWholeNumber('--replicas', flags.replicas);
    if (spec.mode?.$case === 'global') {
      throw badValue(
        '--replicas',
        flags.replicas,
        'a global service has one task per node: replicas cannot be set',
      );
    }
    spec.mode = { $case: 'replicated', value: { replicas } };
  }

  const resources = (task.resources ??= {});
  if (flags.limitCpu !== undefined) {
    (resources.limits ??= { nanoCpus: 0, memoryBytes: 0, pids: 0 }).nanoCpus = parseNanoCpus(
      '--limit-cpu',
      flags.limitCpu,
    );
  }
  if (flags.limitMemory !== undefined) {
    (resources.limits ??= { nanoCpus: 0, memoryBytes: 0, pids: 0 }).memoryBytes = parseBytes(
      '--limit-memory',
      flags.limitMemory,
    );
  }
  if (flags.limitPids !== undefined) {
    (resources.limits ??= { nanoCpus: 0, memoryBytes: 0, pids: 0 }).pids = parseWholeNumber(
      '--limit-pids',
      flags.limitPids,
    );
  }
  if (flags.reserveCpu !== undefined) {
    (resources.reservations ??= { nanoCpus: 0, memoryBytes: 0, pids: 0 }).nanoCpus = parseNanoCpus(
      '--reserve-cpu',
      flags.reserveCpu,
    );
  }
  if (flags.reserveMemory !== undefined) {
    (resources.reservations ??= { nanoCpus: 0, memoryBytes: 0, pids: 0 }).memoryBytes = parseBytes(
      '--reserve-memory',
      flags.reserveMemory,
    );
  }
  if (!resources.limits && !resources.reservations) task.resources = undefined;

  const restartFlags = [
    flags.restartCondition,
    flags.restartDelay,
    flags.restartMaxAttempts,
    flags.restartWindow,
  ];
  if (restartFlags.some((v) => v !== undefined)) {
    const restart = (task.restart ??= { condition: RestartPolicy_Condition.CONDITION_ANY, maxAttempts: 0 });
    if (flags.restartCondition !== undefined) {
      const chosen = parseChoice('--restart-condition', flags.restartCondition, RESTART_CONDITIONS);
      restart.condition =
        chosen === 'none'
          ? RestartPolicy_Condition.CONDITION_NONE
          : chosen === 'on-failure'
            ? RestartPolicy_Condition.CONDITION_ON_FAILURE
            : RestartPolicy_Condition.CONDITION_ANY;
    }
    if (flags.restartDelay !== undefined)
      restart.delay = parseDuration('--restart-delay', flags.restartDelay);
    if (flags.restartMaxAttempts !== undefined) {
      restart.maxAttempts = parseWholeNumber('--restart-max-attempts', flags.restartMaxAttempts);
    }
    if (flags.restartWindow !== undefined)
      restart.window = parseDuration('--restart-window', flags.restartWindow);
  }

  if (flags.stopGracePeriod !== undefined) {
    c.stopGracePeriod = parseDuration('--stop-grace-period', flags.stopGracePeriod);
  }
  if (flags.stopSignal !== undefined) c.stopSignal = flags.stopSignal;

  // The check itself: one of these at most, and none with --no-healthcheck.
  const checkFlags = (
    [
      ['--health-cmd', flags.healthCmd],
      ['--health-http', flags.healthHttp],
      ['--health-tcp', flags.healthTcp],
    ] as const
  ).filter(([, v]) => v !== undefined);
  const [first, second] = checkFlags;
  if (first && second) throw new ClusterError('USAGE', `${first[0]} conflicts with ${second[0]}`);
  const healthFlags = [
    flags.healthInterval,
    flags.healthTimeout,
    flags.healthRetries,
    flags.healthStartPeriod,
  ];
  if (flags.healthcheck === false) {
    if (first) throw new ClusterError('USAGE', `--no-healthcheck conflicts with ${first[0]}`);
    if (healthFlags.some((v) => v !== undefined)) {
      throw new ClusterError('USAGE', '--no-healthcheck conflicts with the --health-* options');
    }
    c.healthcheck = { test: ['NONE'], retries: 0 };
  } else if (first || healthFlags.some((v) => v !== undefined)) {
    const health = (c.healthcheck ??= { test: [], retries: 0 });
    if (health.test[0] === 'NONE') health.test = [];
    if (flags.healthCmd !== undefined)
      health.test = flags.healthCmd === '' ? [] : ['CMD-SHELL', flags.healthCmd];
    if (flags.healthHttp !== undefined) health.test = parseHealthHttp('--health-http', flags.healthHttp);
    if (flags.healthTcp !== undefined) health.test = parseHealthTcp('--health-tcp', flags.healthTcp);
    if (flags.healthInterval !== undefined)
      health.interval = parseDuration('--health-interval', flags.healthInterval);
    if (flags.healthTimeout !== undefined)
      health.timeout = parseDuration('--health-timeout', flags.healthTimeout);
    if (flags.healthRetries !== undefined)
      health.retries = parseWholeNumber('--health-retries', flags.healthRetries);
    if (flags.healthStartPeriod !== undefined) {
      health.startPeriod = parseDuration('--health-start-period', flags.healthStartPeriod);
    }
  }

  if (flags.hostname !== undefined) c.hostname = flags.hostname;
  if (flags.user !== undefined) c.user = flags.user;
  if (flags.workdir !== undefined) c.dir = flags.workdir;
  if (flags.entrypoint !== undefined) c.command = splitWords(flags.entrypoint);
  if (flags.readOnly !== undefined) c.readOnly = parseBoolFlag('--read-only', flags.readOnly);
  if (flags.init !== undefined) c.init = parseBoolFlag('--init', flags.init);

  if (flags.endpointMode !== undefined) {
    const endpoint = (spec.endpoint ??= { mode: EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP, ports: [] });
    endpoint.mode =
      parseChoice('--endpoint-mode', flags.endpointMode, ['vip', 'dnsrr'] as const) === 'dnsrr'
        ? EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR
        : EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP;
  }

  spec.update = applyUpdateConfig(spec.update, 'update', flags);
  spec.rollback = applyUpdateConfig(spec.rollback, 'rollback', flags);
}

function splitWords(text: string): string[] {
  return text.split(/\s+/).filter((w) => w !== '');
}

function envKey(entry: string): string {
  const eq = entry.indexOf('=');
  return eq < 0 ? entry : entry.slice(0, eq);
}

function portKey(p: PortConfig): string {
  return `${p.targetPort}/${p.protocol}`;
}

export interface SpecInputs {
  readFile?: (path: string) => string;
  lookupEnv?: (name: string) => string | undefined;
}

function readEnvFile(path: string, inputs: SpecInputs): string {
  try {
    return (inputs.readFile ?? ((p: string) => readFileSync(p, 'utf8')))(path);
  } catch (e) {
    throw badValue('--env-file', path, `cannot read it: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** The ServiceSpec a `service create` command line asks for. */
export function buildServiceSpec(
  flags: CreateServiceFlags,
  image: string,
  args: string[],
  inputs: SpecInputs = {},
): ServiceSpec {
  if (image.trim() === '') throw new ClusterError('USAGE', '"service create" requires an IMAGE argument');
  const spec: ServiceSpec = ServiceSpec.fromPartial({
    annotations: { name: flags.name ?? '', labels: {} },
    task: { container: { image, args }, networks: [] },
  });
  const mode =
    flags.mode === undefined
      ? 'replicated'
      : parseChoice('--mode', flags.mode, ['replicated', 'global'] as const);
  spec.mode =
    mode === 'global' ? { $case: 'global', value: {} } : { $case: 'replicated', value: { replicas: 1 } };
  applyCommon(spec, flags);

  const task = spec.task ?? { networks: [], forceUpdate: 0 };
  const c = container(task);
  for (const file of flags.envFile ?? []) {
    c.env.push(...parseEnvFile('--env-file', file, readEnvFile(file, inputs), inputs.lookupEnv));
  }
  for (const entry of flags.env ?? []) {
    const value = parseEnvEntry('--env', entry, inputs.lookupEnv);
    if (value !== undefined) c.env = [...c.env.filter((e) => envKey(e) !== envKey(value)), value];
  }
  for (const label of flags.label ?? []) {
    const [k, v] = parseKeyValue('--label', label);
    (spec.annotations ??= { name: '', labels: {} }).labels[k] = v;
  }
  for (const label of flags.containerLabel ?? []) {
    const [k, v] = parseKeyValue('--container-label', label);
    c.labels[k] = v;
  }
  c.mounts = (flags.mount ?? []).map((m) => parseMount('--mount', m));
  task.networks = (flags.network ?? []).map((target) => ({ target, aliases: [] }));
  const constraints = (flags.constraint ?? []).map((x) => validateConstraint('--constraint', x));
  const spread = (flags.placementPref ?? []).map((x) => spreadDescriptor('--placement-pref', x));
  if (constraints.length > 0 || spread.length > 0) {
    task.placement = { constraints, spreadPreferences: spread };
  }
  if (flags.dns || flags.dnsSearch || flags.dnsOption) {
    c.dnsConfig = {
      nameservers: flags.dns ?? [],
      search: flags.dnsSearch ?? [],
      options: flags.dnsOption ?? [],
    };
  }
  const ports = (flags.publish ?? []).map((p) => parsePublish('--publish', p));
  if (ports.length > 0) {
    const endpoint = (spec.endpoint ??= { mode: EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP, ports: [] });
    endpoint.ports = ports;
  }
  return ServiceSpec.fromPartial(spec);
}

function removeMatching<T>(items: T[], remove: (item: T) => boolean): T[] {
  return items.filter((item) => !remove(item));
}

/** The port a --publish-rm value names: "80", "80/udp" or the whole "8080:80/udp". */
function parsePublishRm(value: string): PortConfig {
  return parsePublish('--publish-rm', value);
}

/**
 * `service update`: the current spec with the flags applied, as a new object (the input is not
 * changed). Removals are applied before additions, as Docker does, so "--env-rm A --env-add A=2"
 * ends with A=2.
 */
export function applyServiceUpdate(
  current: ServiceSpec,
  flags: UpdateServiceFlags,
  inputs: SpecInputs = {},
): ServiceSpec {
  const spec = ServiceSpec.fromPartial(current);
  applyCommon(spec, flags);
  const task = (spec.task ??= { networks: [], forceUpdate: 0 });
  const c = container(task);

  if (flags.image !== undefined) {
    if (flags.image.trim() === '') throw badValue('--image', flags.image, 'must not be empty');
    c.image = flags.image;
  }
  if (flags.args !== undefined) c.args = splitWords(flags.args);

  for (const key of flags.envRm ?? []) c.env = removeMatching(c.env, (e) => envKey(e) === key);
  for (const entry of flags.envAdd ?? []) {
    const value = parseEnvEntry('--env-add', entry, inputs.lookupEnv);
    if (value !== undefined) c.env = [...c.env.filter((e) => envKey(e) !== envKey(value)), value];
  }

  const annotations = (spec.annotations ??= { name: '', labels: {} });
  for (const key of flags.labelRm ?? []) delete annotations.labels[key];
  for (const label of flags.labelAdd ?? []) {
    const [k, v] = parseKeyValue('--label-add', label);
    annotations.labels[k] = v;
  }
  for (const key of flags.containerLabelRm ?? []) delete c.labels[key];
  for (const label of flags.containerLabelAdd ?? []) {
    const [k, v] = parseKeyValue('--container-label-add', label);
    c.labels[k] = v;
  }

  for (const target of flags.mountRm ?? [])
    c.mounts = removeMatching(c.mounts, (m: Mount) => m.target === target);
  for (const text of flags.mountAdd ?? []) {
    const mount = parseMount('--mount-add', text);
    c.mounts = [...c.mounts.filter((m) => m.target !== mount.target), mount];
  }

  for (const name of flags.networkRm ?? [])
    task.networks = removeMatching(task.networks, (n) => n.target === name);
  for (const name of flags.networkAdd ?? []) {
    if (!task.networks.some((n) => n.target === name)) task.networks.push({ target: name, aliases: [] });
  }

  if (flags.constraintRm || flags.constraintAdd || flags.placementPrefRm || flags.placementPrefAdd) {
    const placement = (task.placement ??= { constraints: [], spreadPreferences: [] });
    for (const x of flags.constraintRm ?? [])
      placement.constraints = removeMatching(placement.constraints, (y) => y === x);
    for (const x of flags.constraintAdd ?? []) {
      const expression = validateConstraint('--constraint-add', x);
      if (!placement.constraints.includes(expression)) placement.constraints.push(expression);
    }
    for (const x of flags.placementPrefRm ?? []) {
      const descriptor = spreadDescriptor('--placement-pref-rm', x);
      placement.spreadPreferences = removeMatching(placement.spreadPreferences, (y) => y === descriptor);
    }
    for (const x of flags.placementPrefAdd ?? []) {
      const descriptor = spreadDescriptor('--placement-pref-add', x);
      if (!placement.spreadPreferences.includes(descriptor)) placement.spreadPreferences.push(descriptor);
    }
  }

  if (
    flags.dnsAdd ||
    flags.dnsRm ||
    flags.dnsSearchAdd ||
    flags.dnsSearchRm ||
    flags.dnsOptionAdd ||
    flags.dnsOptionRm
  ) {
    const dns = (c.dnsConfig ??= { nameservers: [], search: [], options: [] });
    const edit = (list: string[], rm: string[] | undefined, add: string[] | undefined) => {
      const kept = list.filter((x) => !(rm ?? []).includes(x));
      for (const x of add ?? []) if (!kept.includes(x)) kept.push(x);
      return kept;
    };
    dns.nameservers = edit(dns.nameservers, flags.dnsRm, flags.dnsAdd);
    dns.search = edit(dns.search, flags.dnsSearchRm, flags.dnsSearchAdd);
    dns.options = edit(dns.options, flags.dnsOptionRm, flags.dnsOptionAdd);
  }

  if (flags.publishRm || flags.publishAdd) {
    const endpoint = (spec.endpoint ??= { mode: EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP, ports: [] });
    for (const text of flags.publishRm ?? []) {
      const rm = parsePublishRm(text);
      endpoint.ports = removeMatching(
        endpoint.ports,
        (p) => portKey(p) === portKey(rm) && (rm.publishedPort === 0 || rm.publishedPort === p.publishedPort),
      );
    }
    for (const text of flags.publishAdd ?? []) {
      const port = parsePublish('--publish-add', text);
      endpoint.ports = [...endpoint.ports.filter((p) => portKey(p) !== portKey(port)), port];
    }
  }

  if (flags.force) task.forceUpdate += 1;
  return ServiceSpec.fromPartial(spec);
}

/** Whether the change restarts tasks (anything in the task spec), as opposed to scaling only. */
export function taskSpecChanged(before: ServiceSpec, after: ServiceSpec): boolean {
  const encode = (s: ServiceSpec) =>
    Buffer.from(ServiceSpec.encode(ServiceSpec.fromPartial({ task: s.task })).finish()).toString('base64');
  return encode(before) !== encode(after);
}
