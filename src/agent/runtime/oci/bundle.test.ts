// The service spec → OCI config.json mapping, and the image config parts, without runc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Mount_Type, Task } from '../../../gen/cluster/v1/objects';
import { TaskRuntimeError } from '../index';
import {
  applyChange,
  bundleConfig,
  EMPTY_IMAGE_CONFIG,
  mergeEnv,
  parseCommandForm,
  processArgs,
  resolveUser,
  type BundleInputs,
} from './bundle';
import { normalizeRef, splitRef } from './images';
import { containerIdFor, parseLogLine } from './index';

const PASSWD = 'root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/sh\n';
const GROUP = 'root:x:0:\nstaff:x:50:\n';

function inputs(task: Task, overrides: Partial<BundleInputs> = {}): BundleInputs {
  return {
    task,
    image: {
      ...EMPTY_IMAGE_CONFIG,
      cmd: ['httpd', '-f'],
      env: ['FROM_IMAGE=1', 'A=image'],
      workingDir: '/www',
    },
    rootfs: '/data/oci/containers/c1/rootfs',
    defaultHostname: 'abc123',
    volumePath: (name) => `/data/oci/volumes/${name}`,
    etcFiles: { hosts: '/c/hosts', resolvConf: '/c/resolv.conf', hostname: '/c/hostname' },
    network: 'new',
    cgroupsPath: '/cluster-oci-c1',
    defaultPidsLimit: 100,
    initBinary: '/usr/bin/tini-static',
    passwd: PASSWD,
    group: GROUP,
    ...overrides,
  };
}

test('every mapped field of the spec lands in config.json', () => {
  const task = Task.fromPartial({
    id: 't1',
    spec: {
      container: {
        image: 'local/busybox:1',
        command: ['/bin/sh'],
        args: ['-c', 'echo hi'],
        env: ['A=spec', 'B=2'],
        hostname: 'web-1',
        user: 'www:staff',
        dir: '/srv',
        readOnly: true,
        mounts: [
          { type: Mount_Type.TYPE_BIND, source: '/host/x', target: '/x', readOnly: true },
          { type: Mount_Type.TYPE_VOLUME, source: 'data', target: '/data' },
          { type: Mount_Type.TYPE_TMPFS, target: '/run', tmpfsSizeBytes: 1024 },
        ],
      },
      resources: { limits: { nanoCpus: 250_000_000, memoryBytes: 32 << 20 } },
    },
  });
  const c = bundleConfig(inputs(task));
  assert.deepEqual(c.process.args, ['/bin/sh', '-c', 'echo hi']);
  assert.deepEqual(c.process.env, [
    'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    'HOSTNAME=web-1',
    'FROM_IMAGE=1',
    'A=spec',
    'B=2',
  ]);
  assert.deepEqual(c.process.user, { uid: 33, gid: 50 });
  assert.equal(c.process.cwd, '/srv');
  assert.equal(c.process.terminal, false);
  assert.equal(c.hostname, 'web-1');
  assert.deepEqual(c.root, { path: '/data/oci/containers/c1/rootfs', readonly: true });
  assert.deepEqual(c.linux.resources.memory, { limit: 32 << 20, swap: 32 << 20 });
  assert.deepEqual(c.linux.resources.cpu, { quota: 25_000, period: 100_000 });
  assert.deepEqual(c.linux.resources.pids, { limit: 100 });
  assert.equal(c.linux.cgroupsPath, '/cluster-oci-c1');
  assert.deepEqual(
    c.linux.namespaces.map((n) => n.type),
    ['pid', 'ipc', 'uts', 'mount', 'network'],
  );
  const byTarget = new Map(c.mounts.map((m) => [m.destination, m]));
  assert.deepEqual(byTarget.get('/x'), {
    destination: '/x',
    type: 'bind',
    source: '/host/x',
    options: ['rbind', 'ro'],
  });
  assert.deepEqual(byTarget.get('/data'), {
    destination: '/data',
    type: 'bind',
    source: '/data/oci/volumes/data',
    options: ['rbind', 'rw'],
  });
  assert.deepEqual(byTarget.get('/run')?.options, ['nosuid', 'nodev', 'mode=1777', 'size=1024']);
  assert.equal(byTarget.get('/etc/hosts')?.source, '/c/hosts');
  assert.equal(byTarget.get('/proc')?.type, 'proc');
});

test('without a spec command the image config decides; host network shares the namespace', () => {
  const task = Task.fromPartial({ id: 't2', spec: { container: { image: 'x' } } });
  const c = bundleConfig(inputs(task, { network: 'host' }));
  assert.deepEqual(c.process.args, ['httpd', '-f']);
  assert.equal(c.process.cwd, '/www');
  assert.equal(c.hostname, 'abc123');
  assert.deepEqual(c.process.user, { uid: 0, gid: 0 });
  assert.equal(c.linux.resources.memory, undefined);
  assert.equal(c.linux.resources.cpu, undefined);
  assert.deepEqual(c.linux.resources.pids, { limit: 100 }, "the node's default when the spec sets none");
  assert.ok(!c.linux.namespaces.some((n) => n.type === 'network'));
});

test("the spec's pids limit wins over the node's default; 0 means the default", () => {
  const withPids = (pids: number) =>
    Task.fromPartial({ id: 'p', spec: { container: { image: 'x' }, resources: { limits: { pids } } } });
  assert.deepEqual(bundleConfig(inputs(withPids(7))).linux.resources.pids, { limit: 7 });
  assert.deepEqual(bundleConfig(inputs(withPids(100_000))).linux.resources.pids, { limit: 100_000 });
  assert.deepEqual(bundleConfig(inputs(withPids(0))).linux.resources.pids, { limit: 100 });
});

test('init: tini is PID 1 at /sbin/docker-init, mounted read-only, and runs the command', () => {
  const task = (init: boolean, container: Record<string, unknown> = {}) =>
    Task.fromPartial({ id: 'i', spec: { container: { image: 'x', init, ...container } } });
  const c = bundleConfig(inputs(task(true, { command: ['/bin/sh'], args: ['-c', 'echo hi'] })));
  assert.deepEqual(c.process.args, ['/sbin/docker-init', '--', '/bin/sh', '-c', 'echo hi']);
  const init = c.mounts.filter((m) => m.destination === '/sbin/docker-init');
  assert.deepEqual(init, [
    {
      destination: '/sbin/docker-init',
      type: 'bind',
      source: '/usr/bin/tini-static',
      options: ['bind', 'ro'],
    },
  ]);
  // The image's own entrypoint and cmd run under the init too.
  assert.deepEqual(bundleConfig(inputs(task(true))).process.args, ['/sbin/docker-init', '--', 'httpd', '-f']);
  // A task mount does not hide the init: it comes last.
  const over = bundleConfig(
    inputs(task(true, { mounts: [{ type: Mount_Type.TYPE_BIND, source: '/host/sbin', target: '/sbin' }] })),
  );
  assert.equal(over.mounts.at(-1)?.destination, '/sbin/docker-init');
  // Without init: no mount, the command as it is; no tini on the node does not matter then.
  const plain = bundleConfig(inputs(task(false), { initBinary: undefined }));
  assert.deepEqual(plain.process.args, ['httpd', '-f']);
  assert.ok(!plain.mounts.some((m) => m.destination === '/sbin/docker-init'));
});

test('init on a node without tini fails the task naming the package', () => {
  const task = Task.fromPartial({ id: 'i', spec: { container: { image: 'x', init: true } } });
  assert.throws(
    () => bundleConfig(inputs(task, { initBinary: undefined })),
    (e: unknown) => e instanceof TaskRuntimeError && /install Debian's package 'tini'/.test(e.message),
  );
});

test("a task mount over /etc/hosts replaces the node's file", () => {
  const task = Task.fromPartial({
    id: 't3',
    spec: {
      container: {
        image: 'x',
        mounts: [{ type: Mount_Type.TYPE_BIND, source: '/my/hosts', target: '/etc/hosts' }],
      },
    },
  });
  const hosts = bundleConfig(inputs(task)).mounts.filter((m) => m.destination === '/etc/hosts');
  assert.deepEqual(
    hosts.map((m) => m.source),
    ['/my/hosts'],
  );
});

test('bad specs are the task’s fault, with the reason', () => {
  const bad = (container: Record<string, unknown>) =>
    assert.throws(
      () =>
        bundleConfig(
          inputs(Task.fromPartial({ id: 'b', spec: { container: { image: 'x', ...container } } })),
        ),
      TaskRuntimeError,
    );
  bad({ user: 'nobody' });
  bad({ user: '0:nogroup' });
  bad({ dir: 'relative' });
  bad({ mounts: [{ type: Mount_Type.TYPE_BIND, source: 'rel', target: '/x' }] });
  bad({ mounts: [{ type: Mount_Type.TYPE_BIND, source: '/x', target: 'rel' }] });
  bad({ mounts: [{ type: Mount_Type.TYPE_VOLUME, source: '../escape', target: '/x' }] });
  assert.throws(() => bundleConfig(inputs(Task.fromPartial({ id: 'n', spec: {} }))), /no container image/);
  assert.throws(
    () => processArgs(Task.fromPartial({ spec: { container: { image: 'x' } } }), EMPTY_IMAGE_CONFIG),
    /has no CMD or ENTRYPOINT/,
  );
});

test("Swarm's command/args rules: command replaces the entrypoint and drops the image's cmd", () => {
  const image = { ...EMPTY_IMAGE_CONFIG, entrypoint: ['/entry'], cmd: ['default'] };
  const args = (container: Record<string, unknown>) =>
    processArgs(Task.fromPartial({ spec: { container: { image: 'x', ...container } } }), image);
  assert.deepEqual(args({}), ['/entry', 'default']);
  assert.deepEqual(args({ args: ['a'] }), ['/entry', 'a']);
  assert.deepEqual(args({ command: ['/other'] }), ['/other']);
  assert.deepEqual(args({ command: ['/other'], args: ['b'] }), ['/other', 'b']);
});

test('users: numeric, by name, with a group, primary group from passwd', () => {
  assert.deepEqual(resolveUser('', PASSWD, GROUP), { uid: 0, gid: 0 });
  assert.deepEqual(resolveUser('33', PASSWD, GROUP), { uid: 33, gid: 34 });
  assert.deepEqual(resolveUser('1000', PASSWD, GROUP), { uid: 1000, gid: 0 });
  assert.deepEqual(resolveUser('www', PASSWD, GROUP), { uid: 33, gid: 34 });
  assert.deepEqual(resolveUser('1000:7', PASSWD, GROUP), { uid: 1000, gid: 7 });
  assert.deepEqual(resolveUser('root:staff', PASSWD, GROUP), { uid: 0, gid: 50 });
});

test('import --change instructions, in both command forms', () => {
  assert.deepEqual(parseCommandForm('["httpd", "-f"]'), ['httpd', '-f']);
  assert.deepEqual(parseCommandForm('httpd -f'), ['/bin/sh', '-c', 'httpd -f']);
  assert.throws(() => parseCommandForm('[1, 2]'), /strings only/);
  assert.throws(() => parseCommandForm('["unterminated'), /invalid JSON/);
  let c = applyChange(EMPTY_IMAGE_CONFIG, 'CMD ["a"]');
  c = applyChange(c, 'ENTRYPOINT ["/e"]');
  c = applyChange(c, 'ENV A=1 B=2');
  c = applyChange(c, 'ENV A 3');
  c = applyChange(c, 'WORKDIR /w');
  c = applyChange(c, 'USER www');
  c = applyChange(c, 'EXPOSE 80');
  assert.deepEqual(c, { cmd: ['a'], entrypoint: ['/e'], env: ['B=2', 'A=3'], workingDir: '/w', user: 'www' });
  assert.throws(() => applyChange(c, 'RUN make'), /not supported/);
  assert.throws(() => applyChange(c, 'WORKDIR rel'), /absolute/);
  assert.throws(() => applyChange(c, 'nonsense'), /INSTRUCTION/);
  assert.deepEqual(mergeEnv(['A=1', 'B=1'], ['A=2']), ['A=2', 'B=1']);
});

test('image references, container ids and log lines', () => {
  assert.equal(normalizeRef('busybox'), 'busybox:latest');
  assert.equal(normalizeRef('local/busybox:1'), 'local/busybox:1');
  assert.equal(normalizeRef('reg:5000/x'), 'reg:5000/x:latest');
  assert.throws(() => normalizeRef('bad ref'), /invalid image reference/);
  assert.throws(() => normalizeRef('../x'), /invalid image reference/);
  assert.deepEqual(splitRef('reg:5000/x:2'), { repo: 'reg:5000/x', tag: '2' });
  assert.equal(containerIdFor('abc/def'), 't-abc_def');
  assert.deepEqual(parseLogLine('1700000000123 o hello world'), {
    stream: 'stdout',
    timeMs: 1700000000123,
    text: 'hello world',
  });
  assert.deepEqual(parseLogLine('1 e '), { stream: 'stderr', timeMs: 1, text: '' });
  assert.equal(parseLogLine('garbage'), undefined);
  assert.equal(parseLogLine('12 x text'), undefined);
});
