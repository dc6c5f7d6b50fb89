import { types, type ClientBase, type CustomTypesConfig, type Pool } from 'pg';
import { qualified } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import { heldDestinationOf, HELD_NOTE_PREFIX, type Destination } from '../domain/held-note';
import type { OutboxStats } from '../domain/message';
import { stateOf, type InspectedMessage, type Instant, type KeyAhead, type StateFlags } from './inspection';
import { dueHeadsCte, HEAD_COLUMNS, LAG_SECONDS } from './due-head';
import { DEAD, DUE, ENDED, EXPIRED, holdsKey, keyHash, PENDING, sameKey, UNPARKED } from './sql';

const TIMESTAMPTZ = types.builtins.TIMESTAMPTZ;
const parseTimestamptz = types.getTypeParser(TIMESTAMPTZ, 'text') as (text: string) => Date | number;

function parseInstant(text: string): Instant {
  const parsed = parseTimestamptz(text);
  if (typeof parsed === 'number') return parsed > 0 ? 'infinity' : '-infinity';
  return Number.isNaN(parsed.getTime()) ? text : parsed;
}

/** node-postgres's parsers, with `parseInstant` for timestamptz. */
const INSTANT_TYPES: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
    oid === TIMESTAMPTZ && format !== 'binary' ? parseInstant : types.getTypeParser(oid, format)) as CustomTypesConfig['getTypeParser'],
};

/** Up to this many rows (by the planner's estimate) `status` counts the published messages exactly. */
export const EXACT_PUBLISHED_COUNT_ROWS = 100_000;

/**
 * The published messages `status` reports: counted, or for a larger table the planner's
 * estimate of all its rows (from which the exact pending and dead counts are subtracted).
 */
export type PublishedCount =
  { readonly count: number; readonly estimatedRows: null } | { readonly count: null; readonly estimatedRows: number };

/** The pending message `status` shows as the oldest. */
export interface PendingHead {
  readonly messageId: string;
  readonly createdAt: Instant;
  /** When it is due: GREATEST(available_at, next_attempt_at). */
  readonly dueAt: Instant;
}

/** A dead message as `dead list` shows it. */
export interface DeadMessage {
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string | null;
  readonly partitionKey: string | null;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly createdAt: Date;
  readonly deadAt: Date;
}

/** The columns that decide a state (`stateOf`), as `inspect`'s statements select them. */
const STATE_FLAGS = `published_at IS NOT NULL AS published, ${EXPIRED} AS expired, ${ENDED} AS dead,
       ${DUE} <= now() AS due_now, next_attempt_at = 'infinity' AS parked_forever,
       coalesce(${DUE} > now() AND starts_with(last_error, '${HELD_NOTE_PREFIX}'), false) AS held_destination`;

/** A destination the pending rows wait for (their last_error says it refuses messages), as `status` shows it. */
export interface HeldWaiting extends Destination {
  /** Pending rows that wait for it, not due (their own, and later messages of their keys). */
  readonly messages: number;
}

interface InspectRow extends StateFlags {
  id: string;
  message_id: string;
  exchange: string;
  routing_key: string;
  message_type: string | null;
  content_type: string;
  headers_text: string;
  partition_key: string | null;
  correlation_id: string | null;
  created_at: Instant;
  available_at: Instant;
  expires_at: Instant | null;
  attempts: number;
  next_attempt_at: Instant | null;
  last_error: string | null;
  published_at: Instant | null;
  dead_at: Instant | null;
  expired_at: Instant | null;
  due_at: Instant;
  body_column: 'payload' | 'body';
  body_bytes: string;
}

interface AheadRow extends StateFlags {
  message_id: string;
  attempts: number;
  last_error: string | null;
  holds: boolean;
  behind: boolean;
}

/** What `dead list` narrows the dead messages to; each part given must match (AND). */
export interface DeadFilter {
  readonly messageType?: string;
  readonly exchange?: string;
  readonly partitionKey?: string;
  readonly routingKey?: string;
  /** dead_at at or after this instant, as PostgreSQL reads a timestamptz (see `instantProblem`). */
  readonly since?: string;
}

/**
 * The statements of the CLI and the gauges against `<schema>.messages`: counts, dead
 * messages, operator actions. None runs on the relay's hot path.
 */
export class OperatorStore {
  private readonly table: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
  }

  /**
   * Pending counts, dead and expired counts and lag, exact. Every part is an index range scan of a
   * partial index; the pending counts are index-only scans (messages_pending_due_idx
   * carries the columns of its expression), reading the heap only for pages that changed
   * since the last vacuum: about 0.07 s for 1,000,000 pending rows on the 2-core test
   * machine (1 s when each row's page had to be read). Callers still keep it off the
   * scrape path and refresh it sparingly (see StatsPoller); `lag()` alone is two index
   * probes.
   */
  async stats(pool: Pool, deadHoldsKey = false): Promise<OutboxStats> {
    // Dead and expired rows both carry dead_at: one range scan of messages_dead_at_idx
    // counts both, told apart by expired_at. An expired message never holds its key.
    const sql = `WITH ${this.dueHeads()},
       settled AS (
         SELECT count(*) FILTER (WHERE NOT (${EXPIRED})) AS dead,
                count(*) FILTER (WHERE ${EXPIRED}) AS expired
           FROM ${this.table} WHERE ${ENDED})
       SELECT (SELECT count(*) FROM ${this.table} WHERE ${PENDING} AND ${DUE} <= now()) AS due,
              (SELECT count(*) FROM ${this.table} WHERE ${PENDING} AND ${DUE} > now()) AS delayed,
              (SELECT dead FROM settled) AS dead,
              (SELECT expired FROM settled) AS expired,
              ${LAG_SECONDS} AS lag_seconds,
              (SELECT count(DISTINCT partition_key) FROM ${this.table}
                WHERE $1::boolean AND ${DEAD} AND partition_key IS NOT NULL) AS blocked_keys`;
    // No parallel workers: with 2 they made the count of 1,000,000 pending rows only a
    // little faster (0.48–0.59 s against 0.65–0.67 s) with three processes busy instead of
    // one; with one backend the time the counts take is also the CPU they take.
    const { rows } = await withPoolTransaction(
      pool,
      (client) =>
        client.query<{ due: string; delayed: string; dead: string; expired: string; lag_seconds: number | null; blocked_keys: string }>(
          sql,
          [deadHoldsKey],
        ),
      { local: { max_parallel_workers_per_gather: 0 } },
    );
    const row = rows[0];
    return {
      due: Number(row?.due ?? 0),
      delayed: Number(row?.delayed ?? 0),
      dead: Number(row?.dead ?? 0),
      expired: Number(row?.expired ?? 0),
      lagSeconds: Math.max(0, row?.lag_seconds ?? 0),
      blockedKeys: Number(row?.blocked_keys ?? 0),
    };
  }

  /**
   * The lag alone, cheap enough for every second: seconds since the oldest due message
   * became due (see `dueHeads`), or null when no message is due. Two index probes of
   * messages_pending_due_idx, however large the backlog.
   */
  async lag(db: Pool | ClientBase): Promise<number | null> {
    const { rows } = await db.query<{ lag_seconds: number | null }>(`WITH ${this.dueHeads()} SELECT ${HEAD_COLUMNS}`);
    return rows[0]?.lag_seconds ?? null;
  }

  /**
   * Two CTEs, the heads of the due rows in messages_pending_due_idx: `finite_head`, the
   * row with the oldest finite due instant (one probe), and `forever_head`, rows due
   * since '-infinity' (available_at '-infinity', no retry yet). Those have no instant at
   * which they became due: the lag counts them from their created_at, so such a row
   * neither makes the lag infinite nor hides an older overdue row. Their index entries
   * are equal, so finding the oldest created_at means reading the rows: at most
   * FOREVER_DUE_SCAN_LIMIT of them (the first in index order), exact below that. A
   * 'infinity' due (available_at 'infinity', or parked behind a dead message) is
   * delayed and never part of the lag.
   */
  private dueHeads(): string {
    return dueHeadsCte(this.table);
  }

  /**
   * Published count and the oldest pending message, for `status`: the due message the
   * lag is measured from (see `dueHeads`), or when none is due the next delayed one.
   * Timestamps beyond JavaScript's Date range come as text (see `Instant`).
   */
  async statusDetails(db: Pool | ClientBase): Promise<{ published: PublishedCount; oldestPending: PendingHead | null }> {
    // No index serves published_at (each entry would cost every publish): up to
    // EXACT_PUBLISHED_COUNT_ROWS rows the table is counted, beyond that the planner's
    // estimate of its rows stands in for the count, and the caller subtracts the exact
    // pending and dead counts from it.
    const published = await db.query<{ exact: string | null; rows: string | null }>(
      `SELECT CASE WHEN est.rows IS NULL OR est.rows <= $1
                   THEN (SELECT count(*) FROM ${this.table} WHERE published_at IS NOT NULL) END AS exact,
              round(est.rows)::bigint AS rows
         FROM (SELECT CASE WHEN c.relpages > 0 AND c.reltuples >= 0
                           THEN c.reltuples / c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::int)
                      END AS rows
                 FROM pg_class c WHERE c.oid = $2::regclass) AS est`,
      [EXACT_PUBLISHED_COUNT_ROWS, this.table],
    );
    const oldest = await db.query<{ message_id: string; created_at: Instant; due_at: Instant }>({
      text: `WITH ${this.dueHeads()}
             SELECT message_id, created_at, due_at FROM (
                 (SELECT message_id, created_at, due_at, due_at AS since, 0 AS rank FROM finite_head)
               UNION ALL
                 (SELECT message_id, created_at, due_at, created_at, 0 FROM forever_head ORDER BY created_at LIMIT 1)
               UNION ALL
                 (SELECT message_id, created_at, ${DUE}, ${DUE}, 1 FROM ${this.table}
                   WHERE ${PENDING} AND ${DUE} > now() ORDER BY ${DUE} LIMIT 1)
             ) AS heads
             ORDER BY rank, since LIMIT 1`,
      types: INSTANT_TYPES,
    });
    const row = oldest.rows[0];
    return {
      published:
        published.rows[0]?.exact != null
          ? { count: Number(published.rows[0].exact), estimatedRows: null }
          : { count: null, estimatedRows: Number(published.rows[0]?.rows ?? 0) },
      oldestPending: row ? { messageId: row.message_id, createdAt: row.created_at, dueAt: row.due_at } : null,
    };
  }

  /**
   * Dead messages, newest first, narrowed by `filter` (its parts combine). Expired
   * messages also carry dead_at but are not dead: never listed. A range scan of
   * messages_dead_at_idx from the newest, the filters checked on each row.
   */
  async listDead(db: Pool | ClientBase, filter: DeadFilter, limit: number): Promise<DeadMessage[]> {
    const { rows } = await db.query<{
      message_id: string;
      exchange: string;
      routing_key: string;
      message_type: string | null;
      partition_key: string | null;
      attempts: number;
      last_error: string | null;
      created_at: Date;
      dead_at: Date;
    }>(
      `SELECT message_id, exchange, routing_key, message_type, partition_key, attempts, last_error, created_at, dead_at
         FROM ${this.table}
        WHERE ${DEAD}
          AND ($2::text IS NULL OR message_type = $2)
          AND ($3::text IS NULL OR exchange = $3)
          AND ($4::text IS NULL OR partition_key = $4)
          AND ($5::text IS NULL OR routing_key = $5)
          AND ($6::timestamptz IS NULL OR dead_at >= $6::timestamptz)
        ORDER BY dead_at DESC, id DESC LIMIT $1`,
      [
        limit,
        filter.messageType ?? null,
        filter.exchange ?? null,
        filter.partitionKey ?? null,
        filter.routingKey ?? null,
        filter.since ?? null,
      ],
    );
    return rows.map((r) => ({
      messageId: r.message_id,
      exchange: r.exchange,
      routingKey: r.routing_key,
      messageType: r.message_type,
      partitionKey: r.partition_key,
      attempts: r.attempts,
      lastError: r.last_error,
      createdAt: r.created_at,
      deadAt: r.dead_at,
    }));
  }

  /**
   * Why PostgreSQL does not read `text` as a timestamptz (ISO 8601, `now`, `infinity`, …,
   * in the session's time zone when it names none; a date that does not exist is
   * refused), or undefined when it does. Other errors than a bad value propagate.
   */
  async instantProblem(db: Pool | ClientBase, text: string): Promise<string | undefined> {
    try {
      await db.query('SELECT $1::timestamptz', [text]);
      return undefined;
    } catch (err: unknown) {
      // Class 22, data exception: invalid_datetime_format, datetime_field_overflow, an unknown time zone, …
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && code.startsWith('22')) return (err as Error).message.replace(/: ".*"$/s, '');
      throw err;
    }
  }

  /**
   * Makes dead messages due now with attempts reset; `ids` undefined = all. Expired
   * messages are left alone. Returns the ids changed.
   */
  async retryDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH retried AS (
         UPDATE ${this.table} SET dead_at = NULL, attempts = 0, next_attempt_at = now()
          WHERE ${DEAD} AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
          RETURNING message_id, partition_key)
       , ${this.unparkBehind('retried')}
       SELECT message_id FROM retried`,
      [ids ?? null],
    );
    return rows.map((r) => r.message_id);
  }

  /** Deletes dead messages; `ids` undefined = all. Expired messages are left alone. Returns the ids deleted. */
  async discardDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH discarded AS (
         DELETE FROM ${this.table}
          WHERE ${DEAD} AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
         RETURNING message_id, partition_key)
       , ${this.unparkBehind('discarded')}
       SELECT message_id FROM discarded`,
      [ids ?? null],
    );
    return rows.map((r) => r.message_id);
  }

  /** A CTE releasing the rows parked behind the dead messages of CTE `source`. */
  private unparkBehind(source: string): string {
    return `unparked AS (
         UPDATE ${this.table} SET next_attempt_at = ${UNPARKED}
          WHERE (${keyHash('partition_key')}, partition_key) IN
                (SELECT ${keyHash('partition_key')}, partition_key FROM ${source} WHERE partition_key IS NOT NULL)
            AND ${PENDING} AND next_attempt_at = 'infinity')`;
  }

  /**
   * One message by its message_id, every column but the body (only which of payload and
   * body is set, and its size in bytes: for a payload, of the JSON text the relay sends),
   * with its state and, for a keyed message, the unpublished messages of its key ahead of
   * it (`firstAhead` of them listed). `deadHoldsKey`: OUTBOX_ORDERING_ON_DEAD=block.
   * Undefined when no message has that id.
   */
  async inspect(
    db: Pool | ClientBase,
    messageId: string,
    options: { deadHoldsKey: boolean; firstAhead: number },
  ): Promise<InspectedMessage | undefined> {
    const { rows } = await db.query<InspectRow>({
      text: `SELECT id::text AS id, message_id, exchange, routing_key, message_type, content_type, headers::text AS headers_text,
                    partition_key, correlation_id, created_at, available_at, expires_at, attempts, next_attempt_at, last_error,
                    published_at, dead_at, expired_at, ${DUE} AS due_at, ${STATE_FLAGS},
                    CASE WHEN payload IS NOT NULL THEN 'payload' ELSE 'body' END AS body_column,
                    coalesce(octet_length(payload::text), octet_length(body))::text AS body_bytes
               FROM ${this.table} WHERE message_id = $1::uuid`,
      values: [messageId],
      types: INSTANT_TYPES,
    });
    const row = rows[0];
    if (!row) return undefined;
    const ahead = row.partition_key === null ? null : await this.keyAhead(db, row.partition_key, row.id, options);
    return {
      id: row.id,
      messageId: row.message_id,
      state: stateOf(row, (ahead?.holding ?? 0) > 0),
      exchange: row.exchange,
      routingKey: row.routing_key,
      messageType: row.message_type,
      contentType: row.content_type,
      headersText: row.headers_text,
      partitionKey: row.partition_key,
      correlationId: row.correlation_id,
      bodyColumn: row.body_column,
      bodyBytes: Number(row.body_bytes),
      createdAt: row.created_at,
      availableAt: row.available_at,
      expiresAt: row.expires_at,
      dueAt: row.due_at,
      attempts: row.attempts,
      nextAttemptAt: row.next_attempt_at,
      lastError: row.last_error,
      publishedAt: row.published_at,
      deadAt: row.dead_at,
      expiredAt: row.expired_at,
      ahead,
    };
  }

  /**
   * The unpublished messages of `key` with an id below `id`: how many, how many of them
   * hold the key (pending ones, and dead ones when dead messages hold their key; never an
   * expired one), and the first `firstAhead` in id order with their state. Index range
   * scans of messages_pending_key_idx (by the key's hash), as long as the key's backlog
   * before the message.
   */
  private async keyAhead(
    db: Pool | ClientBase,
    key: string,
    id: string,
    options: { deadHoldsKey: boolean; firstAhead: number },
  ): Promise<KeyAhead> {
    const holds = holdsKey('$3::boolean');
    const counts = await db.query<{ total: string; holding: string }>(
      `SELECT count(*)::text AS total, count(*) FILTER (WHERE ${holds})::text AS holding
         FROM ${this.table}
        WHERE ${keyHash('partition_key')} = ${keyHash('$1::text')} AND partition_key = $1 AND published_at IS NULL AND id < $2::bigint`,
      [key, id, options.deadHoldsKey],
    );
    // `behind`: whether a message before it (within the first ones, which start the key)
    // holds the key, i.e. whether it is parked behind its key itself.
    const first = await db.query<AheadRow>(
      `SELECT message_id, attempts, last_error, published, expired, dead, due_now, parked_forever, held_destination, holds,
              coalesce(bool_or(holds) OVER (ORDER BY id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false) AS behind
         FROM (SELECT id, message_id, attempts, last_error, ${STATE_FLAGS}, ${holds} AS holds
                 FROM ${this.table}
                WHERE ${keyHash('partition_key')} = ${keyHash('$1::text')} AND ${sameKey('$1::text')}
                  AND published_at IS NULL AND id < $2::bigint
                ORDER BY id LIMIT $4) AS first_ahead
        ORDER BY id`,
      [key, id, options.deadHoldsKey, options.firstAhead],
    );
    return {
      key,
      count: Number(counts.rows[0]?.total ?? 0),
      holding: Number(counts.rows[0]?.holding ?? 0),
      first: first.rows.map((r) => ({
        messageId: r.message_id,
        state: stateOf(r, r.behind),
        attempts: r.attempts,
        lastError: r.last_error,
        holdsKey: r.holds,
      })),
    };
  }

  /**
   * The destinations pending rows wait for, from their last_error (the relay's memory
   * is not readable from here): the rows it parked for a held destination carry its note
   * until it takes messages again. The `limit` with most rows first, and how many rows
   * wait in all. A range scan of messages_pending_due_idx over the rows due later.
   */
  async heldWaiting(db: Pool | ClientBase, limit: number): Promise<{ messages: number; destinations: HeldWaiting[] }> {
    const { rows } = await db.query<{ note: string; n: string; total: string }>(
      `SELECT last_error AS note, count(*) AS n, sum(count(*)) OVER () AS total
         FROM ${this.table}
        WHERE ${PENDING} AND ${DUE} > now() AND starts_with(last_error, $1)
        GROUP BY last_error ORDER BY count(*) DESC, last_error LIMIT $2`,
      [HELD_NOTE_PREFIX, limit],
    );
    const destinations = rows.flatMap((r) => {
      const destination = heldDestinationOf(r.note);
      return destination ? [{ ...destination, messages: Number(r.n) }] : [];
    });
    return { messages: Number(rows[0]?.total ?? 0), destinations };
  }

  /** Distinct exchanges named by pending messages, for `check`. */
  async pendingExchanges(db: Pool | ClientBase): Promise<string[]> {
    const { rows } = await db.query<{ exchange: string }>(
      `SELECT DISTINCT exchange FROM ${this.table} WHERE ${PENDING} AND exchange <> ''`,
    );
    return rows.map((r) => r.exchange);
  }
}
