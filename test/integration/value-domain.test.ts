import { decodeFieldTable, WireTap, type WireValue } from '../kit/amqp-wire';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';
import { APP_ID, expectExactly, type StoredRow } from './value-domain-exact';

/**
 * Rows the table accepts but AMQP may not: each is either published exactly as
 * inserted, or fails on its own with an error naming the field and the limit in bytes,
 * while the good messages behind it (some of its partition key) flow, each once and in
 * order. What arrives is read twice: by amqplib (the test's consumer) and from the
 * wire by the test's own decoder, which shows 64-bit integers exactly.
 */

const fx = OutboxFixture.forFile('valuedom');
let tap: WireTap;
let broker: TestBroker;

beforeAll(async () => {
  tap = await WireTap.start(testAmqpUrl());
  broker = await TestBroker.connect({ url: tap.url() });
});

afterAll(async () => {
  await broker.close();
  await tap.close();
});

/** A row as psql would insert it: column → SQL text (jsonb and timestamptz as literals), body as bytes. */
type RawRow = Record<string, string | Buffer>;
const CASTS: Record<string, string> = { payload: '::jsonb', headers: '::jsonb', body: '::bytea', available_at: '::timestamptz' };

async function insertRaw(rows: readonly RawRow[]): Promise<string[]> {
  const client = await fx.pool.connect();
  try {
    await client.query('BEGIN');
    const ids: string[] = [];
    for (const row of rows) {
      const columns = Object.keys(row);
      const { rows: inserted } = await client.query<{ message_id: string }>(
        `INSERT INTO ${fx.table} (${columns.join(', ')}) VALUES (${columns.map((c, i) => `$${i + 1}${CASTS[c] ?? ''}`).join(', ')}) RETURNING message_id`,
        columns.map((c) => row[c]),
      );
      ids.push(inserted[0]!.message_id);
    }
    await client.query('COMMIT');
    return ids;
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  } finally {
    client.release();
  }
}

async function storedRows(): Promise<Map<string, StoredRow>> {
  const { rows } = await fx.pool.query<StoredRow>(
    `SELECT id::text AS id, message_id, partition_key, exchange, routing_key, message_type, content_type, correlation_id,
            coalesce(body, convert_to(payload::text, 'UTF8')) AS content, created_at, attempts, last_error, published_at, dead_at
       FROM ${fx.table}`,
  );
  return new Map(rows.map((r) => [r.message_id, r]));
}

/** Headers `{"d": {"d": … 1 …}}`, `levels` objects deep (the top level included). */
function nestedText(levels: number): string {
  return `${'{"d": '.repeat(levels - 1)}{"d": 1}${'}'.repeat(levels - 1)}`;
}

function nestedValue(levels: number): { [key: string]: WireValue } {
  let value: { [key: string]: WireValue } = { d: 1n };
  for (let level = 1; level < levels; level += 1) value = { d: value };
  return value;
}

/** What one unusual row must become: published with exactly these headers on the wire, or failed with this error. */
type Expected = { readonly published: { readonly [key: string]: WireValue } } | { readonly error: string | RegExp };

test('14 unusual rows before 200 good ones: every good message arrives once, in key order; each unusual row is published exactly or fails naming the field and the byte limit', async () => {
  const { exchange, queue, received } = await broker.exchangeWithQueue('vd');
  const unicodeExchange = await broker.exchange(`ünï-€-交換-${uniqueName('x')}`);
  await broker.channel.bindQueue(queue, unicodeExchange, '#');

  const key = (i: number): string => `vk${1 + (i % 5)}`;
  const unusual: { row: RawRow; expected: Expected }[] = [
    {
      row: { exchange: 'x'.repeat(256), routing_key: 'r', payload: '{}' },
      expected: { error: 'exchange is 256 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange: '€'.repeat(300), routing_key: 'r', payload: '{}' },
      expected: { error: 'exchange is 900 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange: '', routing_key: 'q'.repeat(256), payload: '{}' },
      expected: { error: 'routing_key is 256 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange, routing_key: 'r', message_type: 't'.repeat(300), payload: '{}' },
      expected: { error: 'message_type (AMQP type) is 300 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange, routing_key: 'r', correlation_id: 'c'.repeat(300), payload: '{}' },
      expected: { error: 'correlation_id (AMQP correlation-id) is 300 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange, routing_key: 'r', content_type: `application/${'x'.repeat(288)}`, payload: '{}' },
      expected: { error: 'content_type (AMQP content-type) is 300 bytes; AMQP allows at most 255 bytes' },
    },
    {
      row: { exchange, routing_key: 'r', headers: JSON.stringify({ ['h'.repeat(256)]: 'v' }), payload: '{}' },
      expected: { error: `header key "${'h'.repeat(40)}…" is 256 bytes; AMQP allows at most 255 bytes` },
    },
    {
      row: { exchange, routing_key: 'r', headers: '{"nested": {"!": 1}}', payload: '{}' },
      expected: { published: { nested: { '!': 1n } } },
    },
    {
      row: { exchange, routing_key: 'r', headers: '{"x-big": 9223372036854775808}', payload: '{}' },
      expected: {
        error: `header "x-big" is the integer 9223372036854775808, beyond AMQP's signed 64-bit integers (-9223372036854775808 to 9223372036854775807)`,
      },
    },
    {
      row: {
        exchange,
        routing_key: 'r',
        headers: '{"x-beyond-53": 9007199254740993, "x-max": 9223372036854775807, "x-min": -9223372036854775808}',
        payload: '{}',
      },
      expected: { published: { 'x-beyond-53': 9007199254740993n, 'x-max': 9223372036854775807n, 'x-min': -9223372036854775808n } },
    },
    {
      row: { exchange, routing_key: 'r', headers: JSON.stringify({ 'x-large': 'a'.repeat(100 * 1024) }), payload: '{}' },
      expected: {
        // The relay's headers count too: x-outbox-partition-key (a 3-byte key) and x-outbox-position (int64).
        error: `headers are ${4 + 1 + 7 + 1 + 4 + 100 * 1024 + (1 + 22 + 1 + 4 + 3) + (1 + 17 + 1 + 8)} bytes encoded; the AMQP client encodes at most 65536 bytes of headers`,
      },
    },
    {
      row: {
        exchange: unicodeExchange,
        routing_key: 'ключ.€.鍵',
        message_type: 'тип.€.型',
        content_type: 'application/jsön; charset=utf-8',
        correlation_id: '相关-€-😀',
        headers: '{"ключ": "значение €", "鍵": ["😀", {"ü": 1.5, "!": null}], "": true}',
        payload: '{"текст": "€ 😀 \\u0001"}',
        partition_key: 'ключ-€',
      },
      expected: { published: { ключ: 'значение €', 鍵: ['😀', { ü: 1.5, '!': null }], '': true } },
    },
    { row: { exchange, routing_key: 'r', payload: 'null' }, expected: { published: {} } },
    { row: { exchange, routing_key: 'r', body: Buffer.alloc(0), content_type: 'application/octet-stream' }, expected: { published: {} } },
    // Not one of the 14: a row due since forever is published, and its delivery latency is finite.
    { row: { exchange, routing_key: 'r', payload: '{"since": "-infinity"}', available_at: '-infinity' }, expected: { published: {} } },
    // Nor these: headers nested as deeply as the relay reads them, and one level more.
    { row: { exchange, routing_key: 'r', headers: nestedText(1_000), payload: '{}' }, expected: { published: nestedValue(1_000) } },
    {
      row: { exchange, routing_key: 'r', headers: nestedText(1_001), payload: '{}' },
      expected: { error: /headers nest more than 1000 levels deep; the relay reads at most 1000$/ },
    },
  ];
  const rows = unusual.map(({ row }, i) => ({ partition_key: key(i), ...row }));
  const unusualIds = await insertRaw(rows);
  // 200 good messages behind them, on keys vk1…vk10: vk1…vk5 are shared with the unusual rows.
  await fx.insertBacklog({ count: 200, exchange, routingKey: 'good.event', keys: 10, keyPrefix: 'vk' });

  const relay = await fx.spawnRelay({ OUTBOX_MAX_ATTEMPTS: '1', OUTBOX_BATCH_SIZE: '40', OUTBOX_APP_ID: APP_ID });
  await relay.ready();
  const expectedPublished = unusual.filter((u) => 'published' in u.expected).length;
  await waitFor(
    'every good message and every unusual row settled',
    async () => {
      const settled = await fx.pool.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM ${fx.table} WHERE published_at IS NOT NULL OR dead_at IS NOT NULL`,
      );
      return settled.rows[0]!.n === 200 + unusual.length && received.length >= 200 + expectedPublished;
    },
    30_000,
  );
  const failed = unusual.length - expectedPublished;
  const metrics = await waitFor('the counters of every batch', async () => {
    const m = await relay.metrics();
    return m.value('outbox_messages_published_total') === 200 + expectedPublished ? m : undefined;
  });
  await relay.stop();

  // The good ones: each exactly once, in order within its key.
  const good = received.filter((m) => m.fields.routingKey === 'good.event');
  const payloads = good.map((m) => JSON.parse(m.content.toString()) as { n: number; key: string; seq: number });
  expect(payloads.map((p) => p.n).sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
  const byKey = new Map<string, number[]>();
  for (const p of payloads) byKey.set(p.key, [...(byKey.get(p.key) ?? []), p.seq]);
  expect(byKey.size).toBe(10);
  for (const seqs of byKey.values()) expect(seqs).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));

  // Nothing arrived twice: no batch was repeated, on the wire or through amqplib.
  const wireIds = tap.deliveries.map((d) => d.messageId);
  expect(new Set(wireIds).size).toBe(wireIds.length);
  expect(new Set(received.map((m) => m.properties.messageId as string)).size).toBe(received.length);
  expect(received).toHaveLength(200 + expectedPublished);
  expect(tap.deliveries).toHaveLength(200 + expectedPublished);
  // No batch failed as a whole: every unusual row was judged before sending.
  const batchErrors = relay.logs().filter((l) => /batch failed/.test(String(l['msg'])));
  expect(batchErrors).toEqual([]);

  // Each unusual row: published exactly as inserted, or failed with its field and limit.
  const stored = await storedRows();
  const wireById = new Map(tap.deliveries.map((d) => [d.messageId, d] as const));
  const amqplibById = new Map(received.map((m) => [m.properties.messageId as string, m] as const));
  unusual.forEach(({ expected }, i) => {
    const id = unusualIds[i]!;
    const row = stored.get(id)!;
    if ('published' in expected) {
      expect({ id, published: row.published_at !== null, error: row.last_error }).toEqual({ id, published: true, error: null });
      expectExactly(wireById.get(id), amqplibById.get(id), row, expected.published);
    } else {
      expect({ id, dead: row.dead_at !== null, attempts: row.attempts }).toEqual({ id, dead: true, attempts: 1 });
      if (typeof expected.error === 'string') expect(row.last_error).toBe(expected.error);
      else expect(row.last_error).toMatch(expected.error);
      expect(wireById.has(id)).toBe(false);
    }
  });
  expect(metrics.value('outbox_publish_failures_total', { reason: 'invalid_message' })).toBe(failed);
  expect(metrics.value('outbox_messages_published_total')).toBe(200 + expectedPublished);
});

test('OUTBOX_APP_ID of 100 × "€" (300 bytes) is refused at start: exit 2, naming the variable and the byte limit', async () => {
  const relay = await fx.spawnRelay({ OUTBOX_APP_ID: '€'.repeat(100) });
  const exit = await relay.exitWithin(15_000);
  expect(exit.code).toBe(2);
  expect(relay.stderr.join('\n')).toContain("OUTBOX_APP_ID must be at most 255 bytes of UTF-8, AMQP's limit for app-id (it is 300 bytes)");
});

test('the test decoder reads what it is meant to (a self-check of the wire reader)', () => {
  const table = Buffer.concat([Buffer.from([1]), Buffer.from('n'), Buffer.from('l'), Buffer.from('0020000000000001', 'hex')]);
  expect(decodeFieldTable(table)).toEqual({ n: 9007199254740993n });
});
