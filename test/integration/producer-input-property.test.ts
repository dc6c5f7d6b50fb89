import fc from 'fast-check';
import { defineMessage, enqueue, type EnqueueOptions } from '../../src/producer';
import { serializeJson } from '../../src/producer/json-value';
import { EARLIEST_TIMESTAMPTZ_MS } from '../../src/producer/storable';
import { expectInvalid, ProducerProbe, storedDifferences } from '../kit/producer-probe';

/**
 * The producer's promise over generated input: whatever a caller passes, the call either
 * stores exactly that or throws an INVALID_ARGUMENT before any SQL — never a database
 * error, never an aborted transaction — and what the table takes is never refused.
 */
const probe = ProducerProbe.forFile('producer_property');

const Order = defineMessage<unknown>({ type: 'order.created', exchange: 'orders', routingKey: 'order.created' });

/** Any UTF-16 unit: NUL, control characters, lone surrogates of either half. */
const anyUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));

/** Strings a caller may hand over: readable text, arbitrary units, and the known troublemakers. */
const anyString: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: 'grapheme', maxLength: 12 }) },
  { weight: 3, arbitrary: fc.string({ unit: anyUnit, maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom('\u0000', '\ud800', '\udfff', 'a\ud83d', '\ude00b', '\\u0000', '\u{10ffff}', '') },
);

/** Text PostgreSQL stores: any Unicode but NUL. */
const cleanString: fc.Arbitrary<string> = fc
  .oneof(fc.string({ unit: 'grapheme', maxLength: 12 }), fc.string({ unit: anyUnit, maxLength: 8 }))
  .map((s) =>
    s
      .split(String.fromCharCode(0))
      .join('')
      .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, ''),
  );

/** Any date, invalid ones and those before PostgreSQL's range included. */
const anyDate = fc.date({ noInvalidDate: false });
/** Dates PostgreSQL stores. */
const cleanDate = fc.date({ min: new Date(EARLIEST_TIMESTAMPTZ_MS), max: new Date(8.64e15), noInvalidDate: true });

const anyLeaf: fc.Arbitrary<unknown> = fc.oneof(
  anyString,
  fc.double(),
  fc.integer(),
  fc.bigInt(),
  fc.boolean(),
  fc.constantFrom(null, undefined, Number.NaN, Number.POSITIVE_INFINITY, -0, Number.MAX_VALUE, Number.MIN_VALUE, 1e21),
  anyDate,
  fc.constantFrom(
    () => 1,
    Symbol('s'),
    new Map([[1, 1]]),
    new Set([1]),
    Buffer.from([0, 255]),
    Object(1n) as unknown,
    Object(Number.NaN) as unknown,
  ),
);

const cleanLeaf: fc.Arbitrary<unknown> = fc.oneof(
  cleanString,
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  cleanDate,
);

function tree(leaf: fc.Arbitrary<unknown>, key: fc.Arbitrary<string>): fc.Arbitrary<unknown> {
  return fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      leaf,
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(key, tie('value'), { maxKeys: 4 }),
    ),
  })).value;
}

const anyValue = tree(anyLeaf, anyString);
const cleanValue = tree(cleanLeaf, cleanString);

const anyOffset = fc.oneof(fc.double(), fc.constantFrom(1e20, 8.64e15, 8.64e15 + 2, -1, 0, 0.5));

const anyOptions: fc.Arbitrary<EnqueueOptions> = fc.record(
  {
    partitionKey: anyString,
    correlationId: anyString,
    headers: fc.dictionary(anyString, anyValue, { maxKeys: 4 }),
    traceparent: anyString,
    availableAt: anyDate,
    delayMs: anyOffset,
    expiresAt: anyDate,
    ttlMs: anyOffset,
    messageId: fc.oneof(fc.uuid(), anyString),
    routingKey: anyString,
  },
  { requiredKeys: [] },
);

/** Options the table takes: at most one of availableAt/delayMs and of expiresAt/ttlMs. */
const cleanOptions: fc.Arbitrary<EnqueueOptions> = fc
  .record(
    {
      partitionKey: cleanString,
      correlationId: cleanString,
      headers: fc.dictionary(cleanString, cleanValue, { maxKeys: 4 }),
      tracestate: cleanString,
      available: fc.oneof(
        cleanDate.map((availableAt) => ({ availableAt })),
        fc.double({ min: 0, max: 8.64e15, noNaN: true }).map((delayMs) => ({ delayMs })),
      ),
      expires: fc.oneof(
        cleanDate.map((expiresAt) => ({ expiresAt })),
        fc.double({ min: Number.MIN_VALUE, max: 8.64e15, noNaN: true }).map((ttlMs) => ({ ttlMs })),
      ),
      routingKey: cleanString.filter((k) => k !== ''),
    },
    { requiredKeys: [] },
  )
  .map(({ available, expires, ...rest }) => ({ ...rest, ...available, ...expires }));

describe.each([
  ['pg', 150],
  ['kysely', 100],
] as const)('through a %s transaction', (via, numRuns) => {
  test('any input: stored exactly, or INVALID_ARGUMENT with the transaction usable', async () => {
    await fc.assert(
      fc.asyncProperty(anyValue, anyOptions, async (payload, options) => {
        let differences: string[] = [];
        const outcome = await probe.run(
          via,
          (executor) => enqueue(executor, Order, payload, { ...options, schema: probe.schema }),
          (rows) => {
            differences = storedDifferences(rows[0]!, { payload, ...options });
          },
        );
        if (outcome.ok) expect(differences).toEqual([]);
        else expectInvalid(outcome);
      }),
      { numRuns },
    );
  });

  test('input the table takes is never refused, and stored exactly', async () => {
    await fc.assert(
      fc.asyncProperty(
        cleanValue.filter((v) => v !== null && v !== undefined),
        cleanOptions,
        async (payload, options) => {
          let differences: string[] = ['not inspected'];
          const outcome = await probe.run(
            via,
            (executor) => enqueue(executor, Order, payload, { ...options, schema: probe.schema }),
            (rows) => {
              differences = storedDifferences(rows[0]!, { payload, ...options });
            },
          );
          if (!outcome.ok) throw outcome.error;
          expect(differences).toEqual([]);
        },
      ),
      { numRuns: Math.round(numRuns / 2) },
    );
  });
});

test("the producer's jsonb size bound is never below what PostgreSQL builds", async () => {
  const smallNumbers = fc.array(fc.integer({ min: 0, max: 9 }), { maxLength: 3_000 });
  const empties = fc.array(fc.constantFrom([], {}, null, true, ''), { maxLength: 3_000 });
  await fc.assert(
    fc.asyncProperty(fc.oneof(cleanValue, smallNumbers, empties), async (value) => {
      const { text, jsonbBytes } = serializeJson(value, 'payload');
      const { rows } = await probe.fx.pool.query<{ bytes: number }>('SELECT pg_column_size($1::jsonb) AS bytes', [text]);
      expect(jsonbBytes).toBeGreaterThanOrEqual(rows[0]!.bytes);
    }),
    { numRuns: 200 },
  );
});
