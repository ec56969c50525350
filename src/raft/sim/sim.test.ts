// The CI run of the simulator: 500 seeds of faults (crashes losing nothing synced, partitions,
// drops, duplicates, slow messages, membership changes, leadership transfers) with every
// invariant checked after every step, and the guarantee that a seed replays exactly.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runSeed } from './cluster';

const CI_SEEDS = 500;

test(`${CI_SEEDS} simulated seeds end with no violation`, () => {
  const started = process.hrtime.bigint();
  const failures: string[] = [];
  const totals = {
    steps: 0,
    crashes: 0,
    partitions: 0,
    confChangesApplied: 0,
    transfers: 0,
    leaders: 0,
    snapshotsDelivered: 0,
    writesAcked: 0,
    readsAcked: 0,
  };
  let fiveNodeRuns = 0;
  for (let seed = 1; seed <= CI_SEEDS; seed++) {
    const result = runSeed({ seed });
    if (result.nodes === 5) fiveNodeRuns++;
    for (const k of Object.keys(totals) as (keyof typeof totals)[]) totals[k] += result.stats[k];
    const v = result.violation;
    if (v !== undefined) {
      failures.push(
        `${v.message}\n  replay: npm run sim -- --seeds 1 --from ${seed} --trace\n  ${v.trace.slice(-15).join('\n  ')}`,
      );
    }
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  process.stdout.write(`# ${CI_SEEDS} seeds in ${seconds.toFixed(1)} s: ${JSON.stringify(totals)}\n`);
  assert.deepEqual(failures, []);
  // The runs must actually exercise what they claim to.
  assert.ok(fiveNodeRuns > 100 && fiveNodeRuns < CI_SEEDS - 100, `5-node runs: ${fiveNodeRuns}`);
  for (const k of ['crashes', 'partitions', 'transfers', 'writesAcked', 'readsAcked'] as const) {
    assert.ok(totals[k] > CI_SEEDS, `${k}: ${totals[k]}`);
  }
  assert.ok(
    totals.confChangesApplied > CI_SEEDS / 2,
    `membership changes applied: ${totals.confChangesApplied}`,
  );
  assert.ok(totals.snapshotsDelivered > CI_SEEDS / 5, `snapshots delivered: ${totals.snapshotsDelivered}`);
  assert.ok(totals.leaders > 2 * CI_SEEDS, `leaders elected: ${totals.leaders}`);
});

test('the same seed replays the same run; another seed does not', () => {
  const a = runSeed({ seed: 4242 });
  const b = runSeed({ seed: 4242 });
  const c = runSeed({ seed: 4243 });
  assert.equal(a.traceHash, b.traceHash);
  assert.deepEqual(a.stats, b.stats);
  assert.notEqual(a.traceHash, c.traceHash);
});

test('a failing seed replays to the same violation at the same step', () => {
  // A mutant gives a failing run to replay (see mutants.test.ts).
  const options = { seed: 1, mutation: 'forge-vote' as const };
  const first = runSeed(options);
  const again = runSeed(options);
  assert.ok(first.violation, 'the mutant run should fail');
  assert.equal(again.violation?.message, first.violation.message);
  assert.equal(again.violation?.step, first.violation.step);
  assert.deepEqual(again.violation?.trace, first.violation.trace);
  assert.equal(again.traceHash, first.traceHash);
});

test('the sim command reports seeds and violations and exits non-zero on one', () => {
  const cli = path.join(__dirname, 'cli.js');
  const ok = spawnSync(process.execPath, [cli, '--seeds', '3', '--from', '10'], { encoding: 'utf8' });
  assert.equal(ok.status, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /seeds run: 3 \(10\.\.12\), steps: \d+, violations: 0/);

  const bad = spawnSync(process.execPath, [cli, '--seeds', '1', '--from', '1', '--mutation', 'forge-vote'], {
    encoding: 'utf8',
  });
  assert.equal(bad.status, 1, bad.stdout + bad.stderr);
  assert.match(bad.stdout, /VIOLATION seed 1 step \d+/);
  assert.match(bad.stdout, /replay: npm run sim -- --seeds 1 --from 1 --mutation forge-vote --trace/);

  const usage = spawnSync(process.execPath, [cli, '--seeds', 'many'], { encoding: 'utf8' });
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /--seeds must be a whole number/);
});
