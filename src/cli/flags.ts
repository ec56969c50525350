// Parsers for flag values written the way Docker users write them: Go durations, Docker byte
// sizes, decimal CPUs, port and mount syntax, env files. Every bad value is a USAGE error
// (exit 2) naming the flag and the rule, so a typo never reaches the manager.
import { ClusterError } from '../common/errors';
import type { Duration } from '../gen/google/protobuf/duration';
import {
  Mount,
  Mount_Type,
  PortConfig,
  PortConfig_Protocol,
  PortConfig_PublishMode,
} from '../gen/cluster/v1/objects';

export function badValue(flag: string, value: string, rule: string): ClusterError {
  return new ClusterError('USAGE', `invalid argument "${value}" for "${flag}": ${rule}`);
}

const NANOS_PER_SECOND = 1_000_000_000n;

// Go's time.ParseDuration units, in nanoseconds.
const DURATION_UNITS: Record<string, bigint> = {
  ns: 1n,
  us: 1_000n,
  µs: 1_000n,
  μs: 1_000n,
  ms: 1_000_000n,
  s: NANOS_PER_SECOND,
  m: 60n * NANOS_PER_SECOND,
  h: 3600n * NANOS_PER_SECOND,
};

/** Total nanoseconds of a Go duration ("1m30s", "500ms", "1.5h", "0"); negative values refused. */
export function parseDurationNanos(flag: string, text: string): bigint {
  const rule = 'must be a duration such as 500ms, 5s, 1m30s or 2h (units ns, us, ms, s, m, h), not negative';
  const value = text.trim();
  if (value === '0') return 0n;
  if (
    value === '' ||
    !/^(\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)((\d+(\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h))*$/.test(value)
  ) {
    throw badValue(flag, text, rule);
  }
  let total = 0n;
  for (const part of value.matchAll(/(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g)) {
    const [, number = '', unit = ''] = part;
    const scale = DURATION_UNITS[unit];
    if (scale === undefined) throw badValue(flag, text, rule);
    const [whole = '0', fraction = ''] = number.split('.');
    total += BigInt(whole || '0') * scale;
    if (fraction) {
      // Exact decimal arithmetic: fraction / 10^len * scale, truncated as Go does.
      total += (BigInt(fraction) * scale) / 10n ** BigInt(fraction.length);
    }
  }
  return total;
}

export function nanosToDuration(nanos: bigint): Duration {
  return { seconds: Number(nanos / NANOS_PER_SECOND), nanos: Number(nanos % NANOS_PER_SECOND) };
}

export function parseDuration(flag: string, text: string): Duration {
  return nanosToDuration(parseDurationNanos(flag, text));
}

/** Go's Duration.String(): "1m30s", "500ms", "0s". */
export function formatDuration(d: Duration | undefined): string {
  if (!d) return '0s';
  const total = BigInt(d.seconds) * NANOS_PER_SECOND + BigInt(d.nanos);
  if (total === 0n) return '0s';
  if (total < NANOS_PER_SECOND) {
    if (total < 1_000n) return `${total}ns`;
    if (total < 1_000_000n) return `${trimFraction(total, 1_000n)}µs`;
    return `${trimFraction(total, 1_000_000n)}ms`;
  }
  const hours = total / (3600n * NANOS_PER_SECOND);
  const minutes = (total / (60n * NANOS_PER_SECOND)) % 60n;
  const secondsNanos = total % (60n * NANOS_PER_SECOND);
  let out = '';
  if (hours > 0n) out += `${hours}h`;
  if (hours > 0n || minutes > 0n) out += `${minutes}m`;
  out += `${trimFraction(secondsNanos, NANOS_PER_SECOND)}s`;
  return out;
}

function trimFraction(value: bigint, unit: bigint): string {
  const whole = value / unit;
  const rest = value % unit;
  if (rest === 0n) return `${whole}`;
  const digits = unit.toString().length - 1;
  return `${whole}.${rest.toString().padStart(digits, '0').replace(/0+$/, '')}`;
}

// Docker's RAMInBytes: binary multiples, case-insensitive, optional "b" suffix.
const BYTE_UNITS: Record<string, number> = {
  '': 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4,
  p: 1024 ** 5,
};

/** "64m" → 67108864, "1g", "512k", "1.5g", "1048576" (bytes). */
export function parseBytes(flag: string, text: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?$/i.exec(text.trim());
  const number = match?.[1];
  const unit = match?.[2]?.toLowerCase() ?? '';
  const scale = BYTE_UNITS[unit];
  if (!match || number === undefined || scale === undefined) {
    throw badValue(flag, text, 'must be a size in bytes such as 512k, 64m, 1g or 1048576');
  }
  const bytes = Math.floor(Number(number) * scale);
  if (!Number.isSafeInteger(bytes)) throw badValue(flag, text, 'is too large');
  return bytes;
}

/** Decimal CPUs as Docker's --cpus: "0.5" → 500000000 nano CPUs; at most 9 decimals. */
export function parseNanoCpus(flag: string, text: string): number {
  const match = /^(\d+)?(?:\.(\d+))?$/.exec(text.trim());
  if (!match || (match[1] === undefined && match[2] === undefined)) {
    throw badValue(flag, text, 'must be a number of CPUs such as 0.5 or 2, not negative');
  }
  const fraction = match[2] ?? '';
  if (fraction.replace(/0+$/, '').length > 9) {
    throw badValue(flag, text, 'is too precise: at most 9 decimals (1 nano CPU)');
  }
  const nanos = BigInt(match[1] ?? '0') * NANOS_PER_SECOND + BigInt((fraction + '000000000').slice(0, 9));
  if (nanos > BigInt(Number.MAX_SAFE_INTEGER)) throw badValue(flag, text, 'is too large');
  return Number(nanos);
}

/** A whole number ≥ 0 (replicas, retries, parallelism...). */
export function parseWholeNumber(flag: string, text: string): number {
  const value = text.trim();
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw badValue(flag, text, 'must be a whole number ≥ 0');
  }
  return Number(value);
}

function probePort(flag: string, text: string, port: string, rule: string): string {
  const number = Number(port);
  if (!/^\d+$/.test(port) || number < 1 || number > 65535) throw badValue(flag, text, rule);
  return String(number);
}

/** `--health-http PORT[/PATH]` → the HTTP probe test `["HTTP", PORT, PATH]` (PATH defaults to /). */
export function parseHealthHttp(flag: string, text: string): string[] {
  const value = text.trim();
  const slash = value.indexOf('/');
  const port = slash < 0 ? value : value.slice(0, slash);
  const probePath = slash < 0 ? '/' : value.slice(slash);
  const rule = 'must be PORT[/PATH] with a port from 1 to 65535, e.g. 80 or 8080/health';
  return ['HTTP', probePort(flag, text, port, rule), probePath];
}

/** `--health-tcp PORT` → the TCP probe test `["TCP", PORT]`. */
export function parseHealthTcp(flag: string, text: string): string[] {
  return ['TCP', probePort(flag, text, text.trim(), 'must be a port from 1 to 65535')];
}

/** A ratio between 0 and 1 (--update-max-failure-ratio). */
export function parseRatio(flag: string, text: string): number {
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value) || value < 0 || value > 1) {
    throw badValue(flag, text, 'must be a number between 0 and 1');
  }
  return value;
}

export function parseChoice<T extends string>(flag: string, text: string, choices: readonly T[]): T {
  const found = choices.find((c) => c === text.trim().toLowerCase());
  if (found === undefined) throw badValue(flag, text, `must be one of ${choices.join(', ')}`);
  return found;
}

/** "k=v" → [k, v]; "k" → [k, ""] (Docker's labels). */
export function parseKeyValue(flag: string, text: string, requireValue = false): [string, string] {
  const eq = text.indexOf('=');
  const key = eq < 0 ? text : text.slice(0, eq);
  if (key.trim() === '' || /\s/.test(key)) {
    throw badValue(flag, text, 'must be key=value with a non-empty key without spaces');
  }
  if (requireValue && eq < 0) throw badValue(flag, text, 'must be key=value');
  return [key, eq < 0 ? '' : text.slice(eq + 1)];
}

/** An environment entry: "K=V" as is; a bare "K" takes this shell's value, as Docker does. */
export function parseEnvEntry(
  flag: string,
  text: string,
  lookup: (name: string) => string | undefined = (n) => process.env[n],
): string | undefined {
  const [key] = parseKeyValue(flag, text);
  if (text.includes('=')) return text;
  const value = lookup(key);
  return value === undefined ? undefined : `${key}=${value}`;
}

/** An env file's entries: one per line, blank lines and # comments skipped. */
export function parseEnvFile(
  flag: string,
  fileName: string,
  content: string,
  lookup?: (name: string) => string | undefined,
): string[] {
  const entries: string[] = [];
  content.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.replace(/^\s+/, '');
    if (line === '' || line.startsWith('#')) return;
    try {
      const entry = parseEnvEntry(flag, line, lookup);
      if (entry !== undefined) entries.push(entry);
    } catch {
      throw badValue(flag, fileName, `line ${index + 1} must be KEY=VALUE or KEY, got '${raw}'`);
    }
  });
  return entries;
}

function parsePort(flag: string, original: string, text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw badValue(flag, original, `${what} port must be a number from 1 to 65535`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw badValue(flag, original, `${what} port must be from 1 to 65535`);
  return port;
}

function parseProtocol(flag: string, original: string, text: string): PortConfig_Protocol {
  switch (text.toLowerCase()) {
    case 'tcp':
      return PortConfig_Protocol.PROTOCOL_TCP;
    case 'udp':
      return PortConfig_Protocol.PROTOCOL_UDP;
    default:
      throw badValue(flag, original, 'protocol must be tcp or udp');
  }
}

/**
 * A published port: short form "8080:80", "8080:80/udp", "80" (published port chosen by the
 * manager), or long form "mode=host,target=80,published=8080,protocol=udp".
 */
export function parsePublish(flag: string, text: string): PortConfig {
  const value = text.trim();
  if (value.includes('=')) {
    const port = PortConfig.fromPartial({});
    let hasTarget = false;
    for (const field of value.split(',')) {
      const eq = field.indexOf('=');
      const key = field
        .slice(0, eq < 0 ? field.length : eq)
        .trim()
        .toLowerCase();
      const v = eq < 0 ? '' : field.slice(eq + 1).trim();
      switch (key) {
        case 'target':
          port.targetPort = parsePort(flag, text, v, 'target');
          hasTarget = true;
          break;
        case 'published':
          port.publishedPort = parsePort(flag, text, v, 'published');
          break;
        case 'protocol':
          port.protocol = parseProtocol(flag, text, v);
          break;
        case 'mode':
          if (v === 'ingress') port.publishMode = PortConfig_PublishMode.PUBLISH_MODE_INGRESS;
          else if (v === 'host') port.publishMode = PortConfig_PublishMode.PUBLISH_MODE_HOST;
          else throw badValue(flag, text, 'mode must be ingress or host');
          break;
        case 'name':
          port.name = v;
          break;
        default:
          throw badValue(flag, text, `unknown field '${key}': use mode, target, published, protocol`);
      }
    }
    if (!hasTarget) throw badValue(flag, text, 'target= is required');
    return port;
  }
  const match = /^(?:(\d+):)?(\d+)(?:\/(\w+))?$/.exec(value);
  if (!match?.[2]) {
    throw badValue(flag, text, 'must be published:target[/tcp|udp] or mode=...,target=...,published=...');
  }
  return PortConfig.fromPartial({
    targetPort: parsePort(flag, text, match[2], 'target'),
    publishedPort: match[1] === undefined ? 0 : parsePort(flag, text, match[1], 'published'),
    protocol: match[3] === undefined ? PortConfig_Protocol.PROTOCOL_TCP : parseProtocol(flag, text, match[3]),
  });
}

function parseBool(flag: string, original: string, text: string): boolean {
  switch (text.toLowerCase()) {
    case '':
    case 'true':
    case '1':
      return true;
    case 'false':
    case '0':
      return false;
    default:
      throw badValue(flag, original, `'${text}' must be true or false`);
  }
}

/** "type=bind,src=/a,dst=/b,readonly" (Docker's --mount). The type defaults to volume. */
export function parseMount(flag: string, text: string): Mount {
  const mount = Mount.fromPartial({ type: Mount_Type.TYPE_VOLUME });
  for (const field of text.split(',')) {
    const eq = field.indexOf('=');
    const key = field
      .slice(0, eq < 0 ? field.length : eq)
      .trim()
      .toLowerCase();
    const v = eq < 0 ? '' : field.slice(eq + 1).trim();
    switch (key) {
      case 'type':
        if (v === 'bind') mount.type = Mount_Type.TYPE_BIND;
        else if (v === 'volume') mount.type = Mount_Type.TYPE_VOLUME;
        else if (v === 'tmpfs') mount.type = Mount_Type.TYPE_TMPFS;
        else throw badValue(flag, text, 'type must be bind, volume or tmpfs');
        break;
      case 'source':
      case 'src':
        mount.source = v;
        break;
      case 'target':
      case 'destination':
      case 'dst':
        mount.target = v;
        break;
      case 'readonly':
      case 'ro':
        mount.readOnly = parseBool(flag, text, v);
        break;
      case 'tmpfs-size':
        mount.tmpfsSizeBytes = parseBytes(flag, v);
        break;
      default:
        throw badValue(flag, text, `unknown field '${key}': use type, source, target, readonly, tmpfs-size`);
    }
  }
  if (mount.target === '') throw badValue(flag, text, 'target= (or dst=) is required');
  if (!mount.target.startsWith('/')) throw badValue(flag, text, 'target must be an absolute path');
  if (mount.type === Mount_Type.TYPE_BIND && !mount.source.startsWith('/')) {
    throw badValue(flag, text, 'a bind mount needs an absolute source= path');
  }
  if (mount.type === Mount_Type.TYPE_TMPFS && mount.source !== '') {
    throw badValue(flag, text, 'a tmpfs mount takes no source');
  }
  if (mount.type !== Mount_Type.TYPE_TMPFS && mount.tmpfsSizeBytes !== 0) {
    throw badValue(flag, text, 'tmpfs-size is for tmpfs mounts only');
  }
  return mount;
}
