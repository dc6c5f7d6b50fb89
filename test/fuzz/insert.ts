import type { Pool } from 'pg';
import { jsonText, type FuzzRow } from './rows';

const AVAILABLE_AT: Record<FuzzRow['availableAt'], string> = {
  now: 'now',
  past: '2020-01-01T00:00:00Z',
  '-infinity': '-infinity',
  infinity: 'infinity',
};

export interface Inserted {
  readonly messageId: string;
  readonly row: FuzzRow | undefined; // undefined: a good message
  readonly key: string | null;
  readonly committedAt: number;
  readonly id: bigint;
  /** A good message's payload is `{"good": goodIndex}`. */
  readonly goodIndex: number;
}

/** Inserts the round's rows one by one (a row the table refuses is left out); good messages where `rows` has undefined. */
export async function insert(
  pool: Pool,
  table: string,
  rows: readonly (FuzzRow | undefined)[],
  exchange: string,
  queue: string,
): Promise<Inserted[]> {
  const inserted: Inserted[] = [];
  for (const [index, row] of rows.entries()) {
    const good = row === undefined;
    const values = good
      ? [
          exchange,
          'good',
          'fuzz.good',
          JSON.stringify({ good: index }),
          null,
          'application/json',
          '{"x-good":1}',
          `key-${index % 5}`,
          null,
          'now',
        ]
      : [
          row.exchange.kind === 'target' ? exchange : row.exchange.kind === 'command' ? '' : row.exchange.name,
          row.routingKey.kind === 'queue' ? queue : row.routingKey.text,
          row.messageType,
          row.body.kind === 'payload' ? jsonText(row.body.json) : null,
          row.body.kind === 'bytes' ? Buffer.from(row.body.bytes) : null,
          row.contentType ?? 'application/json',
          jsonText(row.headers),
          row.partitionKey,
          row.correlationId,
          AVAILABLE_AT[row.availableAt],
        ];
    let result;
    try {
      result = await pool.query<{ message_id: string; id: string; partition_key: string | null }>(
        `INSERT INTO ${table} (exchange, routing_key, message_type, payload, body, content_type, headers, partition_key, correlation_id, available_at)
         VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7::jsonb, $8, $9, $10::timestamptz) RETURNING message_id, id, partition_key`,
        values,
      );
    } catch (err: unknown) {
      // A row the table refuses (the producer contract's constraints) was never accepted: not part of the domain.
      if (!good && (err as { code?: string }).code === '23514') continue;
      throw err;
    }
    const r = result.rows[0]!;
    inserted.push({ messageId: r.message_id, row, key: r.partition_key, committedAt: Date.now(), id: BigInt(r.id), goodIndex: index });
  }
  return inserted;
}
