import type { Pool } from 'pg';
import { backoffMs, reconnectDelayMs } from '../../src/util/backoff';
import { createConsumer, OutboxError, type ConsumerOptions } from '../../src/consumer/index';
import { consumerSettings } from '../../src/consumer/settings';
import { displayUrl, maskUrls, withHeartbeat } from '../../src/consumer/urls';

const pool = { connect: () => Promise.reject(new Error('not used')) } as unknown as Pool;
const valid: ConsumerOptions = { amqpUrl: 'amqp://guest:guest@127.0.0.1:5672', queue: 'orders', pool, handler: () => Promise.resolve() };

test('the defaults', () => {
  const s = consumerSettings(valid);
  expect(s).toMatchObject({
    urls: ['amqp://guest:guest@127.0.0.1:5672'],
    name: 'orders',
    schema: 'outbox',
    prefetch: 10,
    maxRetries: 3,
    retryDelayMs: 200,
    retryMode: 'delay-queue',
    retryQueue: 'orders.retry',
    deadLetterExchange: undefined,
    heartbeatSeconds: 10,
    startTimeoutMs: 30_000,
    shutdownTimeoutMs: 10_000,
    topology: undefined,
  });
  expect(Object.isFrozen(s)).toBe(true);
});

test('a topology names the dead-letter exchange and queue after the queue', () => {
  const s = consumerSettings({ ...valid, topology: { exchange: 'events', bindingKeys: ['order.*'] } });
  expect(s.deadLetterExchange).toBe('orders.dead');
  expect(s.topology).toMatchObject({ exchange: 'events', bindingKeys: ['order.*'], queueType: 'classic', deadLetterQueue: 'orders.dead' });
});

test('a comma-separated list and an array of URLs', () => {
  expect(consumerSettings({ ...valid, amqpUrl: 'amqp://a:1@h1,amqp://a:1@h2:5673' }).urls).toEqual(['amqp://a:1@h1', 'amqp://a:1@h2:5673']);
  expect(consumerSettings({ ...valid, amqpUrl: ['amqps://h1', 'amqp://h2'] }).urls).toEqual(['amqps://h1', 'amqp://h2']);
});

test('bad options: one INVALID_ARGUMENT error on one line naming every problem, and no connection tried', async () => {
  const bad = {
    ...valid,
    amqpUrl: ['amqp://ok', 'http://nope'],
    queue: '',
    prefetch: 0,
    maxRetries: -1,
    retryDelayMs: Number.NaN,
    retryMode: 'later',
    topology: { exchange: 'x', bindingKeys: [] },
    handler: undefined,
  } as unknown as ConsumerOptions;
  const attempt = createConsumer(bad);
  await expect(attempt).rejects.toThrow(OutboxError);
  const err = (await attempt.catch((e: unknown) => e)) as OutboxError;
  expect(err.code).toBe('INVALID_ARGUMENT');
  expect(err.message).not.toContain('\n');
  for (const option of ['amqpUrl[1]', 'queue', 'prefetch', 'maxRetries', 'retryDelayMs', 'retryMode', 'topology.bindingKeys', 'handler']) {
    expect(err.message).toContain(option);
  }
});

test('URLs are printed without their password', () => {
  expect(displayUrl('amqp://guest:s3cret@mq:5672/vh')).toBe('amqp://guest:***@mq:5672/vh');
  expect(displayUrl('amqp://p@ss:w@rd@mq')).toBe('amqp://p@ss:***@mq');
  expect(displayUrl('amqp://mq:5672')).toBe('amqp://mq:5672');
  expect(maskUrls('cannot reach amqp://u:pa@ss@h:1 and postgres://x:y@db/z')).toBe(
    'cannot reach amqp://u:***@h:1 and postgres://x:***@db/z',
  );
  expect(maskUrls('no url: 5 > 3')).toBe('no url: 5 > 3');
});

test('the heartbeat goes into the query unless the URL names one', () => {
  expect(withHeartbeat('amqp://u:p@h:5672', 10)).toBe('amqp://u:p@h:5672?heartbeat=10');
  expect(withHeartbeat('amqp://u:p@h/vh?frameMax=8192', 5)).toBe('amqp://u:p@h/vh?frameMax=8192&heartbeat=5');
  expect(withHeartbeat('amqp://u:p@h?heartbeat=30', 5)).toBe('amqp://u:p@h?heartbeat=30');
  expect(withHeartbeat('amqp://u:a?b#c@h', 5)).toBe('amqp://u:a?b#c@h?heartbeat=5');
});

test('reconnect delays grow, stay within [3/4, 1] of the capped ceiling', () => {
  expect(reconnectDelayMs(1, 250, 15_000, () => 0)).toBe(188);
  expect(reconnectDelayMs(1, 250, 15_000, () => 1)).toBe(250);
  expect(reconnectDelayMs(3, 250, 15_000, () => 1)).toBe(1_000);
  expect(reconnectDelayMs(100, 250, 15_000, () => 1)).toBe(15_000);
  expect(reconnectDelayMs(100, 250, 15_000, () => 0)).toBe(11_250);
});

test('retry delays double from the base up to the cap', () => {
  expect([1, 2, 3, 4].map((n) => backoffMs(n, { firstMs: 200, maxMs: 1_000, jitter: 'none' }))).toEqual([200, 400, 800, 1_000]);
});
