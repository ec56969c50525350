// What the health suites on both runtimes (lab-logs-health: docker, lab-oci-health: oci) check
// alike: a service's tasks as `service ps` shows them, every replica healthy, a task FAILED as
// unhealthy and replaced, and the HTTP/TCP probe scenario.
import assert from 'node:assert/strict';
import { eventually, jsonLines, type Lab } from './lab';

export interface TaskRow {
  ID: string;
  Name: string;
  Node: string;
  DesiredState: string;
  CurrentState: string;
  Error: string;
}

export async function tasksOf(lab: Lab, service: string): Promise<TaskRow[]> {
  return jsonLines<TaskRow>(
    await lab.ok('manager1', '--format', 'json', 'service', 'ps', '--no-trunc', service),
  );
}

/** Waits until `replicas` tasks of `service` are meant to run and all are "Running … (healthy)". */
export function allHealthy(
  lab: Lab,
  service: string,
  replicas: number,
  timeoutMs: number,
): Promise<TaskRow[]> {
  return eventually(
    `${replicas} ${service} replica(s) healthy in service ps`,
    timeoutMs,
    async () => {
      const rows = (await tasksOf(lab, service)).filter((r) => r.DesiredState === 'Running');
      return rows.length === replicas && rows.every((r) => /^Running .* \(healthy\)$/.test(r.CurrentState))
        ? rows
        : undefined;
    },
    500,
  );
}

/** Waits until a task of `service` FAILED as unhealthy and a replacement is meant to run; the failed one. */
export async function failedUnhealthyAndReplaced(
  lab: Lab,
  service: string,
  timeoutMs: number,
): Promise<TaskRow> {
  const failed = await eventually(
    `a ${service} task FAILED as unhealthy and a replacement meant to run`,
    timeoutMs,
    async () => {
      const rows = await tasksOf(lab, service);
      const old = rows.find((r) => /^Failed/.test(r.CurrentState));
      const replacement = rows.find((r) => r.DesiredState === 'Running' && r.ID !== old?.ID);
      return old && replacement ? old : undefined;
    },
    1000,
  );
  assert.match(failed.Error, /unhealthy container/);
  assert.match(failed.CurrentState, /\(unhealthy\)$/);
  return failed;
}

/**
 * The probe scenario: `web` (busybox httpd, `replicas` of them) with `--health-http 80/` turns
 * healthy; `closed` with `--health-tcp 81` (nothing listens there) is FAILED as unhealthy and
 * replaced. Returns web's healthy tasks; the caller removes both services.
 */
export async function probeScenario(lab: Lab, replicas: number, timeoutMs: number): Promise<TaskRow[]> {
  // The probes are a node process each: a timeout that a loaded machine cannot miss.
  const rules = ['--health-interval', '1s', '--health-timeout', '10s', '--health-retries', '2'];
  await lab.ok(
    'manager1',
    'service',
    'create',
    '-d',
    '--name',
    'web',
    '--replicas',
    String(replicas),
    '--health-http',
    '80/',
    ...rules,
    'local/busybox:1',
    'httpd',
    '-f',
    '-p',
    '80',
    '-h',
    '/www',
  );
  await lab.ok(
    'manager1',
    'service',
    'create',
    '-d',
    '--name',
    'closed',
    '--health-tcp',
    '81',
    ...rules,
    '--restart-delay',
    '1s',
    'local/busybox:1',
    'sleep',
    '600',
  );
  const healthy = await allHealthy(lab, 'web', replicas, timeoutMs);
  await failedUnhealthyAndReplaced(lab, 'closed', timeoutMs);
  return healthy;
}
