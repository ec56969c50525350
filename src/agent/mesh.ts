// The routing mesh on one node (issue 6): the ingress overlay network (bridge + VXLAN, remote
// endpoints as the leader lists them), each local task plumbed into it before it is reported
// RUNNING, and an nftables load balancer that answers every ingress-published port on this host
// and spreads connections over the running tasks of the service, wherever they run. Replies come
// back through this node because new connections are source-NATed to the node's ingress address.
import type { MeshState } from '../gen/cluster/v1/dispatcher';
import { PortConfig_Protocol, type Task } from '../gen/cluster/v1/objects';
import type { Logger } from '../common/logger';
import { NftLoadBalancer } from './lb/nft';
import type { LbConfig } from './lb/types';
import { OverlayDriver } from './network/overlay';
import type { ContainerInfo, Runtime, RuntimeDescription } from './runtime';

/** The nft table of this node's routing mesh (the overlay driver's NAT tables are its own). */
export const MESH_NFT_TABLE = 'cluster_mesh';
/** Pause before applying the mesh again after a failure. */
const RETRY_MS = 1000;
/** How long a starting task waits for the ingress network to be set up on this host. */
const NETWORK_WAIT_MS = 30_000;

const bare = (ip: string) => ip.split('/')[0] ?? ip;

interface Plumbing {
  taskId: string;
  ip: string;
}

export class Mesh {
  private driver: OverlayDriver | undefined;
  private driverUnderlay = '';
  private networkKey = '';
  private vni = 0;
  private readonly lb = new NftLoadBalancer({ table: MESH_NFT_TABLE });
  private latest: MeshState | undefined;
  private running = false;
  private closed = false;
  private retry: NodeJS.Timeout | undefined;
  private readyWaiters: (() => void)[] = [];
  /** Container id → the task's ingress address, for the containers prepared here. */
  private readonly plumbing = new Map<string, Plumbing>();

  constructor(private readonly logger: Logger) {}

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
    this.applyNow(state)
      .catch((err: unknown) => {
        this.logger.warn({ err }, 'mesh: could not apply the routing mesh; retrying');
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

  private async applyNow(state: MeshState): Promise<void> {
    this.retry = undefined;
    const network = state.ingress;
    const subnet = network?.spec?.ipam?.subnet ?? '';
    if (network === undefined || subnet === '' || !state.nodeAddress || !state.underlayAddr) return;
    if (this.driver === undefined || this.driverUnderlay !== state.underlayAddr) {
      this.driver = new OverlayDriver({ underlayIp: state.underlayAddr, logger: this.logger });
      this.driverUnderlay = state.underlayAddr;
      this.networkKey = '';
      // What a previous agent left for networks that are gone.
      await this.driver.cleanupStale([network.vni]);
    }
    const key = `${network.vni}|${subnet}|${state.nodeAddress}|${state.underlayAddr}`;
    if (key !== this.networkKey) {
      await this.driver.ensureNetwork({ vni: network.vni, subnet, nodeIp: state.nodeAddress });
      this.networkKey = key;
      this.vni = network.vni;
      this.logger.info({ vni: network.vni, subnet, nodeIp: state.nodeAddress }, 'mesh: ingress network up');
      for (const resolve of this.readyWaiters.splice(0)) resolve();
    }
    await this.driver.setRemoteEndpoints(
      network.vni,
      state.endpoints.map((e) => ({ ip: e.ip, host: e.host })),
    );
    const config: LbConfig = {
      frontends: state.ports.map((p) => ({
        kind: 'published',
        protocol: p.protocol === PortConfig_Protocol.PROTOCOL_UDP ? 'udp' : 'tcp',
        port: p.publishedPort,
        backends: p.backends.map((ip) => ({ ip, port: p.targetPort })),
        snatTo: bare(state.nodeAddress),
      })),
    };
    await this.lb.apply(config);
  }

  private waitForNetwork(): Promise<void> {
    if (this.networkKey !== '') return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== done);
        reject(new Error(`the ingress network is not set up on this node after ${NETWORK_WAIT_MS} ms`));
      }, NETWORK_WAIT_MS);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.readyWaiters.push(done);
    });
  }

  /** The runtime with the mesh's plumbing around container start and removal. */
  wrap(inner: Runtime): Runtime {
    const attach = async (containerId: string) => {
      const plumbing = this.plumbing.get(containerId);
      if (plumbing === undefined) return;
      const info = await inner.inspect(containerId);
      if (!info || info.pid <= 0) return;
      await this.waitForNetwork();
      const driver = this.driver;
      if (driver === undefined) throw new Error('the ingress network is not set up on this node');
      await driver.attach(this.vni, { endpointId: plumbing.taskId, netns: info.pid, ip: plumbing.ip });
    };
    return {
      name: inner.name,
      describe: (): Promise<RuntimeDescription> => inner.describe(),
      prepare: async (task: Task, nodeId: string): Promise<string> => {
        const id = await inner.prepare(task, nodeId);
        // The ingress attachment: the one its spec does not name (user networks come with issue 6's next step).
        const own = new Set((task.spec?.networks ?? []).map((n) => n.target));
        const ip = task.networks.find((n) => !own.has(n.networkId) && n.addresses.length > 0)?.addresses[0];
        if (ip !== undefined) this.plumbing.set(id, { taskId: task.id, ip });
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
        // The veth died with the container's namespace; this removes a host end left over.
        if (plumbing !== undefined && this.driver !== undefined) {
          await this.driver.detach(this.vni, plumbing.taskId).catch((err: unknown) => {
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

  /** Stops applying; what is programmed stays (a restarted agent takes it over). */
  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    this.retry = undefined;
  }
}
