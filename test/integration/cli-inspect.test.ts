import { randomUUID } from 'node:crypto';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

// `outbox-relay inspect <message_id>`: one message, its state, and why it waits.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_inspect', { afterEach: 'reset' });

interface Inspected {
  messageId: string;
  state: string;
  attempts: number;
  lastError: string | null;
  bodyColumn: string;
  bodyBytes: number;
  ahead: {
    key: string;
    count: number;
    holding: number;
    first: { messageId: string; state: string; attempts: number; lastError: string | null; holdsKey: boolean }[];
  } | null;
  [column: string]: unknown;
}

async function inspectJson(id: string, overrides: Record<string, string> = {}): Promise<Inspected> {
  const result = await cli(['inspect', id, '--json'], envFor(fx.schema, overrides));
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  expect(lines(result.stdout)).toHaveLength(1);
  return JSON.parse(result.stdout) as Inspected;
}

async function inspectText(id: string, overrides: Record<string, string> = {}): Promise<string> {
  const result = await cli(['inspect', id], envFor(fx.schema, overrides));
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  return result.stdout;
}

function set(id: string, assignments: string): Promise<unknown> {
  return fx.pool.query(`UPDATE ${fx.table} SET ${assignments} WHERE message_id = $1`, [id]);
}

test('every column but the body: the payload only as its size, headers exact, no key, state pending-due', async () => {
  const [id] = await fx.insert([
    {
      exchange: 'orders',
      routing_key: 'order.created',
      message_type: 'order.created',
      payload: { orderId: 'o-1', secret: 'do-not-print-me' },
      headers: { 'x-tenant': 't-1' },
      correlation_id: 'corr-1',
    },
  ]);
  // An integer beyond a double's exact range, written as SQL (JSON.stringify could not).
  await set(id!, `headers = headers || '{"big": 123456789012345678901}'::jsonb`);
  const { rows } = await fx.pool.query<{ bytes: number }>(`SELECT octet_length(payload::text) AS bytes FROM ${fx.table}`);

  const json = await cli(['inspect', id!, '--json'], envFor(fx.schema));
  expect(json).toMatchObject({ code: 0, stderr: '' });
  expect(json.stdout).toContain('"big": 123456789012345678901');
  expect(json.stdout).not.toContain('do-not-print-me');
  const m = JSON.parse(json.stdout) as Inspected;
  expect(m).toMatchObject({
    messageId: id,
    state: 'pending-due',
    exchange: 'orders',
    routingKey: 'order.created',
    messageType: 'order.created',
    contentType: 'application/json',
    correlationId: 'corr-1',
    partitionKey: null,
    bodyColumn: 'payload',
    bodyBytes: rows[0]!.bytes,
    attempts: 0,
    lastError: null,
    expiresAt: null,
    publishedAt: null,
    deadAt: null,
    expiredAt: null,
    nextAttemptAt: null,
    ahead: null,
    headers: { 'x-tenant': 't-1' },
  });
  expect(m['createdAt']).toMatch(/^\d{4}-\d\d-\d\dT.*Z$/);
  expect(m['availableAt']).toMatch(/Z$/);
  expect(m['payload']).toBeUndefined();
  expect(m['body']).toBeUndefined();

  const text = await inspectText(id!);
  expect(text).toMatch(new RegExp(`^message_id\\s+${id}$`, 'm'));
  expect(text).toMatch(/^state\s+pending-due\b/m);
  expect(text).toMatch(new RegExp(`^payload\\s+${rows[0]!.bytes} bytes`, 'm'));
  expect(text).toMatch(/^headers\s+\{.*"big": 123456789012345678901/m);
  expect(text).toMatch(/^ahead\s+no partition key/m);
  expect(text).not.toContain('do-not-print-me');
});

test('a raw body: its size, and that body (not payload) is set', async () => {
  const [id] = await fx.insert([{ routing_key: 'q', body: Buffer.alloc(1234, 7), content_type: 'application/octet-stream' }]);
  expect(await inspectJson(id!)).toMatchObject({ bodyColumn: 'body', bodyBytes: 1234, contentType: 'application/octet-stream' });
  expect(await inspectText(id!)).toMatch(/^body\s+1234 bytes \(raw bytes; payload is null\)/m);
});

test('states: pending-delayed, published, dead, expired (not dead, though it carries dead_at)', async () => {
  const [delayed, retrying, published, dead, expired, farFuture] = await fx.insert(
    ['delayed', 'retrying', 'published', 'dead', 'expired', 'far'].map((label) => ({ routing_key: 'q', payload: { label } })),
  );
  await set(delayed!, `available_at = now() + interval '1 hour'`);
  await set(retrying!, `attempts = 2, next_attempt_at = now() + interval '5 minutes', last_error = 'nack from broker'`);
  await set(published!, `published_at = now()`);
  await set(dead!, `dead_at = now(), attempts = 10, last_error = 'unknown exchange "nowhere"'`);
  await set(expired!, `expires_at = now() - interval '1 second', expired_at = now(), dead_at = now(), last_error = 'expired'`);
  await set(farFuture!, `available_at = 'infinity'`);

  expect(await inspectJson(delayed!)).toMatchObject({ state: 'pending-delayed' });
  expect(await inspectJson(retrying!)).toMatchObject({ state: 'pending-delayed', attempts: 2, lastError: 'nack from broker' });
  expect(await inspectJson(published!)).toMatchObject({ state: 'published', publishedAt: expect.stringMatching(/Z$/) });
  expect(await inspectJson(dead!)).toMatchObject({ state: 'dead', attempts: 10, lastError: 'unknown exchange "nowhere"' });
  expect(await inspectJson(expired!)).toMatchObject({
    state: 'expired',
    expiresAt: expect.stringMatching(/Z$/),
    expiredAt: expect.stringMatching(/Z$/),
    deadAt: expect.stringMatching(/Z$/),
  });
  expect(await inspectJson(farFuture!)).toMatchObject({ state: 'pending-delayed', availableAt: 'infinity', dueAt: 'infinity' });

  expect(await inspectText(expired!)).toMatch(/^state\s+expired \(reached expires_at unpublished; never sent\)/m);
  expect(await inspectText(dead!)).toMatch(/^last_error\s+unknown exchange "nowhere"$/m);
});

test("parked behind its key: the key's unpublished messages ahead, how many hold it, the first ones with state and error", async () => {
  const rows = Array.from({ length: 9 }, (_, i) => ({ routing_key: 'q', partition_key: 'order-7', payload: { seq: i + 1 } }));
  const ids = await fx.insert([...rows, { routing_key: 'q', partition_key: 'other', payload: {} }]);
  const [first, second, third] = ids;
  const inspected = ids[8]!;
  const otherKey = ids[9]!;
  // 1: waiting for its retry; 2: dead; 3: expired; 4 and 5 published; 6–8 pending.
  await set(first!, `attempts = 3, next_attempt_at = now() + interval '10 minutes', last_error = 'confirm timeout'`);
  await set(second!, `dead_at = now(), attempts = 10, last_error = 'message too large'`);
  await set(third!, `expired_at = now(), dead_at = now(), expires_at = now(), last_error = 'expired'`);
  await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = ANY($1::uuid[])`, [[ids[3], ids[4]]]);

  const m = await inspectJson(inspected);
  expect(m.state).toBe('parked');
  expect(m.ahead).toEqual({
    key: 'order-7',
    count: 6, // 1, 2, 3, 6, 7, 8: published ones are not ahead
    holding: 4, // 1 and 6–8; under skip the dead one does not hold, an expired one never does
    first: [
      { messageId: first, state: 'pending-delayed', attempts: 3, lastError: 'confirm timeout', holdsKey: true },
      { messageId: second, state: 'dead', attempts: 10, lastError: 'message too large', holdsKey: false },
      { messageId: third, state: 'expired', attempts: 0, lastError: 'expired', holdsKey: false },
      { messageId: ids[5], state: 'parked', attempts: 0, lastError: null, holdsKey: true },
      { messageId: ids[6], state: 'parked', attempts: 0, lastError: null, holdsKey: true },
    ],
  });

  // Under OUTBOX_ORDERING_ON_DEAD=block the dead message holds the key too.
  const blocked = await inspectJson(inspected, { OUTBOX_ORDERING_ON_DEAD: 'block' });
  expect(blocked.ahead).toMatchObject({ count: 6, holding: 5 });
  expect(blocked.ahead?.first[1]).toMatchObject({ messageId: second, state: 'dead', holdsKey: true });

  const text = await inspectText(inspected);
  expect(text).toMatch(/^state\s+parked \(waits behind earlier messages of its key\)/m);
  expect(text).toMatch(/^ahead\s+6 unpublished messages before it in key "order-7", 4 holding the key$/m);
  expect(text).toContain(`  ${first}  pending-delayed  attempts=3  holds the key  confirm timeout`);
  expect(text).toContain(`  ${second}  dead  attempts=10  does not hold the key  message too large`);
  expect(text).toMatch(/^ {2}… and 1 more$/m);

  // The head of the key: nothing ahead; its own retry makes it delayed, not parked.
  const head = await inspectJson(first!);
  expect(head).toMatchObject({ state: 'pending-delayed', ahead: { key: 'order-7', count: 0, holding: 0, first: [] } });
  expect(await inspectText(first!)).toMatch(/^ahead\s+nothing unpublished before it in key "order-7"$/m);
  // Another key is not held by this one.
  expect(await inspectJson(otherKey)).toMatchObject({ state: 'pending-due', ahead: { key: 'other', count: 0 } });
  // When only non-holding messages are ahead (dead under skip, expired), it is due.
  await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = ANY($1::uuid[])`, [[first, ids[5], ids[6], ids[7]]]);
  expect(await inspectJson(inspected)).toMatchObject({ state: 'pending-due', ahead: { count: 2, holding: 0 } });
  expect(await inspectJson(inspected, { OUTBOX_ORDERING_ON_DEAD: 'block' })).toMatchObject({
    state: 'parked',
    ahead: { count: 2, holding: 1 },
  });
});

test('parked for good behind a dead message (next_attempt_at infinity) is parked', async () => {
  const [id] = await fx.insert([{ routing_key: 'q', partition_key: 'k', payload: {} }]);
  await set(id!, `next_attempt_at = 'infinity'`);
  expect(await inspectJson(id!)).toMatchObject({ state: 'parked', nextAttemptAt: 'infinity', dueAt: 'infinity' });
});

test('an unknown id: exit 1, one line; not a UUID or no id: exit 2, one line; no stack trace', async () => {
  const unknown = randomUUID();
  for (const args of [
    ['inspect', unknown],
    ['inspect', unknown, '--json'],
  ]) {
    const result = await cli(args, envFor(fx.schema));
    expect(expectOneLineFailure(result, 1)).toMatch(new RegExp(`${unknown} not found`));
    expect(result.stdout).toBe('');
  }
  const notUuid = await cli(['inspect', 'order-42'], envFor(fx.schema));
  expect(expectOneLineFailure(notUuid, 2)).toContain('"order-42" is not a message id');
  const none = await cli(['inspect'], envFor(fx.schema));
  expect(none.code).toBe(2);
  expect(none.stderr).toMatch(/message_id/);
  const two = await cli(['inspect', unknown, unknown], envFor(fx.schema));
  expect(expectOneLineFailure(two, 2)).toContain('unexpected argument');
});
