import type { OutboxMessage, ParkUntil } from '../domain/message';

/**
 * The keys of a batch that stopped. Messages go out in id order, so within a key a
 * message that does not go through stops the key for the rest of the batch: its later
 * messages wait — until a given time or for ever when `until` is set (parked), or for
 * the next claim when it is not (held).
 */
export class KeyStops {
  private readonly stops = new Map<string, ParkUntil | undefined>();

  /** Whether an earlier message of `message`'s key stopped it. Unkeyed messages never wait. */
  isStopped(message: OutboxMessage): boolean {
    return message.partitionKey !== null && this.stops.has(message.partitionKey);
  }

  /** Until when the later messages of `message`'s key wait; undefined: held for the next claim. */
  until(message: OutboxMessage): ParkUntil | undefined {
    return message.partitionKey === null ? undefined : this.stops.get(message.partitionKey);
  }

  /** Stops `message`'s key (the first stop of a key wins). */
  stop(message: OutboxMessage, until?: ParkUntil): void {
    const key = message.partitionKey;
    if (key !== null && !this.stops.has(key)) this.stops.set(key, until);
  }
}
