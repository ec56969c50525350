// kill -9 of a real agent process: its container keeps running, and the restarted agent adopts
// it (no duplicate), keeps reporting it RUNNING, and can still shut it down.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Task, TaskState } from '../src/gen/cluster/v1/objects';
import { componentLogger } from '../src/common/logger';
import { localStores, makeNode } from '../src/store/testing';
import { NODE_ID_LABEL, TASK_ID_LABEL } from '../src/agent/runtime';
import { startTestDispatcher } from '../src/agent/testing';

const logger = componentLogger('agent-kill-test');
logger.level = 'silent';
const NODE_ID = `ktest${process.pid}${Math.floor(Math.random() * 1e6)}`;

function docker(...args: string[]): { code: number | null; stdout: string } {
  const r = spawnSync('docker', args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout };
}

function containers(filter: string): string[] {
  return docker(
    'ps',
    '-aq',
    '--no-trunc',
    '--filter',
    `label=${NODE_ID_LABEL}=${NODE_ID}`,
    '--filter',
    filter,
  )
    .stdout.split('\n')
    .filter((l) => l.trim());
}

async function until(what: string, cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function startChild(config: object): Promise<ChildProcess> {
  const child = spawn(process.execPath, [path.join(__dirname, 'agent_child.js'), JSON.stringify(config)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('agent child did not connect within 20 s')), 20_000);
    child.stdout?.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('connected')) {
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent child exited with ${code}`));
    });
  });
}

function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

const ready =
  docker('version', '--format', '{{.Server.Version}}').code === 0 &&
  docker('image', 'inspect', 'local/busybox:1').code === 0;

test(
  'kill -9 of the agent process: the restarted agent adopts, no duplicate',
  { skip: !ready && 'no Docker engine or local/busybox:1' },
  async (t) => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-kill-'));
    const { stores } = localStores(1);
    const store = stores[0];
    if (!store) throw new Error('no store');
    await store.update((tx) => tx.nodes.create(makeNode('h', { id: NODE_ID })));
    const served = await startTestDispatcher({ store, nodeId: NODE_ID, logger, heartbeatPeriodMs: 500 });
    const children: ChildProcess[] = [];
    t.after(async () => {
      for (const c of children) await killHard(c);
      await served.stop();
      const left = containers(`label=${TASK_ID_LABEL}`);
      if (left.length) docker('rm', '-f', '-v', ...left);
      fs.rmSync(tmp, { recursive: true, force: true });
    });
    const config = { dataDir: path.join(tmp, 'agent'), manager: served.addr, nodeId: NODE_ID };
    children.push(await startChild(config));
    await store.update((tx) =>
      tx.tasks.create(
        Task.fromPartial({
          id: 'long',
          serviceId: 'svc',
          nodeId: NODE_ID,
          slot: 1,
          desiredState: TaskState.TASK_STATE_RUNNING,
          spec: { container: { image: 'local/busybox:1', stopGracePeriod: { seconds: 1, nanos: 0 } } },
        }),
      ),
    );
    const state = () => store.view((tx) => tx.tasks.get('long')?.status?.state);
    await until('long running', () => state() === TaskState.TASK_STATE_RUNNING);
    const [original] = containers(`label=${TASK_ID_LABEL}=long`);
    assert.ok(original);

    const first = children[0];
    if (first) await killHard(first);
    assert.deepEqual(containers('status=running'), [original], 'the container outlived the agent');

    children.push(await startChild(config));
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(containers(`label=${TASK_ID_LABEL}=long`), [original], 'adopted, not duplicated');
    assert.equal(state(), TaskState.TASK_STATE_RUNNING);

    // The adopted container is under control: a shutdown stops and removes it.
    await store.update((tx) => {
      const task = tx.tasks.get('long');
      if (!task) throw new Error('long missing');
      task.desiredState = TaskState.TASK_STATE_SHUTDOWN;
      tx.tasks.update(task);
    });
    await until('long shut down', () => state() === TaskState.TASK_STATE_SHUTDOWN);
    await until('container removed', () => containers(`label=${TASK_ID_LABEL}=long`).length === 0);
  },
);
