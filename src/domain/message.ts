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
  readonly headers: Readonly<Record<string, unknown>>;
  readonly partitionKey: string | null;
  readonly correlationId: string | null;
  readonly createdAt: Date;
  /** Not published before this instant (delayed delivery). */
  readonly availableAt: Date;
  /** Failed attempts so far. */
  readonly attempts: number;
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
  readonly dead: number;
  readonly lagSeconds: number;
  /** Keys held by a dead message (counted only when dead messages hold their key). */
  readonly blockedKeys: number;
}
