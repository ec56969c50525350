// IP address management for overlay networks, as a pure, deterministic state machine: subnets
// from a default pool, one VNI per network, and addresses on each network for task attachments,
// participating nodes and service VIPs. The state is rebuilt from the store's objects after a
// leader change, so an address held by any stored object is never handed out again.
import { ClusterError, invalidArgument } from '../../common/errors';

/** Docker's default-addr-pool: 10.0.0.0/8 split into /24 subnets. */
export const DEFAULT_POOL_BASE = '10.0.0.0';
export const DEFAULT_POOL_PREFIX = 8;
export const DEFAULT_SUBNET_PREFIX = 24;
/** VNIs below 4096 are left to VLAN-style uses (as Docker's overlay driver starts at 4096). */
export const VNI_MIN = 4096;
/** VXLAN carries a 24-bit VNI. */
export const VNI_MAX = 0xffffff;
/** Subnets smaller than /30 have no room for a gateway and one host. */
export const MAX_SUBNET_PREFIX = 30;

// ------------------------------------------------------------------ IPv4 helpers

/** An IPv4 address as an unsigned 32-bit number, or undefined when the text is not one. */
export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return undefined;
    const octet = Number(part);
    if (octet > 255) return undefined;
    value = value * 256 + octet;
  }
  return value;
}

export function formatIpv4(value: number): string {
  return [value >>> 24, (value >>> 16) & 255, (value >>> 8) & 255, value & 255].join('.');
}

export interface Subnet {
  /** The network address (host bits zero). */
  readonly base: number;
  readonly prefix: number;
}

const hostCount = (prefix: number) => 2 ** (32 - prefix);
export const broadcastOf = (subnet: Subnet) => subnet.base + hostCount(subnet.prefix) - 1;
export const formatSubnet = (subnet: Subnet) => `${formatIpv4(subnet.base)}/${subnet.prefix}`;
export const subnetContains = (subnet: Subnet, address: number) =>
  address >= subnet.base && address <= broadcastOf(subnet);
export const subnetsOverlap = (a: Subnet, b: Subnet) => a.base <= broadcastOf(b) && b.base <= broadcastOf(a);

/** Parses "a.b.c.d/n" with the host bits zero; throws an INVALID_ARGUMENT error otherwise. */
export function parseSubnet(text: string): Subnet {
  const match = /^([0-9.]+)\/(\d{1,2})$/.exec(text);
  const base = match ? parseIpv4(match[1] ?? '') : undefined;
  const prefix = match ? Number(match[2]) : NaN;
  if (base === undefined || !(prefix >= 8 && prefix <= MAX_SUBNET_PREFIX)) {
    throw invalidArgument(
      `invalid subnet '${text}': expected an IPv4 CIDR with a prefix from /8 to /${MAX_SUBNET_PREFIX}, such as 10.10.0.0/24`,
    );
  }
  if (base % hostCount(prefix) !== 0) {
    throw invalidArgument(
      `invalid subnet '${text}': host bits are set (did you mean ${formatIpv4(base - (base % hostCount(prefix)))}/${prefix}?)`,
    );
  }
  return { base, prefix };
}

/** The address of "a.b.c.d" or "a.b.c.d/n" (the form attachments store), or undefined. */
export function addressOf(text: string): number | undefined {
  return parseIpv4(text.split('/')[0] ?? '');
}

// ------------------------------------------------------------------ the store's objects

// Structural views of the stored objects, so the generated types fit as they are. `ipam` on a
// network is the allocated configuration (subnet and gateway chosen here) when the object carries
// one; otherwise the spec's. `attachments` on a node are its own addresses on each network.
interface IpamConfigView {
  readonly subnet: string;
  readonly gateway: string;
}
export interface NetworkView {
  readonly id: string;
  readonly vni: number;
  readonly spec?: { readonly ipam?: IpamConfigView | undefined } | undefined;
  readonly ipam?: IpamConfigView | undefined;
}
interface AttachmentView {
  readonly networkId: string;
  readonly addresses: readonly string[];
}
export interface ServiceView {
  readonly id: string;
  readonly endpoint?:
    { readonly virtualIps: readonly { readonly networkId: string; readonly addr: string }[] } | undefined;
}
export interface TaskView {
  readonly id: string;
  readonly networks: readonly AttachmentView[];
}
export interface NodeView {
  readonly id: string;
  readonly attachments?: readonly AttachmentView[] | undefined;
}

// ------------------------------------------------------------------ the allocator

/** Who holds an address: owners are unique per network, so allocation is idempotent. */
export type AddressOwner =
  | { readonly kind: 'task'; readonly id: string }
  | { readonly kind: 'node'; readonly id: string }
  | { readonly kind: 'vip'; readonly id: string };

const ownerKey = (owner: AddressOwner) => `${owner.kind}:${owner.id}`;

export interface NetworkAllocation {
  readonly networkId: string;
  readonly subnet: string;
  readonly gateway: string;
  readonly vni: number;
}

export interface NetworkRequest {
  /** CIDR; allocated from the default pool when absent. */
  readonly subnet?: string | undefined;
  /** Defaults to the first host address of the subnet. */
  readonly gateway?: string | undefined;
  /** A VNI already held (from the store); allocated when absent or 0. */
  readonly vni?: number | undefined;
}

interface NetworkState {
  readonly id: string;
  readonly subnet: Subnet;
  readonly gateway: number;
  readonly vni: number;
  /** address → owner key, and the reverse. */
  readonly holders: Map<number, string>;
  readonly byOwner: Map<string, number>;
  /** Next-fit cursor: a released address is not reused at once (as Docker's serial allocation). */
  cursor: number;
}

export interface IpamOptions {
  /** The pool subnets are carved from when a network names none. */
  readonly pool?: string;
  readonly subnetPrefix?: number;
}

export class Ipam {
  private readonly networks = new Map<string, NetworkState>();
  private readonly vnis = new Set<number>();
  private readonly pool: Subnet;
  private readonly subnetPrefix: number;

  constructor(options: IpamOptions = {}) {
    this.pool = parseSubnet(options.pool ?? `${DEFAULT_POOL_BASE}/${DEFAULT_POOL_PREFIX}`);
    this.subnetPrefix = options.subnetPrefix ?? DEFAULT_SUBNET_PREFIX;
    if (this.subnetPrefix < this.pool.prefix || this.subnetPrefix > MAX_SUBNET_PREFIX) {
      throw invalidArgument(
        `subnet size /${this.subnetPrefix} does not fit in pool ${formatSubnet(this.pool)}`,
      );
    }
  }

  /**
   * The state held by the store's objects. Networks first (their subnets and VNIs), then every
   * address the objects carry. An address a stored object holds twice (which this allocator never
   * writes) stays with the first holder; the second is reported in `conflicts` so the caller can
   * reallocate it.
   */
  static fromObjects(
    networks: readonly NetworkView[],
    services: readonly ServiceView[],
    tasks: readonly TaskView[],
    nodes: readonly NodeView[],
    options: IpamOptions = {},
  ): Ipam {
    const ipam = new Ipam(options);
    // Networks that carry a subnet go first so a network without one cannot take its range.
    const ordered = [...networks].sort(
      (a, b) => Number(configOf(b) !== undefined) - Number(configOf(a) !== undefined),
    );
    for (const network of ordered) {
      const config = configOf(network);
      ipam.allocateNetwork(network.id, {
        subnet: config?.subnet,
        gateway: config?.gateway || undefined,
        vni: network.vni || undefined,
      });
    }
    for (const service of services) {
      for (const vip of service.endpoint?.virtualIps ?? []) {
        ipam.restore(vip.networkId, { kind: 'vip', id: service.id }, vip.addr);
      }
    }
    for (const task of tasks) {
      for (const attachment of task.networks) {
        for (const address of attachment.addresses) {
          ipam.restore(attachment.networkId, { kind: 'task', id: task.id }, address);
        }
      }
    }
    for (const node of nodes) {
      for (const attachment of node.attachments ?? []) {
        for (const address of attachment.addresses) {
          ipam.restore(attachment.networkId, { kind: 'node', id: node.id }, address);
        }
      }
    }
    return ipam;
  }

  /** Objects whose stored address could not be restored (duplicate, outside the subnet...). */
  readonly conflicts: { networkId: string; owner: AddressOwner; address: string }[] = [];

  /**
   * Gives a network its subnet, gateway and VNI (idempotent: a known network keeps its own).
   * Throws INVALID_ARGUMENT for a malformed request and CONFLICT when the subnet overlaps
   * another network's, the VNI is taken, or the pool is exhausted.
   */
  allocateNetwork(networkId: string, request: NetworkRequest = {}): NetworkAllocation {
    const known = this.networks.get(networkId);
    if (known) return describe(known);

    const subnet =
      request.subnet !== undefined && request.subnet !== ''
        ? parseSubnet(request.subnet)
        : this.freeSubnet(networkId);
    const clash = [...this.networks.values()].find((n) => subnetsOverlap(n.subnet, subnet));
    if (clash) {
      throw new ClusterError(
        'CONFLICT',
        `subnet ${formatSubnet(subnet)} overlaps ${formatSubnet(clash.subnet)} of network ${clash.id}`,
        { subnet: formatSubnet(subnet), network: clash.id },
      );
    }
    let gateway = subnet.base + 1;
    if (request.gateway !== undefined && request.gateway !== '') {
      const parsed = parseIpv4(request.gateway);
      if (parsed === undefined || !isHost(subnet, parsed)) {
        throw invalidArgument(
          `gateway '${request.gateway}' is not a host address of subnet ${formatSubnet(subnet)}`,
        );
      }
      gateway = parsed;
    }
    let vni = request.vni;
    if (vni !== undefined) {
      if (!Number.isInteger(vni) || vni < 1 || vni > VNI_MAX) {
        throw invalidArgument(`VNI ${vni} is outside 1-${VNI_MAX}`);
      }
      if (this.vnis.has(vni)) {
        throw new ClusterError('CONFLICT', `VNI ${vni} is already used by another network`, {
          vni,
        });
      }
    } else {
      vni = this.freeVni();
    }
    const state: NetworkState = {
      id: networkId,
      subnet,
      gateway,
      vni,
      holders: new Map(),
      byOwner: new Map(),
      cursor: gateway,
    };
    this.networks.set(networkId, state);
    this.vnis.add(vni);
    return describe(state);
  }

  /** Frees a network's subnet, VNI and every address on it. */
  releaseNetwork(networkId: string): void {
    const state = this.networks.get(networkId);
    if (!state) return;
    this.networks.delete(networkId);
    this.vnis.delete(state.vni);
  }

  network(networkId: string): NetworkAllocation | undefined {
    const state = this.networks.get(networkId);
    return state ? describe(state) : undefined;
  }

  /**
   * An address on the network for the owner, as "a.b.c.d/prefix" (the form attachments and VIPs
   * are stored in). The owner's current address when it has one. Throws NOT_FOUND for an unknown
   * network and RESOURCE_EXHAUSTED when the subnet is full.
   */
  allocateAddress(networkId: string, owner: AddressOwner): string {
    const state = this.require(networkId);
    const key = ownerKey(owner);
    const held = state.byOwner.get(key);
    if (held !== undefined) return withPrefix(state, held);
    const first = state.subnet.base + 1;
    const last = broadcastOf(state.subnet) - 1;
    const span = last - first + 1;
    for (let step = 1; step <= span; step++) {
      const candidate = first + ((state.cursor - first + step) % span);
      if (candidate === state.gateway || state.holders.has(candidate)) continue;
      state.holders.set(candidate, key);
      state.byOwner.set(key, candidate);
      state.cursor = candidate;
      return withPrefix(state, candidate);
    }
    throw new ClusterError(
      'RESOURCE_EXHAUSTED',
      `no free address left on network ${networkId} (${formatSubnet(state.subnet)})`,
      { network: networkId },
    );
  }

  /** Frees the owner's address on the network (nothing when it holds none). */
  releaseAddress(networkId: string, owner: AddressOwner): void {
    const state = this.networks.get(networkId);
    if (!state) return;
    const key = ownerKey(owner);
    const held = state.byOwner.get(key);
    if (held === undefined) return;
    state.byOwner.delete(key);
    state.holders.delete(held);
  }

  /** Frees the owner's addresses on every network (a task or service removed, a node gone). */
  releaseOwner(owner: AddressOwner): void {
    for (const networkId of this.networks.keys()) this.releaseAddress(networkId, owner);
  }

  addressOf(networkId: string, owner: AddressOwner): string | undefined {
    const state = this.networks.get(networkId);
    const held = state?.byOwner.get(ownerKey(owner));
    return state && held !== undefined ? withPrefix(state, held) : undefined;
  }

  /** Every address held on the network, for checks and tests. */
  addresses(networkId: string): string[] {
    const state = this.networks.get(networkId);
    return state ? [...state.holders.keys()].sort((a, b) => a - b).map(formatIpv4) : [];
  }

  private restore(networkId: string, owner: AddressOwner, text: string): void {
    const state = this.networks.get(networkId);
    const address = addressOf(text);
    const key = ownerKey(owner);
    if (
      !state ||
      address === undefined ||
      !isHost(state.subnet, address) ||
      address === state.gateway ||
      (state.holders.get(address) ?? key) !== key ||
      (state.byOwner.get(key) ?? address) !== address
    ) {
      this.conflicts.push({ networkId, owner, address: text });
      return;
    }
    state.holders.set(address, key);
    state.byOwner.set(key, address);
    // Continue after the highest address in use, so a new leader does not reuse a just-freed one.
    if (address > state.cursor) state.cursor = address;
  }

  private require(networkId: string): NetworkState {
    const state = this.networks.get(networkId);
    if (!state) throw new ClusterError('NOT_FOUND', `network '${networkId}' not found`);
    return state;
  }

  /** The lowest subnet of the pool that overlaps no network's. */
  private freeSubnet(networkId: string): Subnet {
    const size = hostCount(this.subnetPrefix);
    const taken = [...this.networks.values()].map((n) => n.subnet);
    for (let base = this.pool.base; base <= broadcastOf(this.pool); base += size) {
      const candidate = { base, prefix: this.subnetPrefix };
      const clash = taken.find((s) => subnetsOverlap(s, candidate));
      // Skip past a larger clashing subnet at once rather than one /24 at a time.
      if (clash) base = Math.max(base, broadcastOf(clash) + 1 - size);
      else return candidate;
    }
    throw new ClusterError(
      'RESOURCE_EXHAUSTED',
      `no free /${this.subnetPrefix} subnet left in pool ${formatSubnet(this.pool)} for network ${networkId}`,
    );
  }

  private freeVni(): number {
    for (let vni = VNI_MIN; vni <= VNI_MAX; vni++) if (!this.vnis.has(vni)) return vni;
    throw new ClusterError('RESOURCE_EXHAUSTED', 'no free VNI left');
  }
}

function configOf(network: NetworkView): IpamConfigView | undefined {
  const config = network.ipam?.subnet ? network.ipam : network.spec?.ipam;
  return config?.subnet ? config : undefined;
}

/** A usable host address: not the network or broadcast address. */
function isHost(subnet: Subnet, address: number): boolean {
  return address > subnet.base && address < broadcastOf(subnet);
}

function withPrefix(state: NetworkState, address: number): string {
  return `${formatIpv4(address)}/${state.subnet.prefix}`;
}

function describe(state: NetworkState): NetworkAllocation {
  return {
    networkId: state.id,
    subnet: formatSubnet(state.subnet),
    gateway: formatIpv4(state.gateway),
    vni: state.vni,
  };
}

// ------------------------------------------------------------------ helpers for the allocator

export interface AttachmentRequest {
  readonly networkId: string;
  readonly aliases: readonly string[];
}

/** A task's network attachment as stored (the generated NetworkAttachment's shape). */
export interface AllocatedAttachment {
  networkId: string;
  addresses: string[];
  aliases: string[];
}

/**
 * One address per network the task attaches to, all or nothing: when a network is full or
 * unknown, what this call allocated is released and the error is thrown.
 */
export function allocateAttachments(
  ipam: Ipam,
  taskId: string,
  requests: readonly AttachmentRequest[],
): AllocatedAttachment[] {
  return allOrNothing(ipam, { kind: 'task', id: taskId }, requests, (request, address) => ({
    networkId: request.networkId,
    addresses: [address],
    aliases: [...request.aliases],
  }));
}

/** A service's VIP on each network (VIP mode; dnsrr services get none), all or nothing. */
export function allocateVips(
  ipam: Ipam,
  serviceId: string,
  networkIds: readonly string[],
): { networkId: string; addr: string }[] {
  return allOrNothing(
    ipam,
    { kind: 'vip', id: serviceId },
    networkIds.map((networkId) => ({ networkId })),
    (request, addr) => ({ networkId: request.networkId, addr }),
  );
}

function allOrNothing<R extends { readonly networkId: string }, T>(
  ipam: Ipam,
  owner: AddressOwner,
  requests: readonly R[],
  build: (request: R, address: string) => T,
): T[] {
  const fresh: string[] = [];
  try {
    return requests.map((request) => {
      const had = ipam.addressOf(request.networkId, owner) !== undefined;
      const address = ipam.allocateAddress(request.networkId, owner);
      if (!had) fresh.push(request.networkId);
      return build(request, address);
    });
  } catch (e) {
    for (const networkId of fresh) ipam.releaseAddress(networkId, owner);
    throw e;
  }
}
