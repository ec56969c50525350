#!/usr/bin/env -S node --max-semi-space-size=1
// The `cluster` command. The code lives in dist/ (npm run build).
// --max-semi-space-size=1 (MiB): V8's young generation otherwise grows to 16 MiB per semi-space
// under a busy daemon's allocation; capped, a worker daemon running 100 tasks stays near 76 MiB
// RSS instead of 89 (npm run bench:converge). Scripts start the daemon through this file, so
// the flag lives here only. Short CLI runs do not notice it.
'use strict';
const path = require('node:path');
const main = path.join(__dirname, '..', 'dist', 'src', 'cli', 'main.js');
try {
  require.resolve(main);
} catch {
  process.stderr.write("cluster: not built yet: run 'npm run build' in " + path.dirname(__dirname) + '\n');
  process.exit(1);
}
require(main)
  .main(process.argv)
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`cluster: internal error: ${err && err.stack ? err.stack : err}\n`);
      process.exitCode = 1;
    },
  );
