// The zero-drop rolling update of lab-update.test.ts on the oci runtime (runc, `scripts/lab up
// --runtime oci`): 6 replicas behind a published port, updated stop-first with parallelism 2
// while a client sends requests without pause to every host's published port; every request
// answers, v1 then v2. The oci runtime ignores --init, so httpd (PID 1) ignores SIGTERM and is
// killed after --stop-grace-period: a short one keeps the run short (the drain comes before).
import { describe, test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { capabilities, useLab } from './lib/lab';
import { updateHelpers } from './lab-update-helpers';

const caps = capabilities();
const haveRunc = spawnSync('runc', ['--version']).status === 0;
function missing(): string | false {
  if (caps.labUnavailable) return caps.labUnavailable;
  // Docker itself is not needed here: only the agent's wiring.
  if (!caps.agent && !/docker is not installed/.test(caps.agentMissing ?? ''))
    return `needs agents that run tasks: ${caps.agentMissing ?? ''}`;
  return haveRunc ? false : 'needs runc (scripts/setup.sh)';
}
const needs = missing();
const { lab } = needs ? { lab: undefined } : useLab({ managers: 1, workers: 2, runtime: 'oci' });

function theLab() {
  if (!lab) throw new Error('no lab');
  return lab;
}

const { sixReplicasStopFirst } = updateHelpers(theLab);

describe('lab rolling update on the oci runtime: no request dropped', { skip: needs }, () => {
  test('6 replicas, parallelism 2, stop-first: every request answers, v1 then v2', async (t) => {
    const requests = await sixReplicasStopFirst(8080, ['--stop-grace-period', '1s']);
    t.diagnostic(`oci update: ${requests} requests, none failed`);
    await theLab().ok('manager1', 'service', 'rm', 'web');
  });
});
