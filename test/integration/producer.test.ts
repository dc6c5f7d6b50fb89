import { Kysely, PostgresDialect, sql } from 'kysely';
import { Pool } from 'pg';
import { loadMigrations } from '../../src/db/migrator';
import { OutboxError } from '../../src/errors';
import { defineMessage, enqueue, enqueueMany, message } from '../../src/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testDatabaseUrl } from '../kit/services';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('producer');
const broker = TestBroker.forFile();
let db: Kysely<Record<string, never>>;
let exchange: string;

const TRACEPARENT = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';

beforeAll(async () => {
  exchange = await broker.exchange(uniqueName('orders'));
  db = new Kysely({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: testDatabaseUrl(), max: 2 }) }) });
  await fx.pool.query(`CREATE TABLE "${fx.schema}".orders (id text PRIMARY KEY, total int NOT NULL)`);
});

afterAll(async () => {
  await db.destroy();
});

function definitions(): {
  OrderCreated: ReturnType<typeof defineMessage<{ orderId: string; total: number }>>;
  ShipOrder: ReturnType<typeof defineMessage<{ orderId: string }>>;
} {
  return {
    OrderCreated: defineMessage<{ orderId: string; total: number }>({ type: 'order.created', exchange, routingKey: 'order.created' }),
    ShipOrder: defineMessage<{ orderId: string }>({ type: 'ship.order', exchange: '', routingKey: 'unused' }),
  };
}

test('a node-postgres transaction: the relay publishes the message with its key, headers and correlation id', async () => {
  const { OrderCreated } = definitions();
  const received = await broker.queue(uniqueName('pg'), { exchange, pattern: 'order.*' });
  await fx.startRelay();
  const client = await fx.pool.connect();
  let id: string;
  try {
    await client.query('BEGIN');
    await client.query(`INSERT INTO "${fx.schema}".orders VALUES ('o-1', 1990)`);
    id = await enqueue(
      client,
      OrderCreated,
      { orderId: 'o-1', total: 1990 },
      {
        schema: fx.schema,
        partitionKey: 'o-1',
        correlationId: 'req-1',
        headers: { 'x-tenant': 'acme' },
        traceparent: TRACEPARENT,
      },
    );
    await client.query('COMMIT');
  } finally {
    client.release();
  }
  await waitFor('the event', () => received.length === 1);
  const msg = received[0]!;
  expect(msg.properties.messageId).toBe(id);
  expect(msg.properties.type).toBe('order.created');
  expect(msg.properties.correlationId).toBe('req-1');
  // The row's headers, and the relay's: the key and the row's place in the outbox's order.
  expect(msg.properties.headers).toEqual({
    'x-tenant': 'acme',
    traceparent: TRACEPARENT,
    'x-outbox-partition-key': 'o-1',
    'x-outbox-position': Number((await fx.row(id))['id']),
  });
  expect(msg.fields.routingKey).toBe('order.created');
  expect(bodies(received)).toEqual([{ orderId: 'o-1', total: 1990 }]);
  expect((await fx.row(id))['partition_key']).toBe('o-1');
});

test('a Kysely transaction: enqueue and enqueueMany write rows the relay publishes', async () => {
  const { OrderCreated, ShipOrder } = definitions();
  const events = await broker.queue(uniqueName('ky'), { exchange, pattern: 'order.*' });
  const commandQueue = uniqueName('ship');
  const commands = await broker.queue(commandQueue);
  await fx.startRelay();
  const ids = await db.transaction().execute(async (trx) => {
    const one = await enqueue(
      trx,
      OrderCreated,
      { orderId: 'k-1', total: 5 },
      { schema: fx.schema, partitionKey: 'k-1', correlationId: 'c-k' },
    );
    const many = await enqueueMany(
      trx,
      [
        message(OrderCreated, { orderId: 'k-2', total: 6 }, { headers: { traceparent: TRACEPARENT } }),
        message(ShipOrder, { orderId: 'k-2' }, { routingKey: commandQueue }),
      ],
      { schema: fx.schema },
    );
    return [one, ...many];
  });
  await waitFor('two events and a command', () => events.length === 2 && commands.length === 1);
  expect(events.map((m) => m.properties.messageId).sort()).toEqual([ids[0], ids[1]].sort());
  const first = events.find((m) => m.properties.messageId === ids[0])!;
  expect(first.properties.correlationId).toBe('c-k');
  const second = events.find((m) => m.properties.messageId === ids[1])!;
  expect(second.properties.headers).toEqual({ traceparent: TRACEPARENT, 'x-outbox-position': Number((await fx.row(ids[1]!))['id']) });
  expect(commands[0]!.properties.messageId).toBe(ids[2]);
  expect(bodies(commands)).toEqual([{ orderId: 'k-2' }]);
  expect((await fx.row(ids[0]!))['partition_key']).toBe('k-1');
});

test('enqueueMany writes every message with one INSERT statement, in order', async () => {
  const { OrderCreated } = definitions();
  const client = await fx.pool.connect();
  const statements: string[] = [];
  const counting = { query: (text: string, values?: unknown[]) => (statements.push(text), client.query(text, values)) };
  try {
    await client.query('BEGIN');
    const items = Array.from({ length: 50 }, (_, i) => message(OrderCreated, { orderId: `m-${i}`, total: i }));
    const ids = await enqueueMany(counting, items, { schema: fx.schema });
    await client.query('ROLLBACK');
    expect(statements).toHaveLength(1);
    expect(statements[0]).toMatch(/^INSERT INTO/);
    expect(ids).toHaveLength(50);
  } finally {
    client.release();
  }
  // In order: identity ids follow the order of the items.
  const ids = await db.transaction().execute((trx) =>
    enqueueMany(
      trx,
      Array.from({ length: 20 }, (_, i) => message(OrderCreated, { orderId: `n-${i}`, total: i })),
      { schema: fx.schema },
    ),
  );
  const { rows } = await fx.pool.query(`SELECT message_id FROM ${fx.table} WHERE message_id = ANY($1::uuid[]) ORDER BY id`, [ids]);
  expect(rows.map((r) => r.message_id)).toEqual(ids);
  await fx.pool.query(`DELETE FROM ${fx.table} WHERE message_id = ANY($1::uuid[])`, [ids]);
});

test('a rolled-back transaction publishes nothing', async () => {
  const { OrderCreated } = definitions();
  const received = await broker.queue(uniqueName('rb'), { exchange, pattern: 'rolled.back' });
  await fx.startRelay();
  const client = await fx.pool.connect();
  let id: string;
  try {
    await client.query('BEGIN');
    id = await enqueue(client, OrderCreated, { orderId: 'rb', total: 1 }, { schema: fx.schema, routingKey: 'rolled.back' });
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  await staysFalse('a message from a rolled-back transaction', () => received.length > 0, 1_000);
  expect(await fx.row(id)).toBeUndefined();
});

test('while messages flow, a commit is published within milliseconds — no NOTIFY, no cost to the producer', async () => {
  const { OrderCreated } = definitions();
  const received = await broker.queue(uniqueName('hot'), { exchange, pattern: 'hot.*' });
  // A long idle interval: only the hot peeking can explain a fast pickup.
  await fx.startRelay({ OUTBOX_POLL_INTERVAL_MS: '60000' });
  const send = (n: number): Promise<string> =>
    db
      .transaction()
      .execute((trx) => enqueue(trx, OrderCreated, { orderId: `h${n}`, total: n }, { schema: fx.schema, routingKey: 'hot.created' }));
  // The relay claims once at start (finds nothing) and idles: a NOTIFY from the
  // producer's transaction wakes it; from then on it peeks every few milliseconds.
  await db.transaction().execute(async (trx) => {
    await enqueue(trx, OrderCreated, { orderId: 'h0', total: 0 }, { schema: fx.schema, routingKey: 'hot.created' });
    await sql`SELECT pg_notify(${`${fx.schema}.messages`}, '')`.execute(trx);
  });
  await waitFor('the notified message', () => received.length === 1, 5_000);
  for (let n = 1; n <= 5; n += 1) {
    await send(n);
    await waitFor(`message ${n}`, () => received.length === n + 1, 2_000);
  }
});

test('delayMs and availableAt delay publication', async () => {
  const { OrderCreated } = definitions();
  const ids = await db
    .transaction()
    .execute((trx) =>
      enqueueMany(
        trx,
        [
          message(OrderCreated, { orderId: 'd1', total: 1 }, { delayMs: 60_000 }),
          message(OrderCreated, { orderId: 'd2', total: 1 }, { availableAt: new Date(Date.now() + 3_600_000) }),
        ],
        { schema: fx.schema },
      ),
    );
  const { rows } = await fx.pool.query(
    `SELECT extract(epoch FROM available_at - created_at)::int AS delay_s FROM ${fx.table} WHERE message_id = ANY($1::uuid[]) ORDER BY id`,
    [ids],
  );
  expect(rows[0].delay_s).toBe(60);
  expect(rows[1].delay_s).toBeGreaterThanOrEqual(3_599);
  await fx.pool.query(`DELETE FROM ${fx.table} WHERE message_id = ANY($1::uuid[])`, [ids]);
});

test('expiresAt and ttlMs set expires_at; without them the INSERT names no expires_at column (an outbox not yet migrated takes it)', async () => {
  const { OrderCreated } = definitions();
  const at = new Date(Date.now() + 3_600_000);
  const ids = await db
    .transaction()
    .execute((trx) =>
      enqueueMany(
        trx,
        [
          message(OrderCreated, { orderId: 'e1', total: 1 }, { ttlMs: 30_000 }),
          message(OrderCreated, { orderId: 'e2', total: 1 }, { expiresAt: at }),
          message(OrderCreated, { orderId: 'e3', total: 1 }),
        ],
        { schema: fx.schema },
      ),
    );
  const { rows } = await fx.pool.query<{ ttl_s: number | null; expires_at: Date | null }>(
    `SELECT round(extract(epoch FROM expires_at - created_at))::int AS ttl_s, expires_at FROM ${fx.table}
      WHERE message_id = ANY($1::uuid[]) ORDER BY id`,
    [ids],
  );
  expect(rows[0]?.ttl_s).toBe(30);
  expect(rows[1]?.expires_at?.getTime()).toBe(at.getTime());
  expect(rows[2]?.expires_at).toBeNull();
  await fx.pool.query(`DELETE FROM ${fx.table} WHERE message_id = ANY($1::uuid[])`, [ids]);

  // An outbox still at migration 0003 (no expires_at column): messages without an expiry are written.
  const older = await OutboxFixture.create(
    'producer03',
    loadMigrations().filter((m) => m.version <= 3),
  );
  try {
    const [id] = await db
      .transaction()
      .execute((trx) => enqueueMany(trx, [message(OrderCreated, { orderId: 'old', total: 1 })], { schema: older.schema }));
    expect((await older.row(id!))['message_type']).toBe('order.created');
  } finally {
    await older.close();
  }
});

test('bad arguments throw a clear error before anything is written', async () => {
  const { OrderCreated } = definitions();
  const before = (await fx.counts()).pending + (await fx.counts()).published;
  const cases: [unknown[], RegExp][] = [
    [
      [message(OrderCreated, { orderId: 'ok', total: 1 }), message(OrderCreated, undefined as never)],
      /enqueue\(order\.created\): payload is undefined/,
    ],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { messageId: 'not-a-uuid' })], /messageId "not-a-uuid" is not a UUID/],
    [[message(OrderCreated, { orderId: 'x', total: 1n as never })], /payload is not JSON-serialisable/],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { delayMs: -5 })], /delayMs must be a finite number/],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { ttlMs: 0 })], /ttlMs must be a finite number > 0/],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { expiresAt: new Date(NaN) })], /expiresAt must be a valid Date/],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { ttlMs: 5, expiresAt: new Date() })], /give expiresAt or ttlMs, not both/],
    [[message(OrderCreated, { orderId: 'x', total: 1 }, { headers: [] as never })], /headers must be an object/],
    [[{ definition: {}, payload: {} }], /the definition must come from defineMessage/],
  ];
  for (const [items, expected] of cases) {
    const client = await fx.pool.connect();
    try {
      await client.query('BEGIN');
      await expect(enqueueMany(client, items as never, { schema: fx.schema })).rejects.toThrow(expected);
      await expect(enqueueMany(client, items as never, { schema: fx.schema })).rejects.toBeInstanceOf(OutboxError);
      // The transaction is still usable: nothing was sent to the database.
      await client.query('SELECT 1');
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  }
  const after = (await fx.counts()).pending + (await fx.counts()).published;
  expect(after).toBe(before);
  expect(() => defineMessage({ type: '' })).toThrow(/type must be a non-empty string/);
  expect(() => defineMessage({ type: 'cmd', exchange: '', routingKey: '' })).toThrow(/needs a routing key naming the target queue/);
});
