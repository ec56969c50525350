// The overlay network driver on one host: per network a Linux bridge with a VXLAN device
// (nolearning, ARP answered from permanent neighbour entries), forwarding entries for remote
// endpoints written from a desired set, veths into task network namespaces, and masquerading
// of egress. Everything is named `cov<kind><vni>` so a restarted agent can find what a crashed
// one left behind.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';

import type { Logger } from '../../common/logger';

export const VXLAN_PORT = 4789;
/** 1500 on the underlay minus 50 bytes of VXLAN/UDP/IP/Ethernet headers. */
export const OVERLAY_MTU = 1450;
export const DEVICE_PREFIX = 'cov';
/** Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL). */
export const MAX_IFNAME = 15;
export const NFT_TABLE_PREFIX = 'cluster_overlay_';
/** A command that hangs (a stuck netlink call) fails rather than blocking the agent. */
export const COMMAND_TIMEOUT_MS = 10_000;

const vniHex = (vni: number) => vni.toString(16).padStart(6, '0');
export const bridgeName = (vni: number) => `${DEVICE_PREFIX}b${vniHex(vni)}`;
export const vxlanName = (vni: number) => `${DEVICE_PREFIX}x${vniHex(vni)}`;
export const nftTableName = (vni: number) => `${NFT_TABLE_PREFIX}${vniHex(vni)}`;
function endpointTag(endpointId: string): string {
  return createHash('sha256')
    .update(endpointId)
    .digest('hex')
    .slice(0, MAX_IFNAME - 10);
}
/** The host end of an endpoint's veth pair, and the end moved into the task's namespace. */
export const hostVethName = (vni: number, endpointId: string) =>
  `${DEVICE_PREFIX}h${vniHex(vni)}${endpointTag(endpointId)}`;
export const peerVethName = (vni: number, endpointId: string) =>
  `${DEVICE_PREFIX}p${vniHex(vni)}${endpointTag(endpointId)}`;

/** The VNI a device or table of ours carries in its name, or undefined when it is not ours. */
export function vniOfName(name: string): number | undefined {
  const match =
    new RegExp(`^${DEVICE_PREFIX}[bxhp]([0-9a-f]{6})`).exec(name) ??
    new RegExp(`^${NFT_TABLE_PREFIX}([0-9a-f]{6})$`).exec(name);
  return match?.[1] === undefined ? undefined : parseInt(match[1], 16);
}

/**
 * The MAC address of an overlay IP, as Docker derives it (02:42 then the four octets), so every
 * host knows a remote endpoint's MAC from its IP alone.
 */
export function macForIp(ip: string): string {
  const octets = bareIp(ip).split('.').map(Number);
  return ['02', '42', ...octets.map((o) => o.toString(16).padStart(2, '0'))].join(':');
}

const bareIp = (ip: string) => ip.split('/')[0] ?? ip;

export interface OverlayNetworkConfig {
  readonly vni: number;
  /** The network's subnet, CIDR. */
  readonly subnet: string;
  /** This node's address on the network (from the allocator); bare or CIDR. */
  readonly nodeIp: string;
}

export interface RemoteEndpoint {
  /** The endpoint's overlay IP (a task's, or a remote node's own). */
  readonly ip: string;
  /** Defaults to macForIp(ip). */
  readonly mac?: string;
  /** The underlay address of the host it lives on. */
  readonly host: string;
}

export interface AttachRequest {
  /** Unique per attachment (the task id, say): names the veth pair. */
  readonly endpointId: string;
  /** The task's network namespace: a PID, a path, or a name under /var/run/netns. */
  readonly netns: number | string;
  /** Its allocated address, bare or CIDR. */
  readonly ip: string;
  readonly mac?: string;
  readonly ifname?: string;
  /** Route everything via this node's IP on the network (false for a task's second network). */
  readonly defaultRoute?: boolean;
}

export interface OverlayDriverOptions {
  /** This host's underlay address: VXLAN packets leave from it. */
  readonly underlayIp: string;
  /**
   * The network namespace (path) that plays the host, when that is not the agent's own: the
   * namespace lab and tests run several hosts on one kernel.
   */
  readonly hostNetns?: string;
  readonly logger?: Logger;
}

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')} failed: ${stderr.trim()}`);
    this.name = 'CommandError';
  }
}

/** Runs argv, optionally feeding stdin; resolves with stdout. */
export function runCommand(argv: readonly string[], stdin?: string): Promise<string> {
  const [file, ...args] = argv;
  if (file === undefined) return Promise.reject(new Error('empty command'));
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new CommandError(argv, stderr || error.message));
        else resolve(stdout);
      },
    );
    if (stdin !== undefined) child.stdin?.end(stdin);
  });
}

/** The path of a network namespace given as a PID, a path or a name. */
export function netnsPath(netns: number | string): string {
  if (typeof netns === 'number') return `/proc/${netns}/ns/net`;
  return netns.includes('/') ? netns : `/var/run/netns/${netns}`;
}

interface Forwarding {
  readonly ip: string;
  readonly mac: string;
  readonly host: string;
}

export interface ForwardingPlan {
  readonly add: readonly Forwarding[];
  readonly remove: readonly Forwarding[];
}

/** What to write and delete to go from the entries in the kernel to the desired ones. */
export function planForwarding(
  current: readonly Forwarding[],
  desired: readonly RemoteEndpoint[],
): ForwardingPlan {
  const key = (f: Forwarding) => `${f.ip}|${f.mac}|${f.host}`;
  const wanted = new Map<string, Forwarding>();
  for (const endpoint of desired) {
    const entry = {
      ip: bareIp(endpoint.ip),
      mac: (endpoint.mac ?? macForIp(endpoint.ip)).toLowerCase(),
      host: endpoint.host,
    };
    wanted.set(key(entry), entry);
  }
  const have = new Map(current.map((f) => [key(f), f]));
  return {
    add: [...wanted].filter(([k]) => !have.has(k)).map(([, f]) => f),
    remove: [...have].filter(([k]) => !wanted.has(k)).map(([, f]) => f),
  };
}

interface LinkJson {
  readonly ifname: string;
}
interface NeighJson {
  readonly dst?: string;
  readonly lladdr?: string;
  readonly state?: readonly string[];
}
interface FdbJson {
  readonly mac?: string;
  readonly dst?: string;
}

export class OverlayDriver {
  private readonly networks = new Map<number, OverlayNetworkConfig>();

  constructor(private readonly options: OverlayDriverOptions) {}

  /**
   * Removes devices and nft tables of ours whose VNI is not in `keep`: what a crashed agent or a
   * network removed while the agent was down left behind. Call at start, before ensureNetwork.
   */
  async cleanupStale(keep: Iterable<number> = []): Promise<number[]> {
    const kept = new Set(keep);
    const removed = new Set<number>();
    const links = await this.links();
    // Veths first (deleting one end removes both), then VXLAN devices, then bridges.
    const order = ['h', 'p', 'x', 'b'];
    const stale = links
      .map((name) => ({ name, vni: vniOfName(name) }))
      .filter((l): l is { name: string; vni: number } => l.vni !== undefined && !kept.has(l.vni))
      .sort((a, b) => order.indexOf(a.name[3] ?? '') - order.indexOf(b.name[3] ?? ''));
    for (const link of stale) {
      await this.deleteLink(link.name);
      removed.add(link.vni);
    }
    for (const table of await this.nftTables()) {
      const vni = vniOfName(table);
      if (vni === undefined || kept.has(vni)) continue;
      await this.host(['nft', 'delete', 'table', 'ip', table]);
      removed.add(vni);
    }
    if (removed.size > 0)
      this.options.logger?.info({ vnis: [...removed] }, 'overlay: removed stale networks');
    return [...removed].sort((a, b) => a - b);
  }

  /** Creates (or repairs) the network's bridge, VXLAN device, node address and NAT table. */
  async ensureNetwork(config: OverlayNetworkConfig): Promise<void> {
    const prefix = config.subnet.split('/')[1];
    if (prefix === undefined) throw new Error(`subnet '${config.subnet}' is not CIDR`);
    const bridge = bridgeName(config.vni);
    const vxlan = vxlanName(config.vni);
    const links = new Set(await this.links());
    // A device left with other settings (another underlay address, learning on) is rebuilt.
    if (links.has(vxlan) && !(await this.vxlanMatches(vxlan, config.vni))) {
      await this.deleteLink(vxlan);
      links.delete(vxlan);
    }
    const nodeIp = bareIp(config.nodeIp);
    // Tasks route through this host: forwarding must be on in its namespace.
    await this.host(['sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
    const batch: string[] = [];
    if (!links.has(bridge)) {
      batch.push(`link add ${bridge} type bridge`);
    }
    batch.push(`link set ${bridge} address ${macForIp(nodeIp)} mtu ${OVERLAY_MTU}`);
    if (!links.has(vxlan)) {
      // nolearning: remote MACs come only from the entries we write; proxy: the device answers
      // ARP from the neighbour table, so no broadcast ever crosses the underlay.
      batch.push(
        `link add ${vxlan} mtu ${OVERLAY_MTU} type vxlan id ${config.vni} dstport ${VXLAN_PORT} local ${this.options.underlayIp} nolearning proxy`,
      );
    }
    batch.push(`link set ${vxlan} master ${bridge} up`);
    batch.push(`address replace ${nodeIp}/${prefix} dev ${bridge}`);
    batch.push(`link set ${bridge} up`);
    await this.host(['ip', '-batch', '-'], batch.join('\n') + '\n');
    const table = nftTableName(config.vni);
    if (!(await this.haveNft())) {
      // The userspace load balancer runs without nftables; egress is then not masqueraded.
      this.options.logger?.warn(
        { vni: config.vni },
        'overlay: nft not found; egress from tasks is not masqueraded',
      );
      this.networks.set(config.vni, config);
      return;
    }
    // Declare, delete and recreate in one transaction: idempotent and atomic.
    await this.host(
      ['nft', '-f', '-'],
      [
        `table ip ${table}`,
        `delete table ip ${table}`,
        `table ip ${table} {`,
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        `    ip saddr ${config.subnet} ip daddr != ${config.subnet} masquerade`,
        '  }',
        '}',
        '',
      ].join('\n'),
    );
    this.networks.set(config.vni, config);
  }

  /**
   * Makes the network's forwarding entries exactly the desired remote endpoints: a bridge FDB
   * entry (MAC → remote host) and a permanent neighbour entry (IP → MAC) for each. Reads what the
   * kernel holds, so it converges after a restart too.
   */
  async setRemoteEndpoints(vni: number, desired: readonly RemoteEndpoint[]): Promise<ForwardingPlan> {
    const plan = planForwarding(await this.forwarding(vni), desired);
    const vxlan = vxlanName(vni);
    const ip: string[] = [];
    const bridge: string[] = [];
    for (const entry of plan.remove) {
      // Half-applied entries lack one side: delete only the side the kernel holds.
      if (entry.host !== '') bridge.push(`fdb del ${entry.mac} dev ${vxlan} dst ${entry.host} self`);
      if (entry.ip !== '') ip.push(`neigh del ${entry.ip} dev ${vxlan}`);
    }
    for (const entry of plan.add) {
      bridge.push(`fdb replace ${entry.mac} dev ${vxlan} dst ${entry.host} self permanent`);
      ip.push(`neigh replace ${entry.ip} lladdr ${entry.mac} dev ${vxlan} nud permanent`);
    }
    // The FDB first on removal is harmless; on addition the neighbour is useless without it.
    if (bridge.length > 0) await this.host(['bridge', '-batch', '-'], bridge.join('\n') + '\n');
    if (ip.length > 0) await this.host(['ip', '-batch', '-'], ip.join('\n') + '\n');
    return plan;
  }

  /** The entries the kernel holds for the network, joined from its neighbour and FDB tables. */
  async forwarding(vni: number): Promise<Forwarding[]> {
    const vxlan = vxlanName(vni);
    const neighbours = JSON.parse(
      (await this.host(['ip', '-j', 'neigh', 'show', 'dev', vxlan])) || '[]',
    ) as NeighJson[];
    const fdb = JSON.parse(
      (await this.host(['bridge', '-j', 'fdb', 'show', 'dev', vxlan])) || '[]',
    ) as FdbJson[];
    const hostOf = new Map<string, string>();
    for (const entry of fdb) {
      if (entry.mac && entry.dst) hostOf.set(entry.mac.toLowerCase(), entry.dst);
    }
    const entries: Forwarding[] = [];
    for (const n of neighbours) {
      if (!n.dst || !n.lladdr) continue;
      const mac = n.lladdr.toLowerCase();
      entries.push({ ip: n.dst, mac, host: hostOf.get(mac) ?? '' });
      hostOf.delete(mac);
    }
    // An FDB entry without its neighbour (a half-applied change) is planned for removal.
    for (const [mac, host] of hostOf) entries.push({ ip: '', mac, host });
    return entries;
  }

  /**
   * Plumbs a task into the network: a veth whose host end joins the bridge and whose other end,
   * in the task's namespace, gets the task's IP, MAC, and a default route via this node's IP.
   * Idempotent: an existing veth of the same endpoint is replaced.
   */
  async attach(vni: number, request: AttachRequest): Promise<{ hostIfname: string }> {
    const network = this.networks.get(vni);
    if (!network) throw new Error(`overlay network with VNI ${vni} is not set up on this host`);
    const prefix = network.subnet.split('/')[1] ?? '32';
    const hostIfname = hostVethName(vni, request.endpointId);
    const peer = peerVethName(vni, request.endpointId);
    const target = netnsPath(request.netns);
    const ifname = request.ifname ?? 'eth0';
    const links = new Set(await this.links());
    const batch: string[] = [];
    if (links.has(hostIfname)) batch.push(`link del ${hostIfname}`);
    if (links.has(peer)) batch.push(`link del ${peer}`);
    batch.push(
      `link add ${hostIfname} mtu ${OVERLAY_MTU} type veth peer name ${peer} mtu ${OVERLAY_MTU}`,
      `link set ${hostIfname} master ${bridgeName(vni)} up`,
      // Hairpin: a task reaching a VIP or published port whose chosen backend is itself gets the
      // DNATed packet back through the port it came from (the bridge drops that otherwise).
      `link set ${hostIfname} type bridge_slave hairpin on`,
      `link set ${peer} netns ${target}`,
    );
    await this.host(['ip', '-batch', '-'], batch.join('\n') + '\n');
    const inside = [
      `link set ${peer} name ${ifname}`,
      `link set ${ifname} address ${(request.mac ?? macForIp(request.ip)).toLowerCase()}`,
      `address add ${bareIp(request.ip)}/${prefix} dev ${ifname}`,
      `link set ${ifname} up`,
      'link set lo up',
    ];
    if (request.defaultRoute !== false) {
      inside.push(`route replace default via ${bareIp(network.nodeIp)} dev ${ifname}`);
    }
    try {
      await runCommand(['nsenter', `--net=${target}`, 'ip', '-batch', '-'], inside.join('\n') + '\n');
    } catch (e) {
      await this.deleteLink(hostIfname);
      throw e;
    }
    return { hostIfname };
  }

  /** Removes the endpoint's veth pair (its namespace end goes with it). */
  async detach(vni: number, endpointId: string): Promise<void> {
    await this.deleteLink(hostVethName(vni, endpointId));
  }

  /** Removes everything the network created on this host. */
  async removeNetwork(vni: number): Promise<void> {
    for (const name of await this.links()) {
      if (vniOfName(name) === vni && /^cov[hp]/.test(name)) await this.deleteLink(name);
    }
    await this.deleteLink(vxlanName(vni));
    await this.deleteLink(bridgeName(vni));
    if ((await this.nftTables()).includes(nftTableName(vni))) {
      await this.host(['nft', 'delete', 'table', 'ip', nftTableName(vni)]);
    }
    this.networks.delete(vni);
  }

  private async vxlanMatches(name: string, vni: number): Promise<boolean> {
    const [link] = JSON.parse(await this.host(['ip', '-d', '-j', 'link', 'show', name])) as {
      linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
    }[];
    const data = link?.linkinfo?.info_data;
    return (
      link?.linkinfo?.info_kind === 'vxlan' &&
      data?.id === vni &&
      data.local === this.options.underlayIp &&
      data.port === VXLAN_PORT &&
      data.learning === false &&
      data.proxy === true
    );
  }

  private host(argv: readonly string[], stdin?: string): Promise<string> {
    const namespace = this.options.hostNetns;
    return runCommand(namespace ? ['nsenter', `--net=${namespace}`, ...argv] : argv, stdin);
  }

  private async links(): Promise<string[]> {
    const links = JSON.parse((await this.host(['ip', '-j', 'link', 'show'])) || '[]') as LinkJson[];
    return links.map((l) => l.ifname);
  }

  private nftFound: boolean | undefined;

  /** Whether the nft command exists here (asked once). */
  private async haveNft(): Promise<boolean> {
    if (this.nftFound === undefined) {
      try {
        await this.host(['nft', '--version']);
        this.nftFound = true;
      } catch (e) {
        if (!(e instanceof CommandError && /ENOENT/.test(e.stderr))) throw e;
        this.nftFound = false;
      }
    }
    return this.nftFound;
  }

  private async nftTables(): Promise<string[]> {
    if (!(await this.haveNft())) return [];
    const out = JSON.parse(await this.host(['nft', '-j', 'list', 'tables', 'ip'])) as {
      nftables?: { table?: { name: string } }[];
    };
    return (out.nftables ?? []).flatMap((item) => (item.table ? [item.table.name] : []));
  }

  private async deleteLink(name: string): Promise<void> {
    try {
      await this.host(['ip', 'link', 'del', name]);
    } catch (e) {
      // Already gone (a veth removed with its peer, a namespace that vanished): nothing to do.
      if (!(e instanceof CommandError && /Cannot find device|does not exist/.test(e.stderr))) throw e;
    }
  }
}
