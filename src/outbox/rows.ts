import { isInteger, parse } from 'lossless-json';
import type { HeaderTable, OutboxMessage } from '../domain/message';

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
  /** `headers::text`: node-postgres would JSON.parse jsonb, rounding integers beyond 2^53. */
  headers_text: string;
  partition_key: string | null;
  correlation_id: string | null;
  /** node-postgres gives ±Infinity (a number) for `infinity` / `-infinity`. */
  created_at: Date | number;
  available_at: Date | number;
  attempts: number;
  /** Milliseconds left before expires_at at the claim (null: no limit). */
  expires_in_ms?: number | null;
  /** The bytes the claim counted (body and headers text; bigint, as text). */
  claim_bytes?: string | number;
}

/** The earliest and latest instants a JavaScript Date can hold (±8.64e15 ms, ±100,000,000 days). */
export const EARLIEST_DATE_MS = -8.64e15;
export const LATEST_DATE_MS = 8.64e15;

const NO_HEADERS: HeaderTable = Object.freeze({});

/**
 * A timestamptz as a valid Date: `-infinity` and `infinity` become the earliest and the
 * latest Date. A Date node-postgres could not build (NaN) lies beyond 275760-09-13,
 * the latest Date: PostgreSQL's earliest instant (4713 BC) is well within Date's range,
 * so only the upper end can overflow.
 */
export function instant(value: Date | number): Date {
  if (typeof value === 'number') return new Date(value < 0 ? EARLIEST_DATE_MS : LATEST_DATE_MS);
  return Number.isNaN(value.getTime()) ? new Date(LATEST_DATE_MS) : value;
}

/** A JSON number of the headers: integers exactly (bigint), the rest as doubles. */
function headerNumber(text: string): bigint | number {
  return isInteger(text) ? BigInt(text) : Number.parseFloat(text);
}

/**
 * How deeply headers may nest (objects and arrays). jsonb takes thousands of levels; the
 * parser (and amqplib's encoder) recurse per level and would overflow the stack at
 * about 4,000, so a deeper row fails with a clear error instead.
 */
export const MAX_HEADER_DEPTH = 1_000;

/** How deeply the JSON `text` nests, stopping once past `limit`. */
function nesting(text: string, limit: number): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length && deepest <= limit; i += 1) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c)
        i += 1; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x7d || c === 0x5d) depth -= 1;
  }
  return deepest;
}

/**
 * The row's headers, parsed without loss (see `HeaderValue`). The table's
 * `messages_headers_is_object` constraint makes it an object; anything else, and
 * headers nested deeper than `MAX_HEADER_DEPTH`, throws (the row cannot be read).
 */
export function parseHeaders(text: string): HeaderTable {
  if (text === '{}') return NO_HEADERS;
  // Each level takes two characters at least: short headers need no scan.
  if (text.length > 2 * MAX_HEADER_DEPTH && nesting(text, MAX_HEADER_DEPTH) > MAX_HEADER_DEPTH) {
    throw new Error(`headers nest more than ${MAX_HEADER_DEPTH} levels deep; the relay reads at most ${MAX_HEADER_DEPTH}`);
  }
  const value = parse(text, null, headerNumber);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('headers is not a JSON object');
  return value as HeaderTable;
}

/** The bytes the claim counted for `row`; without the column, its body and headers text as they arrived. */
export function claimBytes(row: ClaimedRow): number {
  if (row.claim_bytes !== undefined) return Number(row.claim_bytes);
  return (row.body?.length ?? Buffer.byteLength(row.payload_text ?? '')) + Buffer.byteLength(row.headers_text ?? '');
}

/** The one place a claimed row's snake_case columns become an OutboxMessage; `nowMs` is the relay's clock at the claim. */
export function toMessage(row: ClaimedRow, nowMs = Date.now()): OutboxMessage {
  return {
    id: row.id,
    messageId: row.message_id,
    exchange: row.exchange,
    routingKey: row.routing_key,
    messageType: row.message_type,
    content: row.body ?? Buffer.from(row.payload_text ?? 'null', 'utf8'),
    contentType: row.content_type,
    headers: parseHeaders(row.headers_text),
    partitionKey: row.partition_key,
    correlationId: row.correlation_id,
    createdAt: instant(row.created_at),
    availableAt: instant(row.available_at),
    attempts: row.attempts,
    expiresAt: row.expires_in_ms === null || row.expires_in_ms === undefined ? null : nowMs + row.expires_in_ms,
    claimBytes: claimBytes(row),
  };
}
