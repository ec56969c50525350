#!/usr/bin/env node
// The `cluster` command. The code lives in dist/ (npm run build).
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
