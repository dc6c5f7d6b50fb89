import { types, type CustomTypesConfig } from 'pg';

/**
 * What `outbox-relay inspect` tells of one message: its state, how the state follows from
 * the row, and the shapes the stores return. No SQL here (see inspect-store.ts).
 */

/**
 * A timestamptz as the operator's statements read it: a Date, or the text `infinity` /
 * `-infinity`, or PostgreSQL's text of an instant beyond JavaScript's Date range (past
 * the year 275760), which a Date cannot hold.
 */
export type Instant = Date | string;

const TIMESTAMPTZ = types.builtins.TIMESTAMPTZ;
const parseTimestamptz = types.getTypeParser(TIMESTAMPTZ, 'text') as (text: string) => Date | number;

function parseInstant(text: string): Instant {
  const parsed = parseTimestamptz(text);
  if (typeof parsed === 'number') return parsed > 0 ? 'infinity' : '-infinity';
  return Number.isNaN(parsed.getTime()) ? text : parsed;
}

/** node-postgres's parsers, with `parseInstant` for timestamptz. */
export const INSTANT_TYPES: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === TIMESTAMPTZ && format !== 'binary' ? parseInstant : types.getTypeParser(oid, format)) as CustomTypesConfig['getTypeParser'],
};

/** An instant as the CLI prints it: ISO 8601 in UTC; `infinity`, `-infinity` and instants past a Date's range as PostgreSQL writes them. */
export function instantText(instant: Instant): string {
  return typeof instant === 'string' ? instant : instant.toISOString();
}

/** A message's state as `inspect` names it. */
export type MessageState = 'pending-due' | 'pending-delayed' | 'pending-held' | 'parked' | 'published' | 'dead' | 'expired';

/** The columns that decide a state, as inspect-store.ts's statements select them. */
export interface StateFlags {
  published: boolean;
  expired: boolean;
  dead: boolean;
  due_now: boolean;
  /** Parked behind a dead message under OUTBOX_ORDERING_ON_DEAD=block (null: next_attempt_at not set). */
  parked_forever: boolean | null;
  /** Not due, with a held-destination note as its last_error (domain/held-note.ts): it waits for a destination that refuses messages. */
  held_destination: boolean;
}

/**
 * Expired before dead (an expired message carries dead_at too); a pending message is
 * parked while an earlier message holds its key (`behind`), or while it waits, parked
 * for good, for a dead message of its key to be retried or discarded; `pending-held`
 * while it waits for a destination that refuses messages.
 */
export function stateOf(flags: StateFlags, behind: boolean): MessageState {
  if (flags.published) return 'published';
  if (flags.expired) return 'expired';
  if (flags.dead) return 'dead';
  if (behind || flags.parked_forever === true) return 'parked';
  if (flags.held_destination) return 'pending-held';
  return flags.due_now ? 'pending-due' : 'pending-delayed';
}

/** One unpublished message ahead of the inspected one in its key. */
export interface AheadMessage {
  readonly messageId: string;
  readonly state: MessageState;
  readonly attempts: number;
  readonly lastError: string | null;
  /** Whether it holds the key (pending, or dead when dead messages hold their key). */
  readonly holdsKey: boolean;
}

/** The unpublished messages of a key before the inspected one. */
export interface KeyAhead {
  readonly key: string;
  readonly count: number;
  /** How many of them hold the key: while any does, the inspected message waits. */
  readonly holding: number;
  /** The first of them in insertion order. */
  readonly first: readonly AheadMessage[];
}

/** One message as `inspect` shows it: every column but the body. */
export interface InspectedMessage {
  readonly id: string;
  readonly messageId: string;
  readonly state: MessageState;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string | null;
  readonly contentType: string;
  /** The headers as PostgreSQL writes the jsonb (exact: integers of any size). */
  readonly headersText: string;
  readonly partitionKey: string | null;
  readonly correlationId: string | null;
  /** Which column holds the body, and its size in bytes. */
  readonly bodyColumn: 'payload' | 'body';
  readonly bodyBytes: number;
  readonly createdAt: Instant;
  readonly availableAt: Instant;
  readonly expiresAt: Instant | null;
  /** GREATEST(available_at, next_attempt_at): when a pending message may be claimed. */
  readonly dueAt: Instant;
  readonly attempts: number;
  readonly nextAttemptAt: Instant | null;
  readonly lastError: string | null;
  readonly publishedAt: Instant | null;
  readonly deadAt: Instant | null;
  readonly expiredAt: Instant | null;
  /** Null for a message without a partition key. */
  readonly ahead: KeyAhead | null;
}
