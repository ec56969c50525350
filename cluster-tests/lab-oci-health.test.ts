// Healthchecks the agent runs itself, on the oci runtime (runc has no healthchecks of its own):
// the probes go through `runc exec` in the task's container. A passing check shows "healthy" in
// service ps; a failing one turns the task unhealthy, FAILED ("unhealthy container") and replaced.
// And `service logs` reads the oci runtime's captured output. HTTP and TCP probes: the agent runs
// them from inside the task's network namespace (nsenter), healthy on an answer, else replaced.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { allHealthy, failedUnhealthyAndReplaced, probeScenario } from './lib/health';
import { capabilities, eventually, useLab } from './lib/lab';

const caps = capabilities();
const haveRunc = spawnSync('runc', ['--version']).status === 0;
function missing(): string | false {
  if (caps.labUnavailable) return caps.labUnavailable;
  if (!caps.agent) return `needs agents that run tasks: ${caps.agentMissing ?? ''}`;
  return haveRunc ? false : 'needs runc (scripts/setup.sh)';
}
const needs = missing();
const { lab } = needs ? { lab: undefined } : useLab({ managers: 1, workers: 1, runtime: 'oci' });

const TIMEOUT_MS = 90_000;

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

const CHECK = ['--health-interval', '1s', '--health-timeout', '2s', '--health-retries', '2'];

describe('lab oci healthchecks', { skip: needs }, () => {
  test('a passing check is healthy; a failing one is FAILED as unhealthy and replaced', async () => {
    const script = 'echo "hello from $(hostname)"; exec sleep 600';
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'ok',
      '--replicas',
      '2',
      '--health-cmd',
      'test -d /proc/1',
      ...CHECK,
      'local/busybox:1',
      'sh',
      '-c',
      script,
    );
    await theLab().ok(
      'manager1',
      'service',
      'create',
      '-d',
      '--name',
      'bad',
      '--replicas',
      '1',
      '--health-cmd',
      'exit 3',
      ...CHECK,
      '--restart-delay',
      '1s',
      'local/busybox:1',
      'sh',
      '-c',
      script,
    );

    await allHealthy(theLab(), 'ok', 2, TIMEOUT_MS);
    await failedUnhealthyAndReplaced(theLab(), 'bad', TIMEOUT_MS);

    // The oci runtime's captured output through the log broker.
    const out = await eventually(
      'the lines of both ok replicas',
      30_000,
      async () => {
        const text = await theLab().ok('manager1', 'service', 'logs', 'ok');
        const lines = text.split('\n').filter((l) => /^ok\.\d\.[0-9a-z]{12}@\S+\s+\| hello from /.test(l));
        return lines.length === 2 ? lines : undefined;
      },
      1000,
    );
    assert.equal(out.length, 2);
    await theLab().ok('manager1', 'service', 'rm', 'ok', 'bad');
  });

  test("HTTP and TCP probes run in the task's network namespace: an answer is healthy, none is replaced", async () => {
    await probeScenario(theLab(), 1, TIMEOUT_MS);
    const [inspected] = JSON.parse(await theLab().ok('manager1', 'service', 'inspect', 'web')) as {
      spec?: { task?: { container?: { healthcheck?: { test?: string[] } } } };
    }[];
    assert.deepEqual(inspected?.spec?.task?.container?.healthcheck?.test, ['HTTP', '80', '/']);
    await theLab().ok('manager1', 'service', 'rm', 'web', 'closed');
  });
});
