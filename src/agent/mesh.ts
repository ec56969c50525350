// The overlay networks on one node (issue 6): per network (the ingress network and every user
// network this node runs a task of) a bridge + VXLAN with the remote endpoints the leader lists;
// each local task plumbed into each of its networks before it is reported RUNNING; a load
// balancer (nftables, or the userspace proxy) answering every ingress-published port on this
// host and every service VIP for the containers here; and an embedded DNS server per user network
// answering service names from the same endpoint set. Replies come back through this node
// because new connections are source-NATed to the node's address on the backend's network.
import { readFileSync } from 'node:fs';
import type { MeshNetwork, MeshState } from '../gen/cluster/v1/dispatcher';
import { PortConfig_Protocol, type Task } from '../gen/cluster/v1/objects';
import type { Logger } from '../common/logger';
import { DnsServer, upstreamsFromResolvConf, type DnsRecordSet } from './dns';
import { NftLoadBalancer } from './lb/nft';
import { UserspaceLoadBalancer } from './lb/proxy';
import type { LbConfig, LbFrontend, LoadBalancer } from './lb/types';
import { bridgeName, OverlayDriver, runCommand } from './network/overlay';
import type { ContainerInfo, PrepareOptions, Runtime, RuntimeDescription } from './runtime';

/** The nft table of this node's load balancer (the overlay driver's NAT tables are its own). */
export const MESH_NFT_TABLE = 'cluster_mesh';
/** Pause before applying the mesh again after a failure. */
const RETRY_MS = 1000;
/** How long a starting task waits for its networks to be set up on this host. */
const NETWORK_WAIT_MS = 30_000;
/** The embedded DNS server's port on each network (containers know no other). */
export const DNS_PORT = 53;
const RESOLV_CONF = '/etc/resolv.conf';

/** `nftables`: the kernel data plane (default); `userspace`: the proxy in this process. */
export type LbMode = 'nftables' | 'userspace';

export interface MeshOptions {
  /** Default 'nftables'; the userspace proxy is used anyway when nft is not available. */
  lb?: LbMode;
  /** The DNS servers' port (tests); DNS_PORT otherwise. */
  dnsPort?: number;
}

const bare = (ip: string) => ip.split('/')[0] ?? ip;
const protocolOf = (p: PortConfig_Protocol) => (p === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp');

/** One network as this node programs it. */
interface LocalNetwork {
  networkId: string;
  vni: number;
  subnet: string;
  /** CIDR. */
  nodeAddress: string;
  endpoints: { ip: string; host: string }[];
  /** The VIPs of its services (bare), held as /32 on the bridge so containers reach them. */
  vips: string[];
  user?: MeshNetwork;
}

/** A task's attachment as plumbed: the network and its address there. */
interface Plumbing {
  taskId: string;
  attachments: { networkId: string; ip: string }[];
}

/** The DNS records of a user network: service → VIP (or task IPs), tasks.service, aliases. */
export function dnsRecordsOf(network: MeshNetwork): DnsRecordSet {
  const aliases: Record<string, string[]> = {};
  for (const service of network.services) {
    const targets = service.vip !== '' ? [bare(service.vip)] : service.backends;
    for (const alias of service.aliases) aliases[alias] = [...(aliases[alias] ?? []), ...targets];
  }
  return {
    services: network.services.map((s) => ({
      name: s.name,
      vip: s.vip === '' ? undefined : bare(s.vip),
      taskIps: s.backends,
    })),
    aliases,
  };
}

/**
 * The load balancer's endpoint set: every ingress-published port, and every service VIP of the
 * user networks. The kernel forwards every port of a VIP; the userspace proxy can only listen on
 * the ports the service declares.
 */
export function lbConfigOf(state: MeshState, networks: readonly LocalNetwork[], mode: LbMode): LbConfig {
  const frontends: LbFrontend[] = state.ports.map((p) => ({
    kind: 'published',
    protocol: protocolOf(p.protocol),
    port: p.publishedPort,
    backends: p.backends.map((ip) => ({ ip, port: p.targetPort })),
    snatTo: bare(state.nodeAddress),
  }));
  for (const network of networks) {
    for (const service of network.user?.services ?? []) {
      if (service.vip === '') continue;
      const address = bare(service.vip);
      const snatTo = bare(network.nodeAddress);
      if (mode === 'nftables') {
        for (const protocol of ['tcp', 'udp'] as const) {
          frontends.push({
            kind: 'vip',
            protocol,
            address,
            port: 0,
            allPorts: true,
            backends: service.backends.map((ip) => ({ ip, port: 0 })),
            snatTo,
          });
        }
        continue;
      }
      const seen = new Set<string>();
      for (const port of service.ports) {
        const protocol = protocolOf(port.protocol);
        if (seen.has(`${protocol}/${port.targetPort}`)) continue;
        seen.add(`${protocol}/${port.targetPort}`);
        frontends.push({
          kind: 'vip',
          protocol,
          address,
          port: port.targetPort,
          backends: service.backends.map((ip) => ({ ip, port: port.targetPort })),
          snatTo,
        });
      }
    }
  }
  return { frontends };
}

export class Mesh {
  private driver: OverlayDriver | undefined;
  /** The apply under way, so that a teardown waits for it before removing what it made. */
  private inFlight: Promise<void> = Promise.resolve();
  private driverUnderlay = '';
  /** networkId → what was set up, and the key of its settings (rebuilt when they change). */
  private readonly up = new Map<string, { network: LocalNetwork; key: string }>();
  private lb: LoadBalancer | undefined;
  private lbMode: LbMode;
  private readonly dns = new Map<string, { server: DnsServer; host: string }>();
  private latest: MeshState | undefined;
  private running = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private readyWaiters: (() => void)[] = [];
  /** Container id → the task's attachments, for the containers prepared here. */
  private readonly plumbing = new Map<string, Plumbing>();
  private ingressId = '';

  constructor(
    private readonly logger: Logger,
    private readonly options: MeshOptions = {},
  ) {
    this.lbMode = options.lb ?? 'nftables';
  }

  /** The data plane in use (userspace when nftables was asked for but nft is not available). */
  get loadBalancerMode(): LbMode {
    return this.lbMode;
  }

  /** Takes the leader's latest view; applied at once, or after the one in progress. */
  apply(state: MeshState): void {
    this.latest = state;
    this.kick();
  }

  private kick(): void {
    if (this.running || this.closed || this.latest === undefined) return;
    const state = this.latest;
    this.latest = undefined;
    this.running = true;
    this.inFlight = this.applyNow(state)
      .catch((err: unknown) => {
        this.logger.warn({ err }, 'mesh: could not apply the overlay networks; retrying');
        // Keep the newest state: a failed one is retried unless a newer one came meanwhile.
        this.latest ??= state;
        clearTimeout(this.retry);
        this.retry = setTimeout(() => this.kick(), RETRY_MS);
      })
      .finally(() => {
        this.running = false;
        if (this.retry === undefined) this.kick();
      });
  }

  /** The networks this node must have, from the leader's view. */
  private wanted(state: MeshState): LocalNetwork[] {
    const out: LocalNetwork[] = [];
    const ingress = state.ingress;
    const subnet = ingress?.spec?.ipam?.subnet ?? '';
    this.ingressId = ingress?.id ?? this.ingressId;
    if (ingress !== undefined && subnet !== '' && state.nodeAddress !== '') {
      out.push({
        networkId: ingress.id,
        vni: ingress.vni,
        subnet,
        nodeAddress: state.nodeAddress,
        endpoints: state.endpoints.map((e) => ({ ip: e.ip, host: e.host })),
        vips: [],
      });
    }
    for (const user of state.networks) {
      const network = user.network;
      const userSubnet = network?.spec?.ipam?.subnet ?? '';
      if (network === undefined || userSubnet === '' || network.vni === 0 || user.nodeAddress === '')
        continue;
      out.push({
        networkId: network.id,
        vni: network.vni,
        subnet: userSubnet,
        nodeAddress: user.nodeAddress,
        endpoints: user.endpoints.map((e) => ({ ip: e.ip, host: e.host })),
        vips: user.services.filter((s) => s.vip !== '').map((s) => bare(s.vip)),
        user,
      });
    }
    return out;
  }

  private async applyNow(state: MeshState): Promise<void> {
    this.retry = undefined;
    if (!state.underlayAddr) return;
    const wanted = this.wanted(state);
    if (this.driver === undefined || this.driverUnderlay !== state.underlayAddr) {
      this.driver = new OverlayDriver({ underlayIp: state.underlayAddr, logger: this.logger });
      this.driverUnderlay = state.underlayAddr;
      this.up.clear();
      // What a previous agent left for networks that are gone.
      await this.driver.cleanupStale(wanted.map((n) => n.vni));
    }
    const driver = this.driver;
    const wantedIds = new Set(wanted.map((n) => n.networkId));
    // Networks this node no longer takes part in: their devices, VIPs and DNS server go.
    for (const [networkId, held] of this.up) {
      if (wantedIds.has(networkId) && held.network.vni === wanted.find((n) => n.networkId === networkId)?.vni)
        continue;
      await this.stopDns(networkId);
      await driver.removeNetwork(held.network.vni);
      this.up.delete(networkId);
      this.logger.info({ networkId, vni: held.network.vni }, 'mesh: network removed from this node');
    }
    for (const network of wanted) {
      const key = `${network.vni}|${network.subnet}|${network.nodeAddress}|${state.underlayAddr}`;
      let held = this.up.get(network.networkId);
      if (held?.key !== key) {
        await driver.ensureNetwork({ vni: network.vni, subnet: network.subnet, nodeIp: network.nodeAddress });
        // Containers reach VIPs through this host; it must not tell them to go elsewhere.
        await runCommand(['sysctl', '-q', '-w', `net.ipv4.conf.${bridgeName(network.vni)}.send_redirects=0`]);
        held = { network, key };
        this.up.set(network.networkId, held);
        this.logger.info(
          {
            networkId: network.networkId,
            vni: network.vni,
            subnet: network.subnet,
            nodeIp: network.nodeAddress,
          },
          'mesh: network up',
        );
      }
      held.network = network;
      await driver.setRemoteEndpoints(network.vni, network.endpoints);
      await this.syncVips(network);
    }
    for (const resolve of this.readyWaiters.splice(0)) resolve();
    await this.loadBalancer().then((lb) => lb.apply(lbConfigOf(state, wanted, this.lbMode)));
    for (const network of wanted) {
      if (network.user === undefined) continue;
      // A DNS server that cannot bind (port 53 taken on the host) must not hold the data plane
      // back: it is logged and tried again with the next update.
      await this.syncDns(network, network.user).catch((err: unknown) =>
        this.logger.warn({ err, networkId: network.networkId }, 'mesh: DNS server not running'),
      );
    }
  }

  /**
   * The VIPs of the network's services as /32 on its bridge: the host answers ARP for them (the
   * VXLAN device answers ARP from its own table, so no other host does). Read from the kernel,
   * so VIPs a previous agent left are removed too.
   */
  private async syncVips(network: LocalNetwork): Promise<void> {
    const bridge = bridgeName(network.vni);
    const shown = JSON.parse(
      (await runCommand(['ip', '-j', '-4', 'address', 'show', 'dev', bridge])) || '[]',
    ) as { addr_info?: { local?: string; prefixlen?: number }[] }[];
    const held = new Set(
      (shown[0]?.addr_info ?? []).filter((a) => a.prefixlen === 32 && a.local).map((a) => a.local ?? ''),
    );
    const wanted = new Set(network.vips);
    const batch: string[] = [];
    for (const vip of held) if (!wanted.has(vip)) batch.push(`address del ${vip}/32 dev ${bridge}`);
    for (const vip of wanted) if (!held.has(vip)) batch.push(`address replace ${vip}/32 dev ${bridge}`);
    if (batch.length > 0) await runCommand(['ip', '-batch', '-'], batch.join('\n') + '\n');
  }

  private async loadBalancer(): Promise<LoadBalancer> {
    if (this.lb !== undefined) return this.lb;
    if (this.lbMode === 'nftables') {
      const nft = new NftLoadBalancer({ table: MESH_NFT_TABLE });
      try {
        await nft.checkAvailable();
        this.lb = nft;
        return nft;
      } catch (err) {
        this.logger.warn({ err }, 'mesh: nftables is not available; using the userspace proxy');
        this.lbMode = 'userspace';
      }
    }
    this.lb = new UserspaceLoadBalancer();
    this.logger.info('mesh: load balancer in userspace');
    return this.lb;
  }

  private async syncDns(network: LocalNetwork, user: MeshNetwork): Promise<void> {
    const host = bare(network.nodeAddress);
    let running = this.dns.get(network.networkId);
    if (running !== undefined && running.host !== host) {
      await this.stopDns(network.networkId);
      running = undefined;
    }
    if (running === undefined) {
      const server = new DnsServer({
        host,
        port: this.options.dnsPort ?? DNS_PORT,
        upstreams: hostResolvers(),
        logger: this.logger,
      });
      server.update(dnsRecordsOf(user));
      try {
        await server.start();
      } catch (err) {
        await server.stop().catch(() => undefined);
        throw err;
      }
      this.dns.set(network.networkId, { server, host });
      this.logger.info({ networkId: network.networkId, host }, 'mesh: DNS server up');
      return;
    }
    running.server.update(dnsRecordsOf(user));
  }

  private async stopDns(networkId: string): Promise<void> {
    const running = this.dns.get(networkId);
    this.dns.delete(networkId);
    await running?.server.stop();
  }

  /** Resolves once every network in `networkIds` is set up here. */
  private waitForNetworks(networkIds: readonly string[]): Promise<void> {
    const ready = () => networkIds.every((id) => this.up.has(id));
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== check);
        reject(new Error(`the task's networks are not set up on this node after ${NETWORK_WAIT_MS} ms`));
      }, NETWORK_WAIT_MS);
      const check = () => {
        if (!ready()) {
          this.readyWaiters.push(check);
          return;
        }
        clearTimeout(timer);
        resolve();
      };
      this.readyWaiters.push(check);
    });
  }

  /** The task's attachments in plumbing order: the ingress first (the default route), then its own. */
  private attachmentsOf(task: Task): { networkId: string; ip: string }[] {
    const own = (task.spec?.networks ?? []).map((n) => n.target);
    const ordered = [
      ...task.networks.filter((n) => !own.includes(n.networkId)),
      ...own.flatMap((id) => task.networks.filter((n) => n.networkId === id)),
    ];
    return ordered.flatMap((n) => (n.addresses[0] ? [{ networkId: n.networkId, ip: n.addresses[0] }] : []));
  }

  /** The runtime with the mesh's plumbing around container start and removal. */
  wrap(inner: Runtime): Runtime {
    const attach = async (containerId: string) => {
      const plumbing = this.plumbing.get(containerId);
      if (plumbing === undefined) return;
      const info = await inner.inspect(containerId);
      if (!info || info.pid <= 0) return;
      await this.waitForNetworks(plumbing.attachments.map((a) => a.networkId));
      const driver = this.driver;
      if (driver === undefined) throw new Error('the overlay networks are not set up on this node');
      for (const [i, attachment] of plumbing.attachments.entries()) {
        const vni = this.up.get(attachment.networkId)?.network.vni;
        if (vni === undefined) throw new Error(`network ${attachment.networkId} is not set up on this node`);
        await driver.attach(vni, {
          endpointId: plumbing.taskId,
          netns: info.pid,
          ip: attachment.ip,
          ifname: `eth${i}`,
          defaultRoute: i === 0,
        });
      }
    };
    return {
      name: inner.name,
      describe: (): Promise<RuntimeDescription> => inner.describe(),
      ping: (): Promise<void> => inner.ping(),
      prepare: async (task: Task, nodeId: string, options?: PrepareOptions): Promise<string> => {
        const attachments = this.attachmentsOf(task);
        let prepared = task;
        const userNetworks = attachments.map((a) => a.networkId).filter((id) => id !== this.ingressId);
        const container = task.spec?.container;
        if (userNetworks.length > 0 && container !== undefined && !container.dnsConfig?.nameservers.length) {
          // The embedded DNS server on its first user network is the container's resolver.
          await this.waitForNetworks(userNetworks);
          const first = this.up.get(userNetworks[0] ?? '');
          if (first !== undefined) {
            prepared = structuredClone(task);
            const spec = prepared.spec?.container;
            if (spec !== undefined) {
              spec.dnsConfig = {
                nameservers: [bare(first.network.nodeAddress)],
                search: container.dnsConfig?.search ?? [],
                options: container.dnsConfig?.options ?? [],
              };
            }
          }
        }
        const id = await inner.prepare(prepared, nodeId, options);
        if (attachments.length > 0) this.plumbing.set(id, { taskId: task.id, attachments });
        return id;
      },
      start: async (containerId: string): Promise<void> => {
        await inner.start(containerId);
        await attach(containerId);
      },
      wait: (containerId: string, signal: AbortSignal): Promise<number> => inner.wait(containerId, signal),
      stop: (containerId: string, graceMs: number): Promise<void> => inner.stop(containerId, graceMs),
      remove: async (containerId: string): Promise<void> => {
        await inner.remove(containerId);
        const plumbing = this.plumbing.get(containerId);
        this.plumbing.delete(containerId);
        // The veths died with the container's namespace; this removes host ends left over.
        for (const attachment of plumbing?.attachments ?? []) {
          const vni = this.up.get(attachment.networkId)?.network.vni;
          if (vni === undefined || this.driver === undefined || plumbing === undefined) continue;
          await this.driver.detach(vni, plumbing.taskId).catch((err: unknown) => {
            this.logger.warn({ err, taskId: plumbing.taskId }, 'mesh: could not detach a task');
          });
        }
      },
      inspect: (containerId: string): Promise<ContainerInfo | undefined> => inner.inspect(containerId),
      adopt: (nodeId: string): Promise<ContainerInfo[]> => inner.adopt(nodeId),
      health: inner.health?.bind(inner),
      exec: inner.exec?.bind(inner),
      logs: inner.logs?.bind(inner),
    };
  }

  /**
   * For `cluster leave`: stops, then removes what this node programmed: every overlay network
   * (bridges, VXLAN devices, veths, NAT tables) and the load balancer's nft table, so a node that
   * left keeps nothing of the cluster's networking.
   */
  async teardown(): Promise<void> {
    this.close(); // also stops DNS servers and a userspace proxy
    await this.inFlight.catch(() => undefined);
    try {
      if (this.lb instanceof NftLoadBalancer || (this.lb === undefined && this.lbMode === 'nftables')) {
        await (this.lb ?? new NftLoadBalancer({ table: MESH_NFT_TABLE })).close();
      }
      if (this.driver !== undefined) await this.driver.cleanupStale([]);
      this.logger.info('mesh: overlay networks and load balancer removed');
    } catch (err) {
      // The node leaves anyway; a restarted agent's first apply removes what is left.
      this.logger.warn({ err }, 'mesh: could not remove every network device or nft table');
    } finally {
      this.lb = undefined;
      this.driver = undefined;
    }
  }

  /**
   * Stops applying. What is in the kernel stays (a restarted agent takes it over); what lives
   * in this process (DNS servers, userspace listeners) stops.
   */
  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.retry = undefined;
    for (const networkId of [...this.dns.keys()]) {
      this.stopDns(networkId).catch((err: unknown) =>
        this.logger.warn({ err }, 'mesh: DNS server stop failed'),
      );
    }
    if (this.lb instanceof UserspaceLoadBalancer) {
      this.lb
        .close()
        .catch((err: unknown) => this.logger.warn({ err }, 'mesh: userspace proxy close failed'));
    }
  }
}

/** The host's resolvers, for names outside the cluster. */
function hostResolvers(): { host: string; port: number }[] {
  try {
    return upstreamsFromResolvConf(readFileSync(RESOLV_CONF, 'utf8'));
  } catch {
    return [];
  }
}
