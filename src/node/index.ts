// The node process: `cluster daemon`. Composes the daemon (Local API, init/join/leave) with the
// manager's components (control API, and the leader loops as they exist) and runs until SIGTERM.
import type { handleUnaryCall } from '@grpc/grpc-js';
import {
  ControlClient,
  ControlService,
  LogsService,
  type ControlServer,
  type LogsServer,
} from '../gen/cluster/v1/control';
import { ClusterError } from '../common/errors';
import { componentLogger } from '../common/logger';
import { clientCredentials, NODE_CHANNEL_OPTIONS, nodeIdentityFromPeer } from '../manager/ca';
import { requireStanding } from '../manager/ca/renew';
import {
  createControlServer,
  forwardingControl,
  requireManagerCertificate,
  type Authorize,
  type LeaderRoute,
} from '../manager/controlapi';
import { controlLoops } from '../manager/orchestrator';
import { dispatcherFor } from '../manager/dispatcher';
import { DispatcherService, LogBrokerService } from '../gen/cluster/v1/dispatcher';
import { createLogBroker, forwardingLogs, type LogBroker } from '../manager/logs';
import { Agent } from '../agent';
import { Mesh, type LbMode } from '../agent/mesh';
import type { Runtime } from '../agent/runtime';
import { DockerRuntime } from '../agent/runtime/docker';
import { OciRuntime, type LogLimits } from '../agent/runtime/oci';
import { ingressGate, meshLoop } from '../manager/allocator/mesh';
import { Daemon, type DaemonOptions } from './daemon';
import type { Manager } from './manager';

/** The unix socket's answer to a control call on a node that runs no manager. */
function notAManager() {
  return new ClusterError(
    'FAILED_PRECONDITION',
    "this node is not a manager: run the command on a manager, or 'cluster init' / 'cluster join' first",
  ).toServiceError();
}
export { Daemon, type DaemonOptions } from './daemon';
export { Manager } from './manager';

/** One Control client per leader address, reused across calls. */
class LeaderRouter {
  private client?: { addr: string; client: ControlClient };

  constructor(private readonly manager: Manager) {}

  route(): LeaderRoute {
    if (this.manager.raft.isLeader()) return { isLeader: true };
    const addr = this.manager.leaderAddress();
    if (!addr) return { isLeader: false };
    if (this.client?.addr !== addr) {
      this.client?.client.close();
      this.client = {
        addr,
        client: new ControlClient(addr, clientCredentials(this.manager.tls, 'manager'), NODE_CHANNEL_OPTIONS),
      };
    }
    return { isLeader: false, leaderClient: this.client.client, leaderName: addr };
  }

  close(): void {
    this.client?.client.close();
    this.client = undefined;
  }
}

/** Per manager: the control logic over its store, and the route to the leader (closed on stop). */
const controlParts = new WeakMap<Manager, { local: ControlServer; router: LeaderRouter }>();

function controlPartsOf(manager: Manager): { local: ControlServer; router: LeaderRouter } {
  let parts = controlParts.get(manager);
  if (!parts) {
    const local = createControlServer({
      store: manager.store,
      nodeId: manager.nodeId,
      // The Raft members as this manager sees them (the leader answers: followers forward).
      raftMembers: () => {
        const voters = new Set(manager.raft.status().voters);
        return manager.store.view((tx) =>
          tx.nodes
            .list((n) => voters.has(n.managerStatus?.raftId ?? 0))
            .map((n) => ({
              nodeId: n.id,
              reachable: manager.raft.peerConnected(n.managerStatus?.raftId ?? 0),
            })),
        );
      },
    });
    parts = { local, router: new LeaderRouter(manager) };
    controlParts.set(manager, parts);
  }
  return parts;
}

/** The Control service of a manager: served on the leader, forwarded to it elsewhere. */
function controlFor(manager: Manager, authorize?: Authorize): ControlServer {
  const { local, router } = controlPartsOf(manager);
  return forwardingControl(local, () => router.route(), { authorize, selfName: manager.nodeId });
}

/** The control API on the unix socket, routed to whichever manager this daemon currently runs. */
function socketControl(current: () => Manager | undefined): ControlServer {
  const servers = new WeakMap<Manager, ControlServer>();
  const handlers: Record<string, handleUnaryCall<unknown, unknown>> = {};
  for (const method of Object.keys(ControlService)) {
    handlers[method] = (call, callback) => {
      const manager = current();
      if (!manager) {
        callback(notAManager());
        return;
      }
      let server = servers.get(manager);
      if (!server) {
        server = controlFor(manager);
        servers.set(manager, server);
      }
      (server as unknown as Record<string, handleUnaryCall<unknown, unknown>>)[method]?.(call, callback);
    };
  }
  return handlers as ControlServer;
}

/** One dispatcher per manager: the same object serves the gRPC calls and runs the leader loop. */
function dispatcherOf(manager: Manager) {
  return dispatcherFor(manager, { logger: componentLogger('dispatcher', { nodeId: manager.nodeId }) });
}

/** The daemon's options, its container runtime (`--runtime`; undefined detects) and load balancer (`--lb`). */
export type NodeDaemonOptions = DaemonOptions & {
  runtime?: 'docker' | 'oci';
  lb?: LbMode;
  /** The oci runtime's bound on each container's log (`--log-max-size`, `--log-max-files`). */
  logLimits?: LogLimits;
};

/** `--runtime docker|oci`, or detected: docker where an engine answers on its socket, else oci. */
export async function chooseRuntime(
  choice: 'docker' | 'oci' | undefined,
  dataDir: string,
  docker: DockerRuntime = new DockerRuntime(),
  logLimits?: LogLimits,
): Promise<Runtime> {
  if (choice === 'oci') return new OciRuntime({ dataDir, logLimits });
  if (choice === 'docker') return docker;
  try {
    await docker.describe();
    return docker;
  } catch {
    return new OciRuntime({ dataDir, logLimits });
  }
}

/** One log broker per manager: its agent side, reader side and leader loop are one object. */
const brokers = new WeakMap<Manager, LogBroker>();
function brokerOf(manager: Manager): LogBroker {
  let broker = brokers.get(manager);
  if (!broker) {
    broker = createLogBroker({
      store: manager.store,
      isLeader: () => manager.raft.isLeader(),
      leaderAddress: () => manager.leaderAddress(),
      logger: componentLogger('logbroker', { nodeId: manager.nodeId }),
    });
    brokers.set(manager, broker);
  }
  return broker;
}

/** ServiceLogs of a manager: served by the leader's broker, relayed to it elsewhere. */
function logsFor(manager: Manager, authorize?: Authorize): LogsServer {
  const { router } = controlPartsOf(manager);
  return forwardingLogs(brokerOf(manager).readers, () => router.route(), {
    authorize,
    selfName: manager.nodeId,
  });
}

/** ServiceLogs on the unix socket, routed to whichever manager this daemon currently runs. */
function socketLogs(current: () => Manager | undefined): LogsServer {
  const servers = new WeakMap<Manager, LogsServer>();
  return {
    serviceLogs: (call) => {
      const manager = current();
      if (!manager) {
        call.emit('error', notAManager());
        return;
      }
      let server = servers.get(manager);
      if (!server) {
        server = logsFor(manager);
        servers.set(manager, server);
      }
      server.serviceLogs(call);
    },
  };
}

export function daemonOptions(base: NodeDaemonOptions): DaemonOptions {
  return {
    ...base,
    managerParts: {
      services: (manager) => [
        {
          definition: ControlService,
          implementation: controlFor(manager, async (call) => {
            await requireManagerCertificate(call);
            // The certificate says manager; the store may say the node was removed or demoted.
            requireStanding(
              manager.store,
              nodeIdentityFromPeer(call.getAuthContext()?.sslPeerCertificate),
              'manager',
            );
          }),
        },
        { definition: DispatcherService, implementation: dispatcherOf(manager).server },
        { definition: LogBrokerService, implementation: brokerOf(manager).agents },
        { definition: LogsService, implementation: logsFor(manager, requireManagerCertificate) },
      ],
      loops: (manager) => [
        ...controlLoops(manager.store, { taskAllocators: [ingressGate] }),
        meshLoop(manager.store, componentLogger('mesh', { nodeId: manager.nodeId })),
        dispatcherOf(manager).loop,
        brokerOf(manager).loop,
      ],
      onStop: (manager) => {
        dispatcherOf(manager).close();
        brokerOf(manager).close();
        controlParts.get(manager)?.router.close();
      },
    },
    localServices: (current) => [
      { definition: ControlService, implementation: socketControl(current) },
      { definition: LogsService, implementation: socketLogs(current) },
    ],
    startAgent: async (dirs, state, tls) => {
      const logger = componentLogger('agent', { nodeId: state.nodeId });
      const mesh = new Mesh(logger, { lb: base.lb });
      const runtime = await chooseRuntime(base.runtime, dirs.root, undefined, base.logLimits);
      logger.info({ runtime: runtime.name, chosen: base.runtime ?? 'detected' }, 'container runtime');
      return Agent.start({
        dataDir: dirs.agentDir,
        tls,
        managers: state.managers,
        nodeId: state.nodeId,
        runtime: mesh.wrap(runtime),
        logger,
        mesh,
        drainMs: base.drainMs,
      });
    },
  };
}

/** Runs the daemon until SIGTERM or SIGINT; resolves with the exit code. */
export async function runDaemon(options: NodeDaemonOptions): Promise<number> {
  const logger = componentLogger('daemon');
  const daemon = await Daemon.start(daemonOptions(options));
  logger.info({ socket: daemon.socketPath, dataDir: options.dataDir }, 'daemon running');
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  logger.info('stopping');
  await daemon.stop();
  return 0;
}
