import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Network,
  Node,
  NodeAvailability,
  NodeRole,
  NodeState,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  Service,
  Task,
  TaskState,
  UpdateStatus_State,
} from '../gen/cluster/v1/objects';
import { formatInspect, formatPretty, formatQuiet, formatRows, humanDuration } from './output';
import {
  NETWORK_COLUMNS,
  networkRows,
  NODE_COLUMNS,
  NODE_JSON_COLUMNS,
  nodeRows,
  SERVICE_COLUMNS,
  serviceRows,
  taskColumns,
  taskRows,
} from './views';

const NOW = new Date('2026-01-01T12:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms);

const nodes = [
  Node.fromPartial({
    id: 'n2workerworkerworkerworkr',
    role: NodeRole.NODE_ROLE_WORKER,
    description: { hostname: 'worker-1', runtimeVersion: '27.3.1' },
    status: { state: NodeState.NODE_STATE_DOWN },
    spec: { availability: NodeAvailability.NODE_AVAILABILITY_DRAIN },
  }),
  Node.fromPartial({
    id: 'n1leaderleaderleaderleadr',
    role: NodeRole.NODE_ROLE_MANAGER,
    description: { hostname: 'manager-1', runtimeVersion: '27.3.1' },
    status: { state: NodeState.NODE_STATE_READY },
    managerStatus: { leader: true, reachability: 'reachable' },
  }),
  Node.fromPartial({
    id: 'n3followerfollowerfollowr',
    role: NodeRole.NODE_ROLE_MANAGER,
    description: { hostname: 'manager-2', runtimeVersion: '27.3.1' },
    status: { state: NodeState.NODE_STATE_READY },
    spec: { availability: NodeAvailability.NODE_AVAILABILITY_PAUSE },
    managerStatus: { leader: false, reachability: 'unreachable' },
  }),
];

test('node ls: Docker columns, sorted by hostname, "*" on this node', () => {
  const rows = nodeRows(nodes, 'n1leaderleaderleaderleadr');
  assert.equal(
    formatRows('table', NODE_COLUMNS, rows),
    [
      'ID                            HOSTNAME    STATUS   AVAILABILITY   MANAGER STATUS   ENGINE VERSION',
      'n1leaderleaderleaderleadr *   manager-1   Ready    Active         Leader           27.3.1',
      'n3followerfollowerfollowr     manager-2   Ready    Pause          Unreachable      27.3.1',
      'n2workerworkerworkerworkr     worker-1    Down     Drain                           27.3.1',
      '',
    ].join('\n'),
  );
  assert.equal(
    formatRows('json', NODE_JSON_COLUMNS, rows).split('\n')[0],
    JSON.stringify({
      ID: 'n1leaderleaderleaderleadr',
      Hostname: 'manager-1',
      Status: 'Ready',
      Availability: 'Active',
      ManagerStatus: 'Leader',
      EngineVersion: '27.3.1',
      Self: true,
    }),
  );
});

const web = Service.fromPartial({
  id: 'svcwebwebwebwebwebwebwebw',
  spec: {
    annotations: { name: 'web' },
    task: { container: { image: 'nginx:1.27' } },
    mode: { $case: 'replicated', value: { replicas: 3 } },
    endpoint: {
      ports: [
        { targetPort: 80, publishedPort: 8080 },
        { targetPort: 53, publishedPort: 5353, protocol: PortConfig_Protocol.PROTOCOL_UDP },
      ],
    },
  },
  updateStatus: { state: UpdateStatus_State.STATE_UPDATING, message: 'update in progress' },
});
const agent = Service.fromPartial({
  id: 'svcagentagentagentagentag',
  spec: {
    annotations: { name: 'agent' },
    task: { container: { image: 'agent:2' } },
    mode: { $case: 'global', value: {} },
  },
});

const tasks = [
  Task.fromPartial({
    id: 'taskweb1newnewnewnewnewnw',
    serviceId: web.id,
    slot: 1,
    nodeId: 'n2workerworkerworkerworkr',
    desiredState: TaskState.TASK_STATE_RUNNING,
    spec: { container: { image: 'nginx:1.27' } },
    status: { state: TaskState.TASK_STATE_RUNNING, timestamp: ago(125_000) },
  }),
  Task.fromPartial({
    id: 'taskweb1oldoldoldoldoldol',
    serviceId: web.id,
    slot: 1,
    nodeId: 'n2workerworkerworkerworkr',
    desiredState: TaskState.TASK_STATE_SHUTDOWN,
    spec: { container: { image: 'nginx:1.26' } },
    status: {
      state: TaskState.TASK_STATE_FAILED,
      timestamp: ago(3 * 3_600_000),
      err: 'task: non-zero exit (137): killed by the OOM killer',
    },
  }),
  Task.fromPartial({
    id: 'taskweb2runrunrunrunrunrn',
    serviceId: web.id,
    slot: 2,
    nodeId: 'n1leaderleaderleaderleadr',
    desiredState: TaskState.TASK_STATE_RUNNING,
    spec: { container: { image: 'nginx:1.27' } },
    status: { state: TaskState.TASK_STATE_RUNNING, timestamp: ago(500) },
    endpoint: {
      ports: [
        { targetPort: 80, publishedPort: 30080, publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST },
      ],
    },
  }),
  Task.fromPartial({
    id: 'taskweb3pendingpendingpen',
    serviceId: web.id,
    slot: 3,
    desiredState: TaskState.TASK_STATE_RUNNING,
    spec: { container: { image: 'nginx:1.27' } },
    status: { state: TaskState.TASK_STATE_PENDING, timestamp: ago(61_000), message: 'no suitable node' },
  }),
  Task.fromPartial({
    id: 'taskagentagentagentagentg',
    serviceId: agent.id,
    slot: 0,
    nodeId: 'n1leaderleaderleaderleadr',
    desiredState: TaskState.TASK_STATE_RUNNING,
    spec: { container: { image: 'agent:2' } },
    status: { state: TaskState.TASK_STATE_RUNNING, timestamp: ago(1_000) },
  }),
];

test('service ls: replicas running/desired, global counts, ingress ports, update state', () => {
  const rows = serviceRows([web, agent], tasks);
  assert.equal(
    formatRows('table', SERVICE_COLUMNS, rows),
    [
      'ID             NAME    MODE         REPLICAS   IMAGE        PORTS                            UPDATE',
      'svcagentagen   agent   global       1/1        agent:2',
      'svcwebwebweb   web     replicated   2/3        nginx:1.27   *:8080->80/tcp, *:5353->53/udp   updating',
      '',
    ].join('\n'),
  );
  assert.deepEqual(JSON.parse(formatRows('json', SERVICE_COLUMNS, rows).split('\n')[1] ?? ''), {
    ID: 'svcwebwebweb',
    Name: 'web',
    Mode: 'replicated',
    Replicas: '2/3',
    Image: 'nginx:1.27',
    Ports: '*:8080->80/tcp, *:5353->53/udp',
    UpdateStatus: 'updating',
  });
  assert.equal(formatQuiet(SERVICE_COLUMNS, rows), 'svcagentagen\nsvcwebwebweb\n');
});

test('service ps: names by slot, history under the current task, human times, errors, host ports', () => {
  const serviceNames = new Map([
    [web.id, 'web'],
    [agent.id, 'agent'],
  ]);
  const hostnames = new Map(nodes.map((n) => [n.id, n.description?.hostname ?? '']));
  const rows = taskRows(tasks, serviceNames, hostnames);
  assert.equal(
    formatRows('table', taskColumns(NOW, false), rows),
    [
      'ID             NAME                              IMAGE        NODE        DESIRED STATE   CURRENT STATE                    ERROR                              PORTS',
      'taskagentage   agent.n1leaderleaderleaderleadr   agent:2      manager-1   Running         Running 1 second ago',
      'taskweb1newn   web.1                             nginx:1.27   worker-1    Running         Running 2 minutes ago',
      'taskweb1oldo    \\_ web.1                         nginx:1.26   worker-1    Shutdown        Failed 3 hours ago               "task: non-zero exit (137): ki…"',
      'taskweb2runr   web.2                             nginx:1.27   manager-1   Running         Running Less than a second ago                                      *:30080->80/tcp',
      'taskweb3pend   web.3                             nginx:1.27               Running         Pending About a minute ago',
      '',
    ].join('\n'),
  );
  const json = formatRows('json', taskColumns(NOW, true), rows).trimEnd().split('\n');
  assert.deepEqual(JSON.parse(json[2] ?? ''), {
    ID: 'taskweb1oldoldoldoldoldol',
    Name: ' \\_ web.1',
    Image: 'nginx:1.26',
    Node: 'worker-1',
    DesiredState: 'Shutdown',
    CurrentState: 'Failed 3 hours ago',
    Error: '"task: non-zero exit (137): killed by the OOM killer"',
    Ports: '',
  });
});

test('network ls', () => {
  const networks = [
    Network.fromPartial({
      id: 'netbbbbbbbbbbbbbbbbbbbbbb',
      spec: { annotations: { name: 'backend' }, driver: 'overlay' },
    }),
    Network.fromPartial({
      id: 'netaaaaaaaaaaaaaaaaaaaaaa',
      spec: { annotations: { name: 'appnet' }, driver: '' },
    }),
  ];
  assert.equal(
    formatRows('table', NETWORK_COLUMNS, networkRows(networks)),
    'NETWORK ID     NAME      DRIVER    SCOPE\nnetaaaaaaaaa   appnet    overlay   swarm\nnetbbbbbbbbb   backend   overlay   swarm\n',
  );
  assert.equal(
    formatRows('json', NETWORK_COLUMNS, networkRows(networks)).split('\n')[0],
    '{"ID":"netaaaaaaaaa","Name":"appnet","Driver":"overlay","Scope":"swarm"}',
  );
});

test("human durations follow Docker's units.HumanDuration", () => {
  const s = 1000;
  const cases: Array<[number, string]> = [
    [0, 'Less than a second'],
    [999, 'Less than a second'],
    [1 * s, '1 second'],
    [59 * s, '59 seconds'],
    [60 * s, 'About a minute'],
    [119 * s, 'About a minute'],
    [120 * s, '2 minutes'],
    [59 * 60 * s, '59 minutes'],
    [60 * 60 * s, 'About an hour'],
    [89 * 60 * s, 'About an hour'],
    [90 * 60 * s, '2 hours'],
    [47 * 3600 * s, '47 hours'],
    [48 * 3600 * s, '2 days'],
    [14 * 24 * 3600 * s, '2 weeks'],
    [60 * 24 * 3600 * s, '2 months'],
    [800 * 24 * 3600 * s, '2 years'],
  ];
  for (const [ms, text] of cases) assert.equal(humanDuration(ms), text, `${ms} ms`);
});

test('inspect output is a JSON array indented by four spaces; pretty output aligns labels', () => {
  assert.equal(formatInspect([{ ID: 'x' }]), '[\n    {\n        "ID": "x"\n    }\n]\n');
  assert.equal(
    formatPretty([
      ['ID', 'abc'],
      ['Hostname', 'h'],
      [
        'Status',
        [
          ['State', 'Ready'],
          ['Availability', 'Active'],
        ],
      ],
    ]),
    'ID:        abc\nHostname:  h\nStatus:\n State:         Ready\n Availability:  Active\n',
  );
});

test('service ps: a task with a healthcheck shows its health after the state, as docker ps', () => {
  const healthy = Task.fromPartial({
    id: 'taskhealthyhealthyhealthy',
    serviceId: web.id,
    slot: 4,
    nodeId: '',
    desiredState: TaskState.TASK_STATE_RUNNING,
    spec: { container: { image: 'nginx:1.27' } },
    status: { state: TaskState.TASK_STATE_RUNNING, timestamp: ago(3_000), health: 'healthy' },
  });
  const rows = taskRows([healthy], new Map([[web.id, 'web']]), new Map());
  const json = JSON.parse(formatRows('json', taskColumns(NOW, true), rows).trimEnd()) as {
    CurrentState: string;
  };
  assert.equal(json.CurrentState, 'Running 3 seconds ago (healthy)');
});

test('service ps: a preparing task shows where its image pull stands; the bare "preparing" is not repeated', () => {
  const at = (message: string, state = TaskState.TASK_STATE_PREPARING) =>
    Task.fromPartial({
      id: 'taskpullingpullingpulling',
      serviceId: web.id,
      slot: 5,
      desiredState: TaskState.TASK_STATE_RUNNING,
      spec: { container: { image: 'reg:5000/x:1' } },
      status: { state, timestamp: ago(4_000), message },
    });
  const current = (task: Task) =>
    (
      JSON.parse(
        formatRows('json', taskColumns(NOW, true), taskRows([task], new Map([[web.id, 'web']]), new Map())),
      ) as { CurrentState: string }
    ).CurrentState;
  assert.equal(
    current(at('pulling image reg:5000/x:1: 1 of 2 layers, 1.2 MB of 2.0 MB')),
    'Preparing 4 seconds ago (pulling image reg:5000/x:1: 1 of 2 layers, 1.2 MB of 2.0 MB)',
  );
  assert.equal(current(at('preparing')), 'Preparing 4 seconds ago');
  assert.equal(current(at('started', TaskState.TASK_STATE_RUNNING)), 'Running 4 seconds ago');
});
