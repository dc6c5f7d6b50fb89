import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import type { Pool, PoolClient } from 'pg';
import { qualified } from '../db/sql';
import { inTransaction } from '../db/transaction';
import { errorMessage, OutboxError } from '../errors';
import { abortableDelay } from '../util/delay';

/** What a handler receives: the delivery, decoded. */
export interface InboxMessage<TPayload = unknown> {
  /** AMQP `message-id`: the idempotency key. */
  readonly messageId: string;
  /** AMQP `type`, e.g. `order.created`. */
  readonly type: string | undefined;
  /** The body parsed as JSON when the content type is JSON; otherwise the raw bytes. */
  readonly payload: TPayload;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly correlationId: string | undefined;
  readonly routingKey: string;
  readonly exchange: string;
  /** The raw amqplib delivery. */
  readonly raw: ConsumeMessage;
}

/**
 * Processes one message inside `tx`, the consumer's open database transaction. Throw
 * to roll it back; the message is retried, then rejected.
 */
export type MessageHandler<TPayload = unknown> = (message: InboxMessage<TPayload>, tx: PoolClient) => Promise<void>;

/** Logging hooks; pass a pino logger or leave out. */
export interface ConsumerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface ConsumerOptions<TPayload = unknown> {
  /** RabbitMQ URL. */
  readonly amqpUrl: string;
  /** Queue to consume (must exist; declare it and its bindings and dead-letter exchange yourself). */
  readonly queue: string;
  /** The consuming service's database, holding the inbox table (`outbox-relay migrate --inbox`). */
  readonly pool: Pool;
  /** Name recorded with each processed message id. Default: the queue name. */
  readonly name?: string;
  /** Schema of the inbox table. Default `outbox`. */
  readonly schema?: string;
  /** Unacknowledged messages in flight, processed concurrently. Default 10. */
  readonly prefetch?: number;
  /** Attempts after the first failure before the message is rejected (dead-lettered). Default 3. */
  readonly maxRetries?: number;
  /** Delay before the first retry (ms), doubling per retry. Default 200. */
  readonly retryDelayMs?: number;
  /** How long processed message ids are remembered (ms). Default 7 days. */
  readonly inboxRetentionMs?: number;
  /** How often old inbox rows are deleted (ms). Default 1 hour. */
  readonly inboxCleanupIntervalMs?: number;
  readonly handler: MessageHandler<TPayload>;
  readonly log?: ConsumerLogger;
}

/** A running consumer. */
export interface Consumer {
  /** Messages handled (committed and acked), skipped as duplicates, and rejected. */
  readonly stats: { readonly handled: number; readonly duplicates: number; readonly rejected: number };
  /**
   * Resolves when the AMQP connection is gone: with the error on a lost connection (the
   * consumer does not reconnect by itself: restart it, or let the process exit), with
   * undefined after `stop()`.
   */
  readonly closed: Promise<Error | undefined>;
  /** Stops consuming, waits for in-flight messages, closes the AMQP connection. Idempotent. */
  stop(): Promise<void>;
}

const silent: ConsumerLogger = { info: () => undefined, warn: () => undefined, error: () => undefined };

function decode(msg: ConsumeMessage): unknown {
  const type = msg.properties.contentType as string | undefined;
  if (type === undefined || /^application\/([\w.+-]*\+)?json\b/.test(type)) {
    try {
      return JSON.parse(msg.content.toString('utf8'));
    } catch {
      return msg.content;
    }
  }
  return msg.content;
}

/**
 * The idempotent consumer: exactly-once *processing* on top of at-least-once delivery.
 *
 * For each delivery: open a transaction in `pool`; insert `(name, message_id)` into the
 * inbox; if that row already exists the message was processed before — commit nothing,
 * ack, skip. Otherwise run the handler in the same transaction, commit, and only then
 * ack. A crash between commit and ack redelivers the message, which then finds its
 * inbox row and is skipped. Concurrent duplicates serialise on the inbox's primary key.
 *
 * A handler error rolls back and is retried in place (`maxRetries` times, with
 * doubling delay); then the message is rejected without requeue, so a queue with a
 * dead-letter exchange hands it there. A delivery without a message id cannot be
 * deduplicated and is rejected at once.
 */
export async function createConsumer<TPayload = unknown>(options: ConsumerOptions<TPayload>): Promise<Consumer> {
  const name = options.name ?? options.queue;
  const inbox = qualified(options.schema ?? 'outbox', 'inbox');
  const maxRetries = options.maxRetries ?? 3;
  const retryDelayMs = options.retryDelayMs ?? 200;
  const log = options.log ?? silent;
  const stats = { handled: 0, duplicates: 0, rejected: 0 };
  const controller = new AbortController();
  const inFlight = new Set<Promise<void>>();

  const model: ChannelModel = await connect(options.amqpUrl);
  let connectionError: Error | undefined;
  model.on('error', (err: Error) => {
    connectionError = err;
    log.warn({ err: errorMessage(err) }, 'consumer connection error');
  });
  const closed = new Promise<Error | undefined>((resolve) => model.once('close', () => resolve(connectionError)));
  const channel: Channel = await model.createChannel();
  channel.on('error', (err: Error) => log.warn({ err: errorMessage(err) }, 'consumer channel error'));
  await channel.prefetch(options.prefetch ?? 10);

  async function processOnce(msg: ConsumeMessage, messageId: string): Promise<'handled' | 'duplicate'> {
    const client = await options.pool.connect();
    let broken: Error | undefined;
    // The connection may drop while the handler runs no query: keep that from crashing
    // the process; the next query fails and the message is retried.
    const onError = (err: Error): void => {
      broken = err;
    };
    client.on('error', onError);
    try {
      // A duplicate's INSERT did nothing: committing that empty transaction is the same as rolling it back.
      return await inTransaction(client, async () => {
        const { rowCount } = await client.query(`INSERT INTO ${inbox} (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
          name,
          messageId,
        ]);
        if (rowCount === 0) return 'duplicate';
        await options.handler(
          {
            messageId,
            type: msg.properties.type as string | undefined,
            payload: decode(msg) as TPayload,
            headers: (msg.properties.headers ?? {}) as Record<string, unknown>,
            correlationId: msg.properties.correlationId as string | undefined,
            routingKey: msg.fields.routingKey,
            exchange: msg.fields.exchange,
            raw: msg,
          },
          client,
        );
        return 'handled';
      });
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  async function onMessage(msg: ConsumeMessage): Promise<void> {
    const messageId = msg.properties.messageId as unknown;
    if (typeof messageId !== 'string' || messageId === '') {
      log.error(
        { queue: options.queue, routingKey: msg.fields.routingKey },
        'message without a message-id cannot be deduplicated: rejected',
      );
      stats.rejected += 1;
      channel.nack(msg, false, false);
      return;
    }
    for (let attempt = 0; ; attempt += 1) {
      try {
        const result = await processOnce(msg, messageId);
        if (result === 'duplicate') stats.duplicates += 1;
        else stats.handled += 1;
        channel.ack(msg);
        return;
      } catch (err: unknown) {
        if (attempt >= maxRetries || controller.signal.aborted) {
          log.error({ messageId, queue: options.queue, attempts: attempt + 1, err: errorMessage(err) }, 'handler failed: message rejected');
          stats.rejected += 1;
          // During shutdown the message goes back to the queue instead of to the DLX.
          channel.nack(msg, false, controller.signal.aborted && attempt < maxRetries);
          return;
        }
        log.warn({ messageId, queue: options.queue, attempt: attempt + 1, err: errorMessage(err) }, 'handler failed: retrying');
        await abortableDelay(retryDelayMs * 2 ** attempt, controller.signal);
      }
    }
  }

  const { consumerTag } = await channel.consume(options.queue, (msg) => {
    if (msg === null) {
      log.warn({ queue: options.queue }, 'the broker cancelled the consumer (queue deleted?)');
      return;
    }
    const task = onMessage(msg).catch((err: unknown) => log.error({ err: errorMessage(err) }, 'cannot settle message'));
    inFlight.add(task);
    void task.finally(() => inFlight.delete(task));
  });

  const retentionMs = options.inboxRetentionMs ?? 7 * 86_400_000;
  const cleanupTimer = setInterval(() => {
    options.pool
      .query(
        `DELETE FROM ${inbox} WHERE ctid IN (SELECT ctid FROM ${inbox} WHERE` +
          ` processed_at < now() - $1 * interval '1 millisecond' LIMIT 10000)`,
        [retentionMs],
      )
      .catch((err: unknown) => log.warn({ err: errorMessage(err) }, 'inbox cleanup failed'));
  }, options.inboxCleanupIntervalMs ?? 3_600_000);
  cleanupTimer.unref();

  let stopping: Promise<void> | undefined;
  return {
    stats,
    closed,
    stop(): Promise<void> {
      stopping ??= (async () => {
        clearInterval(cleanupTimer);
        await channel.cancel(consumerTag).catch(() => undefined);
        controller.abort();
        await Promise.all([...inFlight]);
        await model.close().catch(() => undefined);
      })();
      return stopping;
    },
  };
}

/** Deletes inbox rows older than `retentionMs`; returns how many. */
export async function cleanupInbox(pool: Pool, retentionMs: number, schema = 'outbox'): Promise<number> {
  if (!Number.isFinite(retentionMs) || retentionMs < 0) throw new OutboxError('INVALID_ARGUMENT', 'cleanupInbox: retentionMs must be ≥ 0');
  const { rowCount } = await pool.query(
    `DELETE FROM ${qualified(schema, 'inbox')} WHERE processed_at < now() - $1 * interval '1 millisecond'`,
    [retentionMs],
  );
  return rowCount ?? 0;
}
