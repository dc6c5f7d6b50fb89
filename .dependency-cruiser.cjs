/**
 * The layering of src/, checked by `npm run lint` (docs/architecture.md draws it).
 * Imports point down: domain/util/errors ← config/retry/observability ← db/outbox/broker
 * ← relay (ports only) ← commands/demo ← app/cli/index. The libraries services import
 * (producer/, consumer/) stand apart and reach only the base. tracing/ (OpenTelemetry)
 * implements the relay's BatchTracer (domain/tracing.ts) and is loaded by app.ts alone,
 * with a `require` only when an OTLP endpoint is set.
 */
const BASE = '^src/(domain/|util/|errors\\.ts$)';
const FOUNDATION = '^src/(config|retry|observability)/';
const ADAPTERS = '^src/(db|outbox|broker)/';
const CORE = '^src/relay/';
const FEATURES = '^src/(commands|demo)/';
const LIBRARIES = '^src/(producer|consumer)/';
const ROOT = '^src/(app|cli|index)\\.ts$';
const TRACING = '^src/tracing/';

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
      // dependency-cruiser reports an npm module by its resolved path (node_modules/pg/…).
      from: { path: CORE },
      to: { dependencyTypes: ['npm'], path: '^node_modules/(pg|amqplib|node-cron|kysely)/' },
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
      to: { dependencyTypes: ['npm'], path: '^node_modules/(amqplib|prom-client|node-cron|zod|pino|commander)/' },
    },
    {
      name: 'consumer-loads-no-daemon-dependency',
      severity: 'error',
      from: { path: '^src/consumer/' },
      to: { dependencyTypes: ['npm'], path: '^node_modules/(prom-client|node-cron|zod|pino|commander)/' },
    },
    {
      name: 'tracing-loaded-by-the-root-only',
      severity: 'error',
      comment: 'Only app.ts loads tracing/ (lazily): a relay without an OTLP endpoint never loads OpenTelemetry.',
      from: { path: '^src/', pathNot: [ROOT, TRACING] },
      to: { path: TRACING },
    },
    {
      name: 'tracing-below-the-relay',
      severity: 'error',
      comment: 'tracing/ implements the BatchTracer of domain/tracing.ts; it sees the base, config types and the logger only.',
      from: { path: TRACING },
      to: { path: [ADAPTERS, CORE, FEATURES, LIBRARIES, ROOT] },
    },
    {
      name: 'opentelemetry-sdk-in-tracing-only',
      severity: 'error',
      comment:
        "The OpenTelemetry SDK and exporters are the relay tracing's; the libraries reach @opentelemetry/api only, through util/otel-api.ts.",
      from: { path: '^src/', pathNot: TRACING },
      to: { path: '^node_modules/@opentelemetry/', pathNot: '^node_modules/@opentelemetry/api/' },
    },
    {
      name: 'opentelemetry-api-loaded-lazily',
      severity: 'error',
      comment: 'Outside tracing/, @opentelemetry/api (an optional peer) is loaded by util/otel-api.ts alone; elsewhere only its types.',
      from: { path: '^src/', pathNot: [TRACING, '^src/util/otel-api\\.ts$'] },
      to: { path: '^node_modules/@opentelemetry/api/', dependencyTypesNot: ['type-only'] },
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
