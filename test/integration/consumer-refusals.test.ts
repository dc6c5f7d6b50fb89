import fc from 'fast-check';
import { createConsumer, type Consumer } from '../../src/consumer/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * One message id must never stall the consumer (the class of issue 20, item 2): whatever
 * a delivery carries that the database refuses is that delivery's own failure,
 * dead-lettered with the reason, while every other message flows — also at prefetch 3,
 * where three stuck deliveries used to stop everything. Property-based: generated mixes
 * of good messages and bad ones — a NUL in the message id, bytes that are not UTF-8 (a
 * lone surrogate, which the AMQP client sends as U+FFFD), no message id, and an id the
 * inbox table itself refuses (a CHECK constraint the consumer knows nothing of: the
 * class beyond the cases the consumer checks for).
 */

const fx = OutboxFixture.forFile('consumer_refusals');
const broker = TestBroker.forFile();
const SEED = 20260522;

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  await fx.pool.query(`ALTER TABLE "${fx.schema}".inbox ADD CONSTRAINT inbox_no_poison CHECK (message_id NOT LIKE 'poison%')`);
  await fx.pool.query(`CREATE TABLE "${fx.schema}".done (message_id text NOT NULL)`);
});

type Kind = 'good' | 'nul' | 'not-utf8' | 'none' | 'poison';

/** A message id of each kind, around the generated text. */
function messageIdOf(kind: Kind, text: string, n: number): string | undefined {
  switch (kind) {
    case 'good':
      return `good-${n}-${text}`;
    case 'nul':
      return `nul-${n}-${text}\u0000${text}`;
    case 'not-utf8':
      return `bad-${n}-${text}\uD800`;
    case 'poison':
      return `poison-${n}-${text}`;
    default:
      return undefined;
  }
}

const deliveries = fc.array(
  fc.record({
    kind: fc.constantFrom<Kind>('good', 'good', 'good', 'nul', 'not-utf8', 'none', 'poison'),
    text: fc.string({ unit: 'grapheme-ascii', maxLength: 8 }).map((t) => t.split('\u0000').join('')),
  }),
  { minLength: 4, maxLength: 16 },
);

const expectedReason: Record<Exclude<Kind, 'good'>, RegExp> = {
  nul: /message-id contains a NUL character/,
  'not-utf8': /message-id is not valid UTF-8/,
  none: /message without a message-id/,
  poison: /the inbox refused its message id: .*inbox_no_poison/,
};

test(`every good message is processed once and every refused one dead-lettered with its reason, at prefetch 3, batched or not (seed ${SEED})`, async () => {
  let round = 0;
  await fc.assert(
    fc.asyncProperty(deliveries, fc.constantFrom(1, 64), async (plan, batchSize) => {
      round += 1;
      const dlx = await broker.exchange(uniqueName('dlx'), 'fanout');
      const dead = await broker.queue(uniqueName('dlq'), { exchange: dlx, pattern: '' });
      const queue = await broker.declareQueue(uniqueName('refusals'), undefined, { 'x-dead-letter-exchange': dlx });
      const sent = plan.map(({ kind, text }, n) => ({ kind, messageId: messageIdOf(kind, text, round * 100 + n) }));
      for (const { messageId } of sent) {
        broker.channel.sendToQueue(queue, Buffer.from('{}'), {
          contentType: 'application/json',
          ...(messageId === undefined ? {} : { messageId }),
        });
      }
      let consumer: Consumer | undefined;
      try {
        consumer = await createConsumer({
          amqpUrl: testAmqpUrl(),
          queue,
          pool: fx.pool,
          schema: fx.schema,
          prefetch: 3,
          batchSize,
          deadLetterExchange: dlx,
          maxRetries: 0,
          handler: async (msg, tx) => {
            await tx.query(`INSERT INTO "${fx.schema}".done VALUES ($1)`, [msg.messageId]);
          },
        });
        const good = sent.filter((s) => s.kind === 'good').map((s) => s.messageId as string);
        const bad = sent.filter((s) => s.kind !== 'good');
        const c = consumer;
        await waitFor(
          `${good.length} processed and ${bad.length} dead-lettered`,
          () => c.stats.handled === good.length && dead.length === bad.length,
          15_000,
        );
        const { rows } = await fx.pool.query<{ message_id: string }>(
          `SELECT message_id FROM "${fx.schema}".done WHERE message_id = ANY($1)`,
          [good],
        );
        expect(rows.map((r) => r.message_id).sort()).toEqual([...good].sort());
        // Each refused one is in the dead-letter queue once, with its reason.
        const reasons = dead.map((m) => String(m.properties.headers?.['x-outbox-consumer-error']));
        for (const kind of ['nul', 'not-utf8', 'none', 'poison'] as const) {
          const count = bad.filter((b) => b.kind === kind).length;
          expect(reasons.filter((r) => expectedReason[kind].test(r))).toHaveLength(count);
        }
        expect(c.stats).toMatchObject({ handled: good.length, rejected: bad.length, retried: 0, duplicates: 0 });
        expect(c.state).toBe('consuming');
        await waitFor('an empty queue', async () => (await broker.channel.checkQueue(queue)).messageCount === 0);
      } finally {
        await consumer?.stop();
        await broker.channel.deleteQueue(queue);
      }
    }),
    { seed: SEED, numRuns: 8, endOnFailure: true },
  );
}, 180_000);
