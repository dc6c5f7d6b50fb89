import { createPublicKey, randomBytes, randomUUID } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import type { Pool } from 'pg';
import { SelftestBroker, type SelftestTopology } from '../broker/selftest-broker';
import type { Config } from '../config/load-config';
import { SELFTEST_HEADER, SELFTEST_MESSAGE_TYPE } from '../domain/selftest-message';
import { verifySchemaOf } from '../db/migrator';
import { checkSignature } from '../domain/signature-check';
import { qualified } from '../db/sql';
import { OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { SelftestStore, type SelftestRow } from '../outbox/selftest-store';
import { missingPrivileges } from '../outbox/privileges';
import { TIMED_OUT, withDeadline } from '../util/deadline';
import { isDatabaseAway } from '../util/outage';
import type { Io } from './io';
import { selftestDifferences, reason, Steps, type StepRecord } from './selftest-steps';
import { interruption, untilAborted } from './selftest-interruption';
import { publishSelftestMessage } from './selftest-publish';
import { withDatabase } from './with-database';

/** The shortest wait for a running relay to take the canary (ms). */
const MIN_RELAY_WAIT_MS = 2_000;
/** Beyond --timeout-ms, how long an undeleted canary stays publishable before it expires (ms). */
const EXPIRY_MARGIN_MS = 60_000;
/** Longest the clean-up may take for the canary row (ms); it is best effort. */
const ROW_CLEANUP_MS = 5_000;

export interface SelftestOptions {
  /** The exchange to bind the canary's queue to; default a temporary exchange of its own. */
  readonly exchange?: string;
  /** From the insert to the delivery (ms). */
  readonly timeoutMs: number;
  readonly json?: boolean;
}

/** What `selftest --json` prints: one object. */
export interface SelftestReport {
  readonly ok: boolean;
  /** Who published the canary: a running relay, the self-test itself, or nobody (it failed before). */
  readonly publishedBy: 'relay' | 'selftest' | null;
  /** How long the self-test waited for a running relay before publishing by itself (ms). */
  readonly relayWaitMs: number;
  readonly messageId: string | null;
  readonly exchange: string | null;
  readonly temporaryExchange: boolean | null;
  readonly queue: string | null;
  readonly steps: readonly StepRecord[];
  readonly totalMs: number;
  /** The one-line reason, when it failed. */
  readonly error?: string;
}

/** How long to wait for a running relay, and why that long (said in the output). */
export function relayWait(pollIntervalMs: number, timeoutMs: number): { readonly ms: number; readonly why: string } {
  const twice = 2 * pollIntervalMs;
  if (Math.max(twice, MIN_RELAY_WAIT_MS) > timeoutMs / 2) return { ms: Math.floor(timeoutMs / 2), why: 'half of --timeout-ms' };
  return twice > MIN_RELAY_WAIT_MS
    ? { ms: twice, why: `2 × OUTBOX_POLL_INTERVAL_MS` }
    : { ms: MIN_RELAY_WAIT_MS, why: `at least 2 s; 2 × OUTBOX_POLL_INTERVAL_MS is ${twice} ms` };
}

/** What the round trip learned, for the report. */
interface Progress {
  publishedBy: 'relay' | 'selftest' | null;
  messageId: string | null;
  topology: SelftestTopology | null;
}

/**
 * `outbox-relay selftest`: a canary round trip through the configured database and
 * broker. Checks the database, the schema and the role's privileges; declares a
 * temporary exclusive queue bound to the exchange; inserts a canary row; waits for a
 * running relay to publish it, or claims (FOR UPDATE SKIP LOCKED, by id), publishes
 * with confirms and marks it itself; waits for the delivery and compares it. Each step
 * is printed with its time. Whatever happens after the insert, the row, the queue and
 * the temporary exchange are deleted: also when `signal` aborts (SIGINT, SIGTERM), which
 * ends the waits at once (its own publish, bounded by OUTBOX_PUBLISH_TIMEOUT_MS, is let
 * finish). Throws (exit 1) naming the failing step.
 */
export async function selftestCommand(
  config: Config,
  log: Logger,
  io: Io,
  options: SelftestOptions,
  signal: AbortSignal = new AbortController().signal,
): Promise<void> {
  const started = performance.now();
  const steps = new Steps(io, options.json === true);
  const wait = relayWait(config.pollIntervalMs, options.timeoutMs);
  const progress: Progress = { publishedBy: null, messageId: null, topology: null };
  let error: OutboxError | undefined;
  try {
    await withDatabase(config, log, (pool) => roundTrip(config, pool, steps, { ...options, signal }, wait, progress));
  } catch (err: unknown) {
    error = err instanceof OutboxError ? err : new OutboxError('CHECK_FAILED', `selftest failed: ${reason(err)}`, { cause: err });
  }
  const totalMs = Math.round(performance.now() - started);
  if (options.json) {
    const report: SelftestReport = {
      ok: error === undefined,
      publishedBy: progress.publishedBy,
      relayWaitMs: wait.ms,
      messageId: progress.messageId,
      exchange: progress.topology?.exchange ?? null,
      temporaryExchange: progress.topology?.temporaryExchange ?? null,
      queue: progress.topology?.queue ?? null,
      steps: steps.records,
      totalMs,
      ...(error ? { error: error.message } : {}),
    };
    io.out(JSON.stringify(report));
  } else if (!error) {
    const by = progress.publishedBy === 'relay' ? 'a running relay' : 'the selftest itself';
    io.out(`selftest passed in ${totalMs} ms: the canary arrived intact (published by ${by}); nothing left behind`);
  }
  if (error) throw error;
}

async function roundTrip(
  config: Config,
  pool: Pool,
  steps: Steps,
  options: SelftestOptions & { readonly signal: AbortSignal },
  wait: { ms: number; why: string },
  progress: Progress,
): Promise<void> {
  const store = new SelftestStore(config.schema);
  const { signal } = options;
  const checkpoint = (): void => {
    if (signal.aborted) throw interruption(signal);
  };
  await steps.run(
    'connect database',
    async () => {
      try {
        const { rows } = await pool.query<{ version: string; user: string }>(
          `SELECT current_setting('server_version') AS version, current_user AS user`,
        );
        return rows[0];
      } catch (err: unknown) {
        if (isDatabaseAway(err)) throw new OutboxError('DATABASE_UNAVAILABLE', `cannot reach the database: ${reason(err)}`);
        throw err;
      }
    },
    (row) => `PostgreSQL ${row?.version}, role ${row?.user}`,
  );
  await steps.run(
    'schema',
    () => verifySchemaOf(pool, config.schema),
    (version) => `"${config.schema}" at migration ${version}`,
  );
  await steps.run(
    'privileges',
    async () => {
      const missing = await missingPrivileges(pool, config.schema, { fleet: false });
      if (!(await store.mayInsert(pool))) missing.unshift(`INSERT on ${qualified(config.schema, 'messages')}`);
      if (missing.length > 0) {
        throw new OutboxError(
          'PRIVILEGES_MISSING',
          `the role lacks ${missing.join(', ')}: the selftest inserts, claims, marks and deletes a canary message (docs/runbook.md, Self-test)`,
        );
      }
    },
    () => 'may insert, claim, mark and delete messages',
  );
  checkpoint();
  const broker = await steps.run(
    'connect broker',
    () => SelftestBroker.connect(config.amqpUrls, `${config.appId} (outbox-relay selftest)`),
    (b) => b.url,
  );
  let selftestId: string | undefined;
  let failed: OutboxError | undefined;
  try {
    checkpoint();
    const topology = await steps.run(
      'declare queue',
      () => broker.declare(options.exchange),
      (t) => (t.temporaryExchange ? `${t.queue} (temporary exchange and queue)` : `${t.queue} bound to exchange "${t.exchange}"`),
    );
    progress.topology = topology;
    const row = selftestRow(topology, options.timeoutMs);
    progress.messageId = row.messageId;
    checkpoint();
    selftestId = await steps.run(
      'insert',
      () => store.insert(pool, row),
      () => `message_id ${row.messageId}`,
    );
    const deadline = performance.now() + options.timeoutMs;
    progress.publishedBy = await publishSelftestMessage({
      config,
      pool,
      store,
      broker,
      steps,
      wait,
      deadline,
      id: selftestId,
      timeoutMs: options.timeoutMs,
      signal,
    });
    checkpoint();
    await steps.run(
      'delivery',
      async () => {
        const delivered = await untilAborted(broker.delivery(row.messageId, deadline - performance.now()), signal);
        if (!delivered) {
          throw new OutboxError(
            'CHECK_FAILED',
            `published and confirmed, but not delivered to ${topology.queue} within ${options.timeoutMs} ms of the insert (--timeout-ms)`,
          );
        }
        const changes = selftestDifferences(delivered, row);
        if (changes.length > 0) throw new OutboxError('CHECK_FAILED', `delivered but changed: ${changes.join('; ')}`);
        return signatureOf(delivered, config);
      },
      (signed) => signed,
    );
  } catch (err: unknown) {
    failed = steps.fail(signal.aborted ? 'interrupted' : 'selftest', err);
  }
  const cleanupStarted = performance.now();
  const problems = await cleanUp(pool, store, broker, selftestId).catch((err: unknown) => [reason(err)]);
  if (problems.length === 0) {
    const cleaned = describeCleanup(selftestId, progress.topology);
    steps.done('cleanup', cleanupStarted, cleaned);
    if (signal.aborted) throw new OutboxError('CHECK_FAILED', `${interruption(signal).message}: nothing left behind (${cleaned})`);
    if (failed) throw failed;
    return;
  }
  const leftover = steps.fail('cleanup', problems.join('; '), cleanupStarted);
  throw failed ? new OutboxError(failed.code, `${failed.message}; cleanup also failed: ${problems.join('; ')}`) : leftover;
}

/**
 * With OUTBOX_SIGNING_KEY_FILE, the delivered canary's signature checked against the
 * configured key's public half (as a consumer's `verify` option would); throws when it
 * does not verify (e.g. a running relay that signs with another key published it).
 */
function signatureOf(delivered: ConsumeMessage, config: Config): string {
  if (!config.signing) return 'arrived intact (unsigned: OUTBOX_SIGNING_KEY_FILE is not set)';
  const { keyId, key } = config.signing;
  const route = { exchange: delivered.fields.exchange, routingKey: delivered.fields.routingKey };
  const verdict = checkSignature(delivered, route, new Map([[keyId, createPublicKey(key)]]), false);
  if (!verdict.ok)
    throw new OutboxError('CHECK_FAILED', `delivered, but its signature does not verify: ${verdict.reason}: ${verdict.detail}`);
  return `arrived intact, signature verified (key id "${keyId}")`;
}

function describeCleanup(selftestId: string | undefined, topology: SelftestTopology | null): string {
  const parts = [selftestId === undefined ? undefined : 'canary row deleted', topology ? 'queue deleted' : undefined];
  if (topology?.temporaryExchange) parts.push('exchange deleted');
  return parts.filter((p) => p !== undefined).join(', ') || 'nothing to delete';
}

/** Deletes the canary row and the broker objects; returns what could not be done. */
async function cleanUp(pool: Pool, store: SelftestStore, broker: SelftestBroker, selftestId: string | undefined): Promise<string[]> {
  const problems: string[] = [];
  if (selftestId !== undefined) {
    const removed = await withDeadline(
      store.remove(pool, selftestId).then(
        () => undefined,
        (err: unknown) => reason(err),
      ),
      ROW_CLEANUP_MS,
    ).then((result) => (result === TIMED_OUT ? `no answer within ${ROW_CLEANUP_MS} ms` : result));
    if (removed !== undefined) problems.push(`could not delete the canary row (id ${selftestId}): ${removed}`);
  }
  problems.push(...(await broker.dispose()));
  return problems;
}

/** The canary: a unique message id, a nonce in the payload, headers marking it a self-test. */
function selftestRow(topology: SelftestTopology, timeoutMs: number): SelftestRow {
  const nonce = randomBytes(16).toString('hex');
  return {
    messageId: randomUUID(),
    exchange: topology.exchange,
    routingKey: topology.routingKey,
    messageType: SELFTEST_MESSAGE_TYPE,
    payload: { selftest: true, nonce },
    headers: { [SELFTEST_HEADER]: true, 'x-outbox-selftest-nonce': nonce },
    correlationId: nonce,
    expiresInMs: timeoutMs + EXPIRY_MARGIN_MS,
  };
}
