import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type ConsumeMessage, type Options } from 'amqplib';
import { Registry } from 'prom-client';
import { createConsumer, type Consumer, type ConsumerOptions } from '../../src/consumer/index';
import { buildIfMissing, cli, envFor, expectOneLineFailure } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * Signed messages end to end: the relay signs with OUTBOX_SIGNING_KEY_FILE, the consumer
 * library verifies with its `verify` option; a copy with any covered field changed
 * (published with plain amqplib) is refused with the reason and counted; key rotation by
 * restarting the relay with a new key; the unsigned policy; `selftest` verifies; the
 * broker checks `user-id`; a bad key file is exit 2.
 */

const fx = OutboxFixture.forFile('signing');
const broker = TestBroker.forFile();
const dir = mkdtempSync(join(tmpdir(), 'outbox-signing-'));
const consumers: Consumer[] = [];
const retryQueues: string[] = [];

interface TestKey {
  readonly id: string;
  readonly file: string;
  readonly publicKey: KeyObject;
}

function newKey(id: string): TestKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const file = join(dir, `${id}.pem`);
  writeFileSync(file, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  return { id, file, publicKey };
}

const OLD = newKey('orders-old');
const NEW = newKey('orders-new');
const signingEnv = (key: TestKey): Record<string, string> => ({ OUTBOX_SIGNING_KEY_FILE: key.file, OUTBOX_SIGNING_KEY_ID: key.id });

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
});

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  for (const q of retryQueues.splice(0)) await broker.channel.deleteQueue(q).catch(() => undefined);
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** An exchange, a consumer queue bound to it with `#`, a dead-letter exchange and its queue (recorded). */
async function topology(prefix: string): Promise<{ exchange: string; queue: string; dlx: string; dead: ConsumeMessage[] }> {
  const exchange = await broker.exchange(uniqueName(prefix));
  const queue = await broker.declareQueue(uniqueName(`${prefix}q`), { exchange, pattern: '#' });
  const dlx = await broker.exchange(uniqueName(`${prefix}dlx`), 'fanout');
  const dead = await broker.queue(uniqueName(`${prefix}dead`), { exchange: dlx, pattern: '' });
  retryQueues.push(`${queue}.retry`);
  return { exchange, queue, dlx, dead };
}

interface Started {
  readonly consumer: Consumer;
  readonly handled: string[];
  readonly registry: Registry;
  readonly errors: string[];
}

async function startConsumer(
  queue: string,
  dlx: string,
  verify: ConsumerOptions['verify'],
  handler?: ConsumerOptions['handler'],
): Promise<Started> {
  const handled: string[] = [];
  const errors: string[] = [];
  const registry = new Registry();
  const consumer = await createConsumer({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    deadLetterExchange: dlx,
    retryDelayMs: 50,
    registry,
    verify,
    log: { info: () => undefined, warn: () => undefined, error: (_obj, msg) => errors.push(msg) },
    handler: async (msg, tx) => {
      await handler?.(msg, tx);
      handled.push(msg.messageId);
    },
  });
  consumers.push(consumer);
  return { consumer, handled, registry, errors };
}

async function refusals(registry: Registry): Promise<Record<string, number>> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'outbox_consumer_signature_refusals_total');
  const counts: Record<string, number> = {};
  for (const v of (metric?.values ?? []) as { labels: Record<string, string>; value: number }[]) counts[v.labels['reason']!] = v.value;
  return counts;
}

/** The properties of a received message, to publish a copy of it with plain amqplib. */
function copyOf(msg: ConsumeMessage): Options.Publish {
  const p = msg.properties;
  return {
    messageId: p.messageId as string,
    type: p.type as string,
    timestamp: p.timestamp as number,
    contentType: p.contentType as string,
    appId: p.appId as string,
    headers: { ...(p.headers as Record<string, unknown>) },
  };
}

test('the relay signs; the consumer handles what verifies (retries included) and refuses every tampered copy with its reason, counted, logged once per cause', async () => {
  const { exchange, queue, dlx, dead } = await topology('signed');
  const other = await broker.exchange(uniqueName('signedother'));
  await broker.channel.bindQueue(queue, other, '#');
  const tap = await broker.queue(uniqueName('signedtap'), { exchange, pattern: '#' });
  await fx.startRelay(signingEnv(OLD));
  const [messageId] = await fx.insert([
    {
      exchange,
      routing_key: 'order.created',
      message_type: 'order.created',
      payload: { orderId: 42 },
      headers: { 'x-tenant': 'acme', n: 5 },
      partition_key: 'o-42',
    },
  ]);
  // The first attempt fails: the copy comes back from the retry queue and must verify again.
  let attempts = 0;
  const c = await startConsumer(queue, dlx, { keys: { [OLD.id]: OLD.publicKey } }, async () => {
    attempts += 1;
    if (attempts === 1) throw new Error('first attempt fails');
  });
  await waitFor('the signed message handled after one retry', () => c.handled.includes(messageId!));
  expect(c.consumer.stats).toMatchObject({ handled: 1, retried: 1, rejected: 0 });
  const original = await waitFor('the copy on the tap queue', () => tap[0]);
  expect(String(original.properties.headers?.['x-outbox-signature'])).toMatch(/^v1;kid=orders-old;sig=[A-Za-z0-9+/]{86}==$/);

  const base = copyOf(original);
  const headers = base.headers as Record<string, unknown>;
  const tampered: [string, string, string, Buffer, Options.Publish][] = [
    ['body', exchange, 'order.created', Buffer.from('{"orderId":43}'), base],
    ['message id', exchange, 'order.created', original.content, { ...base, messageId: 'forged-id' }],
    ['type', exchange, 'order.created', original.content, { ...base, type: 'order.cancelled' }],
    ['timestamp', exchange, 'order.created', original.content, { ...base, timestamp: (base.timestamp as number) + 1 }],
    ['content type', exchange, 'order.created', original.content, { ...base, contentType: 'text/plain' }],
    ['exchange', other, 'order.created', original.content, base],
    ['routing key', exchange, 'order.cancelled', original.content, base],
    ['a header', exchange, 'order.created', original.content, { ...base, headers: { ...headers, 'x-tenant': 'evil' } }],
  ];
  for (const [what, toExchange, routingKey, body, properties] of tampered) {
    broker.channel.publish(toExchange, routingKey, body, { ...properties, headers: { ...properties.headers, 'x-outbox-test-case': what } });
  }
  const unsigned = { ...headers };
  delete unsigned['x-outbox-signature'];
  broker.channel.publish(exchange, 'order.created', original.content, {
    ...base,
    headers: { ...unsigned, 'x-outbox-test-case': 'missing' },
  });
  const sig = String(headers['x-outbox-signature']);
  const foreign = { ...headers, 'x-outbox-signature': sig.replace('kid=orders-old', 'kid=someone'), 'x-outbox-test-case': 'unknown key' };
  broker.channel.publish(exchange, 'order.created', original.content, { ...base, headers: foreign });
  broker.channel.publish(exchange, 'order.created', original.content, {
    ...base,
    headers: { ...headers, 'x-outbox-signature': 'v1;kid=orders-old;sig=short', 'x-outbox-test-case': 'malformed' },
  });

  await waitFor('11 refused copies dead-lettered', () => dead.length === 11);
  // Each copy is told apart by x-outbox-test-case, a header the signature does not cover (x-outbox-*).
  const reasonOf = (what: string): string =>
    String(dead.find((m) => m.properties.headers?.['x-outbox-test-case'] === what)?.properties.headers?.['x-outbox-consumer-error']);
  for (const [what] of tampered) expect([what, reasonOf(what)]).toEqual([what, expect.stringMatching(/^signature bad_signature: /)]);
  expect(reasonOf('missing')).toMatch(/^signature missing: no x-outbox-signature header/);
  expect(reasonOf('unknown key')).toMatch(/^signature unknown_key: unknown key id "someone"/);
  expect(reasonOf('malformed')).toMatch(/^signature malformed: /);
  expect(await refusals(c.registry)).toEqual({ bad_signature: 8, missing: 1, unknown_key: 1, malformed: 1 });
  expect(c.consumer.stats).toMatchObject({ handled: 1, rejected: 11 });
  expect(c.handled).toEqual([messageId]);
  expect(c.errors.filter((e) => e.startsWith('message refused: its signature'))).toHaveLength(4);
  const { rows } = await fx.pool.query(`SELECT message_id FROM "${fx.schema}".inbox`);
  expect(rows.map((r: { message_id: string }) => r.message_id)).toEqual([messageId]);
  expect(c.consumer.state).toBe('consuming');
}, 60_000);

test('key rotation: a consumer that trusts both keys handles messages of the relay before and after its restart with the new key', async () => {
  const { exchange, queue, dlx, dead } = await topology('rotation');
  const newOnly = await topology('rotated');
  await broker.channel.bindQueue(newOnly.queue, exchange, '#');
  const both = await startConsumer(queue, dlx, { keys: { [OLD.id]: OLD.publicKey, [NEW.id]: NEW.publicKey } });
  const next = await startConsumer(newOnly.queue, newOnly.dlx, { keys: { [NEW.id]: NEW.publicKey } });
  await fx.startRelay(signingEnv(OLD));
  const [first] = await fx.insert([{ exchange, routing_key: 'a', payload: { n: 1 } }]);
  await waitFor('the message signed with the old key handled', () => both.handled.includes(first!));
  await waitFor('and refused where only the new key is trusted', () => newOnly.dead.length === 1);
  expect(String(newOnly.dead[0]!.properties.headers?.['x-outbox-consumer-error'])).toMatch(/unknown_key: unknown key id "orders-old"/);
  await fx.stopRelays();
  await fx.startRelay(signingEnv(NEW));
  const [second] = await fx.insert([{ exchange, routing_key: 'a', payload: { n: 2 } }]);
  await waitFor(
    'the message signed with the new key handled by both',
    () => both.handled.includes(second!) && next.handled.includes(second!),
  );
  expect(dead).toHaveLength(0);
  expect(await refusals(both.registry)).toEqual({});
}, 60_000);

test('unsigned messages: refused with reject (the default), handled with accept', async () => {
  const { exchange, queue, dlx, dead } = await topology('unsigned');
  const accepting = await topology('unsignedok');
  await broker.channel.bindQueue(accepting.queue, exchange, '#');
  const rejecting = await startConsumer(queue, dlx, { keys: { [OLD.id]: OLD.publicKey } });
  const accepts = await startConsumer(accepting.queue, accepting.dlx, { keys: { [OLD.id]: OLD.publicKey }, unsigned: 'accept' });
  await fx.startRelay();
  const [messageId] = await fx.insert([{ exchange, routing_key: 'a', payload: { n: 1 } }]);
  await waitFor('accepted and handled', () => accepts.handled.includes(messageId!));
  await waitFor('refused', () => dead.length === 1);
  expect(String(dead[0]!.properties.headers?.['x-outbox-consumer-error'])).toMatch(/^signature missing/);
  expect(rejecting.handled).toEqual([]);
  expect(await refusals(rejecting.registry)).toEqual({ missing: 1 });
  expect(await refusals(accepts.registry)).toEqual({});
}, 60_000);

test('OUTBOX_PUBLISH_USER_ID: the message carries the broker user; a mismatching user-id is refused by the broker', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('userid');
  await fx.startRelay({ OUTBOX_PUBLISH_USER_ID: 'true' });
  await fx.insert([{ exchange, routing_key: 'a', payload: { n: 1 } }]);
  const msg = await waitFor('the message', () => received[0]);
  expect(msg.properties.userId).toBe(new URL(testAmqpUrl().split(',')[0]!).username || 'guest');

  const model = await connect(testAmqpUrl());
  try {
    const channel = await model.createConfirmChannel();
    const closed = new Promise<string>((resolve) => channel.on('error', (err: Error) => resolve(err.message)));
    channel.publish(exchange, 'a', Buffer.from('{}'), { userId: 'someone-else' });
    await expect(channel.waitForConfirms()).rejects.toThrow();
    expect(await closed).toMatch(/PRECONDITION_FAILED - user_id property set to 'someone-else' but authenticated user was/);
  } finally {
    await model.close().catch(() => undefined);
  }
}, 60_000);

describe('the CLI', () => {
  beforeAll(() => buildIfMissing());

  test('replay signs as the relay does: the replayed copy verifies (and is a duplicate for the inbox)', async () => {
    const { exchange, queue, dlx } = await topology('replay');
    const tap = await broker.queue(uniqueName('replaytap'), { exchange, pattern: '#' });
    const c = await startConsumer(queue, dlx, { keys: { [OLD.id]: OLD.publicKey, [NEW.id]: NEW.publicKey } });
    await fx.startRelay(signingEnv(OLD));
    const [messageId] = await fx.insert([{ exchange, routing_key: 'a', payload: { n: 1 }, headers: { 'x-tenant': 'acme' } }]);
    await waitFor('handled', () => c.handled.includes(messageId!));
    await fx.stopRelays();
    const result = await cli(['replay', messageId!], envFor(fx.schema, signingEnv(NEW)));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    await waitFor('the replayed copy skipped as a duplicate', () => c.consumer.stats.duplicates === 1);
    expect(String(tap[1]?.properties.headers?.['x-outbox-signature'])).toMatch(/^v1;kid=orders-new;/);
    expect(await refusals(c.registry)).toEqual({});
  }, 60_000);

  test('a bad key file: exit 2, one line naming the variable, never the key', async () => {
    const garbage = join(dir, 'garbage.pem');
    writeFileSync(garbage, 'not a key');
    const rsa = join(dir, 'rsa.pem');
    writeFileSync(rsa, generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }));
    for (const [file, pattern] of [
      [garbage, /OUTBOX_SIGNING_KEY_FILE does not hold an unencrypted PEM private key/],
      [rsa, /OUTBOX_SIGNING_KEY_FILE holds a rsa key/],
      [join(dir, 'missing.pem'), /OUTBOX_SIGNING_KEY_FILE names a file that cannot be read \(ENOENT/],
    ] as const) {
      const stderr = expectOneLineFailure(
        await cli(['run'], envFor(fx.schema, { OUTBOX_SIGNING_KEY_FILE: file, OUTBOX_SIGNING_KEY_ID: 'k1' })),
        2,
      );
      expect(stderr).toMatch(pattern);
      expect(stderr).not.toContain('not a key');
    }
    const alone = expectOneLineFailure(await cli(['run'], envFor(fx.schema, { OUTBOX_SIGNING_KEY_ID: 'k1' })), 2);
    expect(alone).toMatch(/OUTBOX_SIGNING_KEY_ID is set without OUTBOX_SIGNING_KEY_FILE/);
  }, 60_000);

  test('selftest verifies the canary signature when signing is on', async () => {
    const result = await cli(['selftest'], envFor(fx.schema, signingEnv(NEW)), 60_000);
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/delivery \.+ ok .*signature verified \(key id "orders-new"\)/);
  }, 90_000);
});
