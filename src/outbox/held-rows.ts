import type { ClientBase, Pool } from 'pg';
import { HELD_NOTE_PREFIX, HOLD_SPREAD_MS } from '../domain/held-note';
import type { HoldOrder, ReleaseOrder } from '../domain/message';
import { DUE, noLaterThanExpiry, PENDING } from './sql';

/**
 * The rows that wait for a held destination (relay/held-destinations.ts). They are parked
 * like any waiting row — next_attempt_at pushed, so they leave the head of
 * messages_pending_due_idx and no claim reads them — and carry the hold's note as their
 * last_error, which is how a release finds them again and how `status` and `inspect`
 * know they wait for a destination. `table` is the schema-qualified, escaped name.
 */

/**
 * Parks rows for a hold, never past their expires_at (they are then claimed at their
 * expiry and found expired) and never bringing their own retry forward. No attempt is
 * counted. Rows with a `spreadFromId` are parked one microsecond later per id above it
 * (HOLD_SPREAD_MS at most), so messages_pending_due_idx holds them in id order.
 */
export async function holdRows(client: ClientBase, table: string, orders: readonly HoldOrder[]): Promise<void> {
  if (orders.length === 0) return;
  await client.query(
    `UPDATE ${table} AS m
        SET next_attempt_at = GREATEST(m.next_attempt_at, ${noLaterThanExpiry(
          "h.at + coalesce(LEAST(GREATEST(m.id - h.spread_from, 0), $5::bigint), 0) * interval '1 microsecond'",
          'm.',
        )}),
            last_error = h.note
       FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::bigint[]) AS h(id, at, note, spread_from)
      WHERE m.id = h.id AND ${PENDING}`,
    [
      orders.map((o) => o.id),
      orders.map((o) => o.at.toISOString()),
      orders.map((o) => o.note),
      orders.map((o) => o.spreadFromId ?? null),
      HOLD_SPREAD_MS * 1_000,
    ],
  );
}

/**
 * Makes due now up to `limit` rows parked for the hold whose note is `note`, the earliest
 * parked first (in id order, as they were spread): a range scan of
 * messages_pending_due_idx from now to the hold's horizon and its spread (`upTo`), which
 * is where they all are, reading about as many entries as it releases. Due now, a
 * microsecond apart in that order, not at their first due time: they take their turn
 * behind what is due already, so a long-held backlog does not push other destinations'
 * messages back, and a claim takes each key's first messages first. Rows another batch
 * holds locked are passed over. With `ids`, only those (the first messages of keys whose
 * later messages came back first).
 */
export async function releaseRows(client: ClientBase, table: string, order: ReleaseOrder): Promise<number> {
  const { rowCount } = await client.query(
    `WITH picked AS (
       SELECT id, ${DUE} AS due FROM ${table}
        WHERE ${PENDING} AND ${DUE} > now() AND ${DUE} <= $2::timestamptz AND last_error = $1
          AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
        ORDER BY ${DUE} LIMIT $3
          FOR UPDATE SKIP LOCKED)
     UPDATE ${table} AS m SET next_attempt_at = now() + o.n * interval '1 microsecond'
       FROM (SELECT id, row_number() OVER (ORDER BY due, id) AS n FROM picked) AS o
      WHERE m.id = o.id`,
    [order.note, order.upTo.toISOString(), order.limit, order.ids ?? null],
  );
  return rowCount ?? 0;
}

/**
 * Makes due now every row parked for any held destination: what a relay that starts
 * publishing does, since it knows no hold yet (it learns them again from the broker's
 * answers). Returns how many. Reads the pending rows due later (a range of
 * messages_pending_due_idx).
 */
export async function releaseAllHeldRows(db: Pool | ClientBase, table: string): Promise<number> {
  const { rowCount } = await db.query(
    `UPDATE ${table} SET next_attempt_at = now()
      WHERE ${PENDING} AND ${DUE} > now() AND starts_with(last_error, $1)`,
    [HELD_NOTE_PREFIX],
  );
  return rowCount ?? 0;
}
