// The CLI against a fake daemon: a real gRPC server on a unix socket in a temp dir serving
// canned Control and Local answers and recording requests. Checks what is sent, what is
// printed, and the exit codes (0, 1 for a server error, 2 for usage, 3 for no daemon).
import { after, before, beforeEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { ClusterError } from '../common/errors';
import {
  ControlService,
  type ControlServer,
  type CreateServiceRequest,
  type UpdateClusterRequest,
  type UpdateServiceRequest,
  type UpdateNodeRequest,
  type CreateNetworkRequest,
} from '../gen/cluster/v1/control';
import { LocalService, type LocalServer } from '../gen/cluster/v1/local';
import {
  Cluster,
  Network,
  Node,
  NodeAvailability,
  NodeRole,
  NodeState,
  Service,
  Task,
  TaskState,
} from '../gen/cluster/v1/objects';
import {
  createRootCA,
  generateNodeKey,
  serverCredentials,
  signNodeCertificate,
  type NodeRoleName,
} from '../manager/ca';
import { main } from './main';

const SELF = 'selfselfselfselfselfselfs';

interface State {
  nodes: Node[];
  services: Service[];
  tasks: Task[];
  networks: Network[];
  cluster: Cluster;
  /** Whether created/updated services get running tasks at once (a fast cluster). */
  tasksRunAtOnce: boolean;
  /** Reads return an older version than the store holds, as if someone wrote in between. */
  staleReads: boolean;
}

const recorded: {
  create: CreateServiceRequest[];
  update: UpdateServiceRequest[];
  updateCluster: UpdateClusterRequest[];
  updateNode: UpdateNodeRequest[];
  createNetwork: CreateNetworkRequest[];
  removed: string[];
} = { create: [], update: [], updateCluster: [], updateNode: [], createNetwork: [], removed: [] };

let state: State;

function freshState(): State {
  return {
    nodes: [
      Node.fromPartial({
        id: SELF,
        meta: { version: 3 },
        role: NodeRole.NODE_ROLE_MANAGER,
        description: { hostname: 'm1', runtimeVersion: '27.0.0' },
        status: { state: NodeState.NODE_STATE_READY },
        managerStatus: { leader: true, reachability: 'reachable', addr: '10.0.0.1:4242' },
      }),
      Node.fromPartial({
        id: 'workerworkerworkerworkerw',
        meta: { version: 5 },
        description: { hostname: 'w1', runtimeVersion: '27.0.0' },
        status: { state: NodeState.NODE_STATE_READY },
      }),
    ],
    services: [
      Service.fromPartial({
        id: 'webwebwebwebwebwebwebwebw',
        meta: { version: 10 },
        spec: {
          annotations: { name: 'web' },
          task: { container: { image: 'nginx:1', env: ['A=1'] } },
          mode: { $case: 'replicated', value: { replicas: 2 } },
        },
      }),
    ],
    tasks: [],
    networks: [],
    cluster: Cluster.fromPartial({
      id: 'cluster1',
      meta: { version: 7 },
      joinTokens: { worker: 'SWMTKN-1-worker', manager: 'SWMTKN-1-manager' },
    }),
    tasksRunAtOnce: true,
    staleReads: false,
  };
}

function runningTasks(service: Service): Task[] {
  const mode = service.spec?.mode;
  const replicas = mode?.$case === 'replicated' ? mode.value.replicas : 0;
  return Array.from({ length: replicas }, (_, i) =>
    Task.fromPartial({
      id: `${service.id.slice(0, 5)}task${i + 1}`,
      serviceId: service.id,
      slot: i + 1,
      nodeId: SELF,
      desiredState: TaskState.TASK_STATE_RUNNING,
      specVersion: service.meta?.version ?? 0,
      spec: service.spec?.task,
      status: {
        state: state.tasksRunAtOnce ? TaskState.TASK_STATE_RUNNING : TaskState.TASK_STATE_PENDING,
        timestamp: new Date(),
      },
    }),
  );
}

function lookup<T extends { id: string }>(
  items: T[],
  ref: string,
  name: (t: T) => string | undefined,
  kind: string,
): T {
  const found = items.find((i) => i.id === ref || name(i) === ref) ?? items.find((i) => i.id.startsWith(ref));
  if (!found) throw new ClusterError('NOT_FOUND', `${kind} '${ref}' not found`);
  return found;
}

/** A unary handler that turns a thrown ClusterError into the gRPC error the real server sends. */
function unary<Req, Res>(fn: (req: Req) => Res) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => {
    try {
      callback(null, fn(call.request));
    } catch (e) {
      callback(e instanceof ClusterError ? e.toServiceError() : { code: 13, details: String(e) }, null);
    }
  };
}

const control: ControlServer = {
  getNode: unary((r) => ({ node: lookup(state.nodes, r.nodeId, (n) => n.description?.hostname, 'node') })),
  listNodes: unary(() => ({ nodes: state.nodes })),
  updateNode: unary((r) => {
    recorded.updateNode.push(r);
    return { node: lookup(state.nodes, r.nodeId, () => undefined, 'node') };
  }),
  removeNode: unary((r) => {
    lookup(state.nodes, r.nodeId, (n) => n.description?.hostname, 'node');
    recorded.removed.push(r.nodeId);
    return {};
  }),
  createService: unary((r) => {
    recorded.create.push(r);
    const service = Service.fromPartial({
      id: 'newnewnewnewnewnewnewnewn',
      meta: { version: 20 },
      spec: r.spec,
    });
    state.services.push(service);
    state.tasks.push(...runningTasks(service));
    return { service };
  }),
  getService: unary((r) => {
    const service = lookup(state.services, r.serviceId, (s) => s.spec?.annotations?.name, 'service');
    if (!state.staleReads) return { service };
    return {
      service: Service.fromPartial({ ...service, meta: { version: (service.meta?.version ?? 0) - 1 } }),
    };
  }),
  listServices: unary(() => ({ services: state.services })),
  updateService: unary((r) => {
    recorded.update.push(r);
    const current = lookup(state.services, r.serviceId, () => undefined, 'service');
    if (r.version !== current.meta?.version) {
      throw new ClusterError('CONFLICT', `service '${r.serviceId}' was changed by someone else`);
    }
    const updated = Service.fromPartial({
      ...current,
      meta: { version: (current.meta?.version ?? 0) + 1 },
      spec: r.spec,
    });
    state.services = state.services.map((s) => (s.id === updated.id ? updated : s));
    state.tasks = [...state.tasks.filter((t) => t.serviceId !== updated.id), ...runningTasks(updated)];
    return { service: updated };
  }),
  removeService: unary((r) => {
    const s = lookup(state.services, r.serviceId, (x) => x.spec?.annotations?.name, 'service');
    recorded.removed.push(s.id);
    return {};
  }),
  listTasks: unary((r) => ({
    tasks: r.filters['service']
      ? state.tasks.filter((t) => t.serviceId === r.filters['service'])
      : state.tasks,
  })),
  createNetwork: unary((r) => {
    recorded.createNetwork.push(r);
    return { network: Network.fromPartial({ id: 'netnetnetnetnetnetnetnetn', spec: r.spec }) };
  }),
  getNetwork: unary((r) => ({
    network: lookup(state.networks, r.networkId, (n) => n.spec?.annotations?.name, 'network'),
  })),
  listNetworks: unary(() => ({ networks: state.networks })),
  removeNetwork: unary((r) => {
    lookup(state.networks, r.networkId, (n) => n.spec?.annotations?.name, 'network');
    return {};
  }),
  getCluster: unary(() => ({ cluster: state.cluster })),
  updateCluster: unary((r) => {
    recorded.updateCluster.push(r);
    const tokens = state.cluster.joinTokens ?? { worker: '', manager: '' };
    state.cluster = Cluster.fromPartial({
      ...state.cluster,
      joinTokens: {
        worker: r.rotateWorkerToken ? 'SWMTKN-1-worker2' : tokens.worker,
        manager: r.rotateManagerToken ? 'SWMTKN-1-manager2' : tokens.manager,
      },
    });
    return { cluster: state.cluster };
  }),
};

const local: LocalServer = {
  init: unary((r) => ({
    nodeId: SELF,
    clusterId: 'cluster1',
    workerToken: 'SWMTKN-1-worker',
    managerToken: 'SWMTKN-1-manager',
    managerAddr: r.advertiseAddr ? `${r.advertiseAddr}:4242` : '127.0.0.1:4242',
  })),
  join: unary((r) => {
    if (!r.token.startsWith('SWMTKN-1-')) throw new ClusterError('INVALID_ARGUMENT', 'invalid join token');
    return { nodeId: SELF, role: r.token.includes('manager') ? 'manager' : 'worker', clusterId: 'cluster1' };
  }),
  leave: unary(() => ({})),
  info: unary(() => ({
    state: 'active',
    nodeId: SELF,
    role: 'manager',
    clusterId: 'cluster1',
    nodeAddr: '10.0.0.1',
    managers: [],
    isLeader: true,
    error: '',
  })),
};

let dir = '';
let socket = '';
let server: Server;

before(async () => {
  dir = mkdtempSync(path.join(tmpdir(), 'cluster-cli-'));
  socket = path.join(dir, 'cluster.sock');
  server = new Server();
  server.addService(ControlService, control);
  server.addService(LocalService, local);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
});

after(() => {
  server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(() => {
  state = freshState();
  for (const list of Object.values(recorded)) list.length = 0;
});

async function cluster(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main(['node', 'cluster', '--host', `unix://${socket}`, ...args], {
    stdout: (t) => (stdout += t),
    stderr: (t) => (stderr += t),
    isTTY: false,
  });
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
  return { code, stdout, stderr };
}

test('node ls prints the table with "*" on this node', async () => {
  const r = await cluster('node', 'ls');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    [
      'ID                            HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS   ENGINE VERSION',
      'selfselfselfselfselfselfs *   m1         Ready    Active         Leader           27.0.0',
      'workerworkerworkerworkerw     w1         Ready    Active                          27.0.0',
      '',
    ].join('\n'),
  );
  const q = await cluster('node', 'ls', '-q');
  assert.equal(q.stdout, `${SELF}\nworkerworkerworkerworkerw\n`);
});

test('service create sends the spec, prints the id, waits and reports convergence', async () => {
  const r = await cluster(
    'service',
    'create',
    '--name',
    'api',
    '--replicas',
    '2',
    '-p',
    '8080:80',
    '-e',
    'X=1',
    'nginx:2',
    'nginx',
    '-g',
    'daemon off;',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(recorded.create.length, 1);
  const spec = recorded.create[0]?.spec;
  assert.equal(spec?.annotations?.name, 'api');
  assert.deepEqual(spec?.mode, { $case: 'replicated', value: { replicas: 2 } });
  assert.deepEqual(spec?.task?.container?.args, ['nginx', '-g', 'daemon off;']);
  assert.deepEqual(spec?.task?.container?.env, ['X=1']);
  assert.equal(spec?.endpoint?.ports[0]?.publishedPort, 8080);
  const lines = r.stdout.trimEnd().split('\n');
  assert.equal(lines[0], 'newnewnewnewnewnewnewnewn');
  assert.equal(lines[1], 'overall progress: 2 out of 2 tasks');
  assert.equal(lines.at(-1), 'verify: Service converged');
});

test('service create --detach prints the id only', async () => {
  const r = await cluster('service', 'create', '-d', '--name', 'api', 'nginx:2');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'newnewnewnewnewnewnewnewn\n');
});

test('a bad flag value exits 2 and sends nothing', async () => {
  const r = await cluster('service', 'create', '--replicas', '-1', 'nginx');
  assert.equal(r.code, 2);
  assert.equal(r.stderr, 'Error: invalid argument "-1" for "--replicas": must be a whole number ≥ 0\n');
  assert.equal(recorded.create.length, 0);
  const unknown = await cluster('service', 'ls', '--bogus');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--bogus'/);
  const missingArg = await cluster('service', 'scale');
  assert.equal(missingArg.code, 2);
  const badScale = await cluster('service', 'scale', 'web=lots');
  assert.equal(badScale.code, 2);
  assert.match(badScale.stderr, /whole number/);
});

test('NOT_FOUND from the server exits 1 with its message', async () => {
  const r = await cluster('service', 'inspect', 'nope');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, "Error: service 'nope' not found\n");
});

test('service rm reports each failure and still removes the others', async () => {
  const r = await cluster('service', 'rm', 'nope', 'web', 'gone');
  assert.equal(r.code, 1);
  assert.equal(r.stdout, 'web\n');
  assert.equal(r.stderr, "Error: service 'nope' not found\nError: service 'gone' not found\n");
  assert.deepEqual(recorded.removed, ['webwebwebwebwebwebwebwebw']);
});

test('a missing socket exits 3 with a hint to start the daemon', async () => {
  let stderr = '';
  const code = await main(['node', 'cluster', '--host', `unix://${dir}/absent.sock`, 'service', 'ls'], {
    stdout: () => undefined,
    stderr: (t) => (stderr += t),
    isTTY: false,
  });
  assert.equal(code, 3);
  assert.match(
    stderr,
    /^Error: cannot reach the manager at unix:\/\/.*absent\.sock: is `cluster daemon` running\?/,
  );
});

test('a socket nobody listens on exits 3 too', async () => {
  // A stale socket file left by a dead daemon: the connect itself is refused.
  const stale = path.join(dir, 'stale.sock');
  const dead = new Server();
  await new Promise<void>((resolve, reject) =>
    dead.bindAsync(`unix://${stale}`, ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  dead.forceShutdown();
  // grpc-js unlinks the socket on shutdown; put a plain file there, as a crash leaves one.
  const { writeFileSync, existsSync } = await import('node:fs');
  if (!existsSync(stale)) writeFileSync(stale, '');
  let stderr = '';
  const code = await main(['node', 'cluster', '--host', `unix://${stale}`, 'node', 'ls'], {
    stdout: () => undefined,
    stderr: (t) => (stderr += t),
    isTTY: false,
  });
  assert.equal(code, 3, stderr);
  assert.match(stderr, /cannot reach the manager at unix:\/\/.*stale\.sock: is `cluster daemon` running\?/);
});

test('service update reads the service and sends the edited spec with the version read', async () => {
  const r = await cluster(
    'service',
    'update',
    '-d',
    '--image',
    'nginx:2',
    '--env-add',
    'B=2',
    '--env-rm',
    'A',
    'web',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'web\n');
  const sent = recorded.update[0];
  assert.equal(sent?.serviceId, 'webwebwebwebwebwebwebwebw');
  assert.equal(sent?.version, 10);
  assert.equal(sent?.rollback, '');
  assert.equal(sent?.spec?.task?.container?.image, 'nginx:2');
  assert.deepEqual(sent?.spec?.task?.container?.env, ['B=2']);
});

test('service update waits for tasks of the new spec; rollback asks for the previous spec', async () => {
  const r = await cluster('service', 'update', '--image', 'nginx:3', 'web');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^web\noverall progress: 2 out of 2 tasks\n[\s\S]*\nupdated\n$/);
  state.services = state.services.map((s) => Service.fromPartial({ ...s, previousSpec: s.spec }));
  const back = await cluster('service', 'rollback', '-d', 'web');
  assert.equal(back.code, 0, back.stderr);
  assert.equal(recorded.update[1]?.rollback, 'previous');
  state.services = state.services.map((s) => Service.fromPartial({ ...s, previousSpec: undefined }));
  const none = await cluster('service', 'rollback', '-d', 'web');
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no previous spec/);
});

test('a version conflict from the server exits 1', async () => {
  state.staleReads = true;
  const r = await cluster('service', 'update', '-d', '--force', 'web');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /changed by someone else/);
  assert.equal(recorded.update[0]?.version, 9);
});

test('service scale waits for the new count; the timeout exits 1 naming the counts', async () => {
  const r = await cluster('service', 'scale', 'web=3');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split('\n')[0], 'web scaled to 3');
  assert.match(r.stdout, /overall progress: 3 out of 3 tasks\n[\s\S]*verify: Service converged\n$/);
  assert.deepEqual(recorded.update[0]?.spec?.mode, { $case: 'replicated', value: { replicas: 3 } });

  state.tasksRunAtOnce = false;
  const slow = await cluster('service', 'scale', '--timeout', '300ms', 'web=4');
  assert.equal(slow.code, 1);
  assert.match(slow.stderr, /^Error: service 'web' not converged yet: 0\/4 running; the change was accepted/);
});

test('service ls and --format json', async () => {
  state.tasks = runningTasks(state.services[0] ?? Service.fromPartial({}));
  const r = await cluster('service', 'ls');
  assert.equal(
    r.stdout,
    'ID             NAME   MODE         REPLICAS   IMAGE     PORTS   UPDATE\nwebwebwebweb   web    replicated   2/2        nginx:1\n',
  );
  const j = await cluster('--format', 'json', 'service', 'ls');
  assert.deepEqual(JSON.parse(j.stdout), {
    ID: 'webwebwebweb',
    Name: 'web',
    Mode: 'replicated',
    Replicas: '2/2',
    Image: 'nginx:1',
    Ports: '',
    UpdateStatus: '',
  });
});

test('service ps lists the tasks of a service with node hostnames', async () => {
  state.tasks = runningTasks(state.services[0] ?? Service.fromPartial({}));
  const r = await cluster('service', 'ps', '-q', 'web');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'webwetask1\nwebwetask2\n');
  const table = await cluster('service', 'ps', 'web');
  assert.match(
    table.stdout.split('\n')[1] ?? '',
    /^webwetask1\s+web\.1\s+nginx:1\s+m1\s+Running\s+Running .* ago/,
  );
});

test('init prints the join commands; join and leave talk to the local daemon', async () => {
  const r = await cluster('init', '--advertise-addr', '10.0.0.1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(
    r.stdout,
    `Cluster initialized: current node (${SELF}) is now a manager.\n\n` +
      'To add a worker to this cluster, run the following command:\n\n    cluster join --token SWMTKN-1-worker 10.0.0.1:4242\n\n' +
      'To add a manager to this cluster, run the following command:\n\n    cluster join --token SWMTKN-1-manager 10.0.0.1:4242\n\n',
  );
  const j = await cluster('join', '--token', 'SWMTKN-1-manager-x', '10.0.0.1:4242');
  assert.equal(j.stdout, 'This node joined a cluster as a manager.\n');
  const bad = await cluster('join', '--token', 'nonsense', '10.0.0.1:4242');
  assert.equal(bad.code, 1);
  const noToken = await cluster('join', '10.0.0.1:4242');
  assert.equal(noToken.code, 2);
  assert.equal((await cluster('leave', '--force')).stdout, 'Node left the cluster.\n');
});

test('join-token shows and rotates tokens', async () => {
  const r = await cluster('join-token', 'worker');
  assert.equal(
    r.stdout,
    'To add a worker to this cluster, run the following command:\n\n    cluster join --token SWMTKN-1-worker 10.0.0.1:4242\n\n',
  );
  const q = await cluster('join-token', '-q', '--rotate', 'manager');
  assert.equal(q.stdout, 'SWMTKN-1-manager2\n');
  assert.equal(recorded.updateCluster[0]?.version, 7);
  assert.equal(recorded.updateCluster[0]?.rotateManagerToken, true);
  assert.equal(recorded.updateCluster[0]?.rotateWorkerToken, false);
  assert.equal((await cluster('join-token', 'admin')).code, 2);
});

test('node update, promote and demote send the changed node spec with the version read', async () => {
  const r = await cluster('node', 'update', '--availability', 'drain', '--label-add', 'zone=a', 'w1');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(recorded.updateNode[0]?.version, 5);
  assert.equal(recorded.updateNode[0]?.spec?.availability, NodeAvailability.NODE_AVAILABILITY_DRAIN);
  assert.deepEqual(recorded.updateNode[0]?.spec?.annotations?.labels, { zone: 'a' });
  assert.equal((await cluster('node', 'update', '--availability', 'asleep', 'w1')).code, 2);
  const p = await cluster('node', 'promote', 'w1');
  assert.equal(p.stdout, 'Node w1 promoted to a manager in the cluster.\n');
  assert.equal(recorded.updateNode[1]?.spec?.desiredRole, NodeRole.NODE_ROLE_MANAGER);
  const inspect = await cluster('node', 'inspect', 'self');
  assert.equal((JSON.parse(inspect.stdout) as Array<{ id: string }>)[0]?.id, SELF);
});

test('network create sends the spec; bad subnets are usage errors', async () => {
  const r = await cluster(
    'network',
    'create',
    '--subnet',
    '10.0.9.0/24',
    '--gateway',
    '10.0.9.1',
    '--attachable',
    '-l',
    'a=b',
    'backend',
  );
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'netnetnetnetnetnetnetnetn\n');
  assert.deepEqual(recorded.createNetwork[0]?.spec?.ipam, { subnet: '10.0.9.0/24', gateway: '10.0.9.1' });
  assert.equal(recorded.createNetwork[0]?.spec?.attachable, true);
  assert.equal((await cluster('network', 'create', '--subnet', '10.0.9/24', 'x')).code, 2);
  assert.equal((await cluster('network', 'rm', 'nope')).code, 1);
});

test('service logs: bad --tail or --since is a usage error; a daemon without the Logs service fails with exit 1', async () => {
  const tail = await cluster('service', 'logs', '--tail', 'many', 'web');
  assert.equal(tail.code, 2);
  assert.match(tail.stderr, /--tail/);
  const since = await cluster('service', 'logs', '--since', 'yesterday', 'web');
  assert.equal(since.code, 2);
  assert.match(since.stderr, /--since/);
  const r = await cluster('service', 'logs', 'web');
  assert.equal(r.code, 1);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

async function nodeTls(ca: { certPem: string; keyPem: string }, nodeId: string, role: NodeRoleName) {
  const key = await generateNodeKey();
  const certPem = await signNodeCertificate(ca, key.csrPem, { nodeId, role, clusterId: 'cluster1' });
  return { caCertPem: ca.certPem, certPem, keyPem: key.keyPem };
}

async function tlsServer(tls: {
  caCertPem: string;
  certPem: string;
  keyPem: string;
}): Promise<{ server: Server; port: number }> {
  const s = new Server();
  s.addService(ControlService, control);
  const port = await new Promise<number>((resolve, reject) =>
    s.bindAsync('127.0.0.1:0', serverCredentials(tls), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server: s, port };
}

test('host:port goes over mutual TLS with the node certificate from --tls-dir', async () => {
  const ca = await createRootCA('cluster1');
  const tlsDir = path.join(dir, 'tls');
  mkdirSync(tlsDir, { recursive: true });
  // The CLI runs on the worker w1, so its certificate marks w1 as "self".
  const client = await nodeTls(ca, 'workerworkerworkerworkerw', 'worker');
  writeFileSync(path.join(tlsDir, 'ca.crt'), client.caCertPem);
  writeFileSync(path.join(tlsDir, 'node.crt'), client.certPem);
  writeFileSync(path.join(tlsDir, 'node.key'), client.keyPem);
  const manager = await tlsServer(await nodeTls(ca, SELF, 'manager'));
  const impostor = await tlsServer(await nodeTls(ca, 'impostorimpostorimpostorx', 'worker'));
  try {
    const run = async (port: number) => {
      let stdout = '';
      let stderr = '';
      const code = await main(
        ['node', 'cluster', '--host', `127.0.0.1:${port}`, '--tls-dir', tlsDir, 'node', 'ls', '-q'],
        {
          stdout: (t) => (stdout += t),
          stderr: (t) => (stderr += t),
          isTTY: false,
        },
      );
      return { code, stdout, stderr };
    };
    const ok = await run(manager.port);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `${SELF}\nworkerworkerworkerworkerw\n`);
    let table = '';
    await main(
      ['node', 'cluster', '--host', `127.0.0.1:${manager.port}`, '--tls-dir', tlsDir, 'node', 'ls'],
      {
        stdout: (t) => (table += t),
        stderr: () => undefined,
        isTTY: false,
      },
    );
    assert.match(table, /^workerworkerworkerworkerw \*/m);
    // A server whose certificate says worker is not a manager: the CLI refuses to talk to it.
    const refused = await run(impostor.port);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(refused.stderr, /cannot reach the manager at 127\.0\.0\.1:/);
  } finally {
    manager.server.forceShutdown();
    impostor.server.forceShutdown();
  }
});
