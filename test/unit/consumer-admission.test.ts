import type { ConsumeMessage } from 'amqplib';
import fc from 'fast-check';
import type { Pool } from 'pg';
import { admit } from '../../src/consumer/admission';
import { databaseFault } from '../../src/util/outage';
import { createConsumer, OutboxError, type ConsumerOptions } from '../../src/consumer/index';
import { consumerSettings } from '../../src/consumer/settings';

/**
 * The class of issue 20's "one message id stalls the consumer": only a database that is
 * away makes a delivery wait; a value the database refuses is the delivery's own
 * failure; options are checked for what the database accepts.
 */

function delivery(messageId: unknown, headers: Record<string, unknown> = {}): ConsumeMessage {
  return {
    content: Buffer.from('{}'),
    fields: { deliveryTag: 1, redelivered: false, exchange: '', routingKey: 'q', consumerTag: 'c' },
    properties: { messageId, headers },
  } as unknown as ConsumeMessage;
}

/** Characters around the edges of what a message id may hold. */
const idChar = fc.oneof(
  fc.constantFrom('\u0000', '\uFFFD', '\u0001', '\n', '\u007F', 'é', '€', '😀', "'", '"', '\\', '%', '_'),
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
);
const messageId = fc.array(idChar, { maxLength: 40 }).map((chars) => chars.join(''));

test('admission: any message id is admitted as it is, or refused with a reason when the inbox could not store it faithfully', () => {
  fc.assert(
    fc.property(messageId, (id) => {
      const verdict = admit(delivery(id));
      const storable = id !== '' && !id.includes('\u0000') && !id.includes('\uFFFD');
      if (storable) expect(verdict).toEqual({ ok: true, messageId: id, key: undefined });
      else expect(verdict).toMatchObject({ ok: false, reason: expect.stringMatching(/message-id|message without/) as unknown });
    }),
    { numRuns: 500 },
  );
  for (const id of [undefined, null, 42, Buffer.from('x')]) expect(admit(delivery(id)).ok).toBe(false);
});

test("admission reads the relay's key header; the position is not the admission's business", () => {
  expect(admit(delivery('m-1', { 'x-outbox-partition-key': 'order-7', 'x-outbox-position': 12 }))).toEqual({
    ok: true,
    messageId: 'm-1',
    key: 'order-7',
  });
  expect(admit(delivery('m-2', { 'x-outbox-partition-key': Buffer.from('order-8') }))).toMatchObject({ key: 'order-8' });
});

/** An error as pg raises it for a server's answer (a DatabaseError has a severity and a SQLSTATE). */
function serverError(code: string): Error {
  return Object.assign(new Error(`SQLSTATE ${code}`), { severity: 'ERROR', code });
}

const sqlState = (cls: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(cls, fc.stringMatching(/^[0-9A-Z]{3}$/)).map(([c, rest]) => `${c}${rest}`);

test('database faults: connection, resources, shutdown, system, rollback classes are "away"; data, integrity and limits blame the value', () => {
  fc.assert(
    fc.property(sqlState(fc.constantFrom('08', '40', '53', '57', '58')), (code) => expect(databaseFault(serverError(code))).toBe('away')),
  );
  fc.assert(fc.property(sqlState(fc.constantFrom('22', '23', '54')), (code) => expect(databaseFault(serverError(code))).toBe('value')));
  fc.assert(
    fc.property(sqlState(fc.constantFrom('42', '3F', '0A', 'XX', '2B')), (code) => expect(databaseFault(serverError(code))).toBe('setup')),
  );
  expect(databaseFault(serverError('25006'))).toBe('away'); // a host that turned read-only (a failover)
  expect(databaseFault(serverError('55P03'))).toBe('away'); // lock not available
  expect(databaseFault(serverError('22021'))).toBe('value'); // invalid byte sequence for encoding "UTF8": 0x00
  expect(databaseFault(serverError('54000'))).toBe('value'); // index row size exceeds the maximum
  // Errors of the socket or the driver carry no SQLSTATE, even when their code has five letters.
  for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', undefined])
    expect(databaseFault(Object.assign(new Error('socket'), { code }))).toBe('away');
  expect(databaseFault(new Error('Connection terminated unexpectedly'))).toBe('away');
  expect(databaseFault(undefined)).toBe('away');
});

const pool = { connect: () => Promise.reject(new Error('not used')) } as unknown as Pool;
const valid: ConsumerOptions = { amqpUrl: 'amqp://guest:guest@127.0.0.1:5672', queue: 'orders', pool, handler: () => Promise.resolve() };

async function rejection(options: unknown): Promise<OutboxError> {
  const err = (await createConsumer(options as ConsumerOptions).catch((e: unknown) => e)) as OutboxError;
  expect(err).toBeInstanceOf(OutboxError);
  expect(err.code).toBe('INVALID_ARGUMENT');
  expect(err.message).not.toContain('\n');
  return err;
}

test('a consumer name or schema the database would refuse is an INVALID_ARGUMENT naming it, before anything connects', async () => {
  expect((await rejection({ ...valid, name: 'ship\u0000ping' })).message).toMatch(/name contains a NUL character/);
  expect((await rejection({ ...valid, name: 'ship\uD800' })).message).toMatch(/name contains a lone surrogate/);
  // The name defaults to the queue: a queue name with a NUL cannot be the name either.
  expect((await rejection({ ...valid, queue: 'or\u0000ders' })).message).toMatch(/name contains a NUL character.*defaults to the queue/);
  expect((await rejection({ ...valid, schema: 's\u0000' })).message).toMatch(/schema contains a NUL/);
  expect((await rejection({ ...valid, schema: 's'.repeat(64) })).message).toMatch(/schema must be a non-empty string of at most 63 bytes/);
  fc.assert(
    fc.property(fc.string({ unit: 'binary', minLength: 1, maxLength: 30 }), (name) => {
      const bad = name.includes('\u0000') || /[\uD800-\uDFFF]/.test(name.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''));
      const attempt = (): unknown => consumerSettings({ ...valid, name });
      if (bad) expect(attempt).toThrow(/^createConsumer: name contains/);
      else expect(attempt).not.toThrow();
    }),
  );
});

test('an option createConsumer does not know is an INVALID_ARGUMENT naming it, also inside topology, with a near name', async () => {
  const err = await rejection({
    ...valid,
    prefech: 100,
    ordred: true,
    topology: { exchange: 'x', bindingKeys: ['#'], singleActive: true },
  });
  expect(err.message).toContain('unknown option "prefech" (did you mean "prefetch"?)');
  expect(err.message).toContain('unknown option "ordred" (did you mean "ordered"?)');
  expect(err.message).toContain('unknown option "topology.singleActive"');
  expect((await rejection({ ...valid, xyzzy: 1 })).message).toBe('createConsumer: unknown option "xyzzy"');
  expect((await rejection({ ...valid, ordered: 'yes' })).message).toMatch(/ordered must be true or false/);
  expect((await rejection({ ...valid, batchSize: 65 })).message).toMatch(/batchSize must be an integer from 1 to 64/);
});

test('the new options: defaults, and single active consumer in the topology', () => {
  const s = consumerSettings(valid);
  expect(s).toMatchObject({ batchSize: 50, batchWaitMs: 0, ordered: false, concurrency: 10 });
  const withPool = consumerSettings({ ...valid, pool: Object.assign(Object.create(pool) as Pool, { options: { max: 4 } }) });
  expect(withPool.concurrency).toBe(4);
  const t = consumerSettings({ ...valid, ordered: true, topology: { exchange: 'x', bindingKeys: ['#'], singleActiveConsumer: true } });
  expect(t.ordered).toBe(true);
  expect(t.topology?.singleActiveConsumer).toBe(true);
});
