// The endpoint set a node's load balancer serves, and the one interface both data planes
// (nftables in the kernel, the userspace proxy) implement. The agent computes an LbConfig from
// the store; the data plane only makes the node match it.
import { ClusterError } from '../../common/errors';

export type LbProtocol = 'tcp' | 'udp';

export interface LbBackend {
  ip: string;
  port: number;
  /** Relative share of new connections (whole number ≥ 1); 1 when absent. */
  weight?: number;
  /** A draining backend gets no new connections; established ones continue. */
  draining?: boolean;
}

export interface LbFrontend {
  /** 'vip': a service VIP (address:port); 'published': a port on every local address of the node. */
  kind: 'vip' | 'published';
  protocol: LbProtocol;
  /** The VIP; ignored for 'published'. */
  address?: string;
  /** 0 when allPorts. */
  port: number;
  /**
   * A VIP on every port of the protocol (as a Swarm VIP forwards any port), each to the same
   * port of a backend: `port` and the backends' ports are 0. The kernel data plane only.
   */
  allPorts?: boolean;
  backends: LbBackend[];
  /** Source address for traffic to the backends when replies must come back through this node. */
  snatTo?: string;
}

export interface LbConfig {
  frontends: LbFrontend[];
}

export interface LoadBalancer {
  /** Makes the data plane match `desired` (the whole desired state, not a delta). */
  apply(desired: LbConfig): Promise<void>;
  /** Removes everything this instance programmed (rules, listeners, processes). */
  close(): Promise<void>;
}

/** Limit on weight slots per frontend: the nft numgen map and the proxy's ring are this big at most. */
export const MAX_WEIGHT_SLOTS = 1024;

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

export function isIpv4(value: string): boolean {
  return IPV4.test(value);
}

/** Identity of a frontend: two frontends with the same key cannot coexist on one node. */
export function frontendKey(fe: LbFrontend): string {
  return fe.kind === 'vip'
    ? `vip/${fe.protocol}/${fe.address ?? ''}/${fe.port}`
    : `published/${fe.protocol}/${fe.port}`;
}

export function backendKey(be: LbBackend): string {
  return `${be.ip}:${be.port}`;
}

/** Backends that take new connections, with their weights, in a stable order. */
export function activeBackends(fe: LbFrontend): Array<LbBackend & { weight: number }> {
  return fe.backends
    .filter((b) => b.draining !== true)
    .map((b) => ({ ...b, weight: b.weight ?? 1 }))
    .sort((a, b) => backendKey(a).localeCompare(backendKey(b)));
}

function invalid(message: string): ClusterError {
  return new ClusterError('INVALID_ARGUMENT', message);
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    throw invalid(`${what} must be a port 1-65535, got '${port}'`);
}

/** Rejects a config a data plane cannot program, with a message naming the offending frontend. */
export function validateConfig(config: LbConfig): void {
  const seen = new Set<string>();
  const snatByBackendIp = new Map<string, string>();
  for (const fe of config.frontends) {
    const key = frontendKey(fe);
    if (fe.protocol !== 'tcp' && fe.protocol !== 'udp') throw invalid(`${key}: protocol must be tcp or udp`);
    const allPorts = fe.allPorts === true;
    if (allPorts && (fe.kind !== 'vip' || fe.port !== 0)) {
      throw invalid(`${key}: only a vip frontend may take every port, and then its port is 0`);
    }
    if (!allPorts) checkPort(fe.port, `${key}: port`);
    if (fe.kind === 'vip' && (fe.address === undefined || !isIpv4(fe.address))) {
      throw invalid(`${key}: a vip frontend needs an IPv4 address, got '${fe.address ?? ''}'`);
    }
    if (seen.has(key)) throw invalid(`${key}: defined twice`);
    seen.add(key);
    if (fe.snatTo !== undefined && !isIpv4(fe.snatTo))
      throw invalid(`${key}: snatTo must be an IPv4 address, got '${fe.snatTo}'`);
    const backendsSeen = new Set<string>();
    let slots = 0;
    for (const be of fe.backends) {
      if (!isIpv4(be.ip)) throw invalid(`${key}: backend ip must be IPv4, got '${be.ip}'`);
      if (allPorts && be.port !== 0) {
        throw invalid(`${key}: a frontend on every port keeps the port: backend ${be.ip} port must be 0`);
      }
      if (!allPorts) checkPort(be.port, `${key}: backend ${be.ip} port`);
      const weight = be.weight ?? 1;
      if (!Number.isInteger(weight) || weight < 1)
        throw invalid(`${key}: backend ${backendKey(be)} weight must be a whole number ≥ 1, got '${weight}'`);
      if (backendsSeen.has(backendKey(be))) throw invalid(`${key}: backend ${backendKey(be)} listed twice`);
      backendsSeen.add(backendKey(be));
      if (be.draining !== true) slots += weight;
      if (fe.snatTo !== undefined) {
        // The kernel data plane picks the source address by backend IP after DNAT, so one
        // backend IP must map to one source address (true on an overlay: one node IP per network).
        const other = snatByBackendIp.get(be.ip);
        if (other !== undefined && other !== fe.snatTo) {
          throw invalid(
            `${key}: backend ${be.ip} is reached with snatTo ${fe.snatTo} here and ${other} elsewhere`,
          );
        }
        snatByBackendIp.set(be.ip, fe.snatTo);
      }
    }
    if (slots > MAX_WEIGHT_SLOTS) throw invalid(`${key}: total weight ${slots} exceeds ${MAX_WEIGHT_SLOTS}`);
  }
}

/**
 * The order in which new connections visit the active backends: each backend appears `weight`
 * times, spread out (nginx's smooth weighted round robin) so that weights 2:1 give a b a, not
 * a a b. Both data planes walk this ring, so they pick backends in the same proportions.
 */
export function weightedRing<T extends { weight: number }>(backends: readonly T[]): T[] {
  const current = backends.map(() => 0);
  const total = backends.reduce((sum, b) => sum + b.weight, 0);
  const ring: T[] = [];
  for (let slot = 0; slot < total; slot++) {
    let best = 0;
    for (let i = 0; i < backends.length; i++) {
      current[i] = (current[i] ?? 0) + (backends[i]?.weight ?? 0);
      if ((current[i] ?? 0) > (current[best] ?? 0)) best = i;
    }
    current[best] = (current[best] ?? 0) - total;
    const chosen = backends[best];
    if (chosen !== undefined) ring.push(chosen);
  }
  return ring;
}
