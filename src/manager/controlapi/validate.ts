// Spec validation of the control API: pure checks of what a user sent, each failure an
// INVALID_ARGUMENT naming the field and the rule. Checks that need the store (names taken,
// networks that exist, published ports in use) live with the handlers in api.ts.
import { isIP } from 'node:net';

import { ClusterError, invalidArgument } from '../../common/errors';
import type { Duration } from '../../gen/google/protobuf/duration';
import {
  EndpointSpec_ResolutionMode,
  Mount_Type,
  NodeAvailability,
  NodeRole,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  RestartPolicy_Condition,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
  type ClusterSpec,
  type ContainerSpec,
  type NetworkSpec,
  type NodeSpec,
  type ServiceSpec,
  type UpdateConfig,
} from '../../gen/cluster/v1/objects';
import { parseConstraint, parseSpreadPreference } from '../scheduler';
import { parseCidr, ipInSubnet } from './subnet';

/** Docker's object name rule (services, networks): a letter or digit, then letters, digits, _ . - */
const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
export const MAX_NAME_LENGTH = 63;
/** Replicas are a Go int in SwarmKit; we keep them in int32 so every component can count them. */
export const MAX_REPLICAS = 2_147_483_647;
/** Docker refuses memory limits below a few MiB: a container cannot even start under them. */
export const MIN_MEMORY_BYTES = 4 * 1024 * 1024;
export const MAX_PORT = 65535;
/** Docker's limit on image references. */
const MAX_IMAGE_NAME_LENGTH = 255;

function fieldError(field: string, rule: string, details: Record<string, unknown> = {}): ClusterError {
  return invalidArgument(`${field}: ${rule}`, { field, ...details });
}

function show(value: unknown): string {
  return typeof value === 'string' ? `'${value}'` : String(value);
}

// ------------------------------------------------------------------------------ primitives

/** Docker's name rule; `field` names where the name came from. */
export function validateName(field: string, name: string): void {
  if (name === '') throw fieldError(field, 'a name is required');
  if (name.length > MAX_NAME_LENGTH) {
    throw fieldError(field, `name '${name}' is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!NAME_PATTERN.test(name)) {
    throw fieldError(
      field,
      `name '${name}' is invalid: it must start with a letter or digit and contain only letters, digits, '_', '.' and '-'`,
    );
  }
}

function validateLabels(field: string, labels: Readonly<Record<string, string>> | undefined): void {
  for (const key of Object.keys(labels ?? {})) {
    if (key.trim() === '') throw fieldError(field, 'label keys must not be empty');
  }
}

/** Milliseconds of a protobuf Duration (negative when either part is). */
export function durationMs(d: Duration): number {
  return d.seconds * 1000 + d.nanos / 1e6;
}

function validateDuration(field: string, d: Duration | undefined, minMs = 0): void {
  if (d === undefined) return;
  if (!Number.isFinite(d.seconds) || !Number.isInteger(d.seconds) || !Number.isInteger(d.nanos)) {
    throw fieldError(field, 'must be a whole number of seconds and nanoseconds');
  }
  if (Math.abs(d.nanos) > 999_999_999)
    throw fieldError(field, `nanos must be within ±999999999, got ${d.nanos}`);
  if ((d.seconds > 0 && d.nanos < 0) || (d.seconds < 0 && d.nanos > 0)) {
    throw fieldError(field, 'seconds and nanos must have the same sign');
  }
  const ms = durationMs(d);
  if (ms < 0) throw fieldError(field, `must be ≥ 0, got ${ms} ms`);
  if (minMs > 0 && ms > 0 && ms < minMs)
    throw fieldError(field, `must be at least ${minMs} ms when set, got ${ms} ms`);
}

function validateEnum(field: string, value: number, allowed: readonly number[], names: string): void {
  if (!allowed.includes(value)) throw fieldError(field, `must be one of ${names}, got ${value}`);
}

function isAbsolutePath(path: string): boolean {
  return path.startsWith('/');
}

// distribution/reference's grammar, as Docker parses image references.
const ALNUM = '[a-z0-9]+';
const SEPARATOR = '(?:[._]|__|[-]+)';
const PATH_COMPONENT = `${ALNUM}(?:${SEPARATOR}${ALNUM})*`;
const DOMAIN_COMPONENT = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const DOMAIN = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?`;
const TAG = '[\\w][\\w.-]{0,127}';
const DIGEST = '[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9A-Fa-f]{32,}';
const IMAGE_NAME = `(?:${DOMAIN}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*`;
const IMAGE_PATTERN = new RegExp(`^(${IMAGE_NAME})(?::${TAG})?(?:@${DIGEST})?$`);

/** Docker's image reference rule: [registry[:port]/]path[:tag][@digest], path lower-case. */
export function validateImage(field: string, image: string): void {
  if (image === '') throw fieldError(field, 'an image is required');
  const match = IMAGE_PATTERN.exec(image);
  if (!match) {
    // Upper case is the usual mistake; Docker names it precisely.
    const lowered = IMAGE_PATTERN.exec(image.toLowerCase());
    const rule = lowered
      ? 'repository name must be lowercase'
      : 'expected [registry[:port]/]name[:tag][@digest] (lower-case name; tag of letters, digits, _ . -)';
    throw fieldError(field, `invalid image reference '${image}': ${rule}`);
  }
  const name = match[1] ?? '';
  if (name.length > MAX_IMAGE_NAME_LENGTH) {
    throw fieldError(
      field,
      `repository name of '${image}' is longer than ${MAX_IMAGE_NAME_LENGTH} characters`,
    );
  }
}

const HOSTNAME_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
// Docker expands these placeholders in a service's hostname for each task.
const HOSTNAME_TEMPLATE =
  /\{\{\s*\.(?:Service\.(?:ID|Name)|Node\.(?:ID|Hostname|Platform\.(?:OS|Architecture))|Task\.(?:ID|Name|Slot))\s*\}\}/g;

/** RFC 1123 host name (dot-separated labels of letters, digits and '-'), Docker's templates allowed. */
export function validateHostname(field: string, hostname: string): void {
  if (hostname === '') return;
  const expanded = hostname.replace(HOSTNAME_TEMPLATE, 'x');
  if (expanded.includes('{{')) {
    throw fieldError(
      field,
      `unsupported template in '${hostname}': use {{.Service.Name}}, {{.Service.ID}}, {{.Node.Hostname}}, {{.Node.ID}}, {{.Task.Name}}, {{.Task.ID}} or {{.Task.Slot}}`,
    );
  }
  if (expanded.length > 253 || !expanded.split('.').every((label) => HOSTNAME_LABEL.test(label))) {
    throw fieldError(
      field,
      `'${hostname}' is not a valid host name (RFC 1123: labels of 1-63 letters, digits or '-', not starting or ending with '-', separated by '.')`,
    );
  }
}

const USER_PART = /^(?:[0-9]+|[a-zA-Z_][a-zA-Z0-9_.-]*\$?)$/;

/** user, uid, user:group or uid:gid. */
export function validateUser(field: string, user: string): void {
  if (user === '') return;
  const parts = user.split(':');
  if (parts.length > 2 || !parts.every((p) => USER_PART.test(p))) {
    throw fieldError(field, `'${user}' is not a valid user: expected NAME, UID, NAME:GROUP or UID:GID`);
  }
}

// ----------------------------------------------------------------------------- container

function validateContainer(container: ContainerSpec | undefined): void {
  const base = 'task.container';
  if (container === undefined) throw fieldError(`${base}.image`, 'an image is required');
  validateImage(`${base}.image`, container.image);
  container.env.forEach((entry, i) => {
    const at = entry.indexOf('=');
    if (at < 0) throw fieldError(`${base}.env[${i}]`, `'${entry}' must be KEY=VALUE`);
    if (entry.slice(0, at).trim() === '')
      throw fieldError(`${base}.env[${i}]`, `'${entry}' has an empty key`);
  });
  validateLabels(`${base}.labels`, container.labels);
  validateHostname(`${base}.hostname`, container.hostname);
  validateUser(`${base}.user`, container.user);
  if (container.dir !== '' && !isAbsolutePath(container.dir)) {
    throw fieldError(`${base}.dir`, `the working directory must be an absolute path, got '${container.dir}'`);
  }
  validateMounts(container);
  validateDuration(`${base}.stop_grace_period`, container.stopGracePeriod);
  if (container.stopSignal !== '' && !/^(?:SIG[A-Z0-9+-]+|[A-Z0-9+-]+|[0-9]+)$/.test(container.stopSignal)) {
    throw fieldError(`${base}.stop_signal`, `'${container.stopSignal}' is not a signal name or number`);
  }
  validateHealthcheck(container);
  validateDns(container);
}

const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

function validateMounts(container: ContainerSpec): void {
  const targets = new Set<string>();
  container.mounts.forEach((mount, i) => {
    const field = `task.container.mounts[${i}]`;
    validateEnum(
      `${field}.type`,
      mount.type,
      [Mount_Type.TYPE_BIND, Mount_Type.TYPE_VOLUME, Mount_Type.TYPE_TMPFS],
      'bind, volume, tmpfs',
    );
    if (mount.target === '') throw fieldError(`${field}.target`, 'a target path is required');
    if (!isAbsolutePath(mount.target)) {
      throw fieldError(`${field}.target`, `the target must be an absolute path, got '${mount.target}'`);
    }
    if (mount.target === '/') throw fieldError(`${field}.target`, "the target cannot be '/'");
    const normalized = mount.target.replace(/\/+$/, '');
    if (targets.has(normalized))
      throw fieldError(`${field}.target`, `duplicate mount point '${mount.target}'`);
    targets.add(normalized);
    switch (mount.type) {
      case Mount_Type.TYPE_BIND:
        if (mount.source === '') throw fieldError(`${field}.source`, 'a bind mount needs a source path');
        if (!isAbsolutePath(mount.source)) {
          throw fieldError(
            `${field}.source`,
            `a bind mount's source must be an absolute path, got '${mount.source}'`,
          );
        }
        break;
      case Mount_Type.TYPE_VOLUME:
        if (mount.source !== '' && !VOLUME_NAME.test(mount.source)) {
          throw fieldError(
            `${field}.source`,
            `'${mount.source}' is not a valid volume name (at least 2 of letters, digits, '_', '.', '-', starting with a letter or digit) and not empty`,
          );
        }
        break;
      case Mount_Type.TYPE_TMPFS:
        if (mount.source !== '') throw fieldError(`${field}.source`, 'a tmpfs mount takes no source');
        break;
    }
    if (mount.tmpfsSizeBytes < 0)
      throw fieldError(`${field}.tmpfs_size_bytes`, `must be ≥ 0, got ${mount.tmpfsSizeBytes}`);
    if (mount.tmpfsSizeBytes > 0 && mount.type !== Mount_Type.TYPE_TMPFS) {
      throw fieldError(`${field}.tmpfs_size_bytes`, 'applies to tmpfs mounts only');
    }
  });
}

function validateProbePort(field: string, form: string, port: string): void {
  const number = Number(port);
  if (!/^\d+$/.test(port) || number < 1 || number > 65535)
    throw fieldError(field, `${form} probe port must be a whole number from 1 to 65535, got '${port}'`);
}

function validateHealthcheck(container: ContainerSpec): void {
  const health = container.healthcheck;
  if (health === undefined) return;
  const field = 'task.container.healthcheck';
  const [form, ...rest] = health.test;
  // An empty test inherits the image's healthcheck, as Docker's.
  if (form !== undefined) {
    switch (form) {
      case 'NONE':
        if (rest.length > 0) throw fieldError(`${field}.test`, 'NONE takes no arguments');
        break;
      case 'CMD':
        if (rest.length === 0 || rest[0] === '') throw fieldError(`${field}.test`, 'CMD needs a command');
        break;
      case 'CMD-SHELL':
        if (rest.length !== 1 || rest[0] === '')
          throw fieldError(`${field}.test`, 'CMD-SHELL takes exactly one command string');
        break;
      case 'HTTP':
        // Ours, after Docker's forms: the agent probes from inside the task's network namespace.
        if (rest.length !== 2)
          throw fieldError(
            `${field}.test`,
            `HTTP takes a port and a path (["HTTP", "80", "/health"]), got ${rest.length} arguments`,
          );
        validateProbePort(`${field}.test`, 'HTTP', rest[0] ?? '');
        if (!(rest[1] ?? '').startsWith('/'))
          throw fieldError(`${field}.test`, `HTTP probe path must start with '/', got '${rest[1] ?? ''}'`);
        break;
      case 'TCP':
        if (rest.length !== 1)
          throw fieldError(
            `${field}.test`,
            `TCP takes a port (["TCP", "5432"]), got ${rest.length} arguments`,
          );
        validateProbePort(`${field}.test`, 'TCP', rest[0] ?? '');
        break;
      default:
        throw fieldError(`${field}.test`, `must start with CMD, CMD-SHELL, HTTP, TCP or NONE, got '${form}'`);
    }
  }
  validateDuration(`${field}.interval`, health.interval, 1);
  validateDuration(`${field}.timeout`, health.timeout, 1);
  validateDuration(`${field}.start_period`, health.startPeriod, 1);
  if (!Number.isInteger(health.retries) || health.retries < 0) {
    throw fieldError(`${field}.retries`, `must be a whole number ≥ 0, got ${health.retries}`);
  }
}

const DNS_OPTION = /^[a-zA-Z0-9_-]+(?::[a-zA-Z0-9._-]+)?$/;
const SEARCH_DOMAIN =
  /^\.?$|^[a-zA-Z0-9_]([a-zA-Z0-9_-]*[a-zA-Z0-9_])?(\.[a-zA-Z0-9_]([a-zA-Z0-9_-]*[a-zA-Z0-9_])?)*\.?$/;

function validateDns(container: ContainerSpec): void {
  const dns = container.dnsConfig;
  if (dns === undefined) return;
  const field = 'task.container.dns_config';
  dns.nameservers.forEach((ns, i) => {
    if (isIP(ns) === 0) throw fieldError(`${field}.nameservers[${i}]`, `'${ns}' is not an IP address`);
  });
  dns.search.forEach((domain, i) => {
    if (domain === '' || domain.length > 253 || !SEARCH_DOMAIN.test(domain)) {
      throw fieldError(`${field}.search[${i}]`, `'${domain}' is not a valid DNS search domain`);
    }
  });
  dns.options.forEach((option, i) => {
    if (!DNS_OPTION.test(option)) {
      throw fieldError(
        `${field}.options[${i}]`,
        `'${option}' is not a resolver option (NAME or NAME:VALUE, e.g. ndots:2)`,
      );
    }
  });
}

// ------------------------------------------------------------------------- service spec

function validateUpdateConfig(field: string, config: UpdateConfig | undefined, isRollback: boolean): void {
  if (config === undefined) return;
  if (!Number.isSafeInteger(config.parallelism) || config.parallelism < 0) {
    throw fieldError(
      `${field}.parallelism`,
      `must be a whole number ≥ 0 (0 means all at once), got ${config.parallelism}`,
    );
  }
  validateDuration(`${field}.delay`, config.delay);
  validateDuration(`${field}.monitor`, config.monitor);
  if (!(config.maxFailureRatio >= 0 && config.maxFailureRatio <= 1)) {
    throw fieldError(`${field}.max_failure_ratio`, `must be between 0 and 1, got ${config.maxFailureRatio}`);
  }
  const actions = isRollback
    ? [UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE, UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE]
    : [
        UpdateConfig_FailureAction.FAILURE_ACTION_PAUSE,
        UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE,
        UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK,
      ];
  validateEnum(
    `${field}.failure_action`,
    config.failureAction,
    actions,
    isRollback ? 'pause, continue' : 'pause, continue, rollback',
  );
  validateEnum(
    `${field}.order`,
    config.order,
    [UpdateConfig_Order.ORDER_STOP_FIRST, UpdateConfig_Order.ORDER_START_FIRST],
    'stop-first, start-first',
  );
}

function validateResources(spec: ServiceSpec): void {
  const resources = spec.task?.resources;
  if (resources === undefined) return;
  const field = 'task.resources';
  for (const [kind, r] of [
    ['limits', resources.limits],
    ['reservations', resources.reservations],
  ] as const) {
    if (r === undefined) continue;
    if (!Number.isSafeInteger(r.nanoCpus) || r.nanoCpus < 0) {
      throw fieldError(`${field}.${kind}.nano_cpus`, `must be a whole number ≥ 0, got ${r.nanoCpus}`);
    }
    if (!Number.isSafeInteger(r.memoryBytes) || r.memoryBytes < 0) {
      throw fieldError(`${field}.${kind}.memory_bytes`, `must be a whole number ≥ 0, got ${r.memoryBytes}`);
    }
    if (r.memoryBytes > 0 && r.memoryBytes < MIN_MEMORY_BYTES) {
      throw fieldError(
        `${field}.${kind}.memory_bytes`,
        `must be at least 4 MiB (${MIN_MEMORY_BYTES} bytes) when set, got ${r.memoryBytes}`,
      );
    }
    // Swarm's pids limit (cgroup pids.max), 0 = unlimited; there is no such thing as reserving pids.
    if (!Number.isSafeInteger(r.pids) || r.pids < 0) {
      throw fieldError(`${field}.${kind}.pids`, `must be a whole number ≥ 0 (0: unlimited), got ${r.pids}`);
    }
    if (kind === 'reservations' && r.pids !== 0) {
      throw fieldError(`${field}.reservations.pids`, `pids can be limited but not reserved, got ${r.pids}`);
    }
  }
  const { limits, reservations } = resources;
  if (limits && reservations) {
    if (limits.nanoCpus > 0 && reservations.nanoCpus > limits.nanoCpus) {
      throw fieldError(
        `${field}.reservations.nano_cpus`,
        `the CPU reservation (${reservations.nanoCpus / 1e9}) must not exceed the CPU limit (${limits.nanoCpus / 1e9})`,
      );
    }
    if (limits.memoryBytes > 0 && reservations.memoryBytes > limits.memoryBytes) {
      throw fieldError(
        `${field}.reservations.memory_bytes`,
        `the memory reservation (${reservations.memoryBytes} bytes) must not exceed the memory limit (${limits.memoryBytes} bytes)`,
      );
    }
  }
}

function validatePorts(spec: ServiceSpec): void {
  const endpoint = spec.endpoint;
  if (endpoint === undefined) return;
  validateEnum(
    'endpoint.mode',
    endpoint.mode,
    [EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP, EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR],
    'vip, dnsrr',
  );
  const published = new Map<string, number>();
  endpoint.ports.forEach((port, i) => {
    const field = `endpoint.ports[${i}]`;
    if (!Number.isInteger(port.targetPort) || port.targetPort < 1 || port.targetPort > MAX_PORT) {
      throw fieldError(`${field}.target_port`, `must be 1-${MAX_PORT}, got ${port.targetPort}`);
    }
    if (!Number.isInteger(port.publishedPort) || port.publishedPort < 0 || port.publishedPort > MAX_PORT) {
      throw fieldError(
        `${field}.published_port`,
        `must be 0 (assigned) or 1-${MAX_PORT}, got ${port.publishedPort}`,
      );
    }
    validateEnum(
      `${field}.protocol`,
      port.protocol,
      [PortConfig_Protocol.PROTOCOL_TCP, PortConfig_Protocol.PROTOCOL_UDP],
      'tcp, udp',
    );
    validateEnum(
      `${field}.publish_mode`,
      port.publishMode,
      [PortConfig_PublishMode.PUBLISH_MODE_INGRESS, PortConfig_PublishMode.PUBLISH_MODE_HOST],
      'ingress, host',
    );
    if (port.publishedPort === 0) return;
    const key = `${port.publishedPort}/${port.protocol}`;
    const earlier = published.get(key);
    if (earlier !== undefined) {
      throw fieldError(
        `${field}.published_port`,
        `port ${port.publishedPort}/${protocolName(port.protocol)} is published twice (also ports[${earlier}])`,
      );
    }
    published.set(key, i);
  });
  if (endpoint.mode === EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR) {
    const ingress = endpoint.ports.findIndex(
      (p) => p.publishMode === PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
    );
    if (ingress >= 0) {
      throw fieldError(
        `endpoint.ports[${ingress}].publish_mode`,
        'ports cannot be published in ingress mode with dnsrr resolution: use mode host',
      );
    }
  }
}

export function protocolName(protocol: PortConfig_Protocol): string {
  return protocol === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp';
}

const DNS_ALIAS = /^[a-zA-Z0-9]([a-zA-Z0-9_.-]{0,61}[a-zA-Z0-9])?$/;

/**
 * Every rule of a service spec that needs nothing but the spec. The name may be empty here (the
 * API generates one, as Docker does).
 */
export function validateServiceSpec(spec: ServiceSpec | undefined): asserts spec is ServiceSpec {
  if (spec === undefined) throw fieldError('spec', 'a service spec is required');
  const name = spec.annotations?.name ?? '';
  if (name !== '') validateName('name', name);
  validateLabels('labels', spec.annotations?.labels);

  const mode = spec.mode;
  if (mode?.$case === 'replicated') {
    const replicas = mode.value.replicas;
    if (!Number.isSafeInteger(replicas) || replicas < 0 || replicas > MAX_REPLICAS) {
      throw fieldError(
        'mode.replicated.replicas',
        `replicas must be a whole number from 0 to ${MAX_REPLICAS}, got ${show(replicas)}`,
      );
    }
  }

  const task = spec.task;
  if (task === undefined) throw fieldError('task.container.image', 'an image is required');
  validateContainer(task.container);
  validateResources(spec);

  const restart = task.restart;
  if (restart !== undefined) {
    validateEnum(
      'task.restart.condition',
      restart.condition,
      [
        RestartPolicy_Condition.CONDITION_ANY,
        RestartPolicy_Condition.CONDITION_NONE,
        RestartPolicy_Condition.CONDITION_ON_FAILURE,
      ],
      'any, none, on-failure',
    );
    validateDuration('task.restart.delay', restart.delay);
    validateDuration('task.restart.window', restart.window);
    if (!Number.isSafeInteger(restart.maxAttempts) || restart.maxAttempts < 0) {
      throw fieldError(
        'task.restart.max_attempts',
        `must be a whole number ≥ 0 (0 means unlimited), got ${restart.maxAttempts}`,
      );
    }
  }

  task.placement?.constraints.forEach((c) => parseConstraint(c));
  task.placement?.spreadPreferences.forEach((p) => parseSpreadPreference(p));

  task.networks.forEach((attachment, i) => {
    if (attachment.target === '')
      throw fieldError(`task.networks[${i}].target`, 'a network name or id is required');
    attachment.aliases.forEach((alias) => {
      if (!DNS_ALIAS.test(alias))
        throw fieldError(`task.networks[${i}].aliases`, `'${alias}' is not a valid DNS name`);
    });
  });

  validatePorts(spec);
  validateUpdateConfig('update', spec.update, false);
  validateUpdateConfig('rollback', spec.rollback, true);
}

// ---------------------------------------------------------------------- other objects

export const SUPPORTED_NETWORK_DRIVERS: readonly string[] = ['overlay'];

/** A network spec's own rules; subnet overlaps and name collisions are checked against the store. */
export function validateNetworkSpec(spec: NetworkSpec | undefined): asserts spec is NetworkSpec {
  if (spec === undefined) throw fieldError('spec', 'a network spec is required');
  validateName('name', spec.annotations?.name ?? '');
  validateLabels('labels', spec.annotations?.labels);
  if (spec.driver !== '' && !SUPPORTED_NETWORK_DRIVERS.includes(spec.driver)) {
    throw fieldError(
      'driver',
      `driver '${spec.driver}' is not supported: use ${SUPPORTED_NETWORK_DRIVERS.join(', ')}`,
    );
  }
  const subnet = spec.ipam?.subnet ?? '';
  const gateway = spec.ipam?.gateway ?? '';
  if (subnet === '') {
    if (gateway !== '') throw fieldError('ipam.gateway', 'a gateway needs a subnet');
    return;
  }
  const parsed = parseCidr('ipam.subnet', subnet);
  if (gateway === '') return;
  if (isIP(gateway) === 0) throw fieldError('ipam.gateway', `'${gateway}' is not an IP address`);
  if (!ipInSubnet(gateway, parsed))
    throw fieldError('ipam.gateway', `gateway ${gateway} is outside subnet ${subnet}`);
}

export function validateNodeSpec(spec: NodeSpec | undefined): asserts spec is NodeSpec {
  if (spec === undefined) throw fieldError('spec', 'a node spec is required');
  validateLabels('labels', spec.annotations?.labels);
  validateEnum(
    'availability',
    spec.availability,
    [
      NodeAvailability.NODE_AVAILABILITY_ACTIVE,
      NodeAvailability.NODE_AVAILABILITY_PAUSE,
      NodeAvailability.NODE_AVAILABILITY_DRAIN,
    ],
    'active, pause, drain',
  );
  validateEnum(
    'role',
    spec.desiredRole,
    [NodeRole.NODE_ROLE_WORKER, NodeRole.NODE_ROLE_MANAGER],
    'worker, manager',
  );
}

export function validateClusterSpec(spec: ClusterSpec | undefined): asserts spec is ClusterSpec {
  if (spec === undefined) throw fieldError('spec', 'a cluster spec is required');
  validateLabels('labels', spec.annotations?.labels);
  const raft = spec.raft;
  if (raft !== undefined) {
    for (const [field, value] of [
      ['raft.tick_ms', raft.tickMs],
      ['raft.election_ticks', raft.electionTicks],
      ['raft.heartbeat_ticks', raft.heartbeatTicks],
    ] as const) {
      if (!Number.isInteger(value) || value < 1)
        throw fieldError(field, `must be a whole number ≥ 1, got ${value}`);
    }
    if (raft.electionTicks <= raft.heartbeatTicks) {
      throw fieldError(
        'raft.election_ticks',
        `must exceed raft.heartbeat_ticks (${raft.heartbeatTicks}), got ${raft.electionTicks}`,
      );
    }
  }
  const heartbeat = spec.dispatcher?.heartbeatPeriod;
  validateDuration('dispatcher.heartbeat_period', heartbeat);
  if (heartbeat !== undefined && durationMs(heartbeat) === 0) {
    throw fieldError('dispatcher.heartbeat_period', 'must be greater than 0');
  }
}
