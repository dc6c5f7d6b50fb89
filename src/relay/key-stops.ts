import type { OutboxMessage, ParkUntil } from '../domain/message';

/** The hold a stopper waits for, which the later messages of its key wait for too: its note, and how they are spread after the horizon. */
export interface StopHold {
  readonly note: string;
  readonly spreadFromId: string;
}

/** How the later messages of a stopped key wait: until a time (parked), for the stopper's hold, or for the next claim. */
interface Stop {
  readonly until: ParkUntil | undefined;
  readonly hold: StopHold | undefined;
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

  /** The hold the later messages of `message`'s key wait for, if their stopper waits for one. */
  hold(message: OutboxMessage): StopHold | undefined {
    return message.partitionKey === null ? undefined : this.stops.get(message.partitionKey)?.hold;
  }

  /** Stops `message`'s key (the first stop of a key wins). */
  stop(message: OutboxMessage, until?: ParkUntil, hold?: StopHold): void {
    const key = message.partitionKey;
    if (key !== null && !this.stops.has(key)) this.stops.set(key, { until, hold });
  }
}
