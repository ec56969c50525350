// Every service spec rule with input that passes and input that fails; failures must name the
// field and write nothing to the store.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { ClusterError } from '../../common/errors';
import {
  EndpointSpec_ResolutionMode,
  Mount_Type,
  PortConfig_Protocol,
  PortConfig_PublishMode,
  RestartPolicy_Condition,
  ServiceSpec,
  UpdateConfig_FailureAction,
  UpdateConfig_Order,
} from '../../gen/cluster/v1/objects';
import { fullServiceSpec, newTestApi, seed, storeBytes, testNetwork } from './testing';
import { MIN_MEMORY_BYTES, validateImage, validateServiceSpec } from './validate';

type Mutation = (spec: ServiceSpec) => void;

function mutated(mutate: Mutation): ServiceSpec {
  const spec = fullServiceSpec();
  mutate(spec);
  return spec;
}

function container(spec: ServiceSpec) {
  const c = spec.task?.container;
  if (!c) throw new Error('test spec without container');
  return c;
}

function task(spec: ServiceSpec) {
  if (!spec.task) throw new Error('test spec without task');
  return spec.task;
}

function ports(spec: ServiceSpec) {
  if (!spec.endpoint) throw new Error('test spec without endpoint');
  return spec.endpoint.ports;
}

function firstPort(spec: ServiceSpec) {
  const p = ports(spec)[0];
  if (!p) throw new Error('test spec without ports');
  return p;
}

function firstMount(spec: ServiceSpec) {
  const m = container(spec).mounts[0];
  if (!m) throw new Error('test spec without mounts');
  return m;
}

function resources(spec: ServiceSpec) {
  const r = task(spec).resources;
  if (!r?.limits || !r.reservations) throw new Error('test spec without resources');
  return { limits: r.limits, reservations: r.reservations };
}

function health(spec: ServiceSpec) {
  const h = container(spec).healthcheck;
  if (!h) throw new Error('test spec without healthcheck');
  return h;
}

function dns(spec: ServiceSpec) {
  const d = container(spec).dnsConfig;
  if (!d) throw new Error('test spec without dns');
  return d;
}

function update(spec: ServiceSpec) {
  if (!spec.update || !spec.rollback) throw new Error('test spec without update configs');
  return { update: spec.update, rollback: spec.rollback };
}

function restart(spec: ServiceSpec) {
  const r = task(spec).restart;
  if (!r) throw new Error('test spec without restart');
  return r;
}

const ms = (value: number) => ({
  seconds: Math.trunc(value / 1000),
  nanos: Math.round((value % 1000) * 1e6),
});

/** [description, mutation, text the message must contain (the field)] */
const BAD: [string, Mutation, string][] = [
  ['name starting with a dash', (s) => (s.annotations = { name: '-web', labels: {} }), 'name'],
  ['name with a space', (s) => (s.annotations = { name: 'my web', labels: {} }), 'name'],
  ['name of 64 characters', (s) => (s.annotations = { name: 'a'.repeat(64), labels: {} }), 'longer than 63'],
  ['empty label key', (s) => (s.annotations = { name: 'web', labels: { '': 'x' } }), 'labels'],
  ['negative replicas', (s) => (s.mode = { $case: 'replicated', value: { replicas: -1 } }), 'replicas'],
  ['fractional replicas', (s) => (s.mode = { $case: 'replicated', value: { replicas: 1.5 } }), 'replicas'],
  [
    'replicas beyond int32',
    (s) => (s.mode = { $case: 'replicated', value: { replicas: 2 ** 31 } }),
    'replicas',
  ],
  ['no task', (s) => (s.task = undefined), 'task.container.image'],
  ['no container', (s) => (task(s).container = undefined), 'task.container.image'],
  ['empty image', (s) => (container(s).image = ''), 'task.container.image'],
  ['upper-case image', (s) => (container(s).image = 'Nginx'), 'must be lowercase'],
  ['image with empty tag', (s) => (container(s).image = 'nginx:'), 'task.container.image'],
  ['image with short digest', (s) => (container(s).image = 'nginx@sha256:abc'), 'task.container.image'],
  ['image with spaces', (s) => (container(s).image = 'my image'), 'task.container.image'],
  ['image name too long', (s) => (container(s).image = 'a/'.repeat(130) + 'b'), 'longer than 255'],
  ['env without =', (s) => (container(s).env = ['NOVALUE']), 'task.container.env[0]'],
  ['env with empty key', (s) => (container(s).env = ['A=1', '=x']), 'task.container.env[1]'],
  ['empty container label key', (s) => (container(s).labels = { ' ': 'x' }), 'task.container.labels'],
  ['hostname with underscore', (s) => (container(s).hostname = 'bad_host'), 'task.container.hostname'],
  ['hostname starting with a dash', (s) => (container(s).hostname = '-web'), 'task.container.hostname'],
  [
    'hostname with an unknown template',
    (s) => (container(s).hostname = '{{.Foo}}'),
    'task.container.hostname',
  ],
  [
    'hostname label of 64 characters',
    (s) => (container(s).hostname = 'a'.repeat(64)),
    'task.container.hostname',
  ],
  ['user with two colons', (s) => (container(s).user = 'a:b:c'), 'task.container.user'],
  ['user with a space', (s) => (container(s).user = 'my user'), 'task.container.user'],
  ['relative workdir', (s) => (container(s).dir = 'srv'), 'task.container.dir'],
  ['bind mount without source', (s) => (firstMount(s).source = ''), 'task.container.mounts[0].source'],
  [
    'bind mount with relative source',
    (s) => (firstMount(s).source = 'www'),
    'task.container.mounts[0].source',
  ],
  [
    'volume mount with a path as source',
    (s) =>
      container(s).mounts.splice(0, 1, {
        type: Mount_Type.TYPE_VOLUME,
        source: '/data',
        target: '/d',
        readOnly: false,
        tmpfsSizeBytes: 0,
      }),
    'task.container.mounts[0].source',
  ],
  [
    'tmpfs mount with a source',
    (s) =>
      container(s).mounts.splice(0, 1, {
        type: Mount_Type.TYPE_TMPFS,
        source: 'x',
        target: '/d',
        readOnly: false,
        tmpfsSizeBytes: 0,
      }),
    'task.container.mounts[0].source',
  ],
  ['mount with relative target', (s) => (firstMount(s).target = 'www'), 'task.container.mounts[0].target'],
  ['mount without target', (s) => (firstMount(s).target = ''), 'task.container.mounts[0].target'],
  ['mount on /', (s) => (firstMount(s).target = '/'), 'task.container.mounts[0].target'],
  ['two mounts on one target', (s) => (firstMount(s).target = '/cache/'), 'task.container.mounts[1].target'],
  ['tmpfs size on a bind mount', (s) => (firstMount(s).tmpfsSizeBytes = 1024), 'tmpfs_size_bytes'],
  ['unknown mount type', (s) => (firstMount(s).type = 7 as Mount_Type), 'task.container.mounts[0].type'],
  [
    'negative stop grace period',
    (s) => (container(s).stopGracePeriod = { seconds: -1, nanos: 0 }),
    'stop_grace_period',
  ],
  ['stop signal with spaces', (s) => (container(s).stopSignal = 'kill me'), 'stop_signal'],
  ['healthcheck of unknown form', (s) => (health(s).test = ['RUN', 'x']), 'healthcheck.test'],
  [
    'healthcheck HTTP probe as a URL',
    (s) => (health(s).test = ['HTTP', 'http://:80/health']),
    'port and a path',
  ],
  ['healthcheck HTTP probe without a path', (s) => (health(s).test = ['HTTP', '80']), 'port and a path'],
  [
    'healthcheck HTTP probe with 3 arguments',
    (s) => (health(s).test = ['HTTP', '80', '/', 'x']),
    'port and a path',
  ],
  ['healthcheck HTTP probe on port 0', (s) => (health(s).test = ['HTTP', '0', '/']), 'from 1 to 65535'],
  ['healthcheck HTTP probe on port 65536', (s) => (health(s).test = ['HTTP', '65536', '/']), "got '65536'"],
  ['healthcheck HTTP probe on port 8.5', (s) => (health(s).test = ['HTTP', '8.5', '/']), 'from 1 to 65535'],
  [
    'healthcheck HTTP probe with a relative path',
    (s) => (health(s).test = ['HTTP', '80', 'health']),
    "start with '/'",
  ],
  ['healthcheck TCP probe without a port', (s) => (health(s).test = ['TCP']), 'TCP takes a port'],
  ['healthcheck TCP probe with a path', (s) => (health(s).test = ['TCP', '80', '/']), 'TCP takes a port'],
  ['healthcheck TCP probe on a named port', (s) => (health(s).test = ['TCP', 'http']), "got 'http'"],
  ['healthcheck in lower case', (s) => (health(s).test = ['tcp', '80']), 'CMD, CMD-SHELL, HTTP, TCP or NONE'],
  ['healthcheck CMD without command', (s) => (health(s).test = ['CMD']), 'healthcheck.test'],
  [
    'healthcheck CMD-SHELL with two strings',
    (s) => (health(s).test = ['CMD-SHELL', 'a', 'b']),
    'healthcheck.test',
  ],
  ['healthcheck NONE with arguments', (s) => (health(s).test = ['NONE', 'x']), 'healthcheck.test'],
  [
    'healthcheck interval under 1 ms',
    (s) => (health(s).interval = { seconds: 0, nanos: 500_000 }),
    'healthcheck.interval',
  ],
  [
    'negative healthcheck timeout',
    (s) => (health(s).timeout = { seconds: -2, nanos: 0 }),
    'healthcheck.timeout',
  ],
  [
    'duration with mixed signs',
    (s) => (health(s).timeout = { seconds: 2, nanos: -5 }),
    'healthcheck.timeout',
  ],
  ['nameserver that is no IP', (s) => (dns(s).nameservers = ['dns.example']), 'dns_config.nameservers[0]'],
  ['bad search domain', (s) => (dns(s).search = ['bad domain']), 'dns_config.search[0]'],
  ['bad resolver option', (s) => (dns(s).options = ['ndots 2']), 'dns_config.options[0]'],
  ['negative CPU limit', (s) => (resources(s).limits.nanoCpus = -1), 'limits.nano_cpus'],
  [
    'memory limit under 4 MiB',
    (s) => (resources(s).limits.memoryBytes = MIN_MEMORY_BYTES - 1),
    'limits.memory_bytes',
  ],
  [
    'memory reservation under 4 MiB',
    (s) => (resources(s).reservations.memoryBytes = 1024),
    'reservations.memory_bytes',
  ],
  [
    'memory reservation above the limit',
    (s) => (resources(s).reservations.memoryBytes = 512 * 1024 * 1024),
    'reservations.memory_bytes',
  ],
  ['negative pids limit', (s) => (resources(s).limits.pids = -1), 'limits.pids'],
  ['fractional pids limit', (s) => (resources(s).limits.pids = 1.5), 'limits.pids'],
  ['pids reservation', (s) => (resources(s).reservations.pids = 10), 'reservations.pids'],
  [
    'CPU reservation above the limit',
    (s) => (resources(s).reservations.nanoCpus = 3e9),
    'reservations.nano_cpus',
  ],
  [
    'unknown restart condition',
    (s) => (restart(s).condition = 9 as RestartPolicy_Condition),
    'task.restart.condition',
  ],
  ['negative restart delay', (s) => (restart(s).delay = ms(-1000)), 'task.restart.delay'],
  ['negative restart window', (s) => (restart(s).window = ms(-1)), 'task.restart.window'],
  [
    'unknown constraint key',
    (s) => (task(s).placement = { constraints: ['node.foo==x'], spreadPreferences: [] }),
    'constraint',
  ],
  [
    'constraint without operator',
    (s) => (task(s).placement = { constraints: ['node.role'], spreadPreferences: [] }),
    'constraint',
  ],
  [
    'spread over a non-label',
    (s) => (task(s).placement = { constraints: [], spreadPreferences: ['spread=node.hostname'] }),
    'placement preference',
  ],
  [
    'network without target',
    (s) => (task(s).networks = [{ target: '', aliases: [] }]),
    'task.networks[0].target',
  ],
  [
    'network alias that is no DNS name',
    (s) => (task(s).networks = [{ target: 'backend', aliases: ['a b'] }]),
    'aliases',
  ],
  ['target port 0', (s) => (firstPort(s).targetPort = 0), 'endpoint.ports[0].target_port'],
  ['target port 65536', (s) => (firstPort(s).targetPort = 65536), 'endpoint.ports[0].target_port'],
  ['published port 70000', (s) => (firstPort(s).publishedPort = 70000), 'endpoint.ports[0].published_port'],
  [
    'unknown protocol',
    (s) => (firstPort(s).protocol = 5 as PortConfig_Protocol),
    'endpoint.ports[0].protocol',
  ],
  [
    'unknown publish mode',
    (s) => (firstPort(s).publishMode = 9 as PortConfig_PublishMode),
    'endpoint.ports[0].publish_mode',
  ],
  [
    'one port published twice',
    (s) => ports(s).push({ ...firstPort(s), targetPort: 81, name: 'again' }),
    'endpoint.ports[2].published_port',
  ],
  [
    'ingress port with dnsrr',
    (s) => {
      if (s.endpoint) s.endpoint.mode = EndpointSpec_ResolutionMode.RESOLUTION_MODE_DNSRR;
    },
    'publish_mode',
  ],
  ['update parallelism fractional', (s) => (update(s).update.parallelism = 0.5), 'update.parallelism'],
  [
    'update max failure ratio above 1',
    (s) => (update(s).update.maxFailureRatio = 1.5),
    'update.max_failure_ratio',
  ],
  [
    'update max failure ratio below 0',
    (s) => (update(s).update.maxFailureRatio = -0.1),
    'update.max_failure_ratio',
  ],
  ['negative update monitor', (s) => (update(s).update.monitor = ms(-5)), 'update.monitor'],
  ['negative update delay', (s) => (update(s).update.delay = ms(-5)), 'update.delay'],
  ['unknown update order', (s) => (update(s).update.order = 4 as UpdateConfig_Order), 'update.order'],
  [
    'rollback that would roll back',
    (s) => (update(s).rollback.failureAction = UpdateConfig_FailureAction.FAILURE_ACTION_ROLLBACK),
    'rollback.failure_action',
  ],
];

const GOOD: [string, Mutation][] = [
  ['the full spec', () => {}],
  ['no name (one is generated)', (s) => (s.annotations = undefined)],
  [
    'name of 63 characters with _ . -',
    (s) => (s.annotations = { name: 'a_b.c-' + 'd'.repeat(57), labels: {} }),
  ],
  ['zero replicas', (s) => (s.mode = { $case: 'replicated', value: { replicas: 0 } })],
  ['global mode', (s) => (s.mode = { $case: 'global', value: {} })],
  ['no mode', (s) => (s.mode = undefined)],
  ['plain image', (s) => (container(s).image = 'nginx')],
  ['image with a path and tag', (s) => (container(s).image = 'library/nginx:1.27-alpine')],
  ['image on an IPv6 registry', (s) => (container(s).image = '[::1]:5000/tools/busybox:v1.36')],
  ['env value holding =', (s) => (container(s).env = ['URL=a=b', 'EMPTY='])],
  ['dotted hostname', (s) => (container(s).hostname = 'web-1.example.org')],
  ['node hostname template', (s) => (container(s).hostname = '{{.Node.Hostname}}-{{.Task.Slot}}')],
  ['numeric user and group', (s) => (container(s).user = '1000:1000')],
  [
    'anonymous volume',
    (s) =>
      container(s).mounts.push({
        type: Mount_Type.TYPE_VOLUME,
        source: '',
        target: '/v',
        readOnly: false,
        tmpfsSizeBytes: 0,
      }),
  ],
  ['healthcheck NONE', (s) => (health(s).test = ['NONE'])],
  ['healthcheck CMD', (s) => (health(s).test = ['CMD', 'true'])],
  ['healthcheck HTTP probe', (s) => (health(s).test = ['HTTP', '80', '/health?full=1'])],
  ['healthcheck HTTP probe on port 65535 at /', (s) => (health(s).test = ['HTTP', '65535', '/'])],
  ['healthcheck TCP probe on port 1', (s) => (health(s).test = ['TCP', '1'])],
  ['healthcheck inheriting the image', (s) => (health(s).test = [])],
  ['healthcheck interval of exactly 1 ms', (s) => (health(s).interval = { seconds: 0, nanos: 1_000_000 })],
  ['memory of exactly 4 MiB', (s) => (resources(s).reservations.memoryBytes = MIN_MEMORY_BYTES)],
  ['pids limit 0 (unlimited)', (s) => (resources(s).limits.pids = 0)],
  ['pids limit 1', (s) => (resources(s).limits.pids = 1)],
  ['CPU reservation equal to the limit', (s) => (resources(s).reservations.nanoCpus = 2e9)],
  [
    'max failure ratio 0 and 1',
    (s) => ((update(s).update.maxFailureRatio = 0), (update(s).rollback.maxFailureRatio = 1)),
  ],
  ['host port published 0 (any)', (s) => (firstPort(s).publishedPort = 0)],
  [
    'same port number in tcp and udp',
    (s) =>
      ports(s).push({
        ...firstPort(s),
        protocol: 1,
        publishMode: PortConfig_PublishMode.PUBLISH_MODE_INGRESS,
      }),
  ],
  [
    'constraint with spaces',
    (s) =>
      (task(s).placement = {
        constraints: ['node.labels.zone == a'],
        spreadPreferences: ['node.labels.rack'],
      }),
  ],
];

describe('validateServiceSpec', () => {
  for (const [what, mutate, field] of BAD) {
    test(`refuses ${what}`, () => {
      assert.throws(
        () => validateServiceSpec(mutated(mutate)),
        (e: unknown) =>
          e instanceof ClusterError && e.code === 'INVALID_ARGUMENT' && e.message.includes(field),
      );
    });
  }
  for (const [what, mutate] of GOOD) {
    test(`accepts ${what}`, () => {
      validateServiceSpec(mutated(mutate));
    });
  }

  test('messages name the rule and the value', () => {
    assert.throws(
      () => validateServiceSpec(mutated((s) => (s.mode = { $case: 'replicated', value: { replicas: -1 } }))),
      /mode\.replicated\.replicas: replicas must be a whole number from 0 to 2147483647, got -1/,
    );
    assert.throws(
      () => validateServiceSpec(mutated((s) => (resources(s).limits.pids = -5))),
      /task\.resources\.limits\.pids: must be a whole number ≥ 0 \(0: unlimited\), got -5/,
    );
    assert.throws(
      () => validateImage('image', 'Nginx:latest'),
      /invalid image reference 'Nginx:latest': repository name must be lowercase/,
    );
  });
});

describe('createService with a bad spec', () => {
  test('every refused spec is INVALID_ARGUMENT and writes nothing', async () => {
    const { api, store } = newTestApi();
    await seed(store, { networks: [testNetwork('backend')] });
    const before = storeBytes(store);
    for (const [what, mutate, field] of BAD) {
      await assert.rejects(
        api.createService({ spec: mutated(mutate) }),
        (e: unknown) =>
          e instanceof ClusterError && e.code === 'INVALID_ARGUMENT' && e.message.includes(field),
        what,
      );
    }
    assert.deepEqual(storeBytes(store), before);
    // The same API accepts the good ones (names made unique, ports freed).
    let i = 0;
    for (const [what, mutate] of GOOD) {
      const spec = mutated(mutate);
      if (spec.annotations) spec.annotations.name = `good-${i++}`;
      if (spec.endpoint) spec.endpoint.ports = [];
      await api.createService({ spec }).then(
        () => undefined,
        (e: unknown) => assert.fail(`${what}: ${String(e)}`),
      );
    }
  });
});
