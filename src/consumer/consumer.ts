import { EventEmitter } from 'node:events';
import type { PoolClient } from 'pg';
import { OutboxError } from '../errors';
import { settlesWithin } from '../util/deadline';
import { deferred } from '../util/deferred';
import { abortableDelay } from '../util/delay';
import { reconnectDelayMs } from '../util/backoff';
import { Deliveries } from './delivery';
import { cleanupInboxBatch, inboxTable, type InboxTarget } from './inbox';
import { ConsumerMetrics, type MessageOutcome } from './metrics';
import type { ConsumerOptions, ConsumerState, StateChange } from './options';
import { isBrokerSetupRefusal } from '../util/outage';
import { bounded, describeError, Session, type SessionHooks } from './session';
import { consumerSettings, type ConsumerSettings } from './settings';
import { displayUrl } from './urls';

/** What a consumer has done since it started. */
export interface ConsumerStats {
  /** Processed: the handler's transaction committed. */
  readonly handled: number;
  /** Skipped: the inbox already held the message id. */
  readonly duplicates: number;
  /** Sent to the retry queue (or retried in place) after a handler failure. */
  readonly retried: number;
  /** Given up: dead-lettered after `maxRetries`, or refused (no message id, or one the inbox cannot store). */
  readonly rejected: number;
  /** Times consuming resumed after a lost connection or a cancel by the broker. */
  readonly reconnects: number;
}

/**
 * A running consumer. It keeps consuming, through lost connections and cancels by the
 * broker, until `stop()`.
 */
export interface Consumer {
  readonly stats: ConsumerStats;
  /** Where it is now (see `ConsumerState`). */
  readonly state: ConsumerState;
  /**
   * Resolves once the consumer is stopped, and only then: a lost connection or a cancel
   * by the broker no longer ends a consumer (it reconnects by itself), so there is no
   * error to resolve with. Watch `state` events to log or alert on outages.
   */
  readonly closed: Promise<void>;
  /** `state`: every change of state (the same as the `onStateChange` option). */
  on(event: 'state', listener: (change: StateChange) => void): this;
  once(event: 'state', listener: (change: StateChange) => void): this;
  off(event: 'state', listener: (change: StateChange) => void): this;
  /**
   * Stops consuming, waits for the handlers in flight (at most `shutdownTimeoutMs`; those
   * still running then are rolled back, their messages redelivered later), returns the
   * messages not started to the queue and closes the connection. Idempotent: every call
   * returns the same promise.
   */
  stop(): Promise<void>;
}

class IdempotentConsumer<TPayload> extends EventEmitter implements Consumer {
  private readonly counts = { handled: 0, duplicates: 0, retried: 0, rejected: 0, reconnects: 0 };
  private current: ConsumerState = 'connecting';
  private readonly stopController = new AbortController();
  private session: Session | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly checkedOut = new Set<PoolClient>();
  private readonly metrics: ConsumerMetrics;
  private readonly target: InboxTarget<TPayload>;
  private readonly deliveries: Deliveries<TPayload>;
  private readonly cleanupTimer: NodeJS.Timeout;
  private stopping: Promise<void> | undefined;
  private loop: Promise<void> = Promise.resolve();
  private interruptedAt: number | undefined;
  private startError: OutboxError | undefined;
  private readonly hooks: SessionHooks;
  private readonly closing = deferred();
  readonly closed: Promise<void> = this.closing.promise;
  private readonly firstConsuming = deferred();

  constructor(private readonly settings: ConsumerSettings<TPayload>) {
    super();
    this.metrics = new ConsumerMetrics(settings.registry, settings.queue);
    const table = inboxTable(settings.schema);
    this.target = { pool: settings.pool, table, name: settings.name, handler: settings.handler, checkedOut: this.checkedOut };
    this.deliveries = new Deliveries(settings, this.target, this.metrics, (outcome) => this.count(outcome));
    this.hooks = {
      onMessage: (session, msg) => this.track(this.deliveries.accept(session, msg)),
      onCancel: (session) => this.onCancel(session),
    };
    this.cleanupTimer = setInterval(() => {
      cleanupInboxBatch(settings.pool, table, settings.inboxRetentionMs).catch((err: unknown) =>
        settings.log.warn({ queue: settings.queue, err: describeError(err) }, 'inbox cleanup failed'),
      );
    }, settings.inboxCleanupIntervalMs);
    this.cleanupTimer.unref();
  }

  get stats(): ConsumerStats {
    return { ...this.counts };
  }

  get state(): ConsumerState {
    return this.current;
  }

  private get stopSignal(): AbortSignal {
    return this.stopController.signal;
  }

  /** Resolves once consuming; rejects (stopped) on a refusal or after `startTimeoutMs`. */
  async start(): Promise<void> {
    try {
      await this.checkInbox();
    } catch (err: unknown) {
      await this.stop();
      throw err;
    }
    this.loop = this.run().catch((err: unknown) => {
      this.settings.log.error({ queue: this.settings.queue, err: describeError(err) }, 'the consumer loop failed');
    });
    const outcome = await Promise.race([
      this.firstConsuming.promise.then(() => 'consuming' as const),
      this.loop.then(() => 'ended' as const),
    ]);
    if (outcome === 'consuming') return;
    await this.stop();
    throw (
      this.startError ?? new OutboxError('BROKER_UNAVAILABLE', `createConsumer: stopped before consuming queue "${this.settings.queue}"`)
    );
  }

  /**
   * A missing inbox table fails the start, clearly; a database that cannot be reached
   * does not (the deliveries wait for it).
   */
  private async checkInbox(): Promise<void> {
    try {
      await this.settings.pool.query(`SELECT 1 FROM ${this.target.table} LIMIT 0`);
    } catch (err: unknown) {
      const code = (err as { code?: unknown }).code;
      if (code !== '42P01' && code !== '3F000') return;
      throw new OutboxError(
        'SCHEMA_NOT_MIGRATED',
        `createConsumer: the inbox table ${this.target.table} does not exist: create it with \`outbox-relay migrate --inbox\` in the consumer's database`,
        { cause: err },
      );
    }
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private setState(state: ConsumerState, extra: Omit<StateChange, 'state' | 'previous'> = {}): void {
    const previous = this.current;
    if (state === previous) return;
    if ((previous === 'stopping' || previous === 'stopped') && state !== 'stopped') return;
    this.current = state;
    const change: StateChange = { state, previous, ...extra };
    try {
      this.settings.onStateChange?.(change);
      this.emit('state', change);
    } catch (err: unknown) {
      this.settings.log.warn({ queue: this.settings.queue, err: describeError(err) }, 'a state listener threw');
    }
  }

  /** The connection loop: connect, consume until the session ends, reconnect after a backoff. */
  private async run(): Promise<void> {
    const { urls, queue, log, reconnectBaseMs, reconnectMaxMs } = this.settings;
    const startDeadline = Date.now() + this.settings.startTimeoutMs;
    let failures = 0;
    let urlIndex = 0;
    let started = false;
    while (!this.stopSignal.aborted) {
      const url = urls[urlIndex % urls.length] as string;
      let session: Session;
      try {
        session = await Session.open(this.settings as ConsumerSettings<unknown>, url, this.hooks, this.stopSignal);
      } catch (err: unknown) {
        urlIndex += 1;
        failures += 1;
        const reason = `${displayUrl(url)}: ${describeError(err)}`;
        if (!started && (isBrokerSetupRefusal(err) || Date.now() >= startDeadline)) {
          this.startError = new OutboxError('BROKER_UNAVAILABLE', `createConsumer: cannot consume queue "${queue}" from ${reason}`, {
            cause: err,
          });
          return;
        }
        const retryInMs = reconnectDelayMs(failures, reconnectBaseMs, reconnectMaxMs);
        const loud = failures === 1 || failures % 10 === 0;
        log[loud ? 'warn' : 'debug']({ queue, err: reason, failures, retryInMs }, 'consumer cannot connect; retrying');
        await abortableDelay(retryInMs, this.stopSignal);
        continue;
      }
      if (this.stopSignal.aborted) {
        await session.close();
        break;
      }
      this.session = session;
      failures = 0;
      if (started) this.resumed('connection');
      this.consumingNow(session);
      if (!started) {
        started = true;
        this.firstConsuming.resolve();
      }
      const reason = await session.ended;
      this.session = undefined;
      this.deliveries.sessionEnded();
      this.metrics.setConsuming(false);
      if (this.stopSignal.aborted) break;
      this.interruptedAt ??= Date.now();
      this.setState('reconnecting', { reason });
      log.warn({ queue, reason }, 'consumer lost its connection; reconnecting');
      await abortableDelay(reconnectDelayMs(1, reconnectBaseMs, reconnectMaxMs), this.stopSignal);
    }
  }

  private resumed(cause: 'connection' | 'cancel'): void {
    this.counts.reconnects += 1;
    this.metrics.reconnected(cause);
  }

  private consumingNow(session: Session): void {
    const outageMs = this.interruptedAt === undefined ? undefined : Date.now() - this.interruptedAt;
    this.interruptedAt = undefined;
    this.metrics.setConsuming(true);
    const broker = displayUrl(session.url);
    this.settings.log.info({ queue: this.settings.queue, broker, outageMs }, 'consuming');
    this.setState('consuming', { broker, ...(outageMs === undefined ? {} : { outageMs }) });
  }

  /** The broker cancelled the consumer: wait for the queue (declare it, with a topology), consume again. */
  private onCancel(session: Session): void {
    if (this.stopSignal.aborted || !session.isOpen) return;
    const { queue, log } = this.settings;
    this.metrics.setConsuming(false);
    this.interruptedAt ??= Date.now();
    const reason = 'the broker cancelled the consumer (queue deleted?)';
    this.setState('reconnecting', { reason });
    log.warn({ queue }, `${reason}; consuming again once the queue exists`);
    void this.consumeAgain(session);
  }

  private async consumeAgain(session: Session): Promise<void> {
    const { queue, log, topology, reconnectBaseMs, reconnectMaxMs } = this.settings;
    const signal = session.signal;
    for (let tries = 1; !signal.aborted; tries += 1) {
      try {
        if (topology) await session.prepareQueue();
        else if (!(await session.queueExists())) throw new Error(`queue "${queue}" does not exist`);
        if (signal.aborted) return;
        await session.consume(this.hooks);
        if (this.stopSignal.aborted) {
          await session.cancel();
          return;
        }
        this.resumed('cancel');
        this.consumingNow(session);
        return;
      } catch (err: unknown) {
        // A failed declaration closes the channel, and with it the session: the connection loop takes over.
        if (!session.isOpen) return;
        const retryInMs = reconnectDelayMs(tries, reconnectBaseMs, reconnectMaxMs);
        const loud = tries === 1 || tries % 10 === 0;
        log[loud ? 'warn' : 'debug']({ queue, err: describeError(err), retryInMs }, 'waiting for the queue to exist again');
        await abortableDelay(retryInMs, signal);
      }
    }
  }

  private track(task: Promise<void>): void {
    const settled = task.catch((err: unknown) =>
      this.settings.log.error({ queue: this.settings.queue, err: describeError(err) }, 'cannot settle a message'),
    );
    this.inFlight.add(settled);
    this.metrics.addInFlight(1);
    void settled.finally(() => {
      this.inFlight.delete(settled);
      this.metrics.addInFlight(-1);
    });
  }

  private count(outcome: MessageOutcome): void {
    const key = (
      { handled: 'handled', duplicate: 'duplicates', retried: 'retried', dead_lettered: 'rejected', rejected: 'rejected' } as const
    )[outcome];
    this.counts[key] += 1;
    this.metrics.settled(outcome);
  }

  private async shutdown(): Promise<void> {
    const { queue, log, shutdownTimeoutMs } = this.settings;
    this.setState('stopping');
    this.stopController.abort();
    clearInterval(this.cleanupTimer);
    const session = this.session;
    if (session) await session.cancel();
    this.deliveries.stop();
    if (this.inFlight.size > 0) {
      const drained = await settlesWithin(Promise.allSettled([...this.inFlight]), shutdownTimeoutMs);
      if (!drained) {
        log.warn({ queue, inFlight: this.inFlight.size, shutdownTimeoutMs }, 'handlers still running at the shutdown timeout: rolled back');
        for (const client of [...this.checkedOut]) {
          this.checkedOut.delete(client);
          client.release(new Error('consumer stopped'));
        }
      }
    }
    await session?.close();
    await bounded(this.loop);
    await this.session?.close();
    this.metrics.setConsuming(false);
    this.setState('stopped');
    log.info({ queue }, 'consumer stopped');
    this.closing.resolve();
  }
}

/**
 * The idempotent consumer: exactly-once *processing* on top of at-least-once delivery.
 *
 * Deliveries are processed in batches (`batchSize`): one transaction in `pool` inserts
 * `(name, message_id)` of each into the inbox; a message whose row existed already was
 * processed before — a duplicate, acked and skipped. Each new message's handler runs in
 * the same transaction, in its own savepoint; one commit, and only then the acks. A lost
 * connection between commit and ack redelivers the messages, which then find their inbox
 * rows and are skipped.
 *
 * A handler error rolls back its savepoint (the others of the batch commit); the message
 * is republished to the retry queue with a delay (or, with `retryMode: 'in-place'` or a
 * keyed message under `ordered`, run again after it), and after `maxRetries`
 * dead-lettered. A delivery refused before the inbox (no message id, or one the database
 * cannot store) is dead-lettered at once with the reason; a database that is away makes
 * the deliveries wait, costing no attempt.
 *
 * Resolves once it consumes. It then keeps consuming until `stop()`: after a lost
 * connection it reconnects (capped, jittered backoff; the URLs in turn), after a cancel
 * by the broker it consumes again once the queue exists. Rejects with a one-line
 * `OutboxError` for bad or unknown options (`INVALID_ARGUMENT`), a missing inbox table
 * (`SCHEMA_NOT_MIGRATED`), a refusal by the broker or no broker within `startTimeoutMs`
 * (`BROKER_UNAVAILABLE`).
 */
export async function createConsumer<TPayload = unknown>(options: ConsumerOptions<TPayload>): Promise<Consumer> {
  const consumer = new IdempotentConsumer<TPayload>(consumerSettings(options));
  await consumer.start();
  return consumer;
}
