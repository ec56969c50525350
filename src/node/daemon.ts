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
  NodeCertificatesClient,
  type GetRootCACertificateResponse,
  type IssueNodeCertificateResponse,
  type RenewNodeCertificateResponse,
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
  nodeIdentityFromCert,
  signNodeCertificate,
  verifyCaAgainstToken,
  type NodeTls,
} from '../manager/ca';
import { newId } from '../store';
import { abortableSleep } from '../common/sleep';
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
/** How long one NodeCertificates.Renew call waits at the leader for this node's role to change. */
export const ROLE_WATCH_WAIT_MS = 25_000;
const ROLE_WATCH_RETRY_MAX_MS = 5_000;

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
  private roleWatch?: { abort: AbortController; done: Promise<void> };

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
    let state = loadState(this.dirs);
    if (!state) return;
    const tls = loadTls(this.dirs.tlsDir);
    const certRole = nodeIdentityFromCert(tls.certPem).role;
    // A role change cut short by a crash: the certificate (written first) says where it was going.
    if (state.role === 'worker' && certRole === 'manager') {
      state = saveState(this.dirs, { ...state, role: 'manager', raftId: undefined });
    } else if (state.role === 'manager' && certRole === 'worker') {
      fs.rmSync(this.dirs.raftDir, { recursive: true, force: true });
      fs.rmSync(this.dirs.raftPeersFile, { force: true });
      state = saveState(this.dirs, { ...state, role: 'worker', raftId: undefined });
    }
    this.state = state;
    if (state.role === 'manager' && state.raftId) {
      this.manager = await Manager.start(this.managerOptions(state, tls, {}));
      this.logger.info({ nodeId: state.nodeId }, 'resumed as a manager');
    } else if (state.role === 'manager') {
      // No raft id yet: a join (or promotion) was interrupted before the Raft group admitted
      // us. The role watch finishes it in the background, retrying while no leader answers.
      this.logger.info({ nodeId: state.nodeId }, 'resumed with an unfinished manager join');
    } else {
      this.logger.info({ nodeId: state.nodeId }, 'resumed as a worker');
    }
    await this.startAgent(this.state);
    this.startRoleWatch();
  }

  /**
   * Joins the Raft group with a manager certificate and starts the manager. The state file says
   * role manager without a raft id until the group admitted this node, so a crash in between
   * is finished at the next start (the leader gives the same raft id again). A manager that
   * cannot start leaves the group again, so it does not cost the group its quorum.
   */
  private async joinAsManager(pending: NodeState, tls: NodeTls): Promise<Manager> {
    const candidates = [...new Set(pending.managers)];
    const joined = await this.joinRaft(tls, candidates, pending.advertiseAddr);
    const peers = new Map<number, string>();
    for (const member of joined.members)
      if (member.raftId !== joined.raftId) peers.set(member.raftId, member.addr);
    try {
      const state = saveState(this.dirs, { ...pending, raftId: joined.raftId });
      const manager = await Manager.start(this.managerOptions(state, tls, { peers }));
      this.logger.info({ nodeId: state.nodeId, raftId: joined.raftId }, 'joined the raft group');
      return manager;
    } catch (err) {
      this.logger.error({ err }, 'joined the Raft group but could not start: leaving it again');
      await this.leaveRaft(tls, candidates, joined.raftId);
      throw err;
    }
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
          removedNodes: [],
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
      this.startRoleWatch();
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
      this.startRoleWatch();
      this.logger.info({ nodeId: issued.nodeId }, 'joined as a worker');
      return { nodeId: issued.nodeId, role, clusterId: issued.clusterId };
    }

    // 3. A manager joins the Raft group, then starts its own Raft node. Only the leader admits a
    // member (it must see the joiner's own certificate): ask the managers in turn, the leader
    // first as the cluster listed them, until one accepts. The state is written first, without
    // a raft id: a crash from here on is finished by the next start instead of blocking a retry.
    const pending = saveState(this.dirs, {
      nodeId: issued.nodeId,
      clusterId: issued.clusterId,
      role,
      advertiseAddr: advertise,
      listenAddr: listen,
      managers: [...new Set([...managers, remote])],
    });
    let manager: Manager;
    try {
      manager = await this.joinAsManager(pending, tls);
    } catch (err) {
      clearClusterState(this.dirs);
      throw err;
    }
    this.manager = manager;
    this.state = loadState(this.dirs) ?? pending;
    await this.startAgent(this.state);
    this.startRoleWatch();
    this.logger.info({ nodeId: issued.nodeId, raftId: this.state.raftId }, 'joined as a manager');
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
    await this.stopRoleWatch();
    if (this.agent) {
      await this.agent.shutdownTasks();
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

  // ------------------------------------------------------------------ role changes
  private startRoleWatch(): void {
    if (this.roleWatch || !this.state) return;
    const abort = new AbortController();
    const done = this.watchRole(abort.signal).catch((err: unknown) => {
      if (!abort.signal.aborted) this.logger.error({ err }, 'role watch ended');
    });
    this.roleWatch = { abort, done };
  }

  private async stopRoleWatch(): Promise<void> {
    const watch = this.roleWatch;
    this.roleWatch = undefined;
    if (!watch) return;
    watch.abort.abort();
    await watch.done;
  }

  /**
   * Keeps one NodeCertificates.Renew call open with the leader: it answers when this node's
   * role changes (node promote / demote), with a certificate for the new role. Each answer also
   * lists the managers, which are kept in the state file so that a restarted node finds the
   * cluster even when the managers it first knew are gone.
   */
  private async watchRole(signal: AbortSignal): Promise<void> {
    let turn = 0;
    let failures = 0;
    while (!signal.aborted) {
      const state = this.state;
      if (!state) return;
      if (state.role === 'manager' && !this.manager) {
        if (!(await this.finishManagerJoin())) {
          failures++;
          await abortableSleep(
            Math.min(ROLE_WATCH_RETRY_MAX_MS, 100 * 2 ** Math.min(failures, 6)),
            signal,
          ).catch(() => undefined);
          continue;
        }
        failures = 0;
      }
      const candidates = state.managers.length > 0 ? state.managers : [state.advertiseAddr];
      const addr = candidates[turn % candidates.length] ?? state.advertiseAddr;
      let tls: NodeTls;
      try {
        tls = loadTls(this.dirs.tlsDir);
      } catch {
        return; // left the cluster meanwhile
      }
      const client = new NodeCertificatesClient(
        addr,
        clientCredentials(tls, 'manager'),
        NODE_CHANNEL_OPTIONS,
      );
      // Closing a client lets its calls run on: the long poll itself is cancelled on stop.
      let inFlight: { cancel(): void } | undefined;
      const onAbort = () => inFlight?.cancel();
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        const key = await generateNodeKey();
        if (signal.aborted) return;
        const answer = await callUnary<RenewNodeCertificateResponse>(
          (m, o, cb) => (inFlight = client.renew({ csr: key.csrPem, waitMs: ROLE_WATCH_WAIT_MS }, m, o, cb)),
          ROLE_WATCH_WAIT_MS + JOIN_DEADLINE_MS,
        );
        failures = 0;
        if (signal.aborted) return;
        this.rememberManagers(answer.managers);
        turn = 0;
        if (answer.certificate) {
          const role = answer.role === 'manager' ? 'manager' : 'worker';
          await this.changeRole(role, {
            caCertPem: tls.caCertPem,
            certPem: answer.certificate,
            keyPem: key.keyPem,
          });
        }
      } catch (err) {
        if (signal.aborted) return;
        const e = toClusterError(err);
        failures++;
        turn++;
        if (e.code === 'PERMISSION_DENIED')
          this.logger.warn({ manager: addr, err: e.message }, 'role watch refused');
        else this.logger.debug({ manager: addr, err: e.message }, 'role watch: trying another manager');
        await abortableSleep(
          Math.min(ROLE_WATCH_RETRY_MAX_MS, 100 * 2 ** Math.min(failures, 6)),
          signal,
        ).catch(() => undefined);
      } finally {
        signal.removeEventListener('abort', onAbort);
        client.close();
      }
    }
  }

  /** Joins Raft and starts the manager for a state that says manager but runs none; false on failure. */
  private async finishManagerJoin(): Promise<boolean> {
    if (this.busy) return false;
    this.busy = true;
    try {
      const state = this.state;
      if (!state || state.role !== 'manager' || this.manager) return true;
      this.manager = await this.joinAsManager(state, loadTls(this.dirs.tlsDir));
      this.state = loadState(this.dirs) ?? state;
      this.lastError = '';
      return true;
    } catch (err) {
      this.lastError = `joining the managers: ${toClusterError(err).message}`;
      this.logger.warn(
        { err: toClusterError(err).message },
        'could not finish joining the managers; retrying',
      );
      return false;
    } finally {
      this.busy = false;
    }
  }

  private rememberManagers(managers: readonly string[]): void {
    const state = this.state;
    if (!state || managers.length === 0) return;
    if (managers.length === state.managers.length && managers.every((m, i) => state.managers[i] === m))
      return;
    this.state = saveState(this.dirs, { ...state, managers: [...managers] });
  }

  /** Applies a new role with its certificate (written first: a crash is finished at restart). */
  private async changeRole(role: 'manager' | 'worker', tls: NodeTls): Promise<void> {
    if (this.busy) return; // init/join/leave runs: the next answer repeats the change
    this.busy = true;
    try {
      const state = this.state;
      if (!state || state.role === role) return;
      saveTls(this.dirs, tls);
      if (role === 'manager') {
        const pending = saveState(this.dirs, { ...state, role: 'manager', raftId: undefined });
        this.state = pending;
        this.logger.info({ nodeId: state.nodeId }, 'promoted: joining the raft group');
        this.manager = await this.joinAsManager(pending, tls);
        this.state = loadState(this.dirs) ?? pending;
      } else {
        this.logger.info({ nodeId: state.nodeId }, 'demoted: stopping the manager parts');
        const manager = this.manager;
        this.manager = undefined;
        await manager?.stop();
        fs.rmSync(this.dirs.raftDir, { recursive: true, force: true });
        fs.rmSync(this.dirs.raftPeersFile, { force: true });
        this.state = saveState(this.dirs, { ...state, role: 'worker', raftId: undefined });
      }
      this.lastError = '';
    } catch (err) {
      this.lastError = toClusterError(err).message;
      this.logger.error({ err, role }, 'role change failed; it is retried');
    } finally {
      this.busy = false;
    }
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
    await this.stopRoleWatch();
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
