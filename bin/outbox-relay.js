#!/usr/bin/env -S node --max-semi-space-size=2
'use strict';
// --max-semi-space-size=2 (here, in `npm start` and in the image's entrypoint): a smaller
// young generation keeps the relay's peak RSS draining a large backlog ~25 MiB lower
// (npm run bench) for a few percent of throughput.
const { main } = require('../dist/cli.js');

// main() returns once its output is written whole (a pipe takes 64 KiB at a time); the
// exit then ends whatever a dependency may still hold open.
main(process.argv).then(
  () => process.exit(process.exitCode ?? 0),
  (err) => {
    process.stderr.write(`outbox-relay: ${err && err.message ? err.message : String(err)}\n`, () => process.exit(1));
  },
);
