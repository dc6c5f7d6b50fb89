/**
 * A held destination as the outbox table shows it. The relay keeps which destinations it
 * holds in its memory only; what a row carries is its `last_error`, set to `heldNote(…)`
 * while it waits for a destination that refuses messages. That text is how the CLI (a
 * separate process) and an operator tell such a row from one waiting for a retry.
 */

/** Where a message goes, as far as a negative confirm can be blamed on it: the exchange and the routing key. */
export interface Destination {
  readonly exchange: string;
  readonly routingKey: string;
}

/**
 * The messages parked until a hold's horizon are spread over this long after it (ms), one
 * microsecond per id (60,000,000 ids), so that the due index holds them in id order and
 * a release, reading it in order, gives each key back its first messages first. Two
 * holds' horizons are further apart than this.
 */
export const HOLD_SPREAD_MS = 60_000;

/** How `last_error` starts on a row that waits for a held destination. */
export const HELD_NOTE_PREFIX = 'destination held: ';

const DESTINATION_TEXT = (d: Destination): string => `exchange ${JSON.stringify(d.exchange)} routing key ${JSON.stringify(d.routingKey)}`;

/**
 * The `last_error` of a row that waits for `destination` (its own, or the destination an
 * earlier message of its key waits for). The same text for every row of one destination,
 * so a prefix names them all.
 */
export function heldNote(destination: Destination): string {
  return (
    `${HELD_NOTE_PREFIX}${DESTINATION_TEXT(destination)} refuses messages (negative confirms: a queue full under ` +
    'x-overflow reject-publish, or without a leader); it waits, costing no attempt, until the destination takes messages again'
  );
}

/** The destination a `last_error` written by `heldNote` names; undefined for any other text. */
export function heldDestinationOf(lastError: string | null): Destination | undefined {
  if (lastError === null || !lastError.startsWith(HELD_NOTE_PREFIX)) return undefined;
  const match = /^exchange ("(?:[^"\\]|\\.)*") routing key ("(?:[^"\\]|\\.)*") /.exec(lastError.slice(HELD_NOTE_PREFIX.length));
  if (!match) return undefined;
  try {
    return { exchange: JSON.parse(match[1] as string) as string, routingKey: JSON.parse(match[2] as string) as string };
  } catch {
    return undefined;
  }
}

/** A destination as one string (a map key). */
export function destinationKey(destination: Destination): string {
  return JSON.stringify([destination.exchange, destination.routingKey]);
}
