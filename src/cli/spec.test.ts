import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { ClusterError } from '../common/errors';
import {
  EndpointSpec_ResolutionMode,
  Mount_Type,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  RestartPolicy_Condition,
  ServiceSpec,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
} from '../gen/cluster/v1/objects';
import {
  addCreateFlags,
  addUpdateFlags,
  applyServiceUpdate,
  buildServiceSpec,
  taskSpecChanged,
  type CreateServiceFlags,
  type SpecInputs,
  type UpdateServiceFlags,
} from './spec';

const inputs: SpecInputs = {
  readFile: (p) => {
    if (p === 'app.env') return '# app\nLOG=debug\nMODE=prod\n';
    throw new Error(`ENOENT: no such file '${p}'`);
  },
  lookupEnv: (n) => (n === 'TZ' ? 'UTC' : undefined),
};

/** Parses a `service create` command line as the CLI does and builds the spec. */
function createSpec(...argv: string[]): ServiceSpec {
  let spec: ServiceSpec | undefined;
  const cmd = addCreateFlags(new Command('create'))
    .exitOverride()
    .configureOutput({ writeErr: () => undefined })
    .argument('<image>')
    .argument('[command...]')
    .passThroughOptions()
    .action((image: string, args: string[], flags: CreateServiceFlags) => {
      spec = buildServiceSpec(flags, image, args, inputs);
    });
  cmd.parse(argv, { from: 'user' });
  assert.ok(spec);
  return spec;
}

function updateSpec(current: ServiceSpec, ...argv: string[]): ServiceSpec {
  let spec: ServiceSpec | undefined;
  const cmd = addUpdateFlags(new Command('update'))
    .exitOverride()
    .configureOutput({ writeErr: () => undefined })
    .argument('<service>')
    .action((_ref: string, flags: UpdateServiceFlags) => {
      spec = applyServiceUpdate(current, flags, inputs);
    });
  cmd.parse([...argv, 'web'], { from: 'user' });
  assert.ok(spec);
  return spec;
}

function assertUsage(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ClusterError, `a ClusterError, got ${String(e)}`);
    assert.equal(e.code, 'USAGE');
    assert.match(e.message, pattern);
    return true;
  });
}

test('a minimal create is one replica of the image with its arguments', () => {
  const spec = createSpec('busybox:1', 'sleep', '3600');
  assert.deepEqual(
    spec,
    ServiceSpec.fromPartial({
      annotations: { name: '', labels: {} },
      task: { container: { image: 'busybox:1', args: ['sleep', '3600'] }, networks: [] },
      mode: { $case: 'replicated', value: { replicas: 1 } },
    }),
  );
});

test('flags after the image belong to the command, as with docker service create', () => {
  const spec = createSpec('--name', 'sh', 'busybox', 'sh', '-c', 'echo hi', '--replicas', '9');
  assert.deepEqual(spec.task?.container?.args, ['sh', '-c', 'echo hi', '--replicas', '9']);
  assert.deepEqual(spec.mode, { $case: 'replicated', value: { replicas: 1 } });
});

test('every create flag lands in its spec field', () => {
  // prettier-ignore
  const spec = createSpec(
    '--name', 'web',
    '--replicas', '3',
    '-p', '8080:80',
    '--publish', 'mode=host,target=53,published=5353,protocol=udp',
    '-e', 'A=1', '--env', 'TZ', '--env-file', 'app.env', '-e', 'MODE=dev',
    '-l', 'tier=front', '--label', 'team=ops',
    '--container-label', 'c=1',
    '--mount', 'type=bind,src=/srv,dst=/data,readonly',
    '--mount', 'type=tmpfs,dst=/tmp,tmpfs-size=16m',
    '--network', 'backend',
    '--constraint', 'node.role==worker', '--constraint', 'node.labels.zone!=b',
    '--placement-pref', 'spread=node.labels.zone',
    '--limit-cpu', '0.5', '--limit-memory', '64m', '--limit-pids', '200', '--reserve-cpu', '0.25', '--reserve-memory', '32m',
    '--restart-condition', 'on-failure', '--restart-delay', '5s', '--restart-max-attempts', '3', '--restart-window', '1m',
    '--stop-grace-period', '30s', '--stop-signal', 'SIGINT',
    '--health-cmd', 'curl -f http://localhost/', '--health-interval', '10s', '--health-timeout', '2s',
    '--health-retries', '4', '--health-start-period', '1m30s',
    '--dns', '10.0.0.2', '--dns-search', 'example.org', '--dns-option', 'ndots:2',
    '--hostname', 'web-host', '-u', 'nobody', '-w', '/app', '--read-only', '--init',
    '--entrypoint', '/bin/tini --',
    '--endpoint-mode', 'dnsrr',
    '--update-parallelism', '2', '--update-delay', '10s', '--update-failure-action', 'rollback',
    '--update-monitor', '30s', '--update-max-failure-ratio', '0.2', '--update-order', 'start-first',
    '--rollback-parallelism', '0', '--rollback-delay', '1s', '--rollback-failure-action', 'continue',
    '--rollback-monitor', '5s', '--rollback-max-failure-ratio', '0.5', '--rollback-order', 'stop-first',
    'nginx:1.27', 'nginx', '-g', 'daemon off;',
  );
  const MiB = 1024 * 1024;
  assert.deepEqual(
    spec,
    ServiceSpec.fromPartial({
      annotations: { name: 'web', labels: { tier: 'front', team: 'ops' } },
      mode: { $case: 'replicated', value: { replicas: 3 } },
      task: {
        container: {
          image: 'nginx:1.27',
          command: ['/bin/tini', '--'],
          args: ['nginx', '-g', 'daemon off;'],
          // The env file first, then -e in order; a later value of the same name wins.
          env: ['LOG=debug', 'A=1', 'TZ=UTC', 'MODE=dev'],
          labels: { c: '1' },
          hostname: 'web-host',
          user: 'nobody',
          dir: '/app',
          mounts: [
            { type: Mount_Type.TYPE_BIND, source: '/srv', target: '/data', readOnly: true },
            { type: Mount_Type.TYPE_TMPFS, target: '/tmp', tmpfsSizeBytes: 16 * MiB },
          ],
          stopGracePeriod: { seconds: 30, nanos: 0 },
          stopSignal: 'SIGINT',
          healthcheck: {
            test: ['CMD-SHELL', 'curl -f http://localhost/'],
            interval: { seconds: 10, nanos: 0 },
            timeout: { seconds: 2, nanos: 0 },
            retries: 4,
            startPeriod: { seconds: 90, nanos: 0 },
          },
          dnsConfig: { nameservers: ['10.0.0.2'], search: ['example.org'], options: ['ndots:2'] },
          readOnly: true,
          init: true,
        },
        resources: {
          limits: { nanoCpus: 500_000_000, memoryBytes: 64 * MiB, pids: 200 },
          reservations: { nanoCpus: 250_000_000, memoryBytes: 32 * MiB },
        },
        restart: {
          condition: RestartPolicy_Condition.CONDITION_ON_FAILURE,
          delay: { seconds: 5, nanos: 0 },
          maxAttempts: 3,
          window: { seconds: 60, nanos: 0 },
        },
        placement: {
          constraints: ['node.role==worker', 'node.labels.zone!=b'],
          spreadPreferences: ['node.labels.zone'],
        },
        networks: [{ target: 'backend', aliases: [] }],
      },
      update: {
        parallelism: 2,
        delay: { seconds: 10, nanos: 0 },
        failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK,
        monitor: { seconds: 30, nanos: 0 },
        maxFailureRatio: 0.2,
        order: UpdateConfig_Order.ORDER_START_FIRST,
      },
      rollback: {
        parallelism: 0,
        delay: { seconds: 1, nanos: 0 },
        failureAction: UpdateConfig_FailureAction.FAILURE_ACTION_CONTINUE,
        monitor: { seconds: 5, nanos: 0 },
        maxFailureRatio: 0.5,
        order: UpdateConfig_Order.ORDER_STOP_FIRST,
      },
      endpoint: {
        mode: EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR,
        ports: [
          { targetPort: 80, publishedPort: 8080, protocol: PortConfig_Protocol.PROTOCOL_TCP },
          {
            targetPort: 53,
            publishedPort: 5353,
            protocol: PortConfig_Protocol.PROTOCOL_UDP,
            publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
          },
        ],
      },
    }),
  );
});

test('global mode, --no-healthcheck, and --read-only=false style values', () => {
  const spec = createSpec(
    '--mode',
    'global',
    '--no-healthcheck',
    '--read-only',
    'false',
    '--init',
    'true',
    'agent:1',
  );
  assert.deepEqual(spec.mode, { $case: 'global', value: {} });
  assert.deepEqual(spec.task?.container?.healthcheck?.test, ['NONE']);
  assert.equal(spec.task?.container?.readOnly, false);
  assert.equal(spec.task?.container?.init, true);
});

test('an update config given in part gets Docker defaults for the rest', () => {
  const spec = createSpec('--update-delay', '10s', 'img');
  assert.equal(spec.update?.parallelism, 1);
  assert.deepEqual(spec.update?.monitor, { seconds: 5, nanos: 0 });
  assert.equal(spec.rollback, undefined);
});

test('bad create values are usage errors naming the flag and the rule', () => {
  const cases: Array<[string[], RegExp]> = [
    [['--replicas', '-1'], /invalid argument "-1" for "--replicas": must be a whole number ≥ 0/],
    [['--replicas', '2.5'], /"--replicas"/],
    [['--mode', 'global', '--replicas', '2'], /"--replicas".*global/],
    [['--mode', 'daemonset'], /"--mode": must be one of replicated, global/],
    [['--limit-cpu', 'half'], /"--limit-cpu"/],
    [['--limit-memory', '64q'], /"--limit-memory"/],
    [['--limit-pids', '-1'], /invalid argument "-1" for "--limit-pids": must be a whole number ≥ 0/],
    [['--limit-pids', '1.5'], /invalid argument "1.5" for "--limit-pids"/],
    [['--limit-pids', 'many'], /"--limit-pids"/],
    [['--reserve-cpu', '-1'], /"--reserve-cpu"/],
    [['--reserve-memory', 'x'], /"--reserve-memory"/],
    [['--restart-condition', 'always'], /"--restart-condition": must be one of none, on-failure, any/],
    [['--restart-delay', '5'], /"--restart-delay"/],
    [['--restart-max-attempts', 'many'], /"--restart-max-attempts"/],
    [['--restart-window', '1 minute'], /"--restart-window"/],
    [['--stop-grace-period', '10'], /"--stop-grace-period"/],
    [['--health-interval', 'often'], /"--health-interval"/],
    [['--health-timeout', '-1s'], /"--health-timeout"/],
    [['--health-retries', '-3'], /"--health-retries"/],
    [['--health-start-period', 'soon'], /"--health-start-period"/],
    [['--no-healthcheck', '--health-cmd', 'true'], /--no-healthcheck conflicts/],
    [['--read-only', 'perhaps'], /"--read-only"/],
    [['--init=yes'], /"--init"/],
    [['--endpoint-mode', 'lb'], /"--endpoint-mode": must be one of vip, dnsrr/],
    [['--update-parallelism', 'x'], /"--update-parallelism"/],
    [['--update-delay', '1'], /"--update-delay"/],
    [['--update-failure-action', 'explode'], /"--update-failure-action"/],
    [['--update-monitor', 'x'], /"--update-monitor"/],
    [['--update-max-failure-ratio', '2'], /"--update-max-failure-ratio": must be a number between 0 and 1/],
    [['--update-order', 'random'], /"--update-order": must be one of stop-first, start-first/],
    [['--rollback-parallelism', '-1'], /"--rollback-parallelism"/],
    [['--rollback-delay', 'x'], /"--rollback-delay"/],
    [
      ['--rollback-failure-action', 'rollback'],
      /"--rollback-failure-action": must be one of pause, continue/,
    ],
    [['--rollback-monitor', 'x'], /"--rollback-monitor"/],
    [['--rollback-max-failure-ratio', '-1'], /"--rollback-max-failure-ratio"/],
    [['--rollback-order', 'x'], /"--rollback-order"/],
    [['-p', '80:abc'], /"--publish"/],
    [['-e', '=x'], /"--env"/],
    [['--env-file', 'missing.env'], /"--env-file": cannot read it/],
    [['-l', '=x'], /"--label"/],
    [['--container-label', ' =x'], /"--container-label"/],
    [['--mount', 'type=bind,dst=/x'], /"--mount"/],
    [['--constraint', 'node.color==red'], /"--constraint"/],
    [['--constraint', 'node.role=worker'], /"--constraint"/],
    [['--placement-pref', 'node.labels.zone'], /"--placement-pref": must be spread=/],
    [['--placement-pref', 'spread=node.hostname'], /"--placement-pref"/],
  ];
  for (const [flags, pattern] of cases) assertUsage(() => createSpec(...flags, 'img'), pattern);
});

test('an unknown flag is refused by the parser', () => {
  assert.throws(() => createSpec('--replica', '3', 'img'), { code: 'commander.unknownOption' });
});

// prettier-ignore
const base = (): ServiceSpec =>
  createSpec(
    '--name', 'web',
    '-e', 'A=1', '-e', 'B=2',
    '-l', 'keep=1', '-l', 'drop=1',
    '-p', '8080:80', '-p', '53:53/udp',
    '--mount', 'type=volume,src=v,dst=/v',
    '--network', 'front',
    '--constraint', 'node.role==worker',
    '--dns', '1.1.1.1',
    'nginx:1', 'nginx',
  );

test('update applies -add and -rm flags to a copy of the spec', () => {
  const current = base();
  const snapshot = ServiceSpec.fromPartial(current);
  // prettier-ignore
  const next = updateSpec(
    current,
    '--image', 'nginx:2',
    '--env-rm', 'A', '--env-add', 'B=3', '--env-add', 'C=4',
    '--label-rm', 'drop', '--label-add', 'new=yes',
    '--publish-rm', '80', '--publish-add', '9090:90',
    '--mount-rm', '/v', '--mount-add', 'type=tmpfs,dst=/t',
    '--network-rm', 'front', '--network-add', 'back',
    '--constraint-rm', 'node.role==worker', '--constraint-add', 'node.labels.zone==a',
    '--placement-pref-add', 'spread=node.labels.rack',
    '--dns-rm', '1.1.1.1', '--dns-add', '9.9.9.9',
    '--container-label-add', 'x=y',
    '--replicas', '4',
    '--args', 'nginx -T',
  );
  assert.deepEqual(current, snapshot, 'the spec read from the manager is not changed');
  const c = next.task?.container;
  assert.equal(c?.image, 'nginx:2');
  assert.deepEqual(c?.env, ['B=3', 'C=4']);
  assert.deepEqual(next.annotations?.labels, { keep: '1', new: 'yes' });
  assert.deepEqual(
    next.endpoint?.ports.map((p) => `${p.publishedPort}:${p.targetPort}/${p.protocol}`),
    ['53:53/1', '9090:90/0'],
  );
  assert.deepEqual(
    c?.mounts.map((m) => m.target),
    ['/t'],
  );
  assert.deepEqual(
    next.task?.networks.map((n) => n.target),
    ['back'],
  );
  assert.deepEqual(next.task?.placement, {
    constraints: ['node.labels.zone==a'],
    spreadPreferences: ['node.labels.rack'],
  });
  assert.deepEqual(c?.dnsConfig?.nameservers, ['9.9.9.9']);
  assert.deepEqual(c?.labels, { x: 'y' });
  assert.deepEqual(next.mode, { $case: 'replicated', value: { replicas: 4 } });
  assert.deepEqual(c?.args, ['nginx', '-T']);
  assert.equal(next.annotations?.name, 'web');
});

test('--env-rm then --env-add of the same name keeps the new value; --publish-rm of a udp port', () => {
  const next = updateSpec(base(), '--env-rm', 'A', '--env-add', 'A=9', '--publish-rm', '53/udp');
  assert.deepEqual(next.task?.container?.env, ['B=2', 'A=9']);
  assert.deepEqual(
    next.endpoint?.ports.map((p) => p.targetPort),
    [80],
  );
});

test('--force bumps forceUpdate, and only task spec changes count as restarts', () => {
  const current = base();
  const forced = updateSpec(current, '--force');
  assert.equal(forced.task?.forceUpdate, 1);
  assert.ok(taskSpecChanged(current, forced));
  const scaled = updateSpec(current, '--replicas', '7');
  assert.equal(taskSpecChanged(current, scaled), false);
  assert.ok(taskSpecChanged(current, updateSpec(current, '--env-add', 'Z=1')));
});

test('--limit-pids on update sets the limit, 0 lifts it, and other limits stay', () => {
  const current = createSpec('--limit-memory', '64m', 'img');
  const limited = updateSpec(current, '--limit-pids', '100');
  assert.deepEqual(limited.task?.resources?.limits, {
    nanoCpus: 0,
    memoryBytes: 64 * 1024 * 1024,
    pids: 100,
  });
  assert.ok(taskSpecChanged(current, limited));
  assert.equal(updateSpec(limited, '--limit-pids', '0').task?.resources?.limits?.pids, 0);
  assert.equal(updateSpec(createSpec('img'), '--limit-pids', '7').task?.resources?.limits?.pids, 7);
});

test('bad update values are usage errors', () => {
  assertUsage(() => updateSpec(base(), '--limit-pids', '-3'), /"--limit-pids": must be a whole number ≥ 0/);
  assertUsage(() => updateSpec(base(), '--image', ''), /"--image"/);
  assertUsage(() => updateSpec(base(), '--publish-add', 'x'), /"--publish-add"/);
  assertUsage(() => updateSpec(base(), '--constraint-add', 'nope'), /"--constraint-add"/);
  assertUsage(() => updateSpec(base(), '--mount-add', 'type=bind,src=rel,dst=/x'), /"--mount-add"/);
  assertUsage(() => updateSpec(base(), '--label-add', '=v'), /"--label-add"/);
  assertUsage(() => updateSpec(base(), '--update-order', 'x'), /"--update-order"/);
  const global = createSpec('--mode', 'global', 'img');
  assertUsage(() => updateSpec(global, '--replicas', '3'), /global/);
});

test('--health-http PORT[/PATH] and --health-tcp PORT set the probe forms; interval and the rest still apply', () => {
  const http = createSpec('--health-http', '8080/status?full=1', '--health-interval', '2s', 'img');
  assert.deepEqual(http.task?.container?.healthcheck?.test, ['HTTP', '8080', '/status?full=1']);
  assert.deepEqual(http.task?.container?.healthcheck?.interval, { seconds: 2, nanos: 0 });
  assert.deepEqual(createSpec('--health-http', '80', 'img').task?.container?.healthcheck?.test, [
    'HTTP',
    '80',
    '/',
  ]);
  assert.deepEqual(createSpec('--health-http', '80/', 'img').task?.container?.healthcheck?.test, [
    'HTTP',
    '80',
    '/',
  ]);
  assert.deepEqual(createSpec('--health-tcp', '5432', 'img').task?.container?.healthcheck?.test, [
    'TCP',
    '5432',
  ]);
});

test('on update a probe replaces the check, and --no-healthcheck removes it', () => {
  const current = createSpec('--health-cmd', 'true', '--health-retries', '5', 'img');
  const tcp = updateSpec(current, '--health-tcp', '81');
  assert.deepEqual(tcp.task?.container?.healthcheck?.test, ['TCP', '81']);
  assert.equal(tcp.task?.container?.healthcheck?.retries, 5, 'the rules stay');
  assert.ok(taskSpecChanged(current, tcp));
  const http = updateSpec(tcp, '--health-http', '80/up');
  assert.deepEqual(http.task?.container?.healthcheck?.test, ['HTTP', '80', '/up']);
  const timeoutOnly = updateSpec(http, '--health-timeout', '3s');
  assert.deepEqual(timeoutOnly.task?.container?.healthcheck?.test, ['HTTP', '80', '/up']);
  assert.deepEqual(updateSpec(http, '--no-healthcheck').task?.container?.healthcheck?.test, ['NONE']);
  assert.deepEqual(
    updateSpec(createSpec('--no-healthcheck', 'img'), '--health-http', '80').task?.container?.healthcheck
      ?.test,
    ['HTTP', '80', '/'],
  );
});

test('probe flags: bad ports and conflicts are usage errors naming both flags', () => {
  const cases: [string[], RegExp][] = [
    [['--health-http', '0'], /invalid argument "0" for "--health-http": must be PORT\[\/PATH\]/],
    [['--health-http', '65536/x'], /"--health-http"/],
    [['--health-http', 'web/health'], /"--health-http"/],
    [['--health-http', '/health'], /"--health-http"/],
    [['--health-tcp', '80/x'], /invalid argument "80\/x" for "--health-tcp": must be a port from 1 to 65535/],
    [['--health-tcp', '-1'], /"--health-tcp"/],
    [['--health-http', '80', '--health-tcp', '81'], /--health-http conflicts with --health-tcp/],
    [['--health-cmd', 'true', '--health-http', '80'], /--health-cmd conflicts with --health-http/],
    [['--health-tcp', '81', '--health-cmd', 'true'], /--health-cmd conflicts with --health-tcp/],
    [['--no-healthcheck', '--health-http', '80'], /--no-healthcheck conflicts with --health-http/],
    [['--no-healthcheck', '--health-tcp', '80'], /--no-healthcheck conflicts with --health-tcp/],
  ];
  for (const [flags, pattern] of cases) {
    assertUsage(() => createSpec(...flags, 'img'), pattern);
    assertUsage(() => updateSpec(base(), ...flags), pattern);
  }
});
