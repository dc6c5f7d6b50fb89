import type { PublishOutcome } from '../broker/publisher';
import type { FailureReason } from '../observability/metrics';
import type { FailedAttempt, OutboxMessage, ParkOrder, ParkUntil } from '../outbox/store';
import type { BackoffPolicy } from '../retry/backoff';

/** What a batch decided for the messages it published. */
export interface Marks {
  readonly published: string[];
  readonly failed: FailedAttempt[];
  /** Later messages of a key whose earlier message did not go through. */
  readonly park: ParkOrder[];
  readonly held: number;
}

/** The settings the decision reads. */
export interface MarkSettings {
  readonly maxAttempts: number;
  readonly unroutable: 'publish' | 'retry';
  readonly orderingOnDead: 'skip' | 'block';
}

/**
 * A command (default exchange) that no queue takes is a failure; an event nobody
 * subscribes to yet is published unless OUTBOX_UNROUTABLE=retry.
 */
export function returnCountsAsPublished(message: OutboxMessage, settings: Pick<MarkSettings, 'unroutable'>): boolean {
  return message.exchange !== '' && settings.unroutable === 'publish';
}

/**
 * Turns outcomes into marks: what is published, what failed and when it is retried.
 * Messages go out in id order, so within a key an outcome that is not "published"
 * stops the key for the rest of the batch: its later messages are not marked (they
 * are published again after it, as duplicates if the broker took them) and, when the
 * stopper waits for a retry or is dead under `block`, they are parked behind it.
 */
export function decideMarks(
messages: readonly OutboxMessage[],
outcomes: readonly PublishOutcome[],
settings: MarkSettings,
backoff: BackoffPolicy,
brokerWasBlocked: boolean,
): Marks {
  const published: string[] = [];
  const failed: FailedAttempt[] = [];
  const park: ParkOrder[] = [];
  let held = 0;
  const stoppedKeys = new Map<string, ParkUntil | undefined>();
  messages.forEach((message, index) => {
    const key = message.partitionKey;
    if (key !== null && stoppedKeys.has(key)) {
      const until = stoppedKeys.get(key);
      if (until) park.push({ id: message.id, until });
      else held += 1;
      return;
    }
    const outcome = outcomes[index] as PublishOutcome;
    let failure: { reason: FailureReason; error: string } | undefined;
    switch (outcome.kind) {
      case 'confirmed':
        published.push(message.id);
        return;
      case 'returned':
        if (returnCountsAsPublished(message, settings)) {
          published.push(message.id);
          return;
        }
        failure = {
          reason: 'unroutable',
          error:
            message.exchange === ''
              ? `returned as unroutable: no queue named "${message.routingKey}" (${outcome.replyText})`
              : `returned as unroutable by exchange "${message.exchange}" with routing key "${message.routingKey}" (${outcome.replyText})`,
        };
        break;
      case 'failed':
        // A confirm that timed out while the broker blocked publishers says nothing
        // about the message: no attempt is burnt.
        if (outcome.reason === 'timeout' && brokerWasBlocked) {
          if (key !== null) stoppedKeys.set(key, undefined);
          return;
        }
        failure = outcome;
        break;
      case 'unconfirmed':
      case 'held':
        if (key !== null) stoppedKeys.set(key, undefined);
        return;
    }
    const attempts = message.attempts + 1;
    const dead = attempts >= settings.maxAttempts;
    const retryInMs = backoff.delayMs(attempts);
    failed.push({ id: message.id, error: failure.error, retryInMs, dead });
    if (key !== null) {
      const until: ParkUntil | undefined = !dead ? { inMs: retryInMs } : settings.orderingOnDead === 'block' ? { forever: true } : undefined;
      stoppedKeys.set(key, until);
    }
  });
  return { published, failed, park, held };
}
