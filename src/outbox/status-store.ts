import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import { heldDestinationOf, HELD_NOTE_PREFIX, type Destination } from '../domain/held-note';
import type { OutboxStats } from '../domain/message';
import { dueHeadsCte, HEAD_COLUMNS, LAG_SECONDS } from './due-head';
import { INSTANT_TYPES, type Instant } from './inspection';
import { DEAD, DUE, ENDED, EXPIRED, PENDING } from './sql';

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

/** A destination the pending rows wait for (their last_error says it refuses messages), as `status` shows it. */
export interface HeldWaiting extends Destination {
  /** Pending rows that wait for it, not due (their own, and later messages of their keys). */
  readonly messages: number;
}

/**
 * The statements of `status`, `check` and the gauges against `<schema>.messages`: counts,
 * lag, the oldest pending message, held destinations, the exchanges pending messages name.
 * None runs on the relay's hot path.
 */
export class StatusStore {
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
