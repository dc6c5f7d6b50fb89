#!/usr/bin/env node
'use strict';
const { main } = require('../dist/cli.js');

main(process.argv).then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    process.stderr.write(`outbox-relay: ${err && err.message ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
