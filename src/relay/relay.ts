import type { Pool, PoolClient } from 'pg';
import type { BrokerConnection, PublishChannel } from '../broker/connection';
import { publishBatch, type PublishOutcome } from '../broker/publisher';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import type { RelayMetrics } from '../observability/metrics';
import type { OutboxMessage, OutboxStore } from '../outbox/store';
import type { BackoffPolicy } from '../retry/backoff';
import { reconnectDelayMs } from '../retry/backoff';
import { isTransientDatabaseError } from '../retry/classify';
import { abortableDelay, unrefSleep } from '../util/delay';
import type { RelayHealth } from './health';
import { decideMarks, type Marks } from './marks';
import { keysToCheck, planBatch } from './ordering';
import type { Wakeup } from './wakeup';

/**
 * Delay before claiming again when claimed rows had to wait for an earlier message of
 * their key that another batch is publishing right now: it is done in milliseconds.
 */
const HELD_RETRY_MS = 10;

/** Peek interval while messages flow (ms): bounds the latency of a commit to a few ms. */
const HOT_POLL_MS = 3;
/** How long after the last message found the relay keeps peeking fast (ms). */
const HOT_WINDOW_MS = 2_000;

/** The settings the loop reads; a subset of `Config`. */
export interface RelaySettings {
  readonly batchSize: number;
  readonly pollIntervalMs: number;
  readonly maxAttempts: number;
  readonly publishTimeoutMs: number;
  readonly unroutable: 'publish' | 'retry';
  readonly orderingOnDead: 'skip' | 'block';
  readonly retentionMs: number;
  readonly shutdownTimeoutMs: number;
  readonly appId: string;
  /** Batches in flight at once per relay (claim of the next overlaps confirms of the last). */
  readonly concurrency: number;
}

export interface RelayDeps {
  readonly pool: Pool;
  readonly store: OutboxStore;
  readonly broker: BrokerConnection;
  readonly wakeup: Wakeup;
  readonly backoff: BackoffPolicy;
  readonly metrics: RelayMetrics;
  readonly health: RelayHealth;
  readonly log: Logger;
}

/** What one batch did, for the loop's next delay. */
interface BatchResult {
  readonly claimed: number;
  /** Rows that wait for an earlier message of their key in flight elsewhere. */
  readonly held: number;
  /** No verdict for any message (broker gone mid-batch): back off like an error. */
  readonly noProgress: boolean;
}

/**
 * The relay loop: claim → publish with confirms → mark → decide the next delay.
 *
 * Design decision — a claim holds its transaction open across the publish, instead of
 * taking a lease (a `locked_until` column) and committing at once:
 * - crash recovery is immediate: when a relay dies its connection drops, PostgreSQL
 *   rolls the transaction back and the rows are claimable at once; a lease would keep
 *   them stuck until it expires and needs a duration tuned against the slowest confirm;
 * - fewer writes and round trips: one UPDATE per batch marks what was confirmed; a
 *   lease costs an extra UPDATE (and WAL) per row per batch;
 * - the price is a transaction open for a batch's publish time (milliseconds, at most
 *   OUTBOX_PUBLISH_TIMEOUT_MS): row locks on the claimed rows only, which no producer
 *   touches. `idle_in_transaction_session_timeout` is set per transaction so a relay
 *   that hangs cannot hold them forever.
 * `concurrency` workers run this loop side by side, so one batch's claim overlaps the
 * other's wait for confirms; SKIP LOCKED keeps their claims (and other replicas')
 * disjoint.
 *
 * Delays: 0 after a full batch; 10 ms when rows waited for an earlier message of their
 * key in flight elsewhere; after a partial or empty batch, until the next peek finds
 * something or a NOTIFY arrives (waitForWork); after an error, capped exponential
 * backoff. Every sleep aborts on
 * shutdown. Errors never escape the loop: they are logged, counted and shown in
 * /readyz.
 */
export class Relay {
  private readonly controller = new AbortController();
  /** Aborts the publish waits of in-flight batches when the shutdown timeout is up. */
  private readonly abandon = new AbortController();
  private workers: Promise<void>[] = [];
  private stopping: Promise<void> | undefined;
  private readonly activeClients = new Set<PoolClient>();
  private maxMessageBytes: number | undefined;
  /** When a claim last found messages (epoch ms): decides hot or idle peeking. */
  private lastFoundAt = 0;

  constructor(
    private readonly settings: RelaySettings,
    private readonly deps: RelayDeps,
  ) {}

  /** Starts the workers. */
  start(): void {
    if (this.workers.length > 0) return;
    this.deps.health.setRunning(true);
    for (let worker = 0; worker < this.settings.concurrency; worker += 1) {
      this.workers.push(this.work(worker));
    }
  }

  private async work(worker: number): Promise<void> {
    const { broker, wakeup, health, log } = this.deps;
    const signal = this.controller.signal;
    let consecutiveErrors = 0;
    while (!signal.aborted) {
      health.beat();
      if (!broker.connected) {
        // Wake now and then while waiting: the loop is not stuck, /healthz stays 200.
        await broker.waitUntilConnected(signal, this.settings.pollIntervalMs);
        continue;
      }
      if (broker.blocked) {
        // A resource alarm: publishing would only time out and burn attempts.
        await abortableDelay(this.settings.pollIntervalMs, signal);
        continue;
      }
      const seen = wakeup.generation;
      let delayMs: number;
      let idle = false;
      try {
        const result = await this.runBatch();
        if (!health.databaseUp) log.info('database reachable again');
        health.setDatabaseUp(true);
        if (result.claimed > 0) this.lastFoundAt = Date.now();
        if (result.noProgress) {
          consecutiveErrors += 1;
          delayMs = reconnectDelayMs(consecutiveErrors);
        } else {
          consecutiveErrors = 0;
          if (result.held > 0) delayMs = Math.min(HELD_RETRY_MS, this.settings.pollIntervalMs);
          else if (result.claimed >= this.settings.batchSize) {
            delayMs = 0;
            wakeup.trigger(); // a backlog: the other workers join in
          } else {
            delayMs = this.settings.pollIntervalMs;
            idle = true;
          }
        }
      } catch (err: unknown) {
        consecutiveErrors += 1;
        delayMs = reconnectDelayMs(consecutiveErrors);
        if (err instanceof OutboxError && err.code === 'BROKER_UNAVAILABLE') {
          log.debug({ worker }, 'broker unavailable; waiting');
        } else if (isTransientDatabaseError(err)) {
          if (health.databaseUp || consecutiveErrors === 1) log.warn({ err: errorMessage(err), retryInMs: delayMs }, 'database unavailable; retrying');
          health.setDatabaseUp(false);
        } else {
          log.error({ err: errorMessage(err), retryInMs: delayMs }, 'batch failed');
        }
      }
      if (idle) await this.waitForWork(worker, signal, seen);
      else await wakeup.wait(delayMs, signal, seen);
    }
  }

  /**
   * The wake-up (measured by `npm run bench`; see the README's Performance section):
   * while messages have been flowing in the last HOT_WINDOW_MS, worker 0 peeks every
   * HOT_POLL_MS with one cheap indexed query, so a commit is published within a few
   * milliseconds without any cost to the producer's transaction; when the outbox has
   * been quiet it peeks every OUTBOX_POLL_INTERVAL_MS. A NOTIFY on '<schema>.messages'
   * (the optional trigger, or the producer's own) wakes every worker at once. The other
   * workers sleep until worker 0 finds a full batch.
   */
  private async waitForWork(worker: number, signal: AbortSignal, seen: number): Promise<void> {
    const { wakeup, store, pool, health } = this.deps;
    while (!signal.aborted) {
      health.beat();
      const hot = worker === 0 && Date.now() - this.lastFoundAt < HOT_WINDOW_MS;
      await wakeup.wait(hot ? HOT_POLL_MS : this.settings.pollIntervalMs, signal, seen);
      if (wakeup.generation !== seen || signal.aborted || worker !== 0) return;
      try {
        if (await store.peek(pool)) return;
      } catch {
        return; // the claim reports the database's state
      }
    }
  }

  private async runBatch(): Promise<BatchResult> {
    const { pool, store } = this.deps;
    const started = process.hrtime.bigint();
    const client = await pool.connect();
    this.activeClients.add(client);
    let releaseError: Error | undefined;
    try {
      // One round trip: open the claim transaction with its session limits. A lost mark
      // only re-publishes (at-least-once), so the relay's own commits need not wait
      // for the WAL flush.
      await client.query(
        `BEGIN; SET LOCAL idle_in_transaction_session_timeout = ${this.settings.publishTimeoutMs + 30_000}; SET LOCAL synchronous_commit = off`,
      );
      const claimed = await store.claim(client, this.settings.batchSize);
      if (claimed.length === 0) {
        await client.query('COMMIT');
        return { claimed: 0, held: 0, noProgress: false };
      }
      const keyRows = await store.keyRows(client, keysToCheck(claimed), this.settings.orderingOnDead === 'block');
      const plan = planBatch(claimed, keyRows);
      const messages = plan.publish;
      const publishStarted = Date.now();
      const outcomes = messages.length > 0 ? await this.publish(messages) : [];
      const marks = decideMarks(messages, outcomes, this.settings, this.deps.backoff, this.deps.broker.blockedAtAnyTimeSince(publishStarted));
      await store.markPublished(client, marks.published, this.settings.retentionMs === 0);
      await store.markFailed(client, marks.failed);
      await store.park(client, [...plan.park, ...marks.park]);
      await client.query('COMMIT');
      this.record(messages, outcomes, marks, started);
      return {
        claimed: claimed.length,
        held: plan.held + marks.held,
        noProgress: messages.length > 0 && marks.published.length === 0 && marks.failed.length === 0 && marks.park.length === 0,
      };
    } catch (err: unknown) {
      releaseError = err instanceof Error ? err : new Error(errorMessage(err));
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      if (this.activeClients.delete(client)) client.release(releaseError);
    }
  }

  /**
   * Filters what cannot succeed — a missing exchange or command queue, a body over the
   * broker's size limit — then publishes the rest pipelined. A keyed message that fails
   * here holds back the later messages of its key in this batch: they are not sent.
   */
  private async publish(messages: readonly OutboxMessage[]): Promise<PublishOutcome[]> {
    const { broker } = this.deps;
    const outcomes: (PublishOutcome | undefined)[] = new Array(messages.length).fill(undefined);
    const missingExchanges = await broker.missingExchanges(new Set(messages.map((m) => m.exchange)));
    const missingQueues = await broker.missingQueues(new Set(messages.filter((m) => m.exchange === '').map((m) => m.routingKey)));
    const stoppedKeys = new Set<string>();
    const sendable: OutboxMessage[] = [];
    const sendableIndex: number[] = [];
    messages.forEach((message, index) => {
      let outcome: PublishOutcome | undefined;
      if (message.partitionKey !== null && stoppedKeys.has(message.partitionKey)) {
        outcome = { kind: 'held' };
      } else if (missingExchanges.has(message.exchange)) {
        outcome = { kind: 'failed', reason: 'unknown_exchange', error: `exchange "${message.exchange}" does not exist` };
      } else if (message.exchange === '' && missingQueues.has(message.routingKey)) {
        outcome = { kind: 'failed', reason: 'unroutable', error: `no queue named "${message.routingKey}" for this command (default exchange)` };
      } else if (this.maxMessageBytes !== undefined && message.content.length > this.maxMessageBytes) {
        outcome = {
          kind: 'failed',
          reason: 'too_large',
          error: `message of ${message.content.length} bytes exceeds the broker's max message size of ${this.maxMessageBytes} bytes`,
        };
      }
      if (outcome) {
        outcomes[index] = outcome;
        if (message.partitionKey !== null) stoppedKeys.add(message.partitionKey);
      } else {
        sendable.push(message);
        sendableIndex.push(index);
      }
    });
    if (sendable.length > 0) {
      const channel = await broker.channel();
      const published = await publishBatch(channel, sendable, {
        appId: this.settings.appId,
        timeoutMs: this.settings.publishTimeoutMs,
        signal: this.abandon.signal,
      });
      this.learnFromClose(channel);
      published.forEach((outcome, i) => {
        outcomes[sendableIndex[i] as number] = outcome;
      });
    }
    return outcomes as PublishOutcome[];
  }

  private learnFromClose(channel: PublishChannel): void {
    if (!channel.closeReason) return;
    const tooLarge = /larger than configured max size (\d+)/.exec(channel.closeReason);
    if (tooLarge) this.maxMessageBytes = Number(tooLarge[1]);
    if (/NOT_FOUND - no exchange/.test(channel.closeReason)) this.deps.broker.forgetTargets();
  }

  /** Metrics and logs of a committed batch. */
  private record(
    messages: readonly OutboxMessage[],
    outcomes: readonly PublishOutcome[],
    marks: Marks,
    started: bigint,
  ): void {
    const { metrics, log } = this.deps;
    const now = Date.now();
    const publishedIds = new Set(marks.published);
    let unconfirmed = 0;
    messages.forEach((message, index) => {
      const outcome = outcomes[index] as PublishOutcome;
      if (outcome.kind === 'returned') metrics.unroutableTotal.inc();
      if (publishedIds.has(message.id)) {
        const from = Math.max(message.availableAt.getTime(), message.createdAt.getTime());
        metrics.deliveryLatencySeconds.observe(Math.max(0, now - from) / 1000);
      } else if (outcome.kind === 'confirmed') {
        // Held behind an earlier message of its key that did not go through.
      } else if (outcome.kind === 'returned') {
        metrics.publishFailuresTotal.inc({ reason: 'unroutable' });
      } else if (outcome.kind === 'failed') {
        metrics.publishFailuresTotal.inc({ reason: outcome.reason });
      } else if (outcome.kind === 'unconfirmed') {
        unconfirmed += 1;
      }
    });
    if (unconfirmed > 0) metrics.publishFailuresTotal.inc({ reason: 'connection_lost' }, unconfirmed);
    metrics.publishedTotal.inc(marks.published.length);
    const dead = marks.failed.filter((f) => f.dead);
    if (dead.length > 0) metrics.deadTotal.inc(dead.length);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    metrics.batchDurationSeconds.observe(ms / 1000);
    if (marks.failed.length > 0 || unconfirmed > 0) {
      log.warn(
        {
          published: marks.published.length,
          failed: marks.failed.length,
          dead: dead.length,
          unconfirmed,
          heldBehindKey: marks.held + marks.park.length,
          firstError: marks.failed[0]?.error,
          ms: Math.round(ms),
        },
        'batch had failures',
      );
    } else {
      log.debug({ published: marks.published.length, ms: Math.round(ms) }, 'published batch');
    }
    if (dead.length > 0) {
      const byId = new Map(messages.map((m) => [m.id, m]));
      for (const f of dead) {
        const message = byId.get(f.id);
        log.error({ messageId: message?.messageId, exchange: message?.exchange, attempts: this.settings.maxAttempts, error: f.error }, 'message is dead');
      }
    }
  }

  /**
   * Stops claiming, lets in-flight batches finish within the shutdown timeout, then
   * abandons them (unconfirmed messages stay pending; their locks are released).
   * Idempotent: every caller gets the same promise.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      const all = Promise.all(this.workers);
      const finishedInTime = await Promise.race([all.then(() => true), unrefSleep(this.settings.shutdownTimeoutMs).then(() => false)]);
      if (!finishedInTime) {
        this.deps.log.warn({ timeoutMs: this.settings.shutdownTimeoutMs }, 'shutdown timeout: abandoning the in-flight batch');
        this.abandon.abort();
        const marked = await Promise.race([all.then(() => true), unrefSleep(2_000).then(() => false)]);
        if (!marked) {
          // The database does not answer: drop the connections, PostgreSQL rolls back.
          for (const client of this.activeClients) client.release(new Error('shutdown'));
          this.activeClients.clear();
        }
      }
      this.deps.health.setRunning(false);
    })();
    return this.stopping;
  }
}
