#!/usr/bin/env node
// Runs the compiled tests with node's test runner: `unit` (dist/src) or `cluster`
// (dist/cluster-tests). Build first (npm run build). Extra arguments go to node --test.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const suites = { unit: 'dist/src', cluster: 'dist/cluster-tests' };
const suite = process.argv[2];
if (!(suite in suites)) {
  console.error(`usage: run-tests.js ${Object.keys(suites).join('|')} [node --test options]`);
  process.exit(2);
}
const root = path.join(__dirname, '..');
const dir = path.join(root, suites[suite]);
if (!fs.existsSync(dir)) {
  console.error(`${suites[suite]} not found: run 'npm run build' first`);
  process.exit(1);
}

function findTests(d) {
  const found = [];
  for (const entry of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, entry.name);
    if (entry.isDirectory()) found.push(...findTests(p));
    else if (entry.name.endsWith('.test.js')) found.push(p);
  }
  return found.sort();
}

const files = findTests(dir);
if (files.length === 0) {
  console.error(`no tests found under ${suites[suite]}`);
  process.exit(1);
}
const extra = process.argv.slice(3);
const concurrency = suite === 'cluster' ? ['--test-concurrency=1'] : [];
const result = spawnSync(process.execPath, ['--test', ...concurrency, ...extra, ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(result.status ?? 1);
