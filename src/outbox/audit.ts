import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';

/** The operator commands that change messages, as `<schema>.audit` names them. */
export type AuditedCommand = 'dead retry' | 'dead discard' | 'replay';

/** How many message ids one audit entry lists; a larger action lists the first ones (its count says how many). */
export const AUDIT_MAX_IDS = 10_000;

/** One operator action, as written to `<schema>.audit` (the role and the time come from the database). */
export interface AuditRecord {
  readonly command: AuditedCommand;
  /** The command's arguments as given (ids, --all, filters, a range), JSON. */
  readonly arguments: Readonly<Record<string, unknown>>;
  readonly count: number;
  /** The messages changed; more than AUDIT_MAX_IDS are cut to the first ones. */
  readonly messageIds: readonly string[];
}

/** An entry of `<schema>.audit` as `outbox-relay audit` shows it. */
export interface AuditEntry {
  readonly id: string;
  readonly at: Date;
  readonly role: string;
  readonly command: AuditedCommand;
  readonly arguments: Record<string, unknown>;
  readonly count: number;
  readonly messageIds: string[];
  /** A replay: the id of the last message published again, and when it finished (null while unfinished). */
  readonly replayCursor: string | null;
  readonly finishedAt: Date | null;
}

interface AuditRow {
  id: string;
  at: Date;
  role: string;
  command: AuditedCommand;
  arguments: Record<string, unknown>;
  count: string;
  message_ids: string[];
  replay_cursor: string | null;
  finished_at: Date | null;
}

// The numbers are read as text (a bigint may exceed a JS number) under their own names: an
// ORDER BY must therefore name the table's column (`a.id`), or it sorts the text ("9" > "16").
const COLUMNS =
  'a.id::text AS id, a.at, a.role, a.command, a.arguments, a.count::text AS count, a.message_ids, a.replay_cursor::text AS replay_cursor, a.finished_at';

function entryOf(row: AuditRow): AuditEntry {
  return {
    id: row.id,
    at: row.at,
    role: row.role,
    command: row.command,
    arguments: row.arguments,
    count: Number(row.count),
    messageIds: row.message_ids,
    replayCursor: row.replay_cursor,
    finishedAt: row.finished_at,
  };
}

/**
 * The audit trail of one outbox schema. `record` is meant to run in the transaction of
 * the change it records, so that neither exists without the other.
 */
export class AuditLog {
  readonly table: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'audit');
  }

  /** Writes one entry; returns its id. */
  async record(db: Pool | ClientBase, entry: AuditRecord): Promise<string> {
    const { rows } = await db.query<{ id: string }>(
      `INSERT INTO ${this.table} (command, arguments, count, message_ids)
       VALUES ($1, $2::jsonb, $3, $4::uuid[]) RETURNING id::text AS id`,
      [entry.command, JSON.stringify(entry.arguments), entry.count, entry.messageIds.slice(0, AUDIT_MAX_IDS)],
    );
    return rows[0]?.id as string;
  }

  /** The newest entries first. */
  async list(db: Pool | ClientBase, limit: number): Promise<AuditEntry[]> {
    const { rows } = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM ${this.table} AS a ORDER BY a.id DESC LIMIT $1`, [limit]);
    return rows.map(entryOf);
  }

  /** One entry by id, if any. */
  async get(db: Pool | ClientBase, id: string): Promise<AuditEntry | undefined> {
    const { rows } = await db.query<AuditRow>(`SELECT ${COLUMNS} FROM ${this.table} AS a WHERE a.id = $1::bigint`, [id]);
    return rows[0] ? entryOf(rows[0]) : undefined;
  }

  /**
   * A replay's progress: `count` messages published again so far, `cursor` the last
   * message done with (published again or left out), the first ones' message ids
   * appended (up to AUDIT_MAX_IDS in all), `finished` once none is left, and what it left
   * out (kept in its arguments as `leftOut`, when any).
   */
  async replayProgress(
    db: Pool | ClientBase,
    id: string,
    progress: { cursor: string; count: number; messageIds: readonly string[]; finished: boolean; leftOut?: { count: number } },
  ): Promise<void> {
    const leftOut = progress.leftOut && progress.leftOut.count > 0 ? JSON.stringify(progress.leftOut) : null;
    await db.query(
      `UPDATE ${this.table}
          SET replay_cursor = $2::bigint,
              count = $3,
              message_ids = CASE WHEN cardinality(message_ids) >= $5 THEN message_ids
                                 ELSE (message_ids || $4::uuid[])[1:$5] END,
              finished_at = CASE WHEN $6::boolean THEN now() END,
              arguments = CASE WHEN $7::jsonb IS NULL THEN arguments ELSE arguments || jsonb_build_object('leftOut', $7::jsonb) END
        WHERE id = $1::bigint`,
      [id, progress.cursor, progress.count, progress.messageIds, AUDIT_MAX_IDS, progress.finished, leftOut],
    );
  }

  /** Marks a replay finished without moving its cursor (nothing was left to publish). */
  async finishReplay(db: Pool | ClientBase, id: string): Promise<void> {
    await db.query(`UPDATE ${this.table} SET finished_at = now() WHERE id = $1::bigint`, [id]);
  }

  /**
   * Deletes entries older than `retentionMs` (run by the cleanup, with the messages'),
   * but never an unfinished replay's (it is what a run again goes on from). Returns how many.
   */
  async deleteOlderThan(db: Pool | ClientBase, retentionMs: number): Promise<number> {
    const { rowCount } = await db.query(
      `DELETE FROM ${this.table}
        WHERE at < now() - $1 * interval '1 millisecond' AND (command <> 'replay' OR finished_at IS NOT NULL)`,
      [retentionMs],
    );
    return rowCount ?? 0;
  }
}
