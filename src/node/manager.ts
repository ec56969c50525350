// A manager: the replicated store on a RaftNode, the manager port (mutual TLS: Raft transport,
// Raft membership, control API), the join port (TLS, NodeCA), and the leader-only control
// loops started and stopped with leadership.
import {
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  NodeCAClient,
  NodeCAService,
  NodeCertificatesService,
  type IssueNodeCertificateRequest,
  type IssueNodeCertificateResponse,
} from '../gen/cluster/v1/ca';
import {
  RaftMembershipClient,
  RaftMembershipService,
  type RaftJoinRequest,
  type RaftJoinResponse,
  type RaftLeaveRequest,
  type RaftLeaveResponse,
} from '../gen/cluster/v1/raft';
import { NodeRole } from '../gen/cluster/v1/objects';
import { ClusterError, toClusterError } from '../common/errors';
import { callUnary, serveUnary } from '../common/grpc';
import { componentLogger, type Logger } from '../common/logger';
import {
  clientCredentials,
  joinClientCredentials,
  NODE_CHANNEL_OPTIONS,
  nodeIdentityFromPeer,
  serverCredentials,
  type NodeTls,
} from '../manager/ca';
import { createNodeCAServer } from '../manager/ca/service';
import { createNodeCertificatesServer, requireStanding, standingRefusal } from '../manager/ca/renew';
import { RaftNode } from '../raft/node';
import { TRANSPORT_SERVER_OPTIONS } from '../raft/transport';
import { MemoryStore, type AppliedResult } from '../store';
import { formatHostPort, joinAddress, parseHostPort } from './addr';
import { loadRaftPeers, saveRaftPeers, type DataDirLayout, type NodeState } from './datadir';
import { LeaderLoops, type LeaderLoop } from './leader_loops';
import { managerStatusLoop } from './manager_status';
import { roleLoop } from './roles';

/** Attempts at recording a joining manager when its node record changes under the write. */
const JOIN_WRITE_ATTEMPTS = 5;
/** How often the Raft peers' addresses in the store are compared with the saved ones. */
export const RAFT_PEERS_SAVE_MS = 1000;
/** How often leadership is observed to start/stop the leader loops and refresh manager status. */
export const LEADERSHIP_POLL_MS = 50;
export const FORWARD_DEADLINE_MS = 10_000;
export const MAX_RAFT_ID = 2 ** 48;

export interface RaftTiming {
  tickMs?: number;
  electionTicks?: number;
  heartbeatTicks?: number;
  snapshotEveryEntries?: number;
}

export interface ManagerOptions {
  dirs: DataDirLayout;
  state: NodeState;
  tls: NodeTls;
  /** Voters of a brand-new cluster (init); absent when joining or restarting. */
  bootstrapVoters?: number[];
  /** Raft addresses of the other members known when joining. */
  peers?: ReadonlyMap<number, string>;
  raft?: RaftTiming;
  /** Extra services for the manager port (control API, dispatcher), registered before binding. */
  services?: (
    manager: Manager,
  ) => { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[];
  loops?: (manager: Manager) => LeaderLoop[];
  /** Called once when the manager stops, after its loops have ended. */
  onStop?: (manager: Manager) => void;
}

export function newRaftId(): number {
  return 1 + Math.floor(Math.random() * (MAX_RAFT_ID - 1));
}

export class Manager {
  readonly store: MemoryStore;
  readonly logger: Logger;
  private readonly mainServer: Server;
  private readonly joinServer: Server;
  private loops?: LeaderLoops;
  private poller?: NodeJS.Timeout;
  private peersSaver?: NodeJS.Timeout;
  private savedPeers = '';
  private leaderClients = new Map<string, { membership: RaftMembershipClient; ca: NodeCAClient }>();
  private stopped = false;
  raft!: RaftNode<AppliedResult>;
  joinPort = 0;

  private constructor(readonly options: ManagerOptions) {
    this.logger = componentLogger('manager', { nodeId: options.state.nodeId });
    this.store = new MemoryStore();
    this.mainServer = new Server({
      ...TRANSPORT_SERVER_OPTIONS,
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
    });
    this.joinServer = new Server();
  }

  static async start(options: ManagerOptions): Promise<Manager> {
    const manager = new Manager(options);
    try {
      await manager.startParts();
    } catch (err) {
      await manager.stop();
      throw err;
    }
    return manager;
  }

  get nodeId(): string {
    return this.options.state.nodeId;
  }

  get tls(): NodeTls {
    return this.options.tls;
  }

  private async startParts(): Promise<void> {
    const { state, tls, dirs } = this.options;
    const raftId = state.raftId;
    if (!raftId) throw new ClusterError('INTERNAL', 'a manager needs a raft id');
    const listen = parseHostPort(state.listenAddr);

    this.mainServer.addService(RaftMembershipService, {
      join: serveUnary<RaftJoinRequest, RaftJoinResponse>(this.logger, (call) => this.handleRaftJoin(call)),
      leave: serveUnary<RaftLeaveRequest, RaftLeaveResponse>(this.logger, (call) =>
        this.handleRaftLeave(call),
      ),
    });
    this.mainServer.addService(
      NodeCertificatesService,
      createNodeCertificatesServer({
        store: this.store,
        logger: this.logger,
        isLeader: () => this.raft.isLeader(),
        leaderAddress: () => this.leaderAddress(),
      }),
    );
    for (const svc of this.options.services?.(this) ?? [])
      this.mainServer.addService(svc.definition, svc.implementation);

    this.raft = await RaftNode.start<AppliedResult>({
      id: raftId,
      clusterId: state.clusterId,
      dataDir: dirs.raftDir,
      listenAddress: formatHostPort(listen),
      advertiseAddress: state.advertiseAddr,
      // Saved addresses first, then what the joining call returned (fresher).
      peers: new Map([...loadRaftPeers(dirs), ...(this.options.peers ?? new Map<number, string>())]),
      bootstrapVoters: this.options.bootstrapVoters,
      server: this.mainServer,
      authorizeStream: (call) => {
        try {
          const who = nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate);
          if (who.role !== 'manager')
            return `node ${who.nodeId} is a worker: only managers take part in Raft`;
          if (who.clusterId !== state.clusterId) return `node ${who.nodeId} belongs to another cluster`;
          // Removal only: a lagging store may not know a new member yet, and a demoted member
          // is out of the group's configuration already.
          return standingRefusal(this.store, who, 'any');
        } catch (e) {
          return toClusterError(e).message;
        }
      },
      serverCredentials: serverCredentials(tls),
      channelCredentials: clientCredentials(tls, 'manager'),
      channelOptions: NODE_CHANNEL_OPTIONS,
      stateMachine: this.store.asStateMachine(),
      tickMs: this.options.raft?.tickMs,
      electionTicks: this.options.raft?.electionTicks,
      heartbeatTicks: this.options.raft?.heartbeatTicks,
      snapshotEveryEntries: this.options.raft?.snapshotEveryEntries,
      logger: this.logger,
    });
    this.store.setProposer(this.raft);

    this.joinServer.addService(
      NodeCAService,
      createNodeCAServer({
        store: this.store,
        logger: this.logger,
        isLeader: () => this.raft.isLeader(),
        forward: (request) => this.forwardIssue(request),
      }),
    );
    // The join port presents the manager's certificate but asks for none: joiners have none yet.
    const joinCreds = ServerCredentials.createSsl(
      null,
      [{ cert_chain: Buffer.from(tls.certPem), private_key: Buffer.from(tls.keyPem) }],
      false,
    );
    this.joinPort = await new Promise<number>((resolve, reject) =>
      this.joinServer.bindAsync(
        formatHostPort({ host: listen.host, port: listen.port + 1 }),
        joinCreds,
        (e, p) => (e ? reject(e) : resolve(p)),
      ),
    );

    const statusLoop = managerStatusLoop(
      this.store,
      {
        selfRaftId: raftId,
        isLeader: () => this.raft.isLeader(),
        peerConnected: (id) => this.raft.peerConnected(id),
      },
      this.logger,
    );
    const roles = roleLoop(
      this.store,
      {
        selfRaftId: raftId,
        voters: () => this.raft.status().voters,
        peerConnected: (id) => this.raft.peerConnected(id),
        removeMember: (id) => this.raft.removeMember(id),
        transferLeadership: (to) => this.raft.transferLeadership(to),
      },
      this.logger,
    );
    this.loops = new LeaderLoops([statusLoop, roles, ...(this.options.loops?.(this) ?? [])], this.logger);
    this.poller = setInterval(() => this.observeLeadership(), LEADERSHIP_POLL_MS);
    this.savePeers();
    this.peersSaver = setInterval(() => this.savePeers(), RAFT_PEERS_SAVE_MS);
  }

  /** Keeps the other members' addresses on disk for a restart (see loadRaftPeers). */
  private savePeers(): void {
    const selfId = this.options.state.raftId;
    const peers = new Map<number, string>();
    for (const n of this.store.view((tx) => tx.nodes.list((x) => x.role === NodeRole.NODE_ROLE_MANAGER))) {
      const id = n.managerStatus?.raftId ?? 0;
      const addr = n.managerStatus?.addr ?? '';
      if (id > 0 && id !== selfId && addr) peers.set(id, addr);
    }
    if (peers.size === 0) return; // a store still being restored says nothing
    const text = JSON.stringify([...peers].sort((a, b) => a[0] - b[0]));
    if (text === this.savedPeers) return;
    try {
      saveRaftPeers(this.options.dirs, peers);
      this.savedPeers = text;
    } catch (err) {
      this.logger.warn({ err }, 'could not save the raft peers');
    }
  }

  private observing = false;
  private observeLeadership(): void {
    if (this.observing || this.stopped || !this.loops) return;
    this.observing = true;
    const loops = this.loops;
    const isLeader = this.raft.isLeader();
    // A new leader first catches up (a read index round commits an entry of its term and waits
    // for it to be applied), so the loops never plan from a store missing the old leader's writes.
    const ready =
      isLeader && !loops.active
        ? this.raft.readIndex().then(() => this.raft.isLeader())
        : Promise.resolve(isLeader);
    ready
      .then((leading) => loops.setLeader(leading))
      .catch((err: unknown) => this.logger.error({ err }, 'leader loops failed to change state'))
      .finally(() => {
        this.observing = false;
      });
  }

  /** The leader's manager address (host:port), from the store's manager records. */
  leaderAddress(): string | undefined {
    const leaderId = this.raft.status().leaderId;
    if (!leaderId) return undefined;
    const node = this.store.view((tx) => tx.nodes.list((n) => n.managerStatus?.raftId === leaderId)[0]);
    return node?.managerStatus?.addr || undefined;
  }

  private clientsFor(addr: string) {
    let clients = this.leaderClients.get(addr);
    if (!clients) {
      const creds = clientCredentials(this.options.tls, 'manager');
      const joinCreds = joinClientCredentials(this.options.tls.caCertPem);
      clients = {
        membership: new RaftMembershipClient(addr, creds, NODE_CHANNEL_OPTIONS),
        ca: new NodeCAClient(joinAddress(addr), joinCreds, NODE_CHANNEL_OPTIONS),
      };
      this.leaderClients.set(addr, clients);
    }
    return clients;
  }

  private leaderOrThrow(): string {
    const addr = this.leaderAddress();
    if (!addr) throw new ClusterError('UNAVAILABLE', 'no leader elected yet; retry in a moment');
    return addr;
  }

  private forwardIssue(request: IssueNodeCertificateRequest): Promise<IssueNodeCertificateResponse> {
    const { ca } = this.clientsFor(this.leaderOrThrow());
    return callUnary((m, o, cb) => ca.issueNodeCertificate(request, m, o, cb), FORWARD_DEADLINE_MS);
  }

  private async handleRaftJoin(
    call: ServerUnaryCall<RaftJoinRequest, RaftJoinResponse>,
  ): Promise<RaftJoinResponse> {
    const who = nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate);
    if (who.role !== 'manager') {
      throw new ClusterError(
        'PERMISSION_DENIED',
        `node ${who.nodeId} is a worker: only managers join the Raft group`,
      );
    }
    if (!this.raft.isLeader()) {
      // Not forwarded: the leader must see the joiner's own certificate (a forwarded call would
      // carry this manager's identity). The joiner asks the leader itself.
      const leader = this.leaderAddress();
      throw new ClusterError(
        'NOT_LEADER',
        `this manager is not the leader${leader ? `; the leader is at ${leader}` : ' (no leader elected yet)'}: retry there`,
      );
    }
    const addr = formatHostPort(parseHostPort(call.request.addr));
    requireStanding(this.store, who, 'any');
    const existing = this.store.view((tx) => tx.nodes.get(who.nodeId));
    if (!existing) throw new ClusterError('NOT_FOUND', `node ${who.nodeId} is not known to this cluster`);
    // A manager certificate alone is not enough: a demoted node keeps its old one until it expires.
    if (existing.spec?.desiredRole !== NodeRole.NODE_ROLE_MANAGER) {
      throw new ClusterError(
        'PERMISSION_DENIED',
        `node ${who.nodeId} is not to be a manager (it was demoted): it cannot join the Raft group`,
      );
    }
    const raftId = existing.managerStatus?.raftId || newRaftId();
    // Record the member before adding it: once the conf change applies, every write needs the
    // new member's vote too, and it starts its Raft node only after this call returns.
    // The write is checked against the node's version when it applies: another writer of the
    // node (its session, the mesh giving it an address) may get there first, so retry a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.store.update((tx) => {
          const node = tx.nodes.get(who.nodeId);
          if (!node) throw new ClusterError('NOT_FOUND', `node ${who.nodeId} is not known to this cluster`);
          tx.nodes.update({
            ...node,
            role: NodeRole.NODE_ROLE_MANAGER,
            managerStatus: { raftId, addr, leader: false, reachability: 'reachable' },
          });
        });
        break;
      } catch (err) {
        if (!(err instanceof ClusterError && err.code === 'CONFLICT') || attempt >= JOIN_WRITE_ATTEMPTS)
          throw err;
      }
    }
    if (!this.raft.status().voters.includes(raftId)) await this.raft.addMember(raftId, addr);
    const members = this.store.view((tx) =>
      tx.nodes
        .list((n) => n.role === NodeRole.NODE_ROLE_MANAGER && (n.managerStatus?.raftId ?? 0) > 0)
        .map((n) => ({
          raftId: n.managerStatus?.raftId ?? 0,
          nodeId: n.id,
          addr: n.managerStatus?.addr ?? '',
        })),
    );
    this.logger.info({ nodeId: who.nodeId, raftId, addr }, 'manager joined the raft group');
    return { raftId, members };
  }

  private async handleRaftLeave(
    call: ServerUnaryCall<RaftLeaveRequest, RaftLeaveResponse>,
  ): Promise<RaftLeaveResponse> {
    const who = nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate);
    if (who.role !== 'manager')
      throw new ClusterError('PERMISSION_DENIED', 'only managers leave the Raft group');
    requireStanding(this.store, who, 'manager');
    if (!this.raft.isLeader()) {
      const { membership } = this.clientsFor(this.leaderOrThrow());
      return callUnary((m, o, cb) => membership.leave(call.request, m, o, cb), FORWARD_DEADLINE_MS);
    }
    await this.raft.removeMember(call.request.raftId);
    return {};
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.poller) clearInterval(this.poller);
    if (this.peersSaver) clearInterval(this.peersSaver);
    await this.loops?.stop();
    this.options.onStop?.(this);
    for (const clients of this.leaderClients.values()) {
      clients.membership.close();
      clients.ca.close();
    }
    this.leaderClients.clear();
    this.joinServer.forceShutdown();
    // RaftNode.stop closes the shared manager server along with its transport.
    if (this.raft) await this.raft.stop();
    else this.mainServer.forceShutdown();
  }
}
