import type { OutboxMessage, ParkUntil } from '../domain/message';

/** How the later messages of a stopped key wait: until a time (parked), with the stopper's held-destination note, or for the next claim. */
interface Stop {
  readonly until: ParkUntil | undefined;
  readonly note: string | undefined;
}

/**
 * The keys of a batch that stopped. Messages go out in id order, so within a key a
 * message that does not go through stops the key for the rest of the batch: its later
 * messages wait — until a given time or for ever when `until` is set (parked), or for
 * the next claim when it is not (held). A key stopped by a message waiting for a held
 * destination gives its later messages that hold's note (they wait for it too).
 */
export class KeyStops {
  private readonly stops = new Map<string, Stop>();

  /** Whether an earlier message of `message`'s key stopped it. Unkeyed messages never wait. */
  isStopped(message: OutboxMessage): boolean {
    return message.partitionKey !== null && this.stops.has(message.partitionKey);
  }

  /** Until when the later messages of `message`'s key wait; undefined: held for the next claim. */
  until(message: OutboxMessage): ParkUntil | undefined {
    return message.partitionKey === null ? undefined : this.stops.get(message.partitionKey)?.until;
  }

  /** The held-destination note the later messages of `message`'s key carry, if their stopper waits for one. */
  note(message: OutboxMessage): string | undefined {
    return message.partitionKey === null ? undefined : this.stops.get(message.partitionKey)?.note;
  }

  /** Stops `message`'s key (the first stop of a key wins). */
  stop(message: OutboxMessage, until?: ParkUntil, note?: string): void {
    const key = message.partitionKey;
    if (key !== null && !this.stops.has(key)) this.stops.set(key, { until, note });
  }
}
