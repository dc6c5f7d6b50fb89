import { expirationOf, MAX_EXPIRATION_MS } from '../../src/broker/amqp-limits';
import { publishBatch } from '../../src/broker/publisher';
import type { PublishOutcome } from '../../src/domain/outcome';
import { sendBatch } from '../../src/relay/send';
import { decideVerdicts, marksOf, type VerdictSettings } from '../../src/relay/verdicts';
import { fakeChannel } from './fake-confirm-channel';
import { fakeMessage } from './fake-message';
import { FakeBroker } from './relay-fakes';

// expires_at, as the relay applies it: never sent at or after it, the time left as the
// AMQP expiration while it is sent, and an expired message holds nothing back.

const NOW = 1_700_000_000_000;
const SETTINGS: VerdictSettings = { maxAttempts: 5, unroutable: 'publish', orderingOnDead: 'block' };
const backoff = { delayMs: () => 60_000 };

test('the AMQP expiration is the time left in whole milliseconds, at least 1; none without a limit or beyond RabbitMQ’s ten years', () => {
  expect(expirationOf(null, NOW)).toBeUndefined();
  expect(expirationOf(undefined, NOW)).toBeUndefined();
  expect(expirationOf(NOW + 1_500.2, NOW)).toBe('1501');
  expect(expirationOf(NOW + 0.1, NOW)).toBe('1');
  expect(expirationOf(NOW + MAX_EXPIRATION_MS, NOW)).toBe(String(MAX_EXPIRATION_MS));
  expect(expirationOf(NOW + MAX_EXPIRATION_MS + 1, NOW)).toBeUndefined();
});

test('sendBatch: an expired message is neither checked nor sent, and the later messages of its key go out', async () => {
  const broker = new FakeBroker();
  const checked: string[] = [];
  broker.preflightOf = (m) => {
    checked.push(m.id);
    return { kind: 'send' };
  };
  const expired = fakeMessage({ partitionKey: 'k', expiresAt: NOW - 1 });
  const exactlyNow = fakeMessage({ partitionKey: 'k', expiresAt: NOW });
  const later = fakeMessage({ partitionKey: 'k', expiresAt: NOW + 1_000 });
  const unlimited = fakeMessage({ partitionKey: 'k' });
  const outcomes = await sendBatch(broker, [expired, exactlyNow, later, unlimited], {
    timeoutMs: 1_000,
    signal: new AbortController().signal,
    now: () => NOW,
  });
  expect(outcomes.map((o) => o.kind)).toEqual(['expired', 'expired', 'confirmed', 'confirmed']);
  expect(checked).toEqual([later.id, unlimited.id]);
  expect(broker.sent.map((m) => m.id)).toEqual([later.id, unlimited.id]);
});

test('verdicts: expired is marked expired and stops nothing; a retry never waits past the time the message has left', () => {
  const expired = fakeMessage({ partitionKey: 'k' });
  const behind = fakeMessage({ partitionKey: 'k' });
  const failing = fakeMessage({ partitionKey: 'j', expiresAt: NOW + 2_000 });
  const behindFailing = fakeMessage({ partitionKey: 'j' });
  const outcomes: PublishOutcome[] = [
    { kind: 'expired' },
    { kind: 'confirmed' },
    { kind: 'failed', reason: 'timeout', error: 'no confirm' },
    { kind: 'confirmed' },
  ];
  const verdicts = decideVerdicts([expired, behind, failing, behindFailing], outcomes, SETTINGS, backoff, false, NOW);
  expect(verdicts.map((v) => v.kind)).toEqual(['expired', 'published', 'failed', 'parked']);
  expect(verdicts[2]).toMatchObject({ retryInMs: 2_000, dead: false });
  expect(verdicts[3]).toEqual({ kind: 'parked', until: { inMs: 2_000 } });
  const marks = marksOf([expired, behind, failing, behindFailing], verdicts);
  expect(marks.expired).toEqual([expired.id]);
  expect(marks.published).toEqual([behind.id]);
});

test('publishBatch: the expiration goes with the message; one that expires while the batch is written is not sent', async () => {
  const { fake, target } = fakeChannel();
  const live = fakeMessage({ expiresAt: Date.now() + 60_000 });
  const gone = fakeMessage({ expiresAt: Date.now() - 1 });
  const promise = publishBatch(target, [live, gone], { appId: 'test', timeoutMs: 5_000 });
  await new Promise((resolve) => setImmediate(resolve));
  expect(fake.published).toHaveLength(1);
  const expiration = Number(fake.published[0]?.options.expiration);
  expect(expiration).toBeGreaterThan(59_000);
  expect(expiration).toBeLessThanOrEqual(60_000);
  fake.ack(0);
  expect((await promise).map((o) => o.kind)).toEqual(['confirmed', 'expired']);
});
