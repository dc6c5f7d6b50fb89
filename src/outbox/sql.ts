/**
 * SQL fragments over `<schema>.messages` shared by the relay's statements and the
 * operator's: one definition of "due" and "pending" for the claim, the gauges and the CLI.
 */

/** When a row may be published: its available_at, or later its next attempt. */
export const DUE = 'GREATEST(available_at, next_attempt_at)';
/** Neither published nor dead. */
export const PENDING = 'published_at IS NULL AND dead_at IS NULL';
/** next_attempt_at of a row released from parking: its own retry time is lost, so now. */
export const UNPARKED = 'CASE WHEN attempts = 0 THEN NULL ELSE now() END';
