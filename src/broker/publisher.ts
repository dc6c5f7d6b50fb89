import type { Options } from 'amqplib';
import { hasExpired, type OutboxMessage } from '../domain/message';
import { invalidMessage, type PublishOutcome } from '../domain/outcome';
import { expirationOf } from './amqp-limits';
import { closeVerdict } from './close-reason';
import { encodeHeaders, publishedHeaders } from './headers';
import type { PublishChannel } from './publish-channel';
import type { MessageSigner, PublishIdentity } from './signer';
import { SIGNATURE_HEADER } from '../domain/signature';
import { deferred } from '../util/deferred';

export interface PublishOptions {
  readonly appId: string;
  readonly timeoutMs: number;
  /** Signs each message (OUTBOX_SIGNING_KEY_FILE); absent: unsigned, at no cost. */
  readonly signer?: MessageSigner;
  /** The AMQP `user-id` of each message (OUTBOX_PUBLISH_USER_ID): the connection's user, which the broker checks. */
  readonly userId?: string;
  /** Aborting resolves every message still waiting as `unconfirmed` (shutdown). */
  readonly signal?: AbortSignal;
  /** Told of each message as its outcome is known: its confirm, its failure, or the end of waiting. */
  readonly onSettled?: (message: OutboxMessage) => void;
  /** Told of each message right after its publish was written (OUTBOX_STAGE_TIMINGS). */
  readonly onWritten?: (message: OutboxMessage) => void;
}

/**
 * The AMQP properties of a published message (see the README's "The SQL contract").
 * The headers are encoded exactly (`encodeHeaders`); headers that cannot be throw,
 * naming the header and the limit (the broker adapter's preflight fails such a message
 * before it gets here). With a signer, `x-outbox-signature` is computed from these very
 * properties (the same timestamp) and the body as sent.
 */
export function publishProperties(
  message: OutboxMessage,
  identity: PublishIdentity,
  nowMs = Date.now(),
  /** Computed ahead (`MessageSigner.signAsync`); absent with a signer: signed here. */
  signature?: string,
): Options.Publish {
  const { appId, signer, userId } = identity;
  const timestamp = amqpTimestamp(message);
  const published = publishedHeaders(message);
  if (signer) (published as Record<string, unknown>)[SIGNATURE_HEADER] = signature ?? signer.sign(message, timestamp);
  const headers = encodeHeaders(published);
  if (!headers.ok) throw new Error(headers.error);
  return {
    expiration: expirationOf(message.expiresAt, nowMs),
    persistent: true,
    mandatory: true,
    messageId: message.messageId,
    type: message.messageType ?? undefined,
    contentType: message.contentType,
    correlationId: message.correlationId ?? undefined,
    timestamp,
    appId,
    userId,
    headers: headers.table,
  };
}

/** The AMQP `timestamp` of a message: its creation, in whole seconds (what is sent, and signed). */
export function amqpTimestamp(message: OutboxMessage): number {
  return Math.floor(message.createdAt.getTime() / 1000);
}

/**
 * Publishes a batch on a confirm channel, pipelined: every message is written before
 * any confirm is awaited (the socket's 'drain' is honoured), then the confirms are
 * collected. Never throws: each message gets an outcome. After `timeoutMs` the
 * messages still waiting fail with `timeout` and the channel is discarded, so a late
 * confirm cannot be mistaken for a newer message's.
 */
export async function publishBatch(
  target: PublishChannel,
  messages: readonly OutboxMessage[],
  options: PublishOptions,
): Promise<PublishOutcome[]> {
  const outcomes: (PublishOutcome | undefined)[] = new Array(messages.length).fill(undefined);
  let waiting = 0;
  const allSettled = deferred();
  const settle = (index: number, outcome: PublishOutcome): void => {
    if (outcomes[index] !== undefined) return;
    outcomes[index] = outcome;
    options.onSettled?.(messages[index] as OutboxMessage);
    waiting -= 1;
    if (waiting === 0) allSettled.resolve();
  };
  const settleAllWaiting = (make: (message: OutboxMessage) => PublishOutcome): void => {
    messages.forEach((message, index) => {
      if (outcomes[index] === undefined) settle(index, make(message));
    });
  };
  const afterClose = (message: OutboxMessage): PublishOutcome => {
    const verdict = closeVerdict(target.closeReason, message);
    if (verdict) return { kind: 'failed', ...verdict };
    return { kind: 'unconfirmed', error: target.closeReason ?? 'channel closed' };
  };

  waiting = messages.length;
  if (waiting === 0) return [];
  // With a key, every signature of the batch is started at once on the thread pool; the
  // writes below wait for each in turn (by then it is usually done). Without one, nothing.
  const signatures = options.signer ? signAhead(options.signer, messages) : undefined;
  const stopWaitingOnClose = target.onClose(() => settleAllWaiting(afterClose));
  const timer = setTimeout(() => {
    settleAllWaiting(() => ({ kind: 'failed', reason: 'timeout', error: `no broker confirm within ${options.timeoutMs} ms` }));
    target.discard();
  }, options.timeoutMs);
  const onAbort = (): void => settleAllWaiting(() => ({ kind: 'unconfirmed', error: 'shutting down' }));
  options.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    for (let index = 0; index < messages.length; index += 1) {
      if (target.closed || options.signal?.aborted) break;
      const message = messages[index] as OutboxMessage;
      let signature: string | undefined;
      if (signatures) {
        const signed = await signatures[index];
        if (signed instanceof Error) {
          settle(index, { kind: 'failed', ...invalidMessage(`cannot sign the message: ${signed.message}`) });
          continue;
        }
        signature = signed;
        if (target.closed || options.signal?.aborted) break;
      }
      const nowMs = Date.now();
      if (hasExpired(message, nowMs)) {
        settle(index, { kind: 'expired' }); // reached while the earlier ones were written: not sent
        continue;
      }
      let writable: boolean;
      try {
        writable = target.channel.publish(
          message.exchange,
          message.routingKey,
          message.content,
          publishProperties(message, options, nowMs, signature),
          (err: unknown) => {
            if (err === null || err === undefined) {
              const returned = target.returned.get(message.messageId);
              if (returned) {
                target.returned.delete(message.messageId);
                settle(index, { kind: 'returned', replyText: returned.replyText });
              } else {
                settle(index, { kind: 'confirmed' });
              }
            } else if (err instanceof Error && err.message === 'message nacked') {
              settle(index, { kind: 'refused' });
            } else {
              settle(index, afterClose(message));
            }
          },
        );
      } catch (err: unknown) {
        if (target.closed) break;
        // amqplib refuses to encode it (e.g. headers over 64 KiB): this message only.
        settle(index, { kind: 'failed', ...invalidMessage(`cannot encode the message: ${(err as Error).message}`) });
        continue;
      }
      options.onWritten?.(message);
      if (!writable) await waitForDrain(target);
    }
    if (target.closed || options.signal?.aborted)
      settleAllWaiting(target.closed ? afterClose : () => ({ kind: 'unconfirmed', error: 'shutting down' }));
    await allSettled.promise;
  } finally {
    clearTimeout(timer);
    stopWaitingOnClose();
    options.signal?.removeEventListener('abort', onAbort);
  }
  return outcomes as PublishOutcome[];
}

function signAhead(signer: MessageSigner, messages: readonly OutboxMessage[]): Promise<string | Error>[] {
  return messages.map((message) => signer.signAsync(message, amqpTimestamp(message)));
}

function waitForDrain(target: PublishChannel): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      target.channel.removeListener('drain', done);
      stop();
      resolve();
    };
    const stop = target.onClose(done);
    target.channel.once('drain', done);
  });
}
