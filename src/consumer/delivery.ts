import type { ConsumeMessage, Options } from 'amqplib';
import { abortableDelay } from '../util/delay';
import { reconnectDelayMs, retryDelayMs } from './backoff';
import { failedAttempts, HEADER, headerText, InboxUnavailable, inboxMessage, processOnce, type InboxTarget } from './inbox';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { describeError, type Session } from './session';
import type { ConsumerSettings } from './settings';

/** Broker headers a copy does not carry on: the consumer counts attempts itself. */
const BROKER_HEADERS = /^x-(death|first-death-|last-death-|delivery-count)/;

/** The longest error text put in a header. */
const MAX_ERROR_CHARS = 1_000;

/**
 * What the consumer does with each delivery: the inbox transaction, then the ack, the
 * retry or the dead letter. Holds no connection: each delivery comes with its session.
 */
export class Deliveries<TPayload> {
  /** Consecutive failures to reach the inbox, over all deliveries (for the backoff and the log). */
  private inboxOutage = 0;

  constructor(
    private readonly settings: ConsumerSettings<TPayload>,
    private readonly target: InboxTarget<TPayload>,
    private readonly metrics: ConsumerMetrics,
    private readonly count: (outcome: MessageOutcome) => void,
  ) {}

  /**
   * One delivery, to its settlement: processed (ack), a duplicate (ack), failed (to the
   * retry queue, or held and run again in place; after `maxRetries` dead-lettered). A
   * failure before the handler ran (the database is down) is nobody's attempt: the
   * delivery waits and tries again. Once the session ended the delivery is dropped: the
   * broker redelivers it on the next connection, where the inbox recognises it if it
   * was processed.
   */
  async deliver(session: Session, msg: ConsumeMessage): Promise<void> {
    const { queue, log, maxRetries, retryMode, reconnectBaseMs, reconnectMaxMs } = this.settings;
    const messageId = msg.properties.messageId as unknown;
    if (typeof messageId !== 'string' || messageId === '') {
      log.error({ queue, routingKey: msg.fields.routingKey }, 'message without a message-id cannot be deduplicated: rejected');
      this.count('rejected');
      session.nack(msg, false);
      return;
    }
    const waitSignal = session.signal;
    const proceed = (): boolean => !waitSignal.aborted;
    let failures = failedAttempts(msg);
    for (;;) {
      // During a shutdown a delivery not started goes back to the queue.
      if (!proceed()) {
        session.nack(msg, true);
        return;
      }
      const startedAt = performance.now();
      let outcome: 'handled' | 'duplicate' | 'skipped';
      try {
        const message = inboxMessage<TPayload>(msg, messageId, failures);
        const attempt = (): Promise<'handled' | 'duplicate' | 'skipped'> => processOnce(this.target, message, proceed);
        outcome = await (this.settings.tracing?.around(msg, message, attempt) ?? attempt());
        this.inboxOutage = 0;
      } catch (err: unknown) {
        if (err instanceof InboxUnavailable) {
          this.inboxOutage += 1;
          const retryInMs = reconnectDelayMs(Math.min(this.inboxOutage, 8), reconnectBaseMs, reconnectMaxMs);
          const loud = this.inboxOutage === 1 || this.inboxOutage % 100 === 0;
          log[loud ? 'warn' : 'debug']({ queue, err: describeError(err), retryInMs }, 'cannot reach the inbox: the message waits');
          await abortableDelay(retryInMs, waitSignal);
          continue;
        }
        this.metrics.attempt('failed', (performance.now() - startedAt) / 1000);
        failures += 1;
        if (!session.isOpen) return;
        if (failures > maxRetries) {
          await this.deadLetter(session, msg, messageId, failures, err);
          return;
        }
        const delayMs = retryDelayMs(failures, this.settings.retryDelayMs, this.settings.retryMaxDelayMs);
        const fields = { queue, messageId, attempt: failures, retryInMs: delayMs, err: describeError(err) };
        if (retryMode === 'delay-queue') {
          try {
            await this.sendToRetryQueue(session, msg, failures, err, delayMs);
            log.warn(fields, 'handler failed: retrying through the retry queue');
            this.count('retried');
            return;
          } catch (publishErr: unknown) {
            if (!session.isOpen) return;
            log.error(
              { ...fields, publishErr: describeError(publishErr) },
              'cannot hand the message to the retry queue: retrying in place',
            );
          }
        } else {
          log.warn(fields, 'handler failed: retrying in place');
        }
        this.count('retried');
        await abortableDelay(delayMs, waitSignal);
        continue;
      }
      if (outcome === 'skipped') {
        session.nack(msg, true);
        return;
      }
      this.metrics.attempt(outcome, (performance.now() - startedAt) / 1000);
      this.count(outcome);
      // Not acknowledged when the connection is gone: redelivered, found in the inbox, skipped.
      session.ack(msg);
      return;
    }
  }

  /** The retry: a copy to the retry queue with its headers, confirmed, then the original acknowledged. */
  private async sendToRetryQueue(session: Session, msg: ConsumeMessage, failures: number, err: unknown, delayMs: number): Promise<void> {
    await session.ensureRetryQueue();
    await session.publishConfirmed('', this.settings.retryQueue, msg.content, {
      ...copyProperties(msg, failures, err),
      expiration: String(delayMs),
    });
    // Should the ack be lost with the connection, the original comes back too: two
    // copies of one message id, which the inbox processes once.
    session.ack(msg);
  }

  private async deadLetter(session: Session, msg: ConsumeMessage, messageId: string, failures: number, err: unknown): Promise<void> {
    const { queue, log, deadLetterExchange } = this.settings;
    log.error({ queue, messageId, attempts: failures, err: describeError(err) }, 'handler failed: message dead-lettered');
    this.count('dead_lettered');
    if (deadLetterExchange !== undefined) {
      try {
        const routingKey = headerText(msg, HEADER.routingKey) ?? msg.fields.routingKey;
        await session.publishConfirmed(deadLetterExchange, routingKey, msg.content, copyProperties(msg, failures, err));
        session.ack(msg);
        return;
      } catch (publishErr: unknown) {
        if (!session.isOpen) return;
        log.error(
          { queue, messageId, err: describeError(publishErr) },
          'cannot publish to the dead-letter exchange: rejecting the message',
        );
      }
    }
    // Without requeue: to the queue's own dead-letter exchange, if it has one.
    session.nack(msg, false);
  }
}

/** The properties of a retried or dead-lettered copy: the original's, with the consumer's headers. */
export function copyProperties(msg: ConsumeMessage, failures: number, err: unknown): Options.Publish {
  const p = msg.properties;
  const headers: Record<string, unknown> = {};
  for (const [name, value] of Object.entries((p.headers ?? {}) as Record<string, unknown>))
    if (!BROKER_HEADERS.test(name)) headers[name] = value;
  headers[HEADER.attempts] = failures;
  headers[HEADER.error] = describeError(err).slice(0, MAX_ERROR_CHARS);
  headers[HEADER.exchange] = headerText(msg, HEADER.exchange) ?? msg.fields.exchange;
  headers[HEADER.routingKey] = headerText(msg, HEADER.routingKey) ?? msg.fields.routingKey;
  const copy: Options.Publish = { headers, persistent: p.deliveryMode !== 1 };
  // userId is left out: the broker checks it against the publishing connection's user.
  const optional = {
    messageId: p.messageId as unknown,
    correlationId: p.correlationId as unknown,
    type: p.type as unknown,
    contentType: p.contentType as unknown,
    contentEncoding: p.contentEncoding as unknown,
    timestamp: p.timestamp as unknown,
    appId: p.appId as unknown,
    priority: p.priority as unknown,
    replyTo: p.replyTo as unknown,
  };
  for (const [name, value] of Object.entries(optional)) if (value !== undefined) (copy as Record<string, unknown>)[name] = value;
  return copy;
}
