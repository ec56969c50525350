// The oci runtime on real runc, overlayfs and cgroups (root): a task's env, args, user, workdir,
// hostname and mounts are applied; memory, CPU and pids limits are in its cgroup (the node's
// pids default without one); with init, tini is PID 1 and forwards the stop signal; exit codes,
// logs (rotated at a max size, read across the files), exec, stop signal and kill work; a new runtime instance adopts what an earlier one
// started; remove leaves no runc state, mount, cgroup, shim or folder. Everything a test made
// lives in its own temporary data dir and is removed at the end, also when a test fails.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Mount_Type, Task, TaskSpec } from '../src/gen/cluster/v1/objects';
import { OciRuntime } from '../src/agent/runtime/oci';
import { TaskRuntimeError, type LogLine } from '../src/agent/runtime';
import { main } from '../src/cli/main';

const root = path.resolve(__dirname, '..', '..');
const RUN = `${process.pid}${Math.floor(Math.random() * 1e6)}`;
const NODE_ID = `ocitest${RUN}`;
const isRoot = process.getuid?.() === 0;
const haveRunc = spawnSync('runc', ['--version']).status === 0;
const skip = !isRoot || !haveRunc ? 'needs root and runc' : false;

let tmp = '';
let dataDir = '';
let bindDir = '';
let runtime: OciRuntime;
const made: string[] = [];

function task(id: string, spec: TaskSpec): Task {
  return Task.fromPartial({ id: `${id}${RUN}`, serviceId: 'svc', spec });
}

async function prepare(t: Task): Promise<string> {
  const id = await runtime.prepare(t, NODE_ID);
  made.push(id);
  return id;
}

async function until(what: string, cond: () => boolean | Promise<boolean>, limitMs = 30_000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function collect(iter: AsyncIterable<LogLine>): Promise<LogLine[]> {
  const lines: LogLine[] = [];
  for await (const line of iter) lines.push(line);
  return lines;
}

async function runToExit(t: Task): Promise<{ id: string; code: number; out: string[] }> {
  const id = await prepare(t);
  await runtime.start(id);
  const code = await runtime.wait(id, new AbortController().signal);
  const out = (await collect(runtime.logs?.(id, { follow: false }) ?? [])).map((l) => l.text);
  return { id, code, out };
}

function cgroupDir(controller: string, id: string): string {
  return `/sys/fs/cgroup/${controller}/cluster-oci-${id}`;
}

function runcList(): string[] {
  const r = spawnSync('runc', ['--root', path.join(dataDir, 'oci', 'runc'), 'list', '-q'], {
    encoding: 'utf8',
  });
  return r.stdout.split('\n').filter(Boolean);
}

before(async () => {
  if (skip) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'oci-test-'));
  dataDir = path.join(tmp, 'data');
  bindDir = path.join(tmp, 'bind');
  fs.mkdirSync(bindDir);
  fs.writeFileSync(path.join(bindDir, 'greeting'), 'from the host\n');
  const rootfs = path.join(tmp, 'rootfs');
  execFileSync('bash', [path.join(root, 'scripts', 'make-images.sh'), '--rootfs-only', rootfs]);
  execFileSync('tar', ['-C', rootfs, '-cf', path.join(tmp, 'image.tar'), '.']);
  runtime = new OciRuntime({ dataDir, defaultPidsLimit: 64 });
  await runtime.images.import(
    path.join(tmp, 'image.tar'),
    'local/ocitest:1',
    ['CMD ["httpd", "-f", "-p", "80", "-h", "/www"]', 'ENV FROM_IMAGE=yes'],
    (ref) => runtime.containersUsing(ref),
  );
});

after(async () => {
  if (skip) return;
  for (const id of made) await runtime.remove(id).catch(() => undefined);
  for (const id of runcList())
    spawnSync('runc', ['--root', path.join(dataDir, 'oci', 'runc'), 'delete', '--force', id]);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test(
  'a task runs its args with env, user, workdir, hostname and DNS config, and its exit code comes back',
  { skip },
  async () => {
    const t = task(
      'env',
      TaskSpec.fromPartial({
        container: {
          image: 'local/ocitest:1',
          args: [
            'sh',
            '-c',
            'echo "A=$A FROM_IMAGE=$FROM_IMAGE"; id -u; id -g; pwd; hostname; cat /etc/resolv.conf; grep -c web-1 /etc/hosts; echo oops >&2; exit 7',
          ],
          env: ['A=1'],
          user: '1234:4321',
          dir: '/tmp',
          hostname: 'web-1',
          dnsConfig: { nameservers: ['10.0.0.2'], search: ['svc.local'], options: ['ndots:1'] },
        },
      }),
    );
    const { code, out } = await runToExit(t);
    assert.equal(code, 7);
    assert.deepEqual(
      out.filter((l) => l !== 'oops'),
      [
        'A=1 FROM_IMAGE=yes',
        '1234',
        '4321',
        '/tmp',
        'web-1',
        'nameserver 10.0.0.2',
        'search svc.local',
        'options ndots:1',
        '1',
      ],
    );
    assert.ok(out.includes('oops'), 'stderr is captured too');
  },
);

test('the image CMD runs when the service gives no command; exec runs inside it', { skip }, async () => {
  const id = await prepare(task('cmd', TaskSpec.fromPartial({ container: { image: 'local/ocitest:1' } })));
  await runtime.start(id);
  const info = await runtime.inspect(id);
  assert.equal(info?.status, 'running');
  assert.ok((info?.pid ?? 0) > 0);
  // The image's httpd is pid 1 of the container's own PID namespace.
  const exec = await runtime.exec?.(
    id,
    ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "; echo; cat /www/index.html; exit 3'],
    10_000,
  );
  assert.equal(exec?.exitCode, 3);
  assert.match(exec?.output ?? '', /^httpd -f -p 80 -h \/www/);
  assert.match(exec?.output ?? '', /hello v1/);
  // Its own mount, PID, UTS and IPC namespaces, and the host's network (no overlay attachment).
  for (const ns of ['mnt', 'pid', 'uts', 'ipc']) {
    assert.notEqual(
      fs.readlinkSync(`/proc/${info?.pid}/ns/${ns}`),
      fs.readlinkSync(`/proc/self/ns/${ns}`),
      ns,
    );
  }
  assert.equal(fs.readlinkSync(`/proc/${info?.pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'));
  // No --limit-pids: the runtime's default (64 for this test's runtime).
  assert.equal(fs.readFileSync(`${cgroupDir('pids', id)}/pids.max`, 'utf8').trim(), '64');
  await assert.rejects(runtime.exec?.(id, ['sleep', '30'], 300) ?? Promise.resolve(), /timed out/);
  await runtime.stop(id, 500);
  assert.equal((await runtime.inspect(id))?.status, 'exited');
});

test('a task on an overlay network gets a new network namespace', { skip }, async () => {
  const t = task(
    'net',
    TaskSpec.fromPartial({ container: { image: 'local/ocitest:1', args: ['sleep', '60'] } }),
  );
  t.networks = [{ networkId: 'n', addresses: ['10.255.0.9/16'] } as Task['networks'][number]];
  const id = await prepare(t);
  await runtime.start(id);
  const pid = (await runtime.inspect(id))?.pid ?? 0;
  assert.ok(pid > 0);
  assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/net`), fs.readlinkSync('/proc/self/ns/net'));
  const links = execFileSync('nsenter', ['-t', String(pid), '-n', 'ip', '-o', 'link'], { encoding: 'utf8' });
  assert.match(links, /lo: <LOOPBACK,UP/);
  await runtime.remove(id);
});

test('bind, volume and tmpfs mounts, read-only where asked, and a read-only root', { skip }, async () => {
  const t = task(
    'mounts',
    TaskSpec.fromPartial({
      container: {
        image: 'local/ocitest:1',
        args: [
          'sh',
          '-c',
          [
            'cat /host/greeting',
            'echo written > /data/file && cat /data/file',
            'touch /host/x 2>/dev/null && echo bind-rw || echo bind-ro',
            'touch /scratch/x && echo tmpfs-rw',
            'grep " /scratch " /proc/mounts | cut -d" " -f3',
            'touch /root-file 2>/dev/null && echo root-rw || echo root-ro',
          ].join('; '),
        ],
        readOnly: true,
        mounts: [
          { type: Mount_Type.TYPE_BIND, source: bindDir, target: '/host', readOnly: true },
          { type: Mount_Type.TYPE_VOLUME, source: `vol${RUN}`, target: '/data' },
          { type: Mount_Type.TYPE_TMPFS, target: '/scratch', tmpfsSizeBytes: 1 << 20 },
        ],
      },
    }),
  );
  const { code, out } = await runToExit(t);
  assert.equal(code, 0, out.join('\n'));
  assert.deepEqual(out, ['from the host', 'written', 'bind-ro', 'tmpfs-rw', 'tmpfs', 'root-ro']);
  // The named volume lives under the data dir and keeps its content.
  assert.equal(
    fs.readFileSync(path.join(dataDir, 'oci', 'volumes', `vol${RUN}`, 'file'), 'utf8'),
    'written\n',
  );
  assert.equal(fs.existsSync(path.join(bindDir, 'x')), false);
});

test('memory, CPU and pids limits are in the container cgroup', { skip }, async () => {
  const t = task(
    'limits',
    TaskSpec.fromPartial({
      container: {
        image: 'local/ocitest:1',
        args: ['sh', '-c', 'cat /sys/fs/cgroup/memory/memory.limit_in_bytes; sleep 60'],
      },
      resources: { limits: { memoryBytes: 48 << 20, nanoCpus: 500_000_000, pids: 32 } },
    }),
  );
  const id = await prepare(t);
  await runtime.start(id);
  await until(
    'the limit printed',
    async () => (await collect(runtime.logs?.(id, { follow: false }) ?? [])).length > 0,
  );
  const lines = await collect(runtime.logs?.(id, { follow: false }) ?? []);
  assert.equal(lines[0]?.text, String(48 << 20), 'seen from inside');
  assert.equal(
    fs.readFileSync(`${cgroupDir('memory', id)}/memory.limit_in_bytes`, 'utf8').trim(),
    String(48 << 20),
  );
  assert.equal(fs.readFileSync(`${cgroupDir('cpu', id)}/cpu.cfs_quota_us`, 'utf8').trim(), '50000');
  assert.equal(fs.readFileSync(`${cgroupDir('pids', id)}/pids.max`, 'utf8').trim(), '32', "the spec's");
  // The pids limit holds: 100 sleepers cannot all start.
  const fork = await runtime.exec?.(
    id,
    [
      'sh',
      '-c',
      'n=0; while [ $n -lt 100 ]; do sleep 30 </dev/null >/dev/null 2>&1 & n=$((n+1)); done 2>&1; echo done',
    ],
    20_000,
  );
  assert.match(fork?.output ?? '', /can't fork|Resource temporarily unavailable|Cannot fork/i);
  await runtime.remove(id);
  for (const c of ['memory', 'cpu', 'pids'])
    assert.equal(fs.existsSync(cgroupDir(c, id)), false, `${c} cgroup removed`);
});

test('logs: follow from before the start until the exit, then tail and since', { skip }, async () => {
  const id = await prepare(
    task(
      'logs',
      TaskSpec.fromPartial({
        container: {
          image: 'local/ocitest:1',
          args: ['sh', '-c', 'for i in 1 2 3; do echo line$i; done; echo err >&2'],
        },
      }),
    ),
  );
  const followed = collect(runtime.logs?.(id, { follow: true }) ?? []);
  await runtime.start(id);
  const lines = await followed;
  assert.deepEqual(
    lines.filter((l) => l.stream === 'stdout').map((l) => l.text),
    ['line1', 'line2', 'line3'],
  );
  assert.deepEqual(
    lines.filter((l) => l.stream === 'stderr').map((l) => l.text),
    ['err'],
  );
  assert.ok(lines.every((l) => l.timeMs > 0));
  assert.equal(await runtime.wait(id, new AbortController().signal), 0);
  const all = await collect(runtime.logs?.(id, { follow: false }) ?? []);
  assert.equal(all.length, 4);
  assert.deepEqual(await collect(runtime.logs?.(id, { follow: false, tail: 1 }) ?? []), all.slice(-1));
  const latest = Math.max(...all.map((l) => l.timeMs));
  assert.deepEqual(await collect(runtime.logs?.(id, { follow: false, sinceMs: latest + 1 }) ?? []), []);
  assert.ok((await collect(runtime.logs?.(id, { follow: false, sinceMs: latest }) ?? [])).length >= 1);
  // A follow on a running container ends when the signal aborts.
  const sleeper = await prepare(
    task(
      'logsabort',
      TaskSpec.fromPartial({ container: { image: 'local/ocitest:1', args: ['sleep', '60'] } }),
    ),
  );
  await runtime.start(sleeper);
  const abort = new AbortController();
  const open = collect(runtime.logs?.(sleeper, { follow: true, signal: abort.signal }) ?? []);
  abort.abort();
  assert.deepEqual(await open, []);
  await runtime.remove(sleeper);
});

test(
  'logs rotate at the max size: a bounded set of files, tail across them, a follower that sees every line once',
  { skip },
  async () => {
    const maxSizeBytes = 64 * 1024;
    const small = new OciRuntime({ dataDir, defaultPidsLimit: 64, logLimits: { maxSizeBytes, maxFiles: 3 } });
    // The container prints numbered lines of ~115 bytes (with the stamp) in bursts of 1000, about
    // two files' worth, and waits for the test's ack of each burst: the follower is never more
    // than three rotations behind (one more would drop a file it has not opened), whatever the
    // machine's speed. 6000 lines are ~690 KiB, far past the 192 KiB kept.
    const acks = path.join(tmp, 'acks');
    fs.mkdirSync(acks);
    const bursts = 6;
    const script = [
      `pad=${'x'.repeat(90)}`,
      'i=0; c=0',
      `while [ $c -lt ${bursts} ]; do`,
      '  end=$(( (c + 1) * 1000 ))',
      '  while [ $i -lt $end ]; do i=$((i + 1)); echo "line $i $pad"; done',
      '  c=$((c + 1)); w=0',
      // The overall limit (60 s) only keeps a broken follower from hanging the test.
      '  while [ ! -e /acks/$c ] && [ $w -lt 1200 ]; do sleep 0.05; w=$((w + 1)); done',
      'done',
    ].join('\n');
    const id = await prepare(
      task(
        'logrotate',
        TaskSpec.fromPartial({
          container: {
            image: 'local/ocitest:1',
            args: ['sh', '-c', script],
            mounts: [{ type: Mount_Type.TYPE_BIND, source: acks, target: '/acks' }],
          },
        }),
      ),
    );
    const numberOf = (l: LogLine) => Number(/^line (\d+) /.exec(l.text)?.[1] ?? NaN);
    const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);
    const ack = (n: number) => fs.writeFileSync(path.join(acks, String(n / 1000)), '');
    // The agent's follower until line 3000, when the agent "restarts": its reader goes away with
    // the container paused before burst 4, and a new runtime instance (default limits, as after
    // a restart with other flags) follows from the oldest line kept to the end.
    const restartAt = 3000;
    const followed = (async () => {
      const seen: number[] = [];
      for await (const line of small.logs(id, { follow: true })) {
        const n = numberOf(line);
        seen.push(n);
        if (n === restartAt) break;
        if (n % 1000 === 0) ack(n);
      }
      return seen;
    })();
    await small.start(id);
    assert.deepEqual(await followed, range(1, restartAt), 'the follower saw every line once, in order');
    const restarted = new OciRuntime({ dataDir, defaultPidsLimit: 64 });
    const resumed: number[] = [];
    for await (const line of restarted.logs(id, { follow: true })) {
      const n = numberOf(line);
      resumed.push(n);
      if (n % 1000 === 0) ack(n);
    }
    assert.ok(
      (resumed[0] ?? Infinity) < restartAt,
      `the new follower starts at the oldest line kept (${resumed[0]})`,
    );
    assert.deepEqual(
      resumed,
      range(resumed[0] ?? 0, bursts * 1000),
      'and sees every line from there once, in order',
    );
    assert.equal(await small.wait(id, new AbortController().signal), 0);

    const dir = path.join(dataDir, 'oci', 'containers', id);
    const files = fs.readdirSync(dir).filter((n) => n.startsWith('container.log'));
    assert.deepEqual(files.sort(), ['container.log', 'container.log.1', 'container.log.2']);
    for (const name of files)
      assert.ok(fs.statSync(path.join(dir, name)).size <= maxSizeBytes, `${name} is within the max size`);

    const tail = (n: number) => collect(small.logs(id, { follow: false, tail: n }));
    assert.deepEqual((await tail(50)).map(numberOf), range(bursts * 1000 - 49, bursts * 1000));
    // 1000 lines are more than one file: the tail starts in an older one.
    const last1000 = await tail(1000);
    assert.deepEqual(last1000.map(numberOf), range(bursts * 1000 - 999, bursts * 1000));
    const kept = (await collect(small.logs(id, { follow: false }))).map(numberOf);
    assert.ok(kept.length > 1000 && kept.length < bursts * 1000, `${kept.length} lines kept`);
    assert.deepEqual(kept, range(bursts * 1000 - kept.length + 1, bursts * 1000));
    const sinceMs = last1000[0]?.timeMs ?? 0;
    const since = await collect(small.logs(id, { follow: false, sinceMs }));
    assert.ok(since.every((l) => l.timeMs >= sinceMs));
    assert.ok(since.length >= 1000 && since.length <= kept.length);
    assert.deepEqual(since.map(numberOf), range(bursts * 1000 - since.length + 1, bursts * 1000));
    await small.remove(id);
  },
);

test('stop sends the stop signal, then kills after the grace period', { skip }, async () => {
  const graceful = await prepare(
    task(
      'stopsig',
      TaskSpec.fromPartial({
        container: {
          image: 'local/ocitest:1',
          args: [
            'sh',
            '-c',
            'trap "echo got-usr1; exit 42" USR1; echo ready; while true; do sleep 0.1; done',
          ],
          stopSignal: 'SIGUSR1',
        },
      }),
    ),
  );
  await runtime.start(graceful);
  await until(
    'ready',
    async () => (await collect(runtime.logs?.(graceful, { follow: false }) ?? [])).length > 0,
  );
  await runtime.stop(graceful, 10_000);
  const info = await runtime.inspect(graceful);
  assert.equal(info?.status, 'exited');
  assert.equal(info?.exitCode, 42);
  const stubborn = await prepare(
    task(
      'stopkill',
      TaskSpec.fromPartial({
        container: {
          image: 'local/ocitest:1',
          args: ['sh', '-c', 'trap "" TERM; echo ready; while true; do sleep 0.1; done'],
        },
      }),
    ),
  );
  await runtime.start(stubborn);
  await until(
    'ready',
    async () => (await collect(runtime.logs?.(stubborn, { follow: false }) ?? [])).length > 0,
  );
  const started = Date.now();
  await runtime.stop(stubborn, 300);
  assert.ok(Date.now() - started >= 300, 'the grace period is waited');
  const killed = await runtime.inspect(stubborn);
  assert.equal(killed?.status, 'exited');
  assert.equal(killed?.exitCode, 137);
});

test('init: tini is PID 1, runs the command, and forwards the stop signal to it', { skip }, async () => {
  const id = await prepare(
    task(
      'init',
      TaskSpec.fromPartial({
        container: {
          image: 'local/ocitest:1',
          init: true,
          readOnly: true,
          args: ['sh', '-c', 'echo "sh is pid $$"; exec sleep 600'],
        },
      }),
    ),
  );
  await runtime.start(id);
  await until(
    'the command logged',
    async () => (await collect(runtime.logs?.(id, { follow: false }) ?? [])).length > 0,
  );
  const lines = await collect(runtime.logs?.(id, { follow: false }) ?? []);
  assert.match(lines[0]?.text ?? '', /^sh is pid ([2-9]|\d\d+)$/, 'the command is not PID 1');
  const exec = await runtime.exec?.(id, ['sh', '-c', 'cat /proc/1/cmdline | tr "\\0" " "'], 10_000);
  assert.equal(exec?.exitCode, 0);
  assert.equal(exec?.output.trim(), '/sbin/docker-init -- sh -c echo "sh is pid $$"; exec sleep 600');
  // Seen from the host: the container's init process runs the host's static tini.
  const pid = (await runtime.inspect(id))?.pid ?? 0;
  assert.ok(pid > 0);
  assert.equal(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0], '/sbin/docker-init');
  const tini = fs.statSync(fs.realpathSync('/usr/bin/tini-static'));
  const exe = fs.statSync(`/proc/${pid}/exe`);
  assert.deepEqual([exe.dev, exe.ino], [tini.dev, tini.ino]);
  // sleep as PID 1 would ignore SIGTERM and be killed after the grace period (137); under tini it
  // gets the forwarded SIGTERM and dies of it: 128 + 15.
  await runtime.stop(id, 30_000);
  const info = await runtime.inspect(id);
  assert.equal(info?.status, 'exited');
  assert.equal(info?.exitCode, 143);
  await runtime.remove(id);
});

test('init on a node without tini fails the task naming the package', { skip }, async () => {
  const bare = new OciRuntime({ dataDir, defaultPidsLimit: 64, initCandidates: [path.join(tmp, 'no-tini')] });
  await assert.rejects(
    bare.prepare(
      task('noinit', TaskSpec.fromPartial({ container: { image: 'local/ocitest:1', init: true } })),
      NODE_ID,
    ),
    (err: Error) => err instanceof TaskRuntimeError && /package 'tini'/.test(err.message),
  );
  assert.equal(
    fs.existsSync(path.join(dataDir, 'oci', 'containers', `t-noinit${RUN}`)),
    false,
    'nothing left',
  );
});

test('a missing image and a missing command fail the task with a clear message', { skip }, async () => {
  await assert.rejects(
    runtime.prepare(
      task('noimg', TaskSpec.fromPartial({ container: { image: 'local/nothere:9' } })),
      NODE_ID,
    ),
    (err: Error) =>
      err instanceof TaskRuntimeError &&
      /local\/nothere:9/.test(err.message) &&
      /cluster image import/.test(err.message),
  );
  const id = await prepare(
    task(
      'nocmd',
      TaskSpec.fromPartial({ container: { image: 'local/ocitest:1', args: ['/no/such/binary'] } }),
    ),
  );
  await assert.rejects(
    runtime.start(id),
    (err: Error) => err instanceof TaskRuntimeError && /no\/such\/binary/.test(err.message),
  );
  await runtime.remove(id);
  assert.equal(await runtime.inspect(id), undefined);
});

test(
  'a new runtime instance adopts running containers, once each; remove cleans everything',
  { skip },
  async () => {
    const ids: string[] = [];
    for (const n of [1, 2]) {
      const id = await prepare(
        task(
          `adopt${n}`,
          TaskSpec.fromPartial({ container: { image: 'local/ocitest:1', args: ['sleep', '120'] } }),
        ),
      );
      await runtime.start(id);
      ids.push(id);
    }
    const shimPids = ids.map(
      (id) => (runtime as unknown as { state(id: string): { shimPid: number } }).state(id).shimPid,
    );
    const again = new OciRuntime({ dataDir, defaultPidsLimit: 64 });
    const adopted = (await again.adopt(NODE_ID)).filter((c) => ids.includes(c.id));
    assert.deepEqual(adopted.map((c) => c.id).sort(), [...ids].sort());
    assert.ok(adopted.every((c) => c.status === 'running' && c.pid > 0));
    assert.deepEqual(await again.adopt('some-other-node'), []);
    // The image is in use: it cannot be removed or replaced.
    assert.throws(() => again.images.remove('local/ocitest:1', (r) => again.containersUsing(r)), /in use/);
    for (const id of ids) await again.remove(id);
    for (const id of ids) {
      assert.equal(await again.inspect(id), undefined);
      assert.equal(fs.existsSync(path.join(dataDir, 'oci', 'containers', id)), false);
      assert.equal(fs.existsSync(cgroupDir('memory', id)), false);
      assert.ok(!runcList().includes(id));
      assert.ok(!fs.readFileSync('/proc/self/mountinfo', 'utf8').includes(`/containers/${id}/`));
    }
    await until('the shims exit', () => shimPids.every((pid) => !fs.existsSync(`/proc/${pid}`)));
  },
);

test(
  'cluster image import, ls and rm on the data dir; rm refused while a task uses the image',
  { skip },
  async () => {
    const out: string[] = [];
    const err: string[] = [];
    const io = { stdout: (t: string) => out.push(t), stderr: (t: string) => err.push(t), isTTY: false };
    const cli = (...args: string[]) => main(['node', 'cluster', ...args], io);
    const tar = path.join(tmp, 'image.tar');
    assert.equal(
      await cli('image', 'import', '--data-dir', dataDir, '-c', 'CMD ["true"]', tar, 'local/cli'),
      0,
      err.join(''),
    );
    assert.match(out.join(''), /^local\/cli:latest [0-9a-f]{32}$/m);
    out.length = 0;
    assert.equal(await cli('--format', 'json', 'image', 'ls', '--data-dir', dataDir), 0);
    const rows = out
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { Repository: string; Tag: string });
    assert.ok(rows.some((r) => r.Repository === 'local/cli' && r.Tag === 'latest'));
    const id = await prepare(task('cliimg', TaskSpec.fromPartial({ container: { image: 'local/cli' } })));
    err.length = 0;
    assert.equal(await cli('image', 'rm', '--data-dir', dataDir, 'local/cli'), 1);
    assert.match(err.join(''), /in use by task container\(s\) t-cliimg/);
    assert.notEqual(runtime.images.get('local/cli'), undefined, 'a refused rm changes nothing');
    err.length = 0;
    assert.equal(await cli('image', 'import', '--data-dir', dataDir, tar, 'local/cli'), 1);
    assert.match(err.join(''), /used by task/);
    await runtime.remove(id);
    assert.equal(await cli('image', 'rm', '--data-dir', dataDir, 'local/cli'), 0);
    assert.equal(runtime.images.get('local/cli'), undefined);
    err.length = 0;
    assert.equal(await cli('image', 'rm', '--data-dir', dataDir, 'local/cli'), 1);
    assert.match(err.join(''), /not found/);
    assert.equal(await cli('image', 'import', '--data-dir', dataDir, '-c', 'RUN make', tar, 'local/bad'), 1);
    assert.equal(
      await cli('image', 'import', '--data-dir', dataDir, path.join(tmp, 'missing.tar'), 'local/bad'),
      1,
    );
    assert.equal(runtime.images.get('local/bad'), undefined);
    assert.deepEqual(
      fs.readdirSync(path.join(dataDir, 'oci', 'images')).filter((n) => n.startsWith('.')),
      [],
      'no staging folders left',
    );
  },
);
