// The agent with the Docker runtime on the real engine, behind a real dispatcher (insecure gRPC
// on 127.0.0.1): a task's env, bind mount, memory/CPU/pids limits and host port are really applied;
// exit codes and missing images are reported; stop honours the grace period; a restarted agent
// adopts its containers. Every container carries this run's node id and is removed at the end.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { Mount_Type, PortConfig_PublishMode, Task, TaskState } from '../src/gen/cluster/v1/objects';
import { componentLogger } from '../src/common/logger';
import { localStores, makeNode } from '../src/store/testing';
import { Agent } from '../src/agent';
import { DockerRuntime } from '../src/agent/runtime/docker';
import { startTestDispatcher } from '../src/agent/testing';
import { NODE_ID_LABEL, TASK_ID_LABEL } from '../src/agent/runtime';

const logger = componentLogger('agent-docker-test');
logger.level = 'silent';
const NODE_ID = `dtest${process.pid}${Math.floor(Math.random() * 1e6)}`;

function docker(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('docker', args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ourContainers(extraFilter?: string): string[] {
  const args = ['ps', '-aq', '--filter', `label=${NODE_ID_LABEL}=${NODE_ID}`];
  if (extraFilter) args.push('--filter', extraFilter);
  return docker(...args)
    .stdout.split('\n')
    .filter((l) => l.trim());
}

function inspect(containerId: string): {
  Config: { Env: string[]; Labels: Record<string, string> };
  HostConfig: {
    Memory: number;
    NanoCpus: number;
    PidsLimit: number | null;
    RestartPolicy: { Name: string };
    PortBindings: Record<string, { HostPort: string }[]>;
  };
  Mounts: { Type: string; Source: string; Destination: string; RW: boolean }[];
} {
  const r = docker('inspect', containerId);
  assert.equal(r.code, 0, r.stderr);
  const parsed = JSON.parse(r.stdout) as ReturnType<typeof inspect>[];
  const first = parsed[0];
  if (!first) throw new Error(`no inspect output for ${containerId}`);
  return first;
}

function httpGet(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const engineUp = docker('version', '--format', '{{.Server.Version}}').code === 0;
const imageThere = engineUp && docker('image', 'inspect', 'local/busybox:1').code === 0;

test(
  'agent + Docker runtime on the real engine',
  { skip: !imageThere && 'no Docker engine or local/busybox:1 (scripts/make-images.sh)' },
  async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-docker-'));
    const bindDir = path.join(tmp, 'bind');
    fs.mkdirSync(bindDir);
    const { stores } = localStores(1);
    const store = stores[0];
    if (!store) throw new Error('no store');
    await store.update((tx) => tx.nodes.create(makeNode('h', { id: NODE_ID })));
    const served = await startTestDispatcher({ store, nodeId: NODE_ID, logger, heartbeatPeriodMs: 500 });
    const runtime = new DockerRuntime({ pullTimeoutMs: 10_000 });
    const agentOptions = {
      dataDir: path.join(tmp, 'agent'),
      credentials: credentials.createInsecure(),
      managers: [served.addr],
      nodeId: NODE_ID,
      runtime,
      logger,
    };
    let agent: Agent | undefined;
    t.after(async () => {
      await agent?.stop();
      await served.stop();
      const left = ourContainers();
      if (left.length) docker('rm', '-f', '-v', ...left);
      fs.rmSync(tmp, { recursive: true, force: true });
    });
    agent = await Agent.start(agentOptions);
    await agent.connected();
    const node = store.view((tx) => tx.nodes.get(NODE_ID));
    assert.equal(node?.description?.runtimeName, 'docker');
    assert.ok((node?.description?.resources?.memoryBytes ?? 0) > 0);

    const stateOf = (id: string) => store.view((tx) => tx.tasks.get(id)?.status);
    const addTask = (task: Task) =>
      store.update((tx) =>
        tx.tasks.create({
          ...task,
          serviceId: 'svc',
          nodeId: NODE_ID,
          desiredState: TaskState.TASK_STATE_RUNNING,
          slot: 1,
        }),
      );
    const setDesired = (id: string, desired: TaskState) =>
      store.update((tx) => {
        const task = tx.tasks.get(id);
        if (!task) throw new Error(`${id} missing`);
        task.desiredState = desired;
        tx.tasks.update(task);
      });
    const containerOf = (taskId: string) => ourContainers(`label=${TASK_ID_LABEL}=${taskId}`);

    // A free port for the host-mode publication.
    const hostPort = await new Promise<number>((resolve) => {
      const s = http.createServer();
      s.listen(0, '0.0.0.0', () => {
        const a = s.address();
        s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
      });
    });

    await t.test('env, bind mount, memory, CPU and pids limits, host port are applied', async () => {
      await addTask(
        Task.fromPartial({
          id: 'web',
          spec: {
            container: {
              image: 'local/busybox:1',
              command: ['sh', '-c', 'echo "$GREETING" > /data/out.txt; exec httpd -f -p 80 -h /www'],
              env: ['GREETING=hello-from-env'],
              mounts: [{ type: Mount_Type.TYPE_BIND, source: bindDir, target: '/data', readOnly: false }],
              labels: { purpose: 'agent-docker-test' },
            },
            resources: { limits: { memoryBytes: 64 * 1024 * 1024, nanoCpus: 500_000_000, pids: 80 } },
          },
          endpoint: {
            ports: [
              {
                targetPort: 80,
                publishedPort: hostPort,
                publishMode: PortConfig_PublishMode.PUBLISH_MODE_HOST,
              },
            ],
          },
        }),
      );
      await until('web running', () => stateOf('web')?.state === TaskState.TASK_STATE_RUNNING);
      const [id] = containerOf('web');
      assert.ok(id, 'a container with the task label');
      const info = inspect(id);
      assert.ok(info.Config.Env.includes('GREETING=hello-from-env'));
      assert.equal(info.Config.Labels.purpose, 'agent-docker-test');
      assert.equal(info.Config.Labels['cluster.service.id'], 'svc');
      assert.equal(info.HostConfig.Memory, 64 * 1024 * 1024);
      assert.equal(info.HostConfig.NanoCpus, 500_000_000);
      assert.equal(info.HostConfig.PidsLimit, 80);
      // The engine put it in the container's pids cgroup (cgroup v1 here, v2 elsewhere).
      const pidsMax = docker(
        'exec',
        id,
        'sh',
        '-c',
        'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max',
      );
      assert.equal(pidsMax.stdout.trim(), '80', pidsMax.stderr);
      assert.equal(info.HostConfig.RestartPolicy.Name, 'no');
      assert.equal(info.HostConfig.PortBindings['80/tcp']?.[0]?.HostPort, String(hostPort));
      assert.ok(
        info.Mounts.some(
          (m) => m.Type === 'bind' && m.Source === bindDir && m.Destination === '/data' && m.RW,
        ),
      );
      await until('the container wrote into the bind mount', () =>
        fs.existsSync(path.join(bindDir, 'out.txt')),
      );
      await until(
        'out.txt written',
        () => fs.readFileSync(path.join(bindDir, 'out.txt'), 'utf8').trim() !== '',
      );
      assert.equal(fs.readFileSync(path.join(bindDir, 'out.txt'), 'utf8').trim(), 'hello-from-env');
      let body = '';
      await until('the host port answers', async () => {
        body = await httpGet(hostPort).catch(() => '');
        return body !== '';
      });
      assert.match(body, /hello v1/);
    });

    await t.test('exit code and a missing image are reported as FAILED', async () => {
      await addTask(
        Task.fromPartial({
          id: 'exit7',
          spec: { container: { image: 'local/busybox:1', command: ['sh', '-c', 'exit 7'] } },
        }),
      );
      // A registry on a closed loopback port: the one pull attempt fails at once, no traffic leaves.
      await addTask(
        Task.fromPartial({ id: 'noimage', spec: { container: { image: '127.0.0.1:1/nosuch:9' } } }),
      );
      await until('exit7 failed', () => stateOf('exit7')?.state === TaskState.TASK_STATE_FAILED);
      assert.equal(stateOf('exit7')?.container?.exitCode, 7);
      assert.match(stateOf('exit7')?.err ?? '', /non-zero exit \(7\)/);
      await until('noimage failed', () => stateOf('noimage')?.state === TaskState.TASK_STATE_FAILED);
      assert.match(
        stateOf('noimage')?.err ?? '',
        /image 127\.0\.0\.1:1\/nosuch:9 not found locally and no registry is reachable/,
      );
    });

    await t.test(
      'shutdown waits the grace period for a container that ignores SIGTERM, then removes it',
      async () => {
        await addTask(
          Task.fromPartial({
            id: 'stubborn',
            spec: {
              container: {
                image: 'local/busybox:1',
                command: ['sh', '-c', 'trap "" TERM; while true; do sleep 0.1; done'],
                stopGracePeriod: { seconds: 1, nanos: 0 },
              },
            },
          }),
        );
        await until('stubborn running', () => stateOf('stubborn')?.state === TaskState.TASK_STATE_RUNNING);
        const started = Date.now();
        await setDesired('stubborn', TaskState.TASK_STATE_SHUTDOWN);
        await until('stubborn shut down', () => stateOf('stubborn')?.state === TaskState.TASK_STATE_SHUTDOWN);
        const tookMs = Date.now() - started;
        assert.ok(tookMs >= 900, `stopped after ${tookMs} ms: the grace period was not honoured`);
        await until('stubborn removed', () => containerOf('stubborn').length === 0);
      },
    );

    await t.test('a restarted agent adopts its running container instead of starting another', async () => {
      const [before] = containerOf('web');
      assert.ok(before);
      // As after kill -9: the agent goes away, its containers stay.
      await agent?.stop();
      agent = undefined;
      assert.equal(inspect(before).HostConfig.Memory, 64 * 1024 * 1024, 'still there');
      agent = await Agent.start(agentOptions);
      await agent.connected();
      await until('the web controller is back', () => agent?.controller('web') !== undefined);
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(containerOf('web'), [before], 'the same container, no duplicate');
      assert.equal(stateOf('web')?.state, TaskState.TASK_STATE_RUNNING);
      // The adopted container is really watched: stopping it is reported.
      docker('kill', before);
      await until(
        'web reported failed after the kill',
        () => stateOf('web')?.state === TaskState.TASK_STATE_FAILED,
      );
    });
  },
);
