import type { OutboxMessage } from '../domain/message';

/** A claimed row as PostgreSQL returns it. */
export interface ClaimedRow {
  id: string;
  message_id: string;
  exchange: string;
  routing_key: string;
  message_type: string | null;
  payload_text: string | null;
  body: Buffer | null;
  content_type: string;
  headers: Record<string, unknown>;
  partition_key: string | null;
  correlation_id: string | null;
  created_at: Date;
  available_at: Date;
  attempts: number;
}

/** The one place a claimed row's snake_case columns become an OutboxMessage. */
export function toMessage(row: ClaimedRow): OutboxMessage {
  return {
    id: row.id,
    messageId: row.message_id,
    exchange: row.exchange,
    routingKey: row.routing_key,
    messageType: row.message_type,
    content: row.body ?? Buffer.from(row.payload_text ?? 'null', 'utf8'),
    contentType: row.content_type,
    headers: row.headers,
    partitionKey: row.partition_key,
    correlationId: row.correlation_id,
    createdAt: row.created_at,
    availableAt: row.available_at,
    attempts: row.attempts,
  };
}
