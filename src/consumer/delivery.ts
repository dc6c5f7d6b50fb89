import type { ConsumeMessage, Options } from 'amqplib';
import { admit } from './admission';
import { backoffMs, reconnectDelayMs } from '../util/backoff';
import { runBatch, type BatchItem, type BatchOutcome } from './batch';
import { databaseFault } from '../util/outage';
import { HEADER, headerText, inboxMessage, failedAttempts, type InboxTarget } from './inbox';
import type { ConsumerMetrics, MessageOutcome } from './metrics';
import { BatchScheduler, type Schedulable } from './scheduler';
import { describeError, type Session } from './session';
import type { ConsumerSettings } from './settings';
import { DeliveryVerifier } from './verify';

/** Broker headers a copy does not carry on: the consumer counts attempts itself. */
const BROKER_HEADERS = /^x-(death|first-death-|last-death-|delivery-count)/;

/** The longest error text put in a header. */
const MAX_ERROR_CHARS = 1_000;

/** One admitted delivery, from its arrival to its settlement. */
interface Delivery extends Schedulable {
  readonly session: Session;
  readonly msg: ConsumeMessage;
  readonly messageId: string;
  /** Failed attempts so far (from the header of a retried copy, then counted here). */
  failures: number;
  /** Called once it is settled: acknowledged, rejected, republished, or dropped with its channel. */
  readonly settled: () => void;
}

/**
 * What the consumer does with each delivery: admission, then the batches of the inbox
 * (batch.ts, scheduled by scheduler.ts), then the ack, the retry or the dead letter.
 * Holds no connection: each delivery comes with its session.
 */
export class Deliveries<TPayload> {
  /** Consecutive batches that could not reach the inbox (for the backoff and the log). */
  private inboxOutage = 0;
  private nextSeq = 0;
  private unsettled = 0;
  private readonly scheduler: BatchScheduler<Delivery>;
  /** The signature check (the `verify` option); undefined: none, at no cost. */
  private readonly verifier: DeliveryVerifier | undefined;

  constructor(
    private readonly settings: ConsumerSettings<TPayload>,
    private readonly target: InboxTarget<TPayload>,
    private readonly metrics: ConsumerMetrics,
    private readonly count: (outcome: MessageOutcome) => void,
  ) {
    const { batchSize, batchWaitMs, concurrency, ordered, prefetch } = settings;
    this.verifier = settings.verify ? new DeliveryVerifier(settings.verify, settings.queue, settings.log, metrics) : undefined;
    this.scheduler = new BatchScheduler<Delivery>(
      {
        batchSize,
        batchWaitMs,
        concurrency,
        ordered,
        windowFull: () => this.unsettled >= prefetch,
        isLive: (d) => (d as Delivery).session.isOpen,
        now: Date.now,
      },
      (batch) => this.runBatch(batch),
      (d) => {
        // Stopping, or its channel closed: back to the queue (the broker redelivers it either way).
        d.session.nack(d.msg, true);
        d.settled();
      },
    );
  }

  /**
   * A delivery arrived; resolves once it is settled. The one place where a delivery is
   * accepted or refused before the inbox (its signature with the `verify` option, then
   * admission.ts): a refused one is dead-lettered (or rejected) with the reason, at once.
   */
  accept(session: Session, msg: ConsumeMessage): Promise<void> {
    this.unsettled += 1;
    const unverified = this.verifier?.refusal(msg);
    if (unverified !== undefined) {
      // Logged once per cause by the verifier: a forger's flood must not flood the log.
      return this.refuse(session, msg, unverified, failedAttempts(msg), 'debug').finally(() => {
        this.unsettled -= 1;
      });
    }
    const verdict = admit(msg);
    const settledPromise = verdict.ok
      ? new Promise<void>((settled) => {
          this.scheduler.add({
            seq: (this.nextSeq += 1),
            key: verdict.key,
            notBefore: 0,
            alone: false,
            arrivedAt: Date.now(),
            session,
            msg,
            messageId: verdict.messageId,
            failures: failedAttempts(msg),
            settled,
          });
        })
      : this.refuse(session, msg, verdict.reason);
    return settledPromise.finally(() => {
      this.unsettled -= 1;
    });
  }

  /** Stops starting batches and returns the deliveries not started to the queue. */
  stop(): void {
    for (const d of this.scheduler.stop()) {
      d.session.nack(d.msg, true);
      d.settled();
    }
  }

  /** Drops the deliveries of a session that ended (the broker redelivers them). */
  sessionEnded(): void {
    this.scheduler.prune();
  }

  private async runBatch(batch: Delivery[]): Promise<void> {
    const items: BatchItem<TPayload>[] = batch.map((d) => ({
      messageId: d.messageId,
      key: d.key,
      msg: d.msg,
      message: inboxMessage<TPayload>(d.msg, d.messageId, d.failures),
    }));
    const startedAt = performance.now();
    let outcomes: BatchOutcome[];
    try {
      outcomes = await runBatch(this.target, items, this.settings.tracing, this.settings.ordered);
    } catch (err: unknown) {
      outcomes = batch.map(() => ({ kind: 'wait', error: err }));
    }
    const seconds = (performance.now() - startedAt) / 1000;
    const waiting: Delivery[] = [];
    const acks = new Map<Session, ConsumeMessage[]>();
    batch.forEach((d, index) => {
      const outcome = outcomes[index] as BatchOutcome;
      d.alone = outcome.kind === 'alone';
      switch (outcome.kind) {
        case 'handled':
        case 'duplicate':
          this.metrics.attempt(outcome.kind, seconds);
          this.count(outcome.kind);
          if (acks.has(d.session)) acks.get(d.session)?.push(d.msg);
          else acks.set(d.session, [d.msg]);
          d.settled();
          break;
        case 'failed':
          this.metrics.attempt('failed', seconds);
          void this.failed(d, outcome.error);
          break;
        case 'refused':
          void this.refuse(d.session, d.msg, `the inbox refused its message id: ${describeError(outcome.error)}`, d.failures).then(
            d.settled,
          );
          break;
        case 'wait':
          waiting.push(d);
          break;
        default:
          this.scheduler.add(d);
      }
    });
    // Not acknowledged when the connection is gone: redelivered, found in the inbox, skipped.
    for (const [session, msgs] of acks) session.ackAll(msgs);
    if (waiting.length > 0) this.inboxUnavailable(waiting, outcomes);
    else if (outcomes.some((o) => o.kind === 'handled' || o.kind === 'duplicate')) this.inboxOutage = 0;
  }

  /** Not the deliveries' fault: they keep their places, and no batch starts for a backoff. */
  private inboxUnavailable(waiting: Delivery[], outcomes: BatchOutcome[]): void {
    const { queue, log, reconnectBaseMs, reconnectMaxMs } = this.settings;
    const error = (outcomes.find((o) => o.kind === 'wait') as { error: unknown }).error;
    this.inboxOutage += 1;
    const retryInMs = reconnectDelayMs(Math.min(this.inboxOutage, 8), reconnectBaseMs, reconnectMaxMs);
    const setup = databaseFault((error as { cause?: unknown }).cause ?? error) === 'setup';
    const loud = this.inboxOutage === 1 || this.inboxOutage % 100 === 0;
    const text = setup ? 'the inbox cannot be used (fix it: the messages wait)' : 'cannot reach the inbox: the messages wait';
    log[setup ? 'error' : loud ? 'warn' : 'debug']({ queue, err: describeError(error), retryInMs, messages: waiting.length }, text);
    this.scheduler.pause(retryInMs);
    for (const d of waiting) this.scheduler.add(d);
  }

  /**
   * A failed handler: retried (through the retry queue, or in place after the delay), or
   * after `maxRetries` dead-lettered. Under `ordered` a message with a key is retried in
   * place, synchronously back in its place before its batch releases the key: the key's
   * later messages wait behind it (a copy through the retry queue would come back behind
   * them). Dead-lettered, it releases its key.
   */
  private async failed(d: Delivery, err: unknown): Promise<void> {
    const { queue, log, maxRetries, retryMode, ordered } = this.settings;
    d.failures += 1;
    if (!d.session.isOpen) return d.settled();
    if (d.failures > maxRetries) {
      await this.deadLetter(d.session, d.msg, d.messageId, d.failures, err);
      return d.settled();
    }
    // No jitter: the retry queue expires messages from its head, so a wait is at least
    // this long and at most the longest wait ahead of it in the queue.
    const { retryDelayMs: firstMs, retryMaxDelayMs: maxMs } = this.settings;
    const delayMs = backoffMs(d.failures, { firstMs, maxMs, jitter: 'none' });
    const fields = { queue, messageId: d.messageId, attempt: d.failures, retryInMs: delayMs, err: describeError(err) };
    const inPlace = retryMode === 'in-place' || (ordered && d.key !== undefined);
    if (!inPlace) {
      try {
        await this.sendToRetryQueue(d.session, d.msg, d.failures, err, delayMs);
        log.warn(fields, 'handler failed: retrying through the retry queue');
        this.count('retried');
        return d.settled();
      } catch (publishErr: unknown) {
        if (!d.session.isOpen) return d.settled();
        log.error({ ...fields, publishErr: describeError(publishErr) }, 'cannot hand the message to the retry queue: retrying in place');
      }
    } else {
      log.warn(fields, 'handler failed: retrying in place');
    }
    this.count('retried');
    d.notBefore = Date.now() + delayMs;
    this.scheduler.add(d);
  }

  /** A delivery refused (admission, or a value the inbox refused): dead-lettered at once with the reason. */
  private async refuse(
    session: Session,
    msg: ConsumeMessage,
    reason: string,
    failures = failedAttempts(msg),
    level: 'error' | 'debug' = 'error',
  ): Promise<void> {
    const { queue, log } = this.settings;
    log[level]({ queue, routingKey: msg.fields.routingKey, reason }, 'message refused: dead-lettered');
    await this.deadLetter(session, msg, undefined, failures, new Error(reason));
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

  /**
   * To the dead-letter exchange with the reason and attempts, confirmed, then acknowledged;
   * without one (or when that publish fails), rejected without requeue. `messageId`
   * undefined: a refusal (counted `rejected`), otherwise a message out of retries.
   */
  private async deadLetter(
    session: Session,
    msg: ConsumeMessage,
    messageId: string | undefined,
    failures: number,
    err: unknown,
  ): Promise<void> {
    const { queue, log, deadLetterExchange } = this.settings;
    if (messageId !== undefined) {
      log.error({ queue, messageId, attempts: failures, err: describeError(err) }, 'handler failed: message dead-lettered');
      this.count('dead_lettered');
    } else {
      this.count('rejected');
    }
    if (deadLetterExchange !== undefined && session.isOpen) {
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
