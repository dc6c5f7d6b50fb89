import type { ClientBase, Pool } from 'pg';
import { ADVISORY_LOCK_NAMESPACE, qualified } from '../db/sql';
import type { OutboxMessage } from '../domain/message';
import type { AuditEntry } from './audit';
import { toMessage, type ClaimedRow } from './rows';
import { UNEXPIRED } from './sql';

/**
 * What a replay selects, fixed when it first starts: published rows (still kept) with
 * `id <= maxId` and `published_at <= asOf`, created in [since, until) or among `ids`,
 * narrowed by the filters (null: any). A message past its `expires_at` is never
 * published again.
 */
export interface ReplaySelection {
  readonly since: Date | null;
  readonly until: Date | null;
  /** Message ids (lowercase UUIDs), or null for a time range. */
  readonly ids: readonly string[] | null;
  readonly type: string | null;
  readonly exchange: string | null;
  readonly key: string | null;
  readonly routingKey: string | null;
  /** The database's clock when the replay first started. */
  readonly asOf: Date;
  /** The largest id in the table when the replay first started ('0' for an empty table). */
  readonly maxId: string;
}

const COLUMNS = `id, message_id, exchange, routing_key, message_type, payload::text AS payload_text, body,
       content_type, headers::text AS headers_text, partition_key, correlation_id, created_at, available_at, attempts, expires_at`;

/**
 * The replay's SQL. Every read is one short statement of its own (no transaction is
 * held open across publishes), takes no row lock, and reads published rows only, so
 * it never touches what a relay claims. Pages walk the primary key from a cursor
 * (keyset pagination): memory stays one page, whatever the range.
 */
export class ReplayStore {
  private readonly table: string;
  private readonly audit: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
    this.audit = qualified(schema, 'audit');
  }

  /** The database's clock and the table's largest id: what fixes a new replay's set. */
  async snapshot(db: Pool | ClientBase): Promise<{ asOf: Date; maxId: string }> {
    const { rows } = await db.query<{ as_of: Date; max_id: string }>(
      `SELECT now() AS as_of, coalesce(max(id), 0)::text AS max_id FROM ${this.table}`,
    );
    const row = rows[0] as { as_of: Date; max_id: string };
    return { asOf: row.as_of, maxId: row.max_id };
  }

  /** The predicate over `$1`…`$10`: the selection, and `id > $10` (the cursor). */
  private where(selection: ReplaySelection, afterId: string): { text: string; values: unknown[] } {
    return {
      text: `id > $10::bigint AND id <= $9::bigint
         AND published_at IS NOT NULL AND published_at <= $8::timestamptz
         AND ${UNEXPIRED}
         AND ($1::timestamptz IS NULL OR created_at >= $1::timestamptz)
         AND ($2::timestamptz IS NULL OR created_at < $2::timestamptz)
         AND ($3::uuid[] IS NULL OR message_id = ANY($3::uuid[]))
         AND ($4::text IS NULL OR message_type = $4::text)
         AND ($5::text IS NULL OR exchange = $5::text)
         AND ($6::text IS NULL OR partition_key = $6::text)
         AND ($7::text IS NULL OR routing_key = $7::text)`,
      values: [
        selection.since,
        selection.until,
        selection.ids,
        selection.type,
        selection.exchange,
        selection.key,
        selection.routingKey,
        selection.asOf,
        selection.maxId,
        afterId,
      ],
    };
  }

  /** How many selected messages come after `afterId`. */
  async count(db: Pool | ClientBase, selection: ReplaySelection, afterId = '0'): Promise<number> {
    const where = this.where(selection, afterId);
    const { rows } = await db.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${this.table} WHERE ${where.text}`, where.values);
    return Number(rows[0]?.n ?? 0);
  }

  /** The next `limit` selected messages after `afterId`, in id order. */
  async page(db: Pool | ClientBase, selection: ReplaySelection, afterId: string, limit: number): Promise<OutboxMessage[]> {
    const where = this.where(selection, afterId);
    const { rows } = await db.query<ClaimedRow>(`SELECT ${COLUMNS} FROM ${this.table} WHERE ${where.text} ORDER BY id LIMIT $11`, [
      ...where.values,
      limit,
    ]);
    return rows.map(toMessage);
  }

  /** Which of `ids` are not published, or no longer kept. */
  async unpublished(db: Pool | ClientBase, ids: readonly string[]): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `SELECT u.given::text AS message_id FROM unnest($1::uuid[]) AS u(given)
        WHERE NOT EXISTS (SELECT 1 FROM ${this.table} m WHERE m.message_id = u.given AND m.published_at IS NOT NULL)`,
      [ids],
    );
    return rows.map((r) => r.message_id);
  }

  /**
   * The newest unfinished replay whose arguments, less the keys in `resolved` (what
   * the first run settled itself: the instant it started, the largest id, a default
   * `until`), equal `given`.
   */
  async unfinished(
    db: Pool | ClientBase,
    given: Readonly<Record<string, unknown>>,
    resolved: readonly string[],
  ): Promise<{ id: string; arguments: Record<string, unknown>; count: number; cursor: string | null } | undefined> {
    const { rows } = await db.query<Pick<AuditEntry, 'id' | 'arguments'> & { count: string; cursor: string | null }>(
      `SELECT a.id::text AS id, a.arguments, a.count::text AS count, a.replay_cursor::text AS cursor FROM ${this.audit} AS a
        WHERE a.command = 'replay' AND a.finished_at IS NULL AND (a.arguments - $2::text[]) = ($1::jsonb - $2::text[])
        ORDER BY a.id DESC LIMIT 1`,
      [JSON.stringify(given), resolved],
    );
    const row = rows[0];
    return row && { id: row.id, arguments: row.arguments, count: Number(row.count), cursor: row.cursor };
  }

  /**
   * Closes an unfinished replay that `--restart` replaced: finished now, its arguments
   * naming the replay that replaced it (its count says how far it got).
   */
  async supersede(db: Pool | ClientBase, id: string, by: string): Promise<void> {
    await db.query(
      `UPDATE ${this.audit} SET finished_at = now(), arguments = arguments || jsonb_build_object('supersededBy', $2::text)
        WHERE id = $1::bigint AND finished_at IS NULL`,
      [id, by],
    );
  }

  /**
   * Opens a transaction on `client` and takes, for as long as it stays open, the lock of
   * one replay selection (`selection`: its normalised arguments), never waiting: false
   * when another process holds it (the transaction is then ended). A transaction-level
   * advisory lock, not a session lock: behind a transaction-pooling PgBouncer the open
   * transaction keeps one server connection for it, where a session lock would stay on a
   * server connection other clients then share. The transaction takes no row lock and no
   * transaction id, and holds no snapshot between statements (READ COMMITTED), so it
   * holds back no vacuum; it is exempt from idle_in_transaction_session_timeout.
   */
  async lockSelection(client: ClientBase, selection: string): Promise<boolean> {
    await client.query('BEGIN');
    try {
      const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS locked', [
        ADVISORY_LOCK_NAMESPACE,
        `replay:${this.schema}:${selection}`,
      ]);
      // A statement without parameters (the simple query protocol) after the one with
      // them: it also drops that statement's unnamed portal, whose snapshot would
      // otherwise hold back vacuum for as long as the transaction stays open.
      await client.query('SET LOCAL idle_in_transaction_session_timeout = 0');
      if (rows[0]?.locked === true) return true;
    } catch (err: unknown) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    await client.query('ROLLBACK');
    return false;
  }

  /** Ends the transaction of `lockSelection`, and with it the lock. */
  async unlockSelection(client: ClientBase): Promise<void> {
    await client.query('ROLLBACK');
  }
}
