// Test helpers of the control API: an API over a MemoryStore fed by a LocalProposer, a service
// spec with every field set, and objects written straight into the store.
import { Server, ServerCredentials, type ServiceError } from '@grpc/grpc-js';
import pino from 'pino';

import { toClusterError } from '../../common/errors';
import type { Logger } from '../../common/logger';
import {
  Cluster,
  EndpointSpec_ResolutionMode,
  Mount_Type,
  Network,
  Node,
  NodeAvailability,
  NodeRole,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  RestartPolicy_Condition,
  ServiceSpec,
  Task,
  TaskState,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
} from '../../gen/cluster/v1/objects';
import { LocalProposer, MemoryStore, newId } from '../../store';
import { ControlApi, type ControlApiDeps } from './api';

export const silentLogger: Logger = pino({ level: 'silent' });

export interface TestApi {
  api: ControlApi;
  store: MemoryStore;
  proposer: LocalProposer;
}

export function newTestApi(deps: Partial<ControlApiDeps> = {}): TestApi {
  const proposer = new LocalProposer();
  const store = new MemoryStore();
  proposer.attach(store);
  const api = new ControlApi({ store, logger: silentLogger, ...deps });
  return { api, store, proposer };
}

/** The whole store as bytes: equal before and after means nothing was written. */
export function storeBytes(store: MemoryStore): Buffer {
  return Buffer.from(store.snapshot());
}

/** A valid spec using every field of ServiceSpec (networks name `network`). */
export function fullServiceSpec(name = 'web', network = 'backend'): ServiceSpec {
  return ServiceSpec.fromPartial({
    annotations: { name, labels: { tier: 'front', team: 'a' } },
    task: {
      container: {
        image: 'registry.local:5000/team/nginx:1.27@sha256:' + 'a'.repeat(64),
        command: ['nginx'],
        args: ['-g', 'daemon off;'],
        env: ['GREETING=hi', 'EMPTY='],
        labels: { 'com.example.role': 'web' },
        hostname: '{{.Service.Name}}-{{.Task.Slot}}',
        user: 'www-data:www-data',
        dir: '/srv',
        mounts: [
          {
            type: Mount_Type.TYPE_BIND,
            source: '/srv/www',
            target: '/www',
            readOnly: true,
            tmpfsSizeBytes: 0,
          },
          {
            type: Mount_Type.TYPE_VOLUME,
            source: 'cache',
            target: '/cache',
            readOnly: false,
            tmpfsSizeBytes: 0,
          },
          {
            type: Mount_Type.TYPE_TMPFS,
            source: '',
            target: '/tmp',
            readOnly: false,
            tmpfsSizeBytes: 64 * 1024 * 1024,
          },
        ],
        stopGracePeriod: { seconds: 10, nanos: 0 },
        stopSignal: 'SIGQUIT',
        healthcheck: {
          test: ['CMD-SHELL', 'wget -qO- localhost/health'],
          interval: { seconds: 5, nanos: 0 },
          timeout: { seconds: 2, nanos: 0 },
          retries: 3,
          startPeriod: { seconds: 1, nanos: 0 },
        },
        dnsConfig: {
          nameservers: ['10.0.0.2', 'fd00::53'],
          search: ['example.org'],
          options: ['ndots:2', 'rotate'],
        },
        readOnly: true,
        init: true,
      },
      resources: {
        limits: { nanoCpus: 2e9, memoryBytes: 256 * 1024 * 1024, pids: 512 },
        reservations: { nanoCpus: 5e8, memoryBytes: 64 * 1024 * 1024 },
      },
      restart: {
        condition: RestartPolicy_Condition.CONDITION_ON_FAILURE,
        delay: { seconds: 2, nanos: 500_000_000 },
        maxAttempts: 3,
        window: { seconds: 60, nanos: 0 },
      },
      placement: {
        constraints: ['node.role==worker', 'node.labels.zone!=b'],
        spreadPreferences: ['spread=node.labels.zone'],
      },
      networks: [{ target: network, aliases: ['www'] }],
      forceUpdate: 1,
    },
    mode: { $case: 'replicated', value: { replicas: 3 } },
    update: {
      parallelism: 2,
      delay: { seconds: 2, nanos: 0 },
      failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK,
      monitor: { seconds: 10, nanos: 0 },
      maxFailureRatio: 0.25,
      order: UpdateConfig_Order.ORDER_START_FIRST,
    },
    rollback: {
      parallelism: 0,
      delay: { seconds: 0, nanos: 0 },
      failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE,
      monitor: { seconds: 3, nanos: 0 },
      maxFailureRatio: 1,
      order: UpdateConfig_Order.ORDER_STOP_FIRST,
    },
    endpoint: {
      mode: EndpointSpec_ResolutionMode.RESOLUTION_MODE_VIP,
      ports: [
        {
          name: 'http',
          protocol: PortConfig_Protocol.PROTOCOL_TCP,
          targetPort: 80,
          publishedPort: 8080,
          publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
        },
        {
          name: 'dns',
          protocol: PortConfig_Protocol.PROTOCOL_UDP,
          targetPort: 53,
          publishedPort: 5353,
          publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
        },
      ],
    },
  });
}

export function simpleSpec(
  name: string,
  opts: { replicas?: number; global?: boolean; image?: string } = {},
): ServiceSpec {
  const spec = ServiceSpec.fromPartial({
    annotations: { name },
    task: { container: { image: opts.image ?? 'busybox:latest' } },
  });
  spec.mode = opts.global
    ? { $case: 'global', value: {} }
    : { $case: 'replicated', value: { replicas: opts.replicas ?? 1 } };
  return spec;
}

export interface NodeOptions {
  id?: string;
  role?: NodeRole;
  desiredRole?: NodeRole;
  state?: NodeState;
  availability?: NodeAvailability;
  labels?: Record<string, string>;
  engineLabels?: Record<string, string>;
  reachability?: string;
}

export function testNode(hostname: string, opts: NodeOptions = {}): Node {
  const role = opts.role ?? NodeRole.NODE_ROLE_WORKER;
  return Node.fromPartial({
    id: opts.id ?? newId(),
    spec: {
      annotations: { name: '', labels: opts.labels ?? {} },
      desiredRole: opts.desiredRole ?? role,
      availability: opts.availability ?? NodeAvailability.NODE_AVAILABILITY_ACTIVE,
    },
    description: { hostname, engineLabels: opts.engineLabels ?? {} },
    status: { state: opts.state ?? NodeState.NODE_STATE_READY },
    role,
    managerStatus:
      role === NodeRole.NODE_ROLE_MANAGER
        ? { reachability: opts.reachability ?? 'reachable', addr: '127.0.0.1:4242' }
        : undefined,
  });
}

/** Writes objects as the other components would (the orchestrator, the dispatcher, init). */
export async function seed(
  store: MemoryStore,
  objects: { nodes?: Node[]; networks?: Network[]; tasks?: Task[]; clusters?: Cluster[] },
): Promise<void> {
  await store.update((tx) => {
    for (const n of objects.nodes ?? []) tx.nodes.create(n);
    for (const n of objects.networks ?? []) tx.networks.create(n);
    for (const t of objects.tasks ?? []) tx.tasks.create(t);
    for (const c of objects.clusters ?? []) tx.clusters.create(c);
  });
}

export function testTask(
  serviceId: string,
  slot: number,
  opts: { nodeId?: string; desiredState?: TaskState } = {},
): Task {
  return Task.fromPartial({
    id: newId(),
    serviceId,
    slot,
    nodeId: opts.nodeId ?? '',
    desiredState: opts.desiredState ?? TaskState.TASK_STATE_RUNNING,
    status: { state: TaskState.TASK_STATE_RUNNING },
  });
}

export function testNetwork(name: string, opts: { subnet?: string; ingress?: boolean } = {}): Network {
  return Network.fromPartial({
    id: newId(),
    spec: {
      annotations: { name },
      driver: 'overlay',
      ipam: { subnet: opts.subnet ?? '', gateway: '' },
      ingress: opts.ingress ?? false,
    },
  });
}

/** A callback-style client call as a promise; errors become ClusterErrors as the CLI sees them. */
export function unary<Res>(
  start: (callback: (error: ServiceError | null, response: Res) => void) => unknown,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    start((error, response) => (error ? reject(toClusterError(error)) : resolve(response)));
  });
}

/** Binds a grpc server on `address` (port 0 allowed) and resolves with the bound port. */
export function bindServer(server: Server, address: string): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (error, port) =>
      error ? reject(error) : resolve(port),
    );
  });
}

export function shutdownServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.tryShutdown(() => resolve());
    // Calls still open (none expected) must not keep the test alive.
    setImmediate(() => server.forceShutdown());
  });
}
