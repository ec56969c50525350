// The node process (`cluster daemon`): one per host, as dockerd is. It serves the Local API on
// its unix socket (init, join, leave, info) and, while it is a manager, the control API there
// too; it runs the manager parts when its role says so.
import fs from 'node:fs';
import os from 'node:os';
import {
  ChannelCredentials,
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import {
  NodeCAClient,
  type GetRootCACertificateResponse,
  type IssueNodeCertificateResponse,
} from '../gen/cluster/v1/ca';
import {
  LocalService,
  type InfoRequest,
  type InfoResponse,
  type InitRequest,
  type InitResponse,
  type JoinRequest,
  type JoinResponse,
  type LeaveRequest,
  type LeaveResponse,
} from '../gen/cluster/v1/local';
import { NodeAvailability, NodeRole, NodeState as NodeStatusState } from '../gen/cluster/v1/objects';
import { RaftMembershipClient, type RaftJoinResponse } from '../gen/cluster/v1/raft';
import { ClusterError, toClusterError } from '../common/errors';
import { callUnary, serveUnary } from '../common/grpc';
import { componentLogger, type Logger } from '../common/logger';
import {
  clientCredentials,
  createRootCA,
  generateNodeKey,
  joinClientCredentials,
  makeJoinToken,
  NODE_CHANNEL_OPTIONS,
  signNodeCertificate,
  verifyCaAgainstToken,
  type NodeTls,
} from '../manager/ca';
import { newId } from '../store';
import { DEFAULT_MANAGER_PORT, formatHostPort, joinAddress, parseHostPort } from './addr';
import {
  clearClusterState,
  loadState,
  loadTls,
  prepareDataDir,
  saveState,
  saveTls,
  type DataDirLayout,
  type NodeState,
} from './datadir';
import { Manager, newRaftId, type ManagerOptions, type RaftTiming } from './manager';

export const JOIN_DEADLINE_MS = 20_000;
export const LEADER_WAIT_MS = 30_000;

export interface DaemonOptions {
  dataDir: string;
  /** Default listen address for init/join when the request gives none. */
  listenAddr?: string;
  /** Default advertise address for init/join when the request gives none. */
  advertiseAddr?: string;
  /** Unix socket path; dataDir/cluster.sock by default. */
  socketPath?: string;
  raft?: RaftTiming;
  /** The agent's drain period: a serving task's wait between leaving the load balancer and its stop. */
  drainMs?: number;
  /** Hooks the control-plane components plug into (control API, dispatcher, loops). */
  managerParts?: Pick<ManagerOptions, 'services' | 'loops' | 'onStop'>;
  /** Starts this node's agent (every node runs one, managers included); none when left out. */
  startAgent?: (dirs: DataDirLayout, state: NodeState, tls: NodeTls) => Promise<NodeAgent>;
  /**
   * Extra services on the unix socket (the control API). They are registered once, at start, and
   * reach the manager through the getter: it is undefined while this node is no manager.
   */
  localServices?: (
    currentManager: () => Manager | undefined,
  ) => { definition: ServiceDefinition; implementation: UntypedServiceImplementation }[];
}

const ALREADY_IN_CLUSTER =
  "this node is already part of a cluster: use 'cluster leave' to leave it before you init or join another";

/** The part of the agent the daemon drives. */
export interface NodeAgent {
  stop(): Promise<void>;
  /** Stops and removes this node's tasks (leaving the cluster). */
  shutdownTasks(): Promise<void>;
}

export class Daemon {
  readonly logger: Logger;
  readonly dirs: DataDirLayout;
  private readonly localServer = new Server();
  private manager?: Manager;
  private agent?: NodeAgent;
  private state?: NodeState;
  private busy = false;
  private lastError = '';

  private constructor(readonly options: DaemonOptions) {
    this.logger = componentLogger('daemon');
    this.dirs = prepareDataDir(options.dataDir);
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const daemon = new Daemon(options);
    try {
      await daemon.resume();
      await daemon.serveLocal();
    } catch (err) {
      await daemon.stop();
      throw err;
    }
    return daemon;
  }

  get socketPath(): string {
    return this.options.socketPath ?? this.dirs.socketPath;
  }

  get currentManager(): Manager | undefined {
    return this.manager;
  }

  /** A restarted daemon picks up the role its data directory records. */
  private async resume(): Promise<void> {
    const state = loadState(this.dirs);
    if (!state) return;
    this.state = state;
    if (state.role === 'manager') {
      const tls = loadTls(this.dirs.tlsDir);
      this.manager = await Manager.start(this.managerOptions(state, tls, {}));
      this.logger.info({ nodeId: state.nodeId }, 'resumed as a manager');
    } else {
      this.logger.info({ nodeId: state.nodeId }, 'resumed as a worker');
    }
    await this.startAgent(state);
  }

  private async startAgent(state: NodeState): Promise<void> {
    if (!this.options.startAgent || this.agent) return;
    this.agent = await this.options.startAgent(this.dirs, state, loadTls(this.dirs.tlsDir));
  }

  private managerOptions(state: NodeState, tls: NodeTls, extra: Partial<ManagerOptions>): ManagerOptions {
    return {
      dirs: this.dirs,
      state,
      tls,
      raft: this.options.raft,
      services: this.options.managerParts?.services,
      loops: this.options.managerParts?.loops,
      onStop: this.options.managerParts?.onStop,
      ...extra,
    };
  }

  private async serveLocal(): Promise<void> {
    fs.rmSync(this.socketPath, { force: true });
    this.localServer.addService(LocalService, {
      init: serveUnary<InitRequest, InitResponse>(this.logger, (c) =>
        this.exclusive(() => this.init(c.request)),
      ),
      join: serveUnary<JoinRequest, JoinResponse>(this.logger, (c) =>
        this.exclusive(() => this.join(c.request)),
      ),
      leave: serveUnary<LeaveRequest, LeaveResponse>(this.logger, (c) =>
        this.exclusive(() => this.leave(c.request)),
      ),
      info: serveUnary<InfoRequest, InfoResponse>(this.logger, () => this.info()),
    });
    for (const svc of this.options.localServices?.(() => this.manager) ?? []) {
      this.localServer.addService(svc.definition, svc.implementation);
    }
    await new Promise<void>((resolve, reject) =>
      this.localServer.bindAsync(`unix://${this.socketPath}`, ServerCredentials.createInsecure(), (e) =>
        e ? reject(e) : resolve(),
      ),
    );
    fs.chmodSync(this.socketPath, 0o600);
  }

  private async exclusive<T>(work: () => Promise<T>): Promise<T> {
    if (this.busy)
      throw new ClusterError('FAILED_PRECONDITION', 'another init, join or leave is in progress');
    this.busy = true;
    try {
      const result = await work();
      this.lastError = '';
      return result;
    } catch (err) {
      const e = toClusterError(err);
      // A refused request changed nothing: it is not this node's error state.
      if (e.code !== 'FAILED_PRECONDITION' && e.code !== 'INVALID_ARGUMENT') this.lastError = e.message;
      throw err;
    } finally {
      this.busy = false;
    }
  }

  private addresses(listenAddr: string, advertiseAddr: string): { listen: string; advertise: string } {
    const listen = parseHostPort(listenAddr || this.options.listenAddr || `0.0.0.0:${DEFAULT_MANAGER_PORT}`);
    const advertiseText = advertiseAddr || this.options.advertiseAddr;
    if (!advertiseText) {
      if (listen.host === '0.0.0.0' || listen.host === '::') {
        throw new ClusterError(
          'INVALID_ARGUMENT',
          'could not choose an address to advertise: pass --advertise-addr with this host’s IP address',
        );
      }
    }
    const advertise = parseHostPort(advertiseText || listen.host, listen.port, 'advertise address');
    return { listen: formatHostPort(listen), advertise: formatHostPort(advertise) };
  }

  private async init(request: InitRequest): Promise<InitResponse> {
    if (this.state) throw new ClusterError('FAILED_PRECONDITION', ALREADY_IN_CLUSTER);
    const { listen, advertise } = this.addresses(request.listenAddr, request.advertiseAddr);
    clearClusterState(this.dirs);
    const clusterId = newId();
    const nodeId = newId();
    const raftId = newRaftId();
    const ca = await createRootCA(clusterId);
    const key = await generateNodeKey();
    const certPem = await signNodeCertificate(ca, key.csrPem, { nodeId, role: 'manager', clusterId });
    const tls: NodeTls = { caCertPem: ca.certPem, certPem, keyPem: key.keyPem };
    saveTls(this.dirs, tls);
    const state: Omit<NodeState, 'version'> = {
      nodeId,
      clusterId,
      role: 'manager',
      raftId,
      advertiseAddr: advertise,
      listenAddr: listen,
      managers: [advertise],
    };
    const manager = await Manager.start(
      this.managerOptions({ version: 1, ...state }, tls, { bootstrapVoters: [raftId] }),
    );
    try {
      await waitFor(() => manager.raft.isLeader(), LEADER_WAIT_MS, 'this manager did not become leader');
      const tokens = { worker: makeJoinToken(ca.certPem), manager: makeJoinToken(ca.certPem) };
      const hostname = os.hostname();
      await manager.store.update((tx) => {
        tx.clusters.create({
          id: clusterId,
          spec: {
            annotations: { name: 'default', labels: {} },
            raft: {
              tickMs: this.options.raft?.tickMs ?? 100,
              electionTicks: this.options.raft?.electionTicks ?? 5,
              heartbeatTicks: this.options.raft?.heartbeatTicks ?? 1,
              snapshotInterval: this.options.raft?.snapshotEveryEntries ?? 10_000,
            },
          },
          joinTokens: tokens,
          rootCaCert: ca.certPem,
          rootCaKey: ca.keyPem,
        });
        tx.nodes.create({
          id: nodeId,
          attachments: [],
          spec: {
            annotations: { name: hostname, labels: {} },
            desiredRole: NodeRole.NODE_ROLE_MANAGER,
            availability: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
          },
          description: {
            hostname,
            os: os.platform(),
            architecture: os.arch(),
            runtimeName: '',
            runtimeVersion: '',
            engineLabels: {},
          },
          status: {
            state: NodeStatusState.NODE_STATE_READY,
            message: '',
            addr: parseHostPort(advertise).host,
          },
          managerStatus: { raftId, addr: advertise, leader: true, reachability: 'reachable' },
          role: NodeRole.NODE_ROLE_MANAGER,
        });
      });
      const saved = saveState(this.dirs, state);
      await this.startAgent(saved);
      this.state = saved;
      this.manager = manager;
      this.logger.info({ nodeId, clusterId, advertise }, 'cluster initialized');
      return {
        nodeId,
        clusterId,
        workerToken: tokens.worker,
        managerToken: tokens.manager,
        managerAddr: advertise,
      };
    } catch (err) {
      await manager.stop();
      clearClusterState(this.dirs);
      throw err;
    }
  }

  private async join(request: JoinRequest): Promise<JoinResponse> {
    if (this.state) throw new ClusterError('FAILED_PRECONDITION', ALREADY_IN_CLUSTER);
    if (!request.token) throw new ClusterError('INVALID_ARGUMENT', 'a join token is required (--token)');
    const remote = formatHostPort(parseHostPort(request.remoteAddr, DEFAULT_MANAGER_PORT, 'manager address'));
    const { listen, advertise } = this.addresses(request.listenAddr, request.advertiseAddr);

    // 1. Fetch the CA without trusting anyone yet, and check it against the token's digest.
    const insecure = ChannelCredentials.createSsl(null, null, null, { rejectUnauthorized: false });
    const probe = new NodeCAClient(joinAddress(remote), insecure, NODE_CHANNEL_OPTIONS);
    let caCertPem: string;
    try {
      const got = await callUnary<GetRootCACertificateResponse>(
        (m, o, cb) => probe.getRootCaCertificate({}, m, o, cb),
        JOIN_DEADLINE_MS,
      );
      caCertPem = got.certificate;
    } catch (err) {
      throw new ClusterError(
        'UNAVAILABLE',
        `cannot reach the manager at ${remote}: ${toClusterError(err).message}`,
      );
    } finally {
      probe.close();
    }
    verifyCaAgainstToken(caCertPem, request.token);

    // 2. Ask for a certificate, now over TLS pinned to that CA.
    const key = await generateNodeKey();
    const ca = new NodeCAClient(joinAddress(remote), joinClientCredentials(caCertPem), NODE_CHANNEL_OPTIONS);
    let issued;
    try {
      issued = await callUnary<IssueNodeCertificateResponse>(
        (m, o, cb) =>
          ca.issueNodeCertificate(
            { token: request.token, csr: key.csrPem, hostname: os.hostname(), advertiseAddr: advertise },
            m,
            o,
            cb,
          ),
        JOIN_DEADLINE_MS,
      );
    } finally {
      ca.close();
    }
    const role = issued.role === 'manager' ? 'manager' : 'worker';
    const tls: NodeTls = { caCertPem, certPem: issued.certificate, keyPem: key.keyPem };
    clearClusterState(this.dirs);
    saveTls(this.dirs, tls);
    const managers = issued.managers.length > 0 ? issued.managers : [remote];

    if (role === 'worker') {
      this.state = saveState(this.dirs, {
        nodeId: issued.nodeId,
        clusterId: issued.clusterId,
        role,
        advertiseAddr: advertise,
        listenAddr: listen,
        managers,
      });
      await this.startAgent(this.state);
      this.logger.info({ nodeId: issued.nodeId }, 'joined as a worker');
      return { nodeId: issued.nodeId, role, clusterId: issued.clusterId };
    }

    // 3. A manager joins the Raft group, then starts its own Raft node. Only the leader admits a
    // member (it must see the joiner's own certificate): ask the managers in turn, the leader
    // first as the cluster listed them, until one accepts.
    const candidates = [...new Set([...managers, remote])];
    const joined = await this.joinRaft(tls, candidates, advertise);
    const peers = new Map<number, string>();
    for (const member of joined.members)
      if (member.raftId !== joined.raftId) peers.set(member.raftId, member.addr);
    let state: NodeState;
    let manager: Manager;
    try {
      state = saveState(this.dirs, {
        nodeId: issued.nodeId,
        clusterId: issued.clusterId,
        role,
        raftId: joined.raftId,
        advertiseAddr: advertise,
        listenAddr: listen,
        managers,
      });
      manager = await Manager.start(this.managerOptions(state, tls, { peers }));
    } catch (err) {
      // A voter that never starts would cost the cluster its quorum: leave the group again.
      this.logger.error({ err }, 'joined the Raft group but could not start: leaving it again');
      await this.leaveRaft(tls, candidates, joined.raftId);
      clearClusterState(this.dirs);
      throw err;
    }
    this.manager = manager;
    this.state = state;
    await this.startAgent(state);
    this.logger.info({ nodeId: issued.nodeId, raftId: joined.raftId }, 'joined as a manager');
    return { nodeId: issued.nodeId, role, clusterId: issued.clusterId };
  }

  private async joinRaft(tls: NodeTls, managers: string[], advertise: string): Promise<RaftJoinResponse> {
    const deadline = Date.now() + JOIN_DEADLINE_MS;
    let lastError: unknown;
    while (Date.now() < deadline) {
      for (const addr of managers) {
        const membership = new RaftMembershipClient(
          addr,
          clientCredentials(tls, 'manager'),
          NODE_CHANNEL_OPTIONS,
        );
        try {
          return await callUnary<RaftJoinResponse>(
            (m, o, cb) => membership.join({ addr: advertise }, m, o, cb),
            JOIN_DEADLINE_MS,
          );
        } catch (err) {
          lastError = err;
          if (toClusterError(err).code === 'PERMISSION_DENIED') throw err;
        } finally {
          membership.close();
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    throw new ClusterError(
      'UNAVAILABLE',
      `no manager admitted this node to the Raft group: ${toClusterError(lastError).message}`,
    );
  }

  /** Best effort: undoes joinRaft when this node cannot start after all. */
  private async leaveRaft(tls: NodeTls, managers: string[], raftId: number): Promise<void> {
    for (const addr of managers) {
      const membership = new RaftMembershipClient(
        addr,
        clientCredentials(tls, 'manager'),
        NODE_CHANNEL_OPTIONS,
      );
      try {
        await callUnary((m, o, cb) => membership.leave({ raftId }, m, o, cb), 5_000);
        return;
      } catch {
        // Try the next manager.
      } finally {
        membership.close();
      }
    }
  }

  private async leave(request: LeaveRequest): Promise<LeaveResponse> {
    if (!this.state) throw new ClusterError('FAILED_PRECONDITION', 'this node is not part of a cluster');
    if (this.manager && !request.force) {
      throw new ClusterError(
        'FAILED_PRECONDITION',
        "this node is a manager: leaving may cost the managers their quorum; use 'cluster leave --force' to leave anyway",
      );
    }
    if (this.agent) {
      await this.agent.shutdownTasks();
      await this.agent.stop();
      this.agent = undefined;
    }
    if (this.manager) {
      await this.manager.stop();
      this.manager = undefined;
    }
    clearClusterState(this.dirs);
    this.state = undefined;
    return {};
  }

  private info(): InfoResponse {
    const s = this.state;
    if (!s) {
      return {
        state: 'inactive',
        nodeId: '',
        role: '',
        clusterId: '',
        nodeAddr: '',
        managers: [],
        isLeader: false,
        error: this.lastError,
      };
    }
    return {
      state: 'active',
      nodeId: s.nodeId,
      role: s.role,
      clusterId: s.clusterId,
      nodeAddr: s.advertiseAddr,
      managers: s.managers,
      isLeader: this.manager?.raft.isLeader() ?? false,
      error: this.lastError,
    };
  }

  async stop(): Promise<void> {
    this.localServer.forceShutdown();
    fs.rmSync(this.socketPath, { force: true });
    // The agent stops first and leaves its containers running: a restarted daemon adopts them.
    if (this.agent) await this.agent.stop();
    this.agent = undefined;
    if (this.manager) await this.manager.stop();
    this.manager = undefined;
  }
}

async function waitFor(check: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new ClusterError('UNAVAILABLE', `${what} within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
