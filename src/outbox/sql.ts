/**
 * SQL fragments over `<schema>.messages` shared by the relay's statements and the
 * operator's: one definition of "due" and "pending" for the claim, the gauges and the CLI.
 */

/**
 * When a row is looked at: its available_at, or later its next attempt — but never after
 * its expires_at, when it is claimed to be marked expired (GREATEST and LEAST ignore
 * NULL). The expression of messages_pending_due_idx (migration 0006): keep them equal.
 */
export const DUE = noLaterThanExpiry('GREATEST(available_at, next_attempt_at)');

/**
 * The instant `at`, but never after the row's expires_at (LEAST ignores NULL): the one
 * place a time the row is due is capped by its expiry — its due time, a failure's next
 * attempt, a hold — so that it is claimed at its expiry at the latest and found expired.
 * `row`: the table's alias with its dot in an UPDATE … FROM (`m.`).
 */
export function noLaterThanExpiry(at: string, row = ''): string {
  return `LEAST(${at}, ${row}expires_at)`;
}
/** Neither published nor ended (dead or expired): what the relay still tries to send. */
export const PENDING = 'published_at IS NULL AND dead_at IS NULL';

/**
 * The states of a row that ended unpublished. An expired row carries dead_at too (so the
 * pending indexes, and messages_dead_at_idx, see both alike) and is told apart by
 * expired_at: these fragments are the one place that spells it out.
 */
/** Ended unpublished: dead or expired. */
export const ENDED = 'dead_at IS NOT NULL';
/** Dead: failed its last attempt or was found invalid — what `dead list|retry|discard` act on. Never an expired row. */
export const DEAD = 'dead_at IS NOT NULL AND expired_at IS NULL';
/** Expired: reached its expires_at unpublished (never sent). */
export const EXPIRED = 'expired_at IS NOT NULL';
/** Its expires_at (none: never) is still ahead, by the statement's clock. */
export const UNEXPIRED = '(expires_at IS NULL OR expires_at > now())';

/**
 * Whether an unpublished row holds its partition key (its later messages wait): while
 * pending, and while dead when `deadHoldsKey` (a boolean SQL expression:
 * OUTBOX_ORDERING_ON_DEAD=block) is true; an expired row never.
 */
export function holdsKey(deadHoldsKey: string): string {
  return `(dead_at IS NULL OR (${deadHoldsKey} AND ${DEAD}))`;
}
/** next_attempt_at of a row released from parking: its own retry time is lost, so now. */
export const UNPARKED = 'CASE WHEN attempts = 0 THEN NULL ELSE now() END';

/**
 * The bounded stand-in for a partition key that messages_pending_key_idx holds (migration
 * 0006): `keyHash('partition_key')`, or of a parameter. A statement finding a key's rows
 * compares the hashes (the index) AND the keys themselves (`sameKey`), so keys that share
 * a hash never mix.
 */
export function keyHash(expression: string): string {
  return `hashtextextended(${expression}, 0)`;
}

/**
 * partition_key = `key`, written so that the planner does not count it twice with the
 * hash equality it implies: as a plain `=` it estimated a key's rows near zero and read
 * them all through a bitmap and a sort instead of the first few through the index in id
 * order (a key with a long backlog was read whole on every batch). A CASE is estimated
 * as keeping half the rows; the index scan with LIMIT then reads as many as it needs.
 */
export function sameKey(key: string): string {
  return `CASE WHEN partition_key = ${key} THEN true ELSE false END`;
}
