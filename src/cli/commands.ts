// The `cluster` verbs that talk to a daemon: init/join/leave/join-token, node, service and
// network commands. Each action reads its flags, makes gRPC calls through one Connection and
// prints Docker's output; every failure is a ClusterError that main() turns into an exit code.
import { Command, Option } from 'commander';
import { ClusterError, toClusterError } from '../common/errors';
import {
  Network,
  Node,
  NodeAvailability,
  NodeRole,
  NodeSpec,
  Service,
  ServiceSpec,
  Task,
  TaskState,
} from '../gen/cluster/v1/objects';
import type { Connection } from './connect';
import { streamLogs, type LogsFlags } from './logs';
import { formatDuration, parseDurationNanos, parseKeyValue, parseWholeNumber, badValue } from './flags';
import { formatInspect, formatPretty, formatQuiet, formatRows, type OutputFormat } from './output';
import { DEFAULT_CONVERGE_TIMEOUT_MS, waitForConvergence } from './progress';
import {
  addCreateFlags,
  addUpdateFlags,
  applyServiceUpdate,
  buildServiceSpec,
  taskSpecChanged,
  type CreateServiceFlags,
  type UpdateServiceFlags,
} from './spec';
import {
  availabilityName,
  managerStatusName,
  NETWORK_COLUMNS,
  networkRows,
  NODE_COLUMNS,
  NODE_JSON_COLUMNS,
  nodeRows,
  nodeStateName,
  portsText,
  SERVICE_COLUMNS,
  serviceRows,
  updateStateName,
  taskColumns,
  taskRows,
} from './views';

/** What an action needs from its surroundings; tests give their own streams. */
export interface Runtime {
  format(): OutputFormat;
  connection(): Connection;
  out(text: string): void;
  err(text: string): void;
  isTTY: boolean;
  now(): Date;
}

// ------------------------------------------------------------------ helpers

function serviceName(s: Service): string {
  return s.spec?.annotations?.name || s.id;
}

/** Runs `fn` for each reference, reporting each failure, and fails at the end if any did (as Docker). */
async function forEachRef(refs: string[], fn: (ref: string) => Promise<void>): Promise<void> {
  const failures: ClusterError[] = [];
  for (const ref of refs) {
    try {
      await fn(ref);
    } catch (e) {
      failures.push(toClusterError(e));
    }
  }
  const first = failures[0];
  // main() prints "Error: " before the message: each failure gets its own such line.
  if (first) throw new ClusterError(first.code, failures.map((f) => f.message).join('\nError: '));
}

async function selfNodeId(conn: Connection): Promise<string | undefined> {
  if (conn.certNodeId) return conn.certNodeId;
  try {
    const info = await conn.call(conn.local.info.bind(conn.local), {});
    return info.nodeId || undefined;
  } catch {
    // An old or busy daemon without Info: the list is still right, only the "*" is missing.
    return undefined;
  }
}

async function resolveNodeRef(conn: Connection, ref: string): Promise<string> {
  if (ref !== 'self') return ref;
  const self = await selfNodeId(conn);
  if (!self)
    throw new ClusterError(
      'FAILED_PRECONDITION',
      "cannot tell which node is 'self': this daemon has no node id",
    );
  return self;
}

async function getService(conn: Connection, ref: string): Promise<Service> {
  const r = await conn.call(conn.control.getService.bind(conn.control), { serviceId: ref });
  if (!r.service) throw new ClusterError('NOT_FOUND', `service '${ref}' not found`);
  return r.service;
}

async function getNode(conn: Connection, ref: string): Promise<Node> {
  const r = await conn.call(conn.control.getNode.bind(conn.control), {
    nodeId: await resolveNodeRef(conn, ref),
  });
  if (!r.node) throw new ClusterError('NOT_FOUND', `node '${ref}' not found`);
  return r.node;
}

async function listTasks(conn: Connection, filters: Record<string, string>): Promise<Task[]> {
  return (await conn.call(conn.control.listTasks.bind(conn.control), { filters })).tasks;
}

function timeoutMs(text: string | undefined): number {
  if (text === undefined) return DEFAULT_CONVERGE_TIMEOUT_MS;
  return Number(parseDurationNanos('--timeout', text) / 1_000_000n);
}

interface WaitFlags {
  detach?: boolean;
  quiet?: boolean;
  timeout?: string;
}

function addWaitFlags(cmd: Command): Command {
  return cmd
    .option('-d, --detach', 'return at once instead of waiting for the tasks to run')
    .option('-q, --quiet', 'print the id only, no progress')
    .option('--timeout <duration>', 'how long to wait for the tasks to run (default 2m)');
}

async function waitUnlessDetached(
  rt: Runtime,
  flags: WaitFlags,
  service: Service,
  requireCurrentSpec: boolean,
  rollout?: { rollback: boolean },
): Promise<void> {
  if (flags.detach) return;
  const conn = rt.connection();
  const limit = timeoutMs(flags.timeout);
  await waitForConvergence({
    serviceName: serviceName(service),
    fetch: async () => ({
      service: await getService(conn, service.id),
      tasks: (await listTasks(conn, { service: service.id })).filter((t) => t.serviceId === service.id),
    }),
    write: flags.quiet ? () => undefined : (text) => rt.out(text),
    isTTY: rt.isTTY,
    timeoutMs: limit,
    requireCurrentSpec,
    rollout,
  });
}

// ------------------------------------------------------------------ cluster membership

function joinCommandText(role: 'worker' | 'manager', token: string, addr: string): string {
  return `To add a ${role} to this cluster, run the following command:\n\n    cluster join --token ${token} ${addr}\n\n`;
}

export function addMembershipCommands(program: Command, rt: Runtime): void {
  program
    .command('init')
    .description('Initialize a cluster with this host as its first manager')
    .option('--advertise-addr <addr>', 'address other nodes reach this manager at (ip or ip:port)')
    .option('--listen-addr <addr>', 'address to listen on (default 0.0.0.0:4242)')
    .action(async (flags: { advertiseAddr?: string; listenAddr?: string }) => {
      const conn = rt.connection();
      const r = await conn.call(conn.local.init.bind(conn.local), {
        advertiseAddr: flags.advertiseAddr ?? '',
        listenAddr: flags.listenAddr ?? '',
      });
      rt.out(`Cluster initialized: current node (${r.nodeId}) is now a manager.\n\n`);
      rt.out(joinCommandText('worker', r.workerToken, r.managerAddr));
      rt.out(joinCommandText('manager', r.managerToken, r.managerAddr));
    });

  program
    .command('join')
    .description('Join a cluster as a worker or manager')
    .requiredOption('--token <token>', "join token, from 'cluster join-token'")
    .option('--advertise-addr <addr>', 'address other nodes reach this node at')
    .option('--listen-addr <addr>', 'address to listen on, when joining as a manager')
    .argument('<addr>', "a manager's address, host:port")
    .action(async (addr: string, flags: { token: string; advertiseAddr?: string; listenAddr?: string }) => {
      const conn = rt.connection();
      const r = await conn.call(conn.local.join.bind(conn.local), {
        token: flags.token,
        remoteAddr: addr,
        advertiseAddr: flags.advertiseAddr ?? '',
        listenAddr: flags.listenAddr ?? '',
      });
      rt.out(`This node joined a cluster as a ${r.role || 'worker'}.\n`);
    });

  program
    .command('join-token')
    .description('Show or rotate the join tokens')
    .option('-q, --quiet', 'print the token only')
    .option('--rotate', 'replace the token (the old one stops working)')
    .argument('<role>', 'worker or manager')
    .action(async (role: string, flags: { quiet?: boolean; rotate?: boolean }) => {
      if (role !== 'worker' && role !== 'manager') {
        throw badValue('join-token', role, 'the role must be worker or manager');
      }
      const conn = rt.connection();
      let cluster = (await conn.call(conn.control.getCluster.bind(conn.control), {})).cluster;
      if (!cluster)
        throw new ClusterError(
          'FAILED_PRECONDITION',
          'this node is not part of a cluster: run cluster init or join',
        );
      if (flags.rotate) {
        const rotated = await conn.call(conn.control.updateCluster.bind(conn.control), {
          version: cluster.meta?.version ?? 0,
          spec: cluster.spec,
          rotateWorkerToken: role === 'worker',
          rotateManagerToken: role === 'manager',
        });
        cluster = rotated.cluster ?? cluster;
        if (!flags.quiet) rt.out(`Successfully rotated ${role} join token.\n\n`);
      }
      const token = role === 'worker' ? cluster.joinTokens?.worker : cluster.joinTokens?.manager;
      if (!token) throw new ClusterError('INTERNAL', `the cluster has no ${role} join token`);
      if (flags.quiet) {
        rt.out(token + '\n');
        return;
      }
      rt.out(joinCommandText(role, token, await managerAddress(conn)));
    });

  program
    .command('leave')
    .description('Leave the cluster')
    .option('-f, --force', "leave even if this breaks the managers' quorum")
    .action(async (flags: { force?: boolean }) => {
      const conn = rt.connection();
      await conn.call(conn.local.leave.bind(conn.local), { force: flags.force ?? false });
      rt.out('Node left the cluster.\n');
    });

  program
    .command('info')
    .description("Show this node's cluster membership (as 'docker info' shows Swarm's)")
    .action(async () => {
      const conn = rt.connection();
      const info = await conn.call(conn.local.info.bind(conn.local), {});
      if (rt.format() === 'json') {
        rt.out(
          JSON.stringify({
            LocalNodeState: info.state,
            NodeID: info.nodeId,
            NodeAddr: info.nodeAddr,
            ControlAvailable: info.role === 'manager',
            IsLeader: info.isLeader,
            ClusterID: info.clusterId,
            RemoteManagers: info.managers,
            Error: info.error,
          }) + '\n',
        );
        return;
      }
      const lines = [`Cluster: ${info.state}`];
      if (info.state === 'active') {
        lines.push(
          ` NodeID: ${info.nodeId}`,
          ` Is Manager: ${info.role === 'manager'}`,
          ` Is Leader: ${info.isLeader}`,
          ` ClusterID: ${info.clusterId}`,
          ` Node Address: ${info.nodeAddr}`,
          ` Managers: ${info.managers.join(', ')}`,
        );
      }
      if (info.error) lines.push(` Error: ${info.error}`);
      rt.out(lines.join('\n') + '\n');
    });
}

/** The address joiners should dial: this manager's, as the cluster knows it. */
async function managerAddress(conn: Connection): Promise<string> {
  const self = await selfNodeId(conn);
  if (self) {
    try {
      const node = await getNode(conn, self);
      if (node.managerStatus?.addr) return node.managerStatus.addr;
    } catch {
      // Fall through to what the connection knows.
    }
  }
  return conn.target.kind === 'tcp' ? conn.target.hostPort : '<manager-address>';
}

// ------------------------------------------------------------------ nodes

function prettyNode(node: Node): string {
  const d = node.description;
  const sections: Array<[string, string | Array<[string, string]>]> = [
    ['ID', node.id],
    ['Hostname', d?.hostname ?? ''],
    ['Joined at', node.meta?.createdAt?.toISOString() ?? ''],
    [
      'Status',
      [
        ['State', nodeStateName(node.status?.state)],
        ['Availability', availabilityName(node.spec?.availability)],
        ['Address', node.status?.addr ?? ''],
      ],
    ],
  ];
  const labels = Object.entries(node.spec?.annotations?.labels ?? {});
  if (labels.length > 0) sections.push(['Labels', labels.map(([k, v]) => [k, v] as [string, string])]);
  if (node.role === NodeRole.NODE_ROLE_MANAGER && node.managerStatus) {
    sections.push([
      'Manager Status',
      [
        ['Address', node.managerStatus.addr],
        ['Raft Status', managerStatusName(node)],
        ['Leader', node.managerStatus.leader ? 'Yes' : 'No'],
      ],
    ]);
  }
  sections.push([
    'Platform',
    [
      ['Operating System', d?.os ?? ''],
      ['Architecture', d?.architecture ?? ''],
    ],
  ]);
  sections.push([
    'Resources',
    [
      ['CPUs', String((d?.resources?.nanoCpus ?? 0) / 1e9)],
      ['Memory', `${((d?.resources?.memoryBytes ?? 0) / 1024 ** 3).toFixed(1)}GiB`],
    ],
  ]);
  sections.push(['Engine Version', d?.runtimeVersion ?? '']);
  return formatPretty(sections);
}

async function updateNodeSpec(
  conn: Connection,
  ref: string,
  change: (spec: NodeSpec, node: Node) => void,
): Promise<Node> {
  const node = await getNode(conn, ref);
  const spec = NodeSpec.fromPartial(node.spec ?? {});
  change(spec, node);
  const r = await conn.call(conn.control.updateNode.bind(conn.control), {
    nodeId: node.id,
    version: node.meta?.version ?? 0,
    spec,
  });
  return r.node ?? node;
}

async function printTasks(
  rt: Runtime,
  tasks: Task[],
  flags: { noTrunc?: boolean; quiet?: boolean },
): Promise<void> {
  const conn = rt.connection();
  const [services, nodes] = await Promise.all([
    conn.call(conn.control.listServices.bind(conn.control), { filters: {} }),
    conn.call(conn.control.listNodes.bind(conn.control), { filters: {} }),
  ]);
  const names = new Map(services.services.map((s) => [s.id, serviceName(s)]));
  const hostnames = new Map(nodes.nodes.map((n) => [n.id, n.description?.hostname || n.id]));
  const rows = taskRows(tasks, names, hostnames);
  const columns = taskColumns(rt.now(), flags.noTrunc ?? false);
  rt.out(flags.quiet ? formatQuiet(columns, rows) : formatRows(rt.format(), columns, rows));
}

/** `--filter key=value` for task lists: desired-state, node, name, id. */
function filterTasks(tasks: Task[], filters: string[]): Task[] {
  let result = tasks;
  for (const f of filters) {
    const [key, value] = parseKeyValue('--filter', f, true);
    switch (key) {
      case 'desired-state': {
        const wanted = value.toLowerCase();
        if (!['running', 'shutdown', 'accepted'].includes(wanted)) {
          throw badValue('--filter', f, 'desired-state must be running, shutdown or accepted');
        }
        result = result.filter((t) =>
          wanted === 'running'
            ? t.desiredState === TaskState.TASK_STATE_RUNNING
            : wanted === 'shutdown'
              ? t.desiredState >= TaskState.TASK_STATE_SHUTDOWN
              : t.desiredState === TaskState.TASK_STATE_ACCEPTED,
        );
        break;
      }
      case 'node':
        result = result.filter((t) => t.nodeId.startsWith(value));
        break;
      case 'id':
        result = result.filter((t) => t.id.startsWith(value));
        break;
      default:
        throw badValue('--filter', f, 'the filters are desired-state, node and id');
    }
  }
  return result;
}

export function addNodeCommands(program: Command, rt: Runtime): void {
  const node = program.command('node').description('Manage cluster nodes');

  node
    .command('ls')
    .alias('list')
    .description('List nodes')
    .option('-q, --quiet', 'print the ids only')
    .action(async (flags: { quiet?: boolean }) => {
      const conn = rt.connection();
      const [list, self] = await Promise.all([
        conn.call(conn.control.listNodes.bind(conn.control), { filters: {} }),
        selfNodeId(conn),
      ]);
      const rows = nodeRows(list.nodes, self);
      if (flags.quiet) rt.out(rows.map((r) => r.node.id + '\n').join(''));
      else rt.out(formatRows(rt.format(), rt.format() === 'json' ? NODE_JSON_COLUMNS : NODE_COLUMNS, rows));
    });

  node
    .command('inspect')
    .description('Show details of nodes')
    .option('--pretty', 'human-readable text instead of JSON')
    .argument('<node...>', "node names, ids, unique id prefixes, or 'self'")
    .action(async (refs: string[], flags: { pretty?: boolean }) => {
      const conn = rt.connection();
      const nodes: Node[] = [];
      await forEachRef(refs, async (ref) => {
        nodes.push(await getNode(conn, ref));
      });
      rt.out(
        flags.pretty ? nodes.map(prettyNode).join('\n') : formatInspect(nodes.map((n) => Node.toJSON(n))),
      );
    });

  node
    .command('update')
    .description('Update a node (availability, labels, role)')
    .addOption(new Option('--availability <availability>', 'active, pause or drain'))
    .option('--label-add <key=value>', 'add or change a node label', (v: string, p: string[] = []) => [
      ...p,
      v,
    ])
    .option('--label-rm <key>', 'remove a node label', (v: string, p: string[] = []) => [...p, v])
    .option('--role <role>', 'worker or manager')
    .argument('<node>')
    .action(
      async (
        ref: string,
        flags: { availability?: string; labelAdd?: string[]; labelRm?: string[]; role?: string },
      ) => {
        const availability =
          flags.availability === undefined
            ? undefined
            : (
                {
                  active: NodeAvailability.NODE_AVAILABILITY_ACTIVE,
                  pause: NodeAvailability.NODE_AVAILABILITY_PAUSE,
                  drain: NodeAvailability.NODE_AVAILABILITY_DRAIN,
                } as Record<string, NodeAvailability>
              )[flags.availability.toLowerCase()];
        if (flags.availability !== undefined && availability === undefined) {
          throw badValue('--availability', flags.availability, 'must be one of active, pause, drain');
        }
        let role: NodeRole | undefined;
        if (flags.role !== undefined) {
          if (flags.role === 'manager') role = NodeRole.NODE_ROLE_MANAGER;
          else if (flags.role === 'worker') role = NodeRole.NODE_ROLE_WORKER;
          else throw badValue('--role', flags.role, 'must be worker or manager');
        }
        const labelsToAdd = (flags.labelAdd ?? []).map((l) => parseKeyValue('--label-add', l));
        await updateNodeSpec(rt.connection(), ref, (spec) => {
          if (availability !== undefined) spec.availability = availability;
          if (role !== undefined) spec.desiredRole = role;
          const annotations = (spec.annotations ??= { name: '', labels: {} });
          for (const key of flags.labelRm ?? []) delete annotations.labels[key];
          for (const [k, v] of labelsToAdd) annotations.labels[k] = v;
        });
        rt.out(ref + '\n');
      },
    );

  for (const [verb, role, word] of [
    ['promote', NodeRole.NODE_ROLE_MANAGER, 'Promote workers to managers'],
    ['demote', NodeRole.NODE_ROLE_WORKER, 'Demote managers to workers'],
  ] as const) {
    node
      .command(verb)
      .description(word)
      .argument('<node...>')
      .action(async (refs: string[]) => {
        const conn = rt.connection();
        await forEachRef(refs, async (ref) => {
          const current = await getNode(conn, ref);
          if ((current.spec?.desiredRole ?? NodeRole.NODE_ROLE_WORKER) === role) {
            rt.out(
              `Node ${ref} is already a ${role === NodeRole.NODE_ROLE_MANAGER ? 'manager' : 'worker'}.\n`,
            );
            return;
          }
          await updateNodeSpec(conn, current.id, (spec) => {
            spec.desiredRole = role;
          });
          rt.out(
            role === NodeRole.NODE_ROLE_MANAGER
              ? `Node ${ref} promoted to a manager in the cluster.\n`
              : `Manager ${ref} demoted in the cluster.\n`,
          );
        });
      });
  }

  node
    .command('rm')
    .alias('remove')
    .description('Remove nodes from the cluster')
    .option('-f, --force', 'remove even if the node is up')
    .argument('<node...>')
    .action(async (refs: string[], flags: { force?: boolean }) => {
      const conn = rt.connection();
      await forEachRef(refs, async (ref) => {
        await conn.call(conn.control.removeNode.bind(conn.control), {
          nodeId: ref,
          force: flags.force ?? false,
        });
        rt.out(ref + '\n');
      });
    });

  node
    .command('ps')
    .description('List tasks running on nodes (default: this node)')
    .option('--no-trunc', 'do not truncate ids and errors')
    .option('-q, --quiet', 'print the task ids only')
    .option(
      '-f, --filter <key=value>',
      'desired-state=running|shutdown|accepted, id=...',
      (v: string, p: string[] = []) => [...p, v],
    )
    .argument('[node...]')
    .action(async (refs: string[], flags: { trunc?: boolean; quiet?: boolean; filter?: string[] }) => {
      const conn = rt.connection();
      const tasks: Task[] = [];
      await forEachRef(refs.length > 0 ? refs : ['self'], async (ref) => {
        const n = await getNode(conn, ref);
        tasks.push(...(await listTasks(conn, { node: n.id })).filter((t) => t.nodeId === n.id));
      });
      await printTasks(rt, filterTasks(tasks, flags.filter ?? []), {
        noTrunc: flags.trunc === false,
        quiet: flags.quiet ?? false,
      });
    });
}

// ------------------------------------------------------------------ services

function prettyService(s: Service): string {
  const spec = s.spec ?? ServiceSpec.fromPartial({});
  const c = spec.task?.container;
  const mode = spec.mode;
  const sections: Array<[string, string | Array<[string, string]>]> = [
    ['ID', s.id],
    ['Name', spec.annotations?.name ?? ''],
  ];
  const labels = Object.entries(spec.annotations?.labels ?? {});
  if (labels.length > 0) sections.push(['Labels', labels.map(([k, v]) => [k, v] as [string, string])]);
  sections.push(['Service Mode', mode?.$case === 'global' ? 'Global' : 'Replicated']);
  if (mode?.$case === 'replicated') sections.push(['Replicas', String(mode.value.replicas)]);
  sections.push(['Placement', (spec.task?.placement?.constraints ?? []).join(', ')]);
  sections.push(['Image', c?.image ?? '']);
  if ((c?.args ?? []).length > 0) sections.push(['Args', (c?.args ?? []).join(' ')]);
  if ((c?.env ?? []).length > 0) sections.push(['Env', (c?.env ?? []).join(' ')]);
  if ((c?.mounts ?? []).length > 0)
    sections.push(['Mounts', (c?.mounts ?? []).map((m) => [m.target, m.source] as [string, string])]);
  const limits = spec.task?.resources?.limits;
  const reservations = spec.task?.resources?.reservations;
  if (limits || reservations) {
    const res: Array<[string, string]> = [];
    if (reservations?.nanoCpus) res.push(['Reserved CPU', String(reservations.nanoCpus / 1e9)]);
    if (reservations?.memoryBytes) res.push(['Reserved Memory', `${reservations.memoryBytes}B`]);
    if (limits?.nanoCpus) res.push(['Limit CPU', String(limits.nanoCpus / 1e9)]);
    if (limits?.memoryBytes) res.push(['Limit Memory', `${limits.memoryBytes}B`]);
    if (limits?.pids) res.push(['Limit Pids', String(limits.pids)]);
    sections.push(['Resources', res]);
  }
  if (spec.update) {
    sections.push([
      'UpdateConfig',
      [
        ['Parallelism', String(spec.update.parallelism)],
        ['Delay', formatDuration(spec.update.delay)],
        ['Monitoring Period', formatDuration(spec.update.monitor)],
      ],
    ]);
  }
  const ports = spec.endpoint?.ports ?? [];
  if (ports.length > 0) sections.push(['Ports', portsText(ports)]);
  const status = s.updateStatus;
  if (status !== undefined && updateStateName(s) !== '') {
    const rows: Array<[string, string]> = [['State', updateStateName(s)]];
    if (status.startedAt) rows.push(['Started', status.startedAt.toISOString()]);
    if (status.completedAt) rows.push(['Completed', status.completedAt.toISOString()]);
    rows.push(['Message', status.message]);
    sections.push(['UpdateStatus', rows]);
  }
  return formatPretty(sections);
}

export function addServiceCommands(program: Command, rt: Runtime): void {
  const service = program.command('service').description('Manage services').enablePositionalOptions();

  addWaitFlags(addCreateFlags(service.command('create').description('Create a service')))
    .argument('<image>', 'container image')
    .argument('[command...]', 'command and arguments')
    // Flags after the image belong to the container's command, as with docker service create.
    .passThroughOptions()
    .action(async (image: string, args: string[], flags: CreateServiceFlags & WaitFlags) => {
      const spec = buildServiceSpec(flags, image, args);
      const conn = rt.connection();
      const r = await conn.call(conn.control.createService.bind(conn.control), { spec });
      if (!r.service)
        throw new ClusterError('INTERNAL', 'the manager accepted the service but returned none');
      rt.out(r.service.id + '\n');
      await waitUnlessDetached(rt, flags, r.service, false);
    });

  service
    .command('ls')
    .alias('list')
    .description('List services')
    .option('-q, --quiet', 'print the ids only')
    .action(async (flags: { quiet?: boolean }) => {
      const conn = rt.connection();
      const services = (await conn.call(conn.control.listServices.bind(conn.control), { filters: {} }))
        .services;
      if (flags.quiet) {
        rt.out(services.map((s) => s.id + '\n').join(''));
        return;
      }
      // Only tasks meant to run count, so the manager need not send the whole history.
      const tasks = await listTasks(conn, { 'desired-state': 'running' });
      rt.out(formatRows(rt.format(), SERVICE_COLUMNS, serviceRows(services, tasks)));
    });

  service
    .command('ps')
    .description('List the tasks of services')
    .option('--no-trunc', 'do not truncate ids and errors')
    .option('-q, --quiet', 'print the task ids only')
    .option(
      '-f, --filter <key=value>',
      'desired-state=running|shutdown|accepted, node=..., id=...',
      (v: string, p: string[] = []) => [...p, v],
    )
    .argument('<service...>')
    .action(async (refs: string[], flags: { trunc?: boolean; quiet?: boolean; filter?: string[] }) => {
      const conn = rt.connection();
      const tasks: Task[] = [];
      await forEachRef(refs, async (ref) => {
        const s = await getService(conn, ref);
        tasks.push(...(await listTasks(conn, { service: s.id })).filter((t) => t.serviceId === s.id));
      });
      let filtered = tasks;
      const nodeFilters = (flags.filter ?? []).filter((f) => f.startsWith('node='));
      if (nodeFilters.length > 0) {
        // A node filter may name a hostname: resolve it against the node list.
        const nodes = (await conn.call(conn.control.listNodes.bind(conn.control), { filters: {} })).nodes;
        const wanted = new Set(
          nodeFilters
            .map((f) => f.slice('node='.length))
            .flatMap((ref) =>
              nodes
                .filter((n) => n.id === ref || n.id.startsWith(ref) || n.description?.hostname === ref)
                .map((n) => n.id),
            ),
        );
        filtered = filtered.filter((t) => wanted.has(t.nodeId));
      }
      const others = (flags.filter ?? []).filter((f) => !f.startsWith('node='));
      await printTasks(rt, filterTasks(filtered, others), {
        noTrunc: flags.trunc === false,
        quiet: flags.quiet ?? false,
      });
    });

  service
    .command('inspect')
    .description('Show details of services')
    .option('--pretty', 'human-readable text instead of JSON')
    .argument('<service...>')
    .action(async (refs: string[], flags: { pretty?: boolean }) => {
      const conn = rt.connection();
      const found: Service[] = [];
      await forEachRef(refs, async (ref) => {
        found.push(await getService(conn, ref));
      });
      rt.out(
        flags.pretty
          ? found.map(prettyService).join('\n')
          : formatInspect(found.map((s) => Service.toJSON(s))),
      );
    });

  service
    .command('logs')
    .description('Fetch the logs of a service or task')
    .option('-f, --follow', 'follow the output (Ctrl-C ends)')
    .option('-n, --tail <lines>', 'number of lines from the end of each task\'s logs, or "all"')
    .option('--since <time>', 'lines since a time (RFC 3339 or Unix) or a duration back (e.g. 10m)')
    .option('-t, --timestamps', 'show timestamps')
    .option('--no-trunc', 'do not truncate task ids')
    .option('--no-task-ids', 'leave task ids out of the prefix')
    .argument('<service|task>')
    .action(async (target: string, flags: LogsFlags) => {
      await streamLogs(
        () => rt.connection(),
        target,
        flags,
        { out: (t) => rt.out(t), err: (t) => rt.err(t) },
        rt.now().getTime(),
      );
    });

  addWaitFlags(service.command('scale').description('Scale replicated services'))
    .argument('<service=replicas...>')
    .action(async (pairs: string[], flags: WaitFlags) => {
      const wanted = pairs.map((pair) => {
        const [ref, count] = parseKeyValue('scale', pair, true);
        return { ref, replicas: parseWholeNumber(`scale ${ref}`, count) };
      });
      const conn = rt.connection();
      const scaled: Service[] = [];
      await forEachRef(
        wanted.map((w) => w.ref),
        async (ref) => {
          const replicas = wanted.find((w) => w.ref === ref)?.replicas ?? 0;
          const current = await getService(conn, ref);
          if (current.spec?.mode?.$case === 'global') {
            throw new ClusterError(
              'FAILED_PRECONDITION',
              `${ref}: scale can only be used with replicated mode`,
            );
          }
          const spec = ServiceSpec.fromPartial(current.spec ?? {});
          spec.mode = { $case: 'replicated', value: { replicas } };
          const r = await conn.call(conn.control.updateService.bind(conn.control), {
            serviceId: current.id,
            version: current.meta?.version ?? 0,
            spec,
            rollback: '',
          });
          rt.out(`${ref} scaled to ${replicas}\n`);
          scaled.push(r.service ?? current);
        },
      );
      for (const s of scaled) await waitUnlessDetached(rt, flags, s, false);
    });

  addWaitFlags(addUpdateFlags(service.command('update').description('Update a service (rolling)')))
    .option('--rollback', 'go back to the previous spec')
    .argument('<service>')
    .action(async (ref: string, flags: UpdateServiceFlags & WaitFlags & { rollback?: boolean }) => {
      await updateService(rt, ref, flags);
    });

  addWaitFlags(service.command('rollback').description('Revert a service to its previous spec'))
    .argument('<service>')
    .action(async (ref: string, flags: WaitFlags) => {
      await updateService(rt, ref, { ...flags, rollback: true });
    });

  service
    .command('rm')
    .alias('remove')
    .description('Remove services')
    .argument('<service...>')
    .action(async (refs: string[]) => {
      const conn = rt.connection();
      await forEachRef(refs, async (ref) => {
        await conn.call(conn.control.removeService.bind(conn.control), { serviceId: ref });
        rt.out(ref + '\n');
      });
    });
}

async function updateService(
  rt: Runtime,
  ref: string,
  flags: UpdateServiceFlags & WaitFlags & { rollback?: boolean },
): Promise<void> {
  // Bad flag values are usage errors (exit 2) even when no manager is reachable.
  if (!flags.rollback) applyServiceUpdate(ServiceSpec.fromPartial({}), flags);
  const conn = rt.connection();
  const current = await getService(conn, ref);
  const before = current.spec ?? ServiceSpec.fromPartial({});
  const spec = flags.rollback ? before : applyServiceUpdate(before, flags);
  if (flags.rollback && !current.previousSpec) {
    throw new ClusterError('FAILED_PRECONDITION', `service '${ref}' has no previous spec to roll back to`);
  }
  const r = await conn.call(conn.control.updateService.bind(conn.control), {
    serviceId: current.id,
    version: current.meta?.version ?? 0,
    spec,
    rollback: flags.rollback ? 'previous' : '',
  });
  const updated = r.service ?? current;
  rt.out(serviceName(updated) + '\n');
  const target = flags.rollback ? (current.previousSpec ?? before) : spec;
  // Tasks made before a change of the task spec are the ones being replaced: they do not count.
  const restarts = taskSpecChanged(before, target);
  await waitUnlessDetached(rt, flags, updated, restarts, { rollback: flags.rollback ?? false });
}

// ------------------------------------------------------------------ networks

export function addNetworkCommands(program: Command, rt: Runtime): void {
  const network = program.command('network').description('Manage overlay networks');

  network
    .command('create')
    .description('Create a network')
    .option('--driver <driver>', 'network driver', 'overlay')
    .option('--subnet <cidr>', 'subnet, e.g. 10.0.9.0/24')
    .option('--gateway <ip>', 'gateway of the subnet')
    .option('--attachable', 'standalone containers may attach')
    .option('-l, --label <key=value>', 'network label', (v: string, p: string[] = []) => [...p, v])
    .argument('<name>')
    .action(
      async (
        name: string,
        flags: { driver: string; subnet?: string; gateway?: string; attachable?: boolean; label?: string[] },
      ) => {
        if (flags.driver !== 'overlay')
          throw badValue('--driver', flags.driver, 'only the overlay driver exists');
        if (flags.subnet !== undefined && !/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/.test(flags.subnet)) {
          throw badValue('--subnet', flags.subnet, 'must be an IPv4 CIDR such as 10.0.9.0/24');
        }
        if (flags.gateway !== undefined && !/^\d{1,3}(\.\d{1,3}){3}$/.test(flags.gateway)) {
          throw badValue('--gateway', flags.gateway, 'must be an IPv4 address');
        }
        if (flags.gateway !== undefined && flags.subnet === undefined) {
          throw new ClusterError('USAGE', '--gateway needs --subnet');
        }
        const labels = Object.fromEntries((flags.label ?? []).map((l) => parseKeyValue('--label', l)));
        const conn = rt.connection();
        const r = await conn.call(conn.control.createNetwork.bind(conn.control), {
          spec: {
            annotations: { name, labels },
            driver: flags.driver,
            ipam:
              flags.subnet === undefined ? undefined : { subnet: flags.subnet, gateway: flags.gateway ?? '' },
            attachable: flags.attachable ?? false,
            ingress: false,
          },
        });
        rt.out((r.network?.id ?? '') + '\n');
      },
    );

  network
    .command('ls')
    .alias('list')
    .description('List networks')
    .option('-q, --quiet', 'print the ids only')
    .action(async (flags: { quiet?: boolean }) => {
      const conn = rt.connection();
      const rows = networkRows(
        (await conn.call(conn.control.listNetworks.bind(conn.control), { filters: {} })).networks,
      );
      if (flags.quiet) rt.out(rows.map((n) => n.id + '\n').join(''));
      else rt.out(formatRows(rt.format(), NETWORK_COLUMNS, rows));
    });

  network
    .command('inspect')
    .description('Show details of networks')
    .argument('<network...>')
    .action(async (refs: string[]) => {
      const conn = rt.connection();
      const found: Network[] = [];
      await forEachRef(refs, async (ref) => {
        const r = await conn.call(conn.control.getNetwork.bind(conn.control), { networkId: ref });
        if (!r.network) throw new ClusterError('NOT_FOUND', `network '${ref}' not found`);
        found.push(r.network);
      });
      rt.out(formatInspect(found.map((n) => Network.toJSON(n))));
    });

  network
    .command('rm')
    .alias('remove')
    .description('Remove networks')
    .argument('<network...>')
    .action(async (refs: string[]) => {
      const conn = rt.connection();
      await forEachRef(refs, async (ref) => {
        await conn.call(conn.control.removeNetwork.bind(conn.control), { networkId: ref });
        rt.out(ref + '\n');
      });
    });
}
