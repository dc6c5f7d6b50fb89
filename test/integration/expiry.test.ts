import { readMetrics } from '../kit/relay-http';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { bodies, TestBroker } from '../kit/test-broker';
import { staysFalse, waitFor } from '../kit/wait';

// expires_at: a message is never published at or after it. It becomes expired (kept,
// counted, never sent); while it is sent, the AMQP expiration is the time it has left.

const fx = OutboxFixture.forFile('expiry', { afterEach: 'reset' });
const broker = TestBroker.forFile();

interface RowState {
  message_id: string;
  expired: boolean;
  dead: boolean;
  published: boolean;
  attempts: number;
  last_error: string | null;
}

async function states(): Promise<Map<string, RowState>> {
  const { rows } = await fx.pool.query<RowState>(
    `SELECT message_id, expired_at IS NOT NULL AS expired, dead_at IS NOT NULL AND expired_at IS NULL AS dead,
            published_at IS NOT NULL AS published, attempts, last_error
       FROM ${fx.table}`,
  );
  return new Map(rows.map((r) => [r.message_id, r]));
}

const past = (): Date => new Date(Date.now() - 60_000);

test('a message past its expires_at is never sent: expired, counted, no attempt; the later messages of its key flow', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('expired');
  const [gone, forever, ...rest] = await fx.insert([
    { exchange, routing_key: 'r', partition_key: 'k', payload: { n: 1 }, expires_at: past() },
    { exchange, routing_key: 'r', partition_key: 'k', payload: { n: 2 }, expires_at: '-infinity' },
    { exchange, routing_key: 'r', partition_key: 'k', payload: { n: 3 } },
    { exchange, routing_key: 'r', partition_key: 'k', payload: { n: 4 }, expires_at: 'infinity' },
  ]);
  const { relay } = await fx.startRelay();
  await waitFor('the two live messages', () => received.length === 2);
  expect(bodies(received)).toEqual([{ n: 3 }, { n: 4 }]);
  // 'infinity' and no limit: no AMQP expiration.
  expect(received.map((m) => m.properties.expiration)).toEqual([undefined, undefined]);
  // The consumer may get the messages before the batch that sent them commits its marks.
  await waitFor('the batch committed', async () => (await fx.counts()).published === 2);
  const table = await states();
  for (const id of [gone!, forever!]) {
    expect(table.get(id)).toMatchObject({ expired: true, dead: false, published: false, attempts: 0 });
    expect(table.get(id)?.last_error).toMatch(/^expired at .* before it could be published$/);
  }
  expect(rest.map((id) => table.get(id)?.published)).toEqual([true, true]);
  await waitFor('the expired counter', async () => (await readMetrics(relay.port)).value('outbox_messages_expired_total') === 2);
  const metrics = await readMetrics(relay.port);
  expect(metrics.value('outbox_messages_dead_total')).toBe(0);
  expect(metrics.value('outbox_messages_published_total')).toBe(2);
});

test('a message sent before its expires_at carries the time it has left as its AMQP expiration', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('ttl');
  const inserted = Date.now();
  await fx.insert([{ exchange, routing_key: 'r', payload: { ttl: true }, expires_at: new Date(inserted + 60_000) }]);
  await fx.startRelay();
  await waitFor('the message', () => received.length === 1);
  const expiration = Number(received[0]?.properties.expiration);
  expect(expiration).toBeGreaterThan(0);
  expect(expiration).toBeLessThanOrEqual(60_000);
  // It went out within a few seconds of the insert (generous for a loaded machine).
  expect(expiration).toBeGreaterThan(60_000 - (Date.now() - inserted) - 1_000);
});

test('expiry while the broker is down: what expired meanwhile is never sent once it is back, the rest is', async () => {
  const proxy = await TcpProxy.inFrontOf(testAmqpUrl());
  try {
    const { exchange, received } = await broker.exchangeWithQueue('bdown');
    const { relay } = await fx.startRelay({ OUTBOX_AMQP_URL: proxy.url(testAmqpUrl()) });
    await waitFor('connected', async () => (await readMetrics(relay.port)).value('outbox_up', { dependency: 'broker' }) === 1);
    proxy.cut();
    await waitFor('broker down', async () => (await readMetrics(relay.port)).value('outbox_up', { dependency: 'broker' }) === 0);
    const [short] = await fx.insert([
      { exchange, routing_key: 'r', partition_key: 'a', payload: { short: true }, expires_at: new Date(Date.now() + 1_500) },
      { exchange, routing_key: 'r', partition_key: 'a', payload: { later: true } },
      { exchange, routing_key: 'r', payload: { long: true }, expires_at: new Date(Date.now() + 600_000) },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    proxy.restore();
    await waitFor('the two that did not expire', () => received.length === 2, 30_000);
    expect(bodies(received)).toEqual(expect.arrayContaining([{ later: true }, { long: true }]));
    await staysFalse('the expired one delivered', () => received.length > 2, 500);
    expect((await states()).get(short!)).toMatchObject({ expired: true, published: false, attempts: 0 });
    expect((await readMetrics(relay.port)).value('outbox_messages_expired_total')).toBe(1);
  } finally {
    await fx.stopRelays();
    await proxy.close();
  }
});

test('under OUTBOX_ORDERING_ON_DEAD=block a dead message holds its key, an expired one does not', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('block');
  const [deadOne, expiredOne] = await fx.insert([
    { exchange, routing_key: 'r', partition_key: 'held', payload: { dead: true } },
    { exchange, routing_key: 'r', partition_key: 'free', payload: { expired: true } },
    { exchange, routing_key: 'r', partition_key: 'held', payload: { behindDead: true } },
    { exchange, routing_key: 'r', partition_key: 'free', payload: { behindExpired: true } },
  ]);
  await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 3, last_error = 'x' WHERE message_id = $1`, [deadOne]);
  await fx.pool.query(`UPDATE ${fx.table} SET expired_at = now(), dead_at = now(), last_error = 'expired' WHERE message_id = $1`, [
    expiredOne,
  ]);
  await fx.startRelay({ OUTBOX_ORDERING_ON_DEAD: 'block' });
  await waitFor('the message behind the expired one', () => received.length === 1);
  await staysFalse('the message behind the dead one delivered', () => received.length > 1, 1_000);
  expect(bodies(received)).toEqual([{ behindExpired: true }]);
});

test('a failing message whose retry would come after its expiry expires at its expires_at and frees its key', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('retry');
  const [failing] = await fx.insert([
    // No such exchange: every attempt fails; the backoff (10 s) is longer than the time it has.
    {
      exchange: `${exchange}_missing`,
      routing_key: 'r',
      partition_key: 'k',
      payload: { failing: true },
      expires_at: new Date(Date.now() + 1_500),
    },
    { exchange, routing_key: 'r', partition_key: 'k', payload: { after: true } },
  ]);
  await fx.startRelay({ OUTBOX_BACKOFF_BASE_MS: '10000', OUTBOX_BACKOFF_MAX_MS: '10000', OUTBOX_MAX_ATTEMPTS: '5' });
  await waitFor('the message behind it, once it expired', () => received.length === 1, 15_000);
  const row = (await states()).get(failing!);
  expect(row).toMatchObject({ expired: true, published: false, dead: false });
  expect(row?.attempts).toBeGreaterThanOrEqual(1);
});
