import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';
import { HELD_NOTE_PREFIX } from '../domain/held-note';
import { INSTANT_TYPES, stateOf, type InspectedMessage, type Instant, type KeyAhead, type StateFlags } from './inspection';
import { DUE, ENDED, EXPIRED, holdsKey, keyHash, sameKey } from './sql';

/** The columns that decide a state (`stateOf`), as `inspect`'s statements select them. */
const STATE_FLAGS = `published_at IS NOT NULL AS published, ${EXPIRED} AS expired, ${ENDED} AS dead,
       ${DUE} <= now() AS due_now, next_attempt_at = 'infinity' AS parked_forever,
       coalesce(${DUE} > now() AND starts_with(last_error, '${HELD_NOTE_PREFIX}'), false) AS held_destination`;

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

/** The statements of `inspect` against `<schema>.messages`: one message, its state and what is ahead of it in its key. */
export class InspectStore {
  private readonly table: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
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
}
