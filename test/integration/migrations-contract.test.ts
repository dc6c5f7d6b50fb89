import { OutboxFixture } from '../kit/outbox-fixture';
import { withClient } from '../kit/pg-client';
import { rejection } from '../kit/rejection';
import { uniqueName } from '../kit/unique-name';

// The producer columns of the outbox table as migrations/ create them: the constraints
// of the README's SQL contract and the defaults. (migrations-migrate.test.ts: applying
// the files; migrations-released.test.ts: checksums of released files;
// migrations-notify.test.ts: the optional NOTIFY trigger.)

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let fx: OutboxFixture;

beforeAll(async () => {
  fx = await OutboxFixture.create('mig_contract');
});

afterAll(async () => {
  await fx.close();
});

describe("producer contract constraints (the README's SQL contract)", () => {
  const cases: readonly [string, string, readonly unknown[], string][] = [
    [
      'both payload and body',
      '(routing_key, payload, body) VALUES ($1, $2, $3)',
      ['q', '{"a":1}', Buffer.from('x')],
      'messages_payload_xor_body',
    ],
    ['neither payload nor body', '(routing_key, message_type) VALUES ($1, $2)', ['q', 't'], 'messages_payload_xor_body'],
    [
      'an empty routing key on the default exchange',
      "(exchange, routing_key, payload) VALUES ('', $1, $2)",
      ['', '{}'],
      'messages_command_needs_queue',
    ],
    [
      'an empty routing key, exchange left to its default',
      '(routing_key, payload) VALUES ($1, $2)',
      ['', '{}'],
      'messages_command_needs_queue',
    ],
    [
      'headers that are an array',
      '(routing_key, payload, headers) VALUES ($1, $2, $3)',
      ['q', '{}', '["a"]'],
      'messages_headers_is_object',
    ],
    [
      'headers that are a string',
      '(routing_key, payload, headers) VALUES ($1, $2, $3)',
      ['q', '{}', '"x-tenant"'],
      'messages_headers_is_object',
    ],
    ['headers that are a number', '(routing_key, payload, headers) VALUES ($1, $2, $3)', ['q', '{}', '42'], 'messages_headers_is_object'],
  ];

  test.each(cases)('rejects %s at INSERT, naming the constraint', async (_what, columnsAndValues, values, constraint) => {
    const err = await rejection(fx.pool.query(`INSERT INTO ${fx.table} ${columnsAndValues}`, [...values]));
    expect(err.code).toBe('23514'); // check_violation
    expect(err.constraint).toBe(constraint);
    expect(err.message).toContain(constraint);
  });

  test('the violation fails the service transaction itself: nothing of it is committed', async () => {
    const queue = uniqueName('tx');
    await withClient(async (client) => {
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ($1, '{"ok":true}')`, [queue]);
      const err = await rejection(client.query(`INSERT INTO ${fx.table} (routing_key) VALUES ($1)`, [queue]));
      expect(err.constraint).toBe('messages_payload_xor_body');
      await expect(client.query('COMMIT')).resolves.toMatchObject({ command: 'ROLLBACK' });
    });
    const { rows } = await fx.pool.query(`SELECT 1 FROM ${fx.table} WHERE routing_key = $1`, [queue]);
    expect(rows).toHaveLength(0);
  });

  test('accepts the valid shapes: JSON payload, raw body, an event with an empty routing key on a named exchange', async () => {
    const queue = uniqueName('ok');
    await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ($1, 'null'::jsonb)`, [queue]);
    await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, body, content_type) VALUES ($1, $2, 'application/octet-stream')`, [
      queue,
      Buffer.alloc(0),
    ]);
    await fx.pool.query(`INSERT INTO ${fx.table} (exchange, routing_key, payload) VALUES ('fanout_ex', '', '{}')`);
    const { rows } = await fx.pool.query(`SELECT count(*)::int AS n FROM ${fx.table} WHERE routing_key = $1 OR exchange = 'fanout_ex'`, [
      queue,
    ]);
    expect(rows[0].n).toBe(3);
  });

  test('routing_key is required and message_id is unique', async () => {
    const missingKey = await rejection(fx.pool.query(`INSERT INTO ${fx.table} (payload) VALUES ('{}')`));
    expect(missingKey.code).toBe('23502'); // not_null_violation
    expect(missingKey.message).toContain('routing_key');
    const { rows } = await fx.pool.query<{ message_id: string }>(
      `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}') RETURNING message_id`,
    );
    const duplicate = await rejection(
      fx.pool.query(`INSERT INTO ${fx.table} (message_id, routing_key, payload) VALUES ($1, 'q', '{}')`, [rows[0]!.message_id]),
    );
    expect(duplicate.code).toBe('23505');
    expect(duplicate.constraint).toBe('messages_message_id_key');
  });
});

describe('defaults of the producer columns', () => {
  test('a minimal INSERT gets a generated message_id, the default exchange, JSON content type, {} headers and available_at now', async () => {
    const { rows } = await fx.pool.query(
      `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('orders', '{"orderId":1}') RETURNING *, now() AS tx_now`,
    );
    const row = rows[0] as Record<string, unknown>;
    expect(row['message_id']).toMatch(UUID);
    expect(row['exchange']).toBe('');
    expect(row['content_type']).toBe('application/json');
    expect(row['headers']).toEqual({});
    expect((row['available_at'] as Date).getTime()).toBe((row['tx_now'] as Date).getTime());
    expect(row['payload']).toEqual({ orderId: 1 });
    expect(row['body']).toBeNull();
    expect(row['message_type']).toBeNull();
    expect(row['partition_key']).toBeNull();
    expect(row['correlation_id']).toBeNull();
    // Relay-owned state starts out pending.
    expect(row['attempts']).toBe(0);
    expect(row['published_at']).toBeNull();
    expect(row['dead_at']).toBeNull();
  });

  test('two rows get distinct message ids, and ids follow insertion order', async () => {
    const { rows } = await fx.pool.query<{ id: string; message_id: string }>(
      `INSERT INTO ${fx.table} (routing_key, payload) SELECT 'orders', jsonb_build_object('n', g) FROM generate_series(1, 3) g RETURNING id, message_id`,
    );
    expect(new Set(rows.map((r) => r.message_id)).size).toBe(3);
    const ids = rows.map((r) => BigInt(r.id));
    expect(ids[1]! > ids[0]! && ids[2]! > ids[1]!).toBe(true);
  });
});
