/**
 * The types every layer shares: a claimed message, what became of it at the broker,
 * and the orders the relay gives the store. They import nothing, so the store, the
 * broker adapter, the relay and observability all depend on this module and never on
 * one another.
 */

/** A claimed row, mapped once from snake_case into what the publisher needs. */
export interface OutboxMessage {
  readonly id: string;
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string | null;
  /** The bytes to publish: `payload::text` for JSON rows (no re-serialisation), `body` otherwise. */
  readonly content: Buffer;
  readonly contentType: string;
  /** The row's `headers` object, parsed exactly (see `HeaderValue`). */
  readonly headers: HeaderTable;
  readonly partitionKey: string | null;
  readonly correlationId: string | null;
  readonly createdAt: Date;
  /** Not published before this instant (delayed delivery). */
  readonly availableAt: Date;
  /** Failed attempts so far. */
  readonly attempts: number;
  /**
   * Not published at or after this instant (epoch ms on the relay's clock, from the time
   * left at the claim); null or absent: no limit.
   */
  readonly expiresAt?: number | null;
  /** Bytes the claim counted for it against OUTBOX_BATCH_BYTES: its body and its headers as JSON text. */
  readonly claimBytes?: number;
  /** Set when the row could not be read into a message (the other fields are then best effort): it fails unsent. */
  readonly defect?: string;
}

/**
 * A JSON value of the row's `headers`, read without loss: a JSON integer (a sign and
 * digits only; jsonb prints `1e3` as `1000`) is a `bigint`, whatever its size; any other
 * number (`1.5`, `1.0`) is a `number`, a double. Whether a value fits AMQP is the broker
 * adapter's judgement, not the reader's.
 */
export type HeaderValue = string | number | bigint | boolean | null | readonly HeaderValue[] | HeaderTable;

/** A JSON object of the headers (the top level, or nested): an AMQP field table. */
export interface HeaderTable {
  readonly [key: string]: HeaderValue;
}

/** One unpublished row of a key, as the ordering check reads it. */
export interface KeyRow {
  readonly key: string;
  readonly id: string;
  /** Due in the future (available_at or a retry not reached). */
  readonly waiting: boolean;
  /** When it is due. */
  readonly due: Date;
  readonly dead: boolean;
}

/** What the ordering check reads for one key: the last claimed id and how many were claimed. */
export interface KeyWindow {
  readonly key: string;
  readonly maxId: string;
  readonly count: number;
}

/** How long a row that must wait is parked (its next_attempt_at pushed). */
export type ParkUntil = { readonly at: Date } | { readonly inMs: number } | { readonly forever: true };

export interface ParkOrder {
  readonly id: string;
  readonly until: ParkUntil;
}

/**
 * A row that waits for a held destination: its next attempt pushed to `at` (never past
 * its expires_at), `note` (relay/held-destinations.ts) stored as its last_error. No
 * attempt is counted. With `spreadFromId`, one microsecond later per id above that one
 * (at most HOLD_SPREAD_MS): rows parked until one instant come back in id order.
 */
export interface HoldOrder {
  readonly id: string;
  readonly at: Date;
  readonly note: string;
  readonly spreadFromId?: string;
}

/**
 * Makes rows that wait for a held destination due now: at most `limit` of those whose
 * last_error is `note` and that are due after now and by `upTo` (only those of `ids`, when given).
 */
export interface ReleaseOrder {
  readonly note: string;
  readonly upTo: Date;
  readonly limit: number;
  readonly ids?: readonly string[];
}

/** A failed attempt to record: the next attempt's delay, or dead. */
export interface FailedAttempt {
  readonly id: string;
  readonly error: string;
  readonly retryInMs: number;
  readonly dead: boolean;
}

/** Counts behind `status` and the table gauges. */
export interface OutboxStats {
  readonly due: number;
  readonly delayed: number;
  /** Dead messages (never an expired one). */
  readonly dead: number;
  /** Expired messages still retained (they reached expires_at unpublished; the cleanup deletes them with the retention). */
  readonly expired: number;
  readonly lagSeconds: number;
  /** Keys held by a dead message (counted only when dead messages hold their key). */
  readonly blockedKeys: number;
}

/** When `message` expires (epoch ms on the relay's clock); Infinity when it never does. */
export function expiryMs(message: Pick<OutboxMessage, 'expiresAt'>): number {
  return message.expiresAt === undefined || message.expiresAt === null ? Infinity : message.expiresAt;
}

/**
 * Whether `message`'s expires_at has been reached at `nowMs`: the relay's one decision
 * (the claim, the publisher between two writes, the ordering), after the database's
 * (the due time, outbox/sql.ts, never past expires_at).
 */
export function hasExpired(message: Pick<OutboxMessage, 'expiresAt'>, nowMs: number): boolean {
  return expiryMs(message) <= nowMs;
}
