/**
 * The layering of src/, checked by `npm run lint` (docs/architecture.md draws it).
 * Imports point down: domain/util/errors ← config/retry/observability ← db/outbox/broker
 * ← relay (ports only) ← commands/demo ← app/cli/index. The libraries services import
 * (producer/, consumer/) stand apart and reach only the base.
 */
const BASE = '^src/(domain/|util/|errors\\.ts$)';
const FOUNDATION = '^src/(config|retry|observability)/';
const ADAPTERS = '^src/(db|outbox|broker)/';
const CORE = '^src/relay/';
const FEATURES = '^src/(commands|demo)/';
const LIBRARIES = '^src/(producer|consumer)/';
const ROOT = '^src/(app|cli|index)\\.ts$';

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'No import cycles.', from: {}, to: { circular: true } },
    {
      name: 'base-imports-nothing-above',
      severity: 'error',
      comment: 'domain/, util/ and errors.ts are imported by every layer and import only each other.',
      from: { path: BASE },
      to: { path: '^src/', pathNot: BASE },
    },
    {
      name: 'foundation-below-adapters',
      severity: 'error',
      comment: 'config/, retry/ and observability/ know nothing of the database, the broker or the relay.',
      from: { path: FOUNDATION },
      to: { path: [ADAPTERS, CORE, FEATURES, LIBRARIES, ROOT] },
    },
    {
      name: 'adapters-below-the-relay',
      severity: 'error',
      comment: 'db/, outbox/ and broker/ implement the relay ports structurally; they never import the relay.',
      from: { path: ADAPTERS },
      to: { path: [CORE, FEATURES, LIBRARIES, ROOT] },
    },
    {
      name: 'broker-and-outbox-apart',
      severity: 'error',
      comment: 'The broker adapter and the outbox store share only domain types.',
      from: { path: '^src/broker/' },
      to: { path: '^src/(outbox|db)/' },
    },
    {
      name: 'outbox-without-broker',
      severity: 'error',
      from: { path: '^src/(outbox|db)/' },
      to: { path: '^src/broker/' },
    },
    {
      name: 'relay-sees-ports-only',
      severity: 'error',
      comment: 'The loop and the batch work against relay/ports.ts, never against the pg or amqplib adapters.',
      from: { path: CORE },
      to: { path: [ADAPTERS, FEATURES, LIBRARIES, ROOT, '^src/config/'] },
    },
    {
      name: 'relay-without-drivers',
      severity: 'error',
      from: { path: CORE },
      to: { dependencyTypes: ['npm'], path: '^(pg|amqplib|node-cron|kysely)($|/)' },
    },
    {
      name: 'commands-below-the-root',
      severity: 'error',
      comment: 'Commands receive their configuration and logger; only the demo starts a relay (app.ts).',
      from: { path: FEATURES, pathNot: '^src/demo/' },
      to: { path: ROOT },
    },
    {
      name: 'libraries-stand-apart',
      severity: 'error',
      comment: 'outbox-relay/producer and outbox-relay/consumer load none of the daemon.',
      from: { path: LIBRARIES },
      to: { path: '^src/', pathNot: [BASE, '^src/db/sql\\.ts$', '^src/db/transaction\\.ts$', LIBRARIES] },
    },
    {
      name: 'producer-loads-no-daemon-dependency',
      severity: 'error',
      from: { path: '^src/producer/' },
      to: { dependencyTypes: ['npm'], path: '^(amqplib|prom-client|node-cron|zod|pino|commander)($|/)' },
    },
    {
      name: 'consumer-loads-no-daemon-dependency',
      severity: 'error',
      from: { path: '^src/consumer/' },
      to: { dependencyTypes: ['npm'], path: '^(prom-client|node-cron|zod|pino|commander)($|/)' },
    },
    {
      name: 'product-without-tests',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^dist/' },
  },
};
