import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { BrokerConnection } from './broker/connection';
import { RelayBroker } from './broker/relay-broker';
import { publishIdentity } from './broker/signer';
import type { Config } from './config/load-config';
import { tracingSettings, type TracingSettings } from './config/tracing';
import { verifySchemaOf } from './db/migrator';
import { createDatabase, type Database } from './db/pool';
import { errorMessage, OutboxError } from './errors';
import { RelayHealth } from './observability/health';
import { HttpServer } from './observability/http-server';
import type { Logger } from './observability/logger';
import { createMetrics, type RelayMetrics } from './observability/metrics';
import { StatsPoller } from './observability/stats-poller';
import { FleetStore, replicaApplicationName } from './outbox/fleet-store';
import { MessageQueue } from './outbox/message-queue';
import { StatusStore } from './outbox/status-store';
import { missingPrivileges } from './outbox/privileges';
import { CleanupJob } from './outbox/retention';
import { Wakeup } from './outbox/wakeup';
import { Leadership } from './relay/leadership';
import { HeldDestinations } from './relay/held-destinations';
import { RelayLoop } from './relay/loop';
import { holdReporter, observeBatch } from './relay/observer';
import { systemClock } from './relay/ports';
import { fullJitterBackoff } from './util/backoff';
import { isDatabaseAway } from './util/outage';
import { keepTrying } from './retry/reconnect';
import type { RelayTracing, startRelayTracing as StartRelayTracing } from './tracing/relay-tracing';
import { settlesWithin } from './util/deadline';

/** Batches in flight per relay: the next claim overlaps the previous batch's confirms. */
const CONCURRENCY = 2;
/**
 * Pool connections beyond one per batch in flight: the peeks, the gauges, the lease
 * renewal and the cleanup share it. With the leader lock's connection and the LISTEN
 * connection, a leader holds at most CONCURRENCY + 3 connections; a standby holds one.
 */
const SHARED_CONNECTIONS = 1;
/** How often the lag/pending/dead gauges are refreshed (ms). */
const STATS_INTERVAL_MS = 5_000;
/** Beyond the publish timeout, how long a claim transaction may sit idle before PostgreSQL ends it (ms). */
const IDLE_CLAIM_MARGIN_MS = 30_000;
/** How long a stopping leader waits to hand its lease over before it leaves it to expire (ms). */
const LEASE_RELEASE_MS = 2_000;
/** The shortest wait for the last spans at shutdown, even with OUTBOX_SHUTDOWN_TIMEOUT_MS=0 (ms). */
const MIN_TRACE_FLUSH_MS = 1_000;

/** Internal knobs that are not operator settings (benchmarks and tests turn them). */
export interface RelayTuning {
  /** Batches in flight at once. Default 2. */
  readonly concurrency?: number;
  /** Refresh period of the lag/pending/dead gauges (ms). Default 5000. */
  readonly statsIntervalMs?: number;
  /** The package version this replica registers (relay_replicas.version). Default "unknown". */
  readonly version?: string;
}

/** A running relay process, as `outbox-relay run` (or a test) holds it. */
export interface RunningRelay {
  readonly port: number;
  readonly metrics: RelayMetrics;
  readonly health: RelayHealth;
  /** This replica's id (relay_replicas, the application_name of its connections). */
  readonly replicaId: string;
  /** Resolves once the schema is verified and the loop runs; rejects if it cannot start. */
  readonly started: Promise<void>;
  /** Graceful shutdown (SIGTERM): stop claiming, finish or abandon, close. Idempotent. */
  stop(): Promise<void>;
  /** Which part of the shutdown is running (for a shutdown that overruns). */
  shutdownStep(): string;
}

/**
 * The composition root: builds the pool, the broker connection, the metrics registry
 * and every component, and wires them. Nothing else constructs these.
 *
 * The HTTP server comes up first, so /healthz answers while the relay waits for its
 * database; the schema is verified as soon as the database answers, and a schema that
 * is not migrated (or newer than this build) rejects `started`.
 */
export async function startRelay(config: Config, log: Logger, tuning: RelayTuning = {}): Promise<RunningRelay> {
  const concurrency = tuning.concurrency ?? CONCURRENCY;
  const metrics = createMetrics({ stageTimings: config.stageTimings });
  const health = new RelayHealth(metrics, config.publishTimeoutMs + config.pollIntervalMs + 60_000);
  const replicaId = randomBytes(6).toString('hex');
  const database = createDatabase(
    config.databaseUrl,
    concurrency + SHARED_CONNECTIONS,
    log.child({ component: 'db' }),
    replicaApplicationName(replicaId),
  );
  const pool = database.pool;
  const queue = new MessageQueue(pool, config.schema, config.publishTimeoutMs + IDLE_CLAIM_MARGIN_MS);
  const operator = new StatusStore(config.schema);
  const connection = new BrokerConnection({
    urls: config.amqpUrls,
    connectionName: `${config.appId} (outbox-relay)`,
    log: log.child({ component: 'broker' }),
    onStateChange: (up) => health.setBrokerUp(up),
  });
  const broker = new RelayBroker(connection, publishIdentity(config));
  const wakeup = new Wakeup(
    () => database.newClient(replicaApplicationName(replicaId, 'listen')),
    config.schema,
    log.child({ component: 'listen' }),
  );
  const fleet = new FleetStore(
    pool,
    config.schema,
    { replicaId, host: hostname(), pid: process.pid, version: tuning.version ?? 'unknown' },
    () => database.newClient(replicaApplicationName(replicaId, 'lease')),
  );
  const relayLog = log.child({ component: 'relay' });
  const tracing = startTracing(tracingSettings(config), config.schema, log.child({ component: 'tracing' }));
  const deadHoldsKey = config.orderingOnDead === 'block';
  // The counts alone: the lag comes with the leader's heartbeat (onHeartbeat below).
  const stats = new StatsPoller(
    () => operator.stats(pool, deadHoldsKey),
    metrics,
    log.child({ component: 'stats' }),
    tuning.statsIntervalMs ?? STATS_INTERVAL_MS,
  );
  const fleetLog = log.child({ component: 'fleet' });
  // Destinations the broker refuses messages for, as the leader learned them (a standby knows none).
  const holds = new HeldDestinations(holdReporter(metrics, relayLog));
  // Only the leader listens, refreshes the outbox gauges and shows them (a standby's would be stale).
  const leadership = new Leadership(
    fleet,
    replicaId,
    {
      onLead: () => {
        health.setLeading(true);
        wakeup.start();
        stats.start();
        // Rows the previous leader parked for destinations it held: this one learns them again.
        queue.releaseHeld().then(
          (released) => {
            if (released > 0) fleetLog.info({ released }, 'released messages that waited for held destinations');
          },
          (err: unknown) => fleetLog.warn({ err: errorMessage(err) }, 'cannot release messages that waited for held destinations'),
        );
      },
      onFollow: () => {
        health.setLeading(false);
        holds.clear();
        loop.observeDueHead(undefined);
        void Promise.all([wakeup.unlisten(), stats.stop()]).catch((err: unknown) =>
          fleetLog.debug({ err: errorMessage(err) }, 'cannot stop listening'),
        );
      },
      onDatabase: (up) => health.setDatabaseUp(up),
      onHeartbeat: (outbox, readAt) => {
        stats.observeLag(outbox.lagSeconds, readAt);
        loop.observeDueHead(outbox.dueMessageId === null ? undefined : { id: outbox.dueMessageId, messageId: outbox.dueMessageId });
      },
    },
    fleetLog,
  );
  health.setLeading(false);
  const loop = new RelayLoop(
    { ...config, concurrency },
    {
      queue,
      broker,
      wake: wakeup,
      backoff: fullJitterBackoff(config.backoffBaseMs, config.backoffMaxMs),
      health,
      leadership,
      log: relayLog,
      clock: systemClock,
      holds,
      onBatch: (report) => observeBatch(report, metrics, relayLog, systemClock.now()),
      stages: config.stageTimings ? (stage, seconds) => metrics.stageSeconds.observe({ stage }, seconds) : undefined,
      tracer: tracing?.tracer,
    },
  );
  const cleanup = new CleanupJob(
    pool,
    config,
    log.child({ component: 'cleanup' }),
    (deleted) => metrics.cleanupDeletedTotal.inc(deleted),
    () => leadership.leading,
  );
  const http = new HttpServer(metrics, health, log.child({ component: 'http' }));
  const port = await http.listen(config.httpHost, config.httpPort);
  const startup = new AbortController();

  const started = (async () => {
    await waitForSchema(pool, config.schema, startup.signal, log);
    if (startup.signal.aborted) return;
    const missing = await missingPrivileges(pool, config.schema);
    if (missing.length > 0) {
      throw new OutboxError(
        'PRIVILEGES_MISSING',
        `the relay's database role lacks ${missing.join(', ')}: grant them (see migrations/roles.example.sql)`,
      );
    }
    if (config.orderingOnDead === 'skip') {
      // Rows parked behind a dead message while a relay ran with `block` are free now.
      const released = await queue.unparkAll();
      if (released > 0) log.info({ released }, 'OUTBOX_ORDERING_ON_DEAD=skip: released messages held behind dead messages');
    }
    health.setDatabaseUp(true);
    connection.start();
    leadership.start();
    loop.start();
    cleanup.start();
    await leadership.firstTurn;
    log.info(
      { schema: config.schema, batchSize: config.batchSize, pollIntervalMs: config.pollIntervalMs, maxAttempts: config.maxAttempts },
      'relay started',
    );
  })();

  let stopping: Promise<void> | undefined;
  let shutdownStep = 'not started';
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      log.info('shutting down');
      const step = async (name: string, work: () => Promise<unknown>): Promise<void> => {
        shutdownStep = name;
        await work();
      };
      const deadline = Date.now() + config.shutdownTimeoutMs;
      startup.abort();
      await step('startup', () => started.catch(() => undefined));
      await step('relay loop', () => loop.stop());
      // Handing the lead over takes two statements; a database that does not answer must not
      // hold the shutdown: the lease then simply expires.
      await step('lease', () => within(leadership.stop(), LEASE_RELEASE_MS));
      // The spans get what is left of OUTBOX_SHUTDOWN_TIMEOUT_MS (at least a second).
      if (tracing) await step('flush traces', () => flushTraces(tracing, deadline - Date.now(), log));
      await step('listener, gauges, cleanup', () => Promise.all([wakeup.stop(), stats.stop(), cleanup.stop()]));
      await step('broker connection', () => connection.close());
      await step('database pool', () => pool.end().catch(() => undefined));
      await step('http server', () => http.close());
      shutdownStep = 'done';
      log.info('stopped');
    })();
    return stopping;
  };
  return { port, metrics, health, replicaId, started, stop, shutdownStep: () => shutdownStep };
}

/**
 * The relay's tracing when an OTLP endpoint is set, loaded only then: without one, no
 * OpenTelemetry module is ever required (test/integration/tracing.test.ts checks it).
 */
function startTracing(settings: TracingSettings | undefined, schema: string, log: Logger): RelayTracing | undefined {
  if (settings === undefined) return undefined;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { startRelayTracing } = require('./tracing/relay-tracing') as { startRelayTracing: typeof StartRelayTracing };
  return startRelayTracing(settings, schema, log);
}

/** Exports the buffered spans, waiting at most what is left of the shutdown timeout (at least a second). */
async function flushTraces(tracing: RelayTracing, leftMs: number, log: Logger): Promise<void> {
  const timeoutMs = Math.max(leftMs, MIN_TRACE_FLUSH_MS);
  const flushed = await settlesWithin(tracing.shutdown(), timeoutMs);
  if (!flushed) log.warn({ timeoutMs }, 'shutdown: the last spans could not be exported in time; dropped');
}

/** `work`, or nothing once `ms` have passed (it goes on in the background). */
async function within(work: Promise<unknown>, ms: number): Promise<void> {
  await settlesWithin(work, ms);
}

/** Verifies the schema once the database answers; waits (not ready) while it does not. */
async function waitForSchema(pool: Database['pool'], schema: string, signal: AbortSignal, log: Logger): Promise<void> {
  await keepTrying(() => verifySchemaOf(pool, schema), {
    signal,
    retryable: isDatabaseAway,
    onRetry: ({ err, retryInMs, loud }) => {
      if (loud) log.warn({ err: errorMessage(err), retryInMs }, 'database unavailable at start; retrying');
    },
  });
}
