import { defineMessage, enqueue, enqueueMany, message, type EnqueueOptions } from '../../src/producer';
import { OutboxError } from '../../src/errors';
import { expectInvalid, ProducerProbe, storedDifferences, type ProbeInput } from '../kit/producer-probe';

/**
 * The producer never aborts the caller's transaction: what it accepts the table stores
 * exactly, anything else is an INVALID_ARGUMENT naming the field before any SQL. Each case
 * runs inside a business transaction, through a node-postgres client and through a Kysely
 * transaction, which must commit the business rows written before and after the call.
 */
const probe = ProducerProbe.forFile('producer_input');

const OrderCreated = defineMessage<Record<string, unknown>>({ type: 'order.created', exchange: 'orders' });
const PAYLOAD = { orderId: 'o-1' };
const cyclic: Record<string, unknown> = { orderId: 'c' };
cyclic['self'] = cyclic;
const deep = (levels: number): unknown => Array.from({ length: levels - 1 }).reduce<unknown>((inner) => ({ a: inner }), { a: 1 });

/** [what, payload, options, the message] of calls that must be refused. */
const REFUSED: readonly [string, unknown, EnqueueOptions, RegExp][] = [
  [
    'NUL in a payload string',
    { note: 'a\u0000b' },
    {},
    /^enqueue\(order\.created\): payload\.note contains a NUL character \(\\u0000\) at index 1/,
  ],
  ['NUL in a payload key', { 'a\u0000': 1 }, {}, /payload\["a\\u0000"\] \(the key\) contains a NUL character/],
  ['NUL in a header value', PAYLOAD, { headers: { 'x-tenant': '\u0000' } }, /headers\["x-tenant"\] contains a NUL character/],
  ['NUL in a header key', PAYLOAD, { headers: { '\u0000': 'v' } }, /headers\["\\u0000"\] \(the key\) contains a NUL/],
  ['NUL in partitionKey', PAYLOAD, { partitionKey: 'k\u0000' }, /partitionKey contains a NUL character/],
  ['NUL in correlationId', PAYLOAD, { correlationId: '\u0000' }, /correlationId contains a NUL character/],
  ['NUL in traceparent', PAYLOAD, { traceparent: '00-\u0000' }, /traceparent contains a NUL character/],
  ['NUL in the routing key', PAYLOAD, { routingKey: 'r\u0000' }, /routing key contains a NUL character/],
  ['a lone high surrogate in the payload', { note: '\ud800' }, {}, /payload\.note contains a lone UTF-16 surrogate \(\\ud800\)/],
  [
    'a lone low surrogate in partitionKey',
    PAYLOAD,
    { partitionKey: 'a\udc00b' },
    /partitionKey contains a lone UTF-16 surrogate \(\\udc00\) at index 1/,
  ],
  ['swapped surrogates in a header', PAYLOAD, { headers: { h: '\ude00\ud83d' } }, /headers\.h contains a lone UTF-16 surrogate/],
  [
    'delayMs 1e20',
    PAYLOAD,
    { delayMs: 1e20 },
    /delayMs must be a finite number ≥ 0 and at most 8640000000000000 \(ms\), not 100000000000000000000/,
  ],
  ['ttlMs 1e20', PAYLOAD, { ttlMs: 1e20 }, /ttlMs must be a finite number > 0 and at most/],
  ['delayMs NaN', PAYLOAD, { delayMs: Number.NaN }, /delayMs must be a finite number ≥ 0 .*not NaN/],
  ['ttlMs Infinity', PAYLOAD, { ttlMs: Number.POSITIVE_INFINITY }, /ttlMs must be a finite number > 0/],
  ['delayMs as a string', PAYLOAD, { delayMs: '5' as never }, /delayMs must be a finite number ≥ 0 .*not a string/],
  [
    'availableAt before 4714 BC',
    PAYLOAD,
    { availableAt: new Date(-8.64e15) },
    /availableAt is -271821-04-20T00:00:00\.000Z, before 4714-11-24 BC/,
  ],
  ['expiresAt one ms before 4714-11-24 BC', PAYLOAD, { expiresAt: new Date(-210_866_803_200_001) }, /expiresAt is .* before 4714-11-24 BC/],
  [
    'a BigInt in headers',
    PAYLOAD,
    { headers: { n: 1n } },
    /^enqueue\(order\.created\): headers is not JSON-serialisable: headers\.n is a BigInt/,
  ],
  ['a BigInt in the payload', { total: 10n }, {}, /payload is not JSON-serialisable: payload\.total is a BigInt/],
  ['NaN in the payload', { total: Number.NaN }, {}, /payload\.total is NaN, which JSON cannot represent/],
  ['-Infinity in headers', PAYLOAD, { headers: { h: [1, Number.NEGATIVE_INFINITY] } }, /headers\.h\[1\] is -Infinity/],
  ['a function in the payload', { f: () => 1 }, {}, /payload\.f is a function/],
  ['a Symbol in headers', PAYLOAD, { headers: { s: Symbol('s') } }, /headers\.s is a symbol/],
  ['a Map in the payload', { m: new Map([[1, 2]]) }, {}, /payload\.m is a Map, which JSON writes as \{\}/],
  ['a Set as the payload', new Set([1]), {}, /payload is not JSON-serialisable: payload is a Set/],
  ['a Map as headers', PAYLOAD, { headers: new Map() as never }, /headers must be an object, not a Map/],
  ['an invalid Date in the payload', { at: new Date(Number.NaN) }, {}, /payload\.at is an invalid Date/],
  ['a cycle', cyclic, {}, /payload is not JSON-serialisable \(Converting circular structure to JSON/],
  [
    'a toJSON that throws',
    {
      toJSON: () => {
        throw new Error('no');
      },
    },
    {},
    /payload is not JSON-serialisable \(no\)/,
  ],
  ['a toJSON giving a NUL', { v: { toJSON: () => '\u0000' } }, {}, /payload\.v contains a NUL/],
  ['headers whose toJSON gives a string', PAYLOAD, { headers: { toJSON: () => 'x' } }, /headers must serialise to a JSON object/],
  ['a payload 1,001 levels deep', deep(1_001), {}, /payload(\.a){1000} nests deeper than 1000 levels/],
  ['a messageId that is no UUID', PAYLOAD, { messageId: 'x\u0000' }, /messageId "x\\u0000" is not a UUID/],
  ['a messageId that is a number', PAYLOAD, { messageId: 7 as never }, /messageId must be a UUID string, not 7/],
];

describe.each(['pg', 'kysely'] as const)('through a %s transaction', (via) => {
  test.each(REFUSED)(
    '%s: INVALID_ARGUMENT naming the field, and the transaction stays usable',
    async (_what, payload, options, expected) => {
      const outcome = await probe.run(via, (executor) =>
        enqueue(executor, OrderCreated, payload as never, { ...options, schema: probe.schema }),
      );
      expectInvalid(outcome, expected);
    },
  );

  test('enqueueMany names the item by its index, and writes none of the call', async () => {
    const before = await probe.fx.counts();
    const outcome = await probe.run(via, (executor) =>
      enqueueMany(executor, [message(OrderCreated, PAYLOAD), message(OrderCreated, PAYLOAD), message(OrderCreated, { n: 1n })], {
        schema: probe.schema,
      }),
    );
    expectInvalid(outcome, /^enqueueMany items\[2\]: enqueue\(order\.created\): payload is not JSON-serialisable: payload\.n is a BigInt/);
    expect(await probe.fx.counts()).toEqual(before);
  });

  test('two items with one messageId: the second is named', async () => {
    const id = '0b7c6a42-3e1f-4b5e-9f52-4c1d2e3f4a5b';
    const outcome = await probe.run(via, (executor) =>
      enqueueMany(
        executor,
        [message(OrderCreated, PAYLOAD, { messageId: id }), message(OrderCreated, PAYLOAD, { messageId: id.toUpperCase() })],
        {
          schema: probe.schema,
        },
      ),
    );
    expectInvalid(outcome, /^enqueueMany items\[1\]: enqueue\(order\.created\): messageId 0B7C6A42-.* is also the messageId of items\[0\]/);
  });

  test('a messageId already in the outbox: refused by the statement without aborting the transaction', async () => {
    const first = await probe.run(via, (executor) => enqueue(executor, OrderCreated, PAYLOAD, { schema: probe.schema }));
    if (!first.ok) throw first.error;
    const taken = first.ids[0]!;
    const again = await probe.run(via, (executor) => enqueue(executor, OrderCreated, PAYLOAD, { schema: probe.schema, messageId: taken }));
    expectInvalid(again, new RegExp(`^enqueue\\(order\\.created\\): messageId ${taken} is already in the outbox; nothing was written`));
    const many = await probe.run(via, (executor) =>
      enqueueMany(executor, [message(OrderCreated, { n: 1 }), message(OrderCreated, { n: 2 }, { messageId: taken })], {
        schema: probe.schema,
      }),
    );
    expectInvalid(
      many,
      /^enqueueMany: 1 of the 2 messages were not written: their messageId is already in the outbox .*roll it back to undo them/,
    );
  });

  test.each([
    ['a schema with a NUL', 'out\u0000box', /^enqueue: schema contains a NUL character/],
    ['a schema PostgreSQL would cut', 's'.repeat(64), /^enqueue: schema must be 1 to 63 bytes \(a PostgreSQL name\), not 64/],
    ['an empty schema', '', /schema must be 1 to 63 bytes/],
  ])('%s', async (_what, schema, expected) => {
    expectInvalid(await probe.run(via, (executor) => enqueue(executor, OrderCreated, PAYLOAD, { schema })), expected);
  });

  test('a hand-built definition the table would refuse', async () => {
    const cases: [unknown, RegExp][] = [
      [{ ...OrderCreated, contentType: '' }, /contentType \(of the definition\) must not be empty/],
      [{ ...OrderCreated, type: 'order\u0000created' }, /type \(of the definition\) contains a NUL/],
      [{ ...OrderCreated, exchange: 7 }, /exchange \(of the definition\) must be a string, not 7/],
      [{ ...OrderCreated, routingKey: () => '\ud800' }, /routing key contains a lone UTF-16 surrogate/],
    ];
    for (const [definition, expected] of cases) {
      expectInvalid(
        await probe.run(via, (executor) => enqueue(executor, definition as never, PAYLOAD, { schema: probe.schema })),
        expected,
      );
    }
  });

  /** [what, payload, options] the table takes: stored exactly. */
  const ACCEPTED: readonly [string, unknown, EnqueueOptions][] = [
    ['expiresAt at the end of the Date range (275760-09-13)', PAYLOAD, { expiresAt: new Date(8.64e15) }],
    ["availableAt at the start of PostgreSQL's range (4714-11-24 BC)", PAYLOAD, { availableAt: new Date(-210_866_803_200_000) }],
    ['availableAt in 1 BC (ISO year 0)', PAYLOAD, { availableAt: new Date('0000-02-29T12:34:56.789Z') }],
    ['availableAt in 2 BC', PAYLOAD, { availableAt: new Date('-000001-03-01T00:00:00.001Z') }],
    ['availableAt in year 10000', PAYLOAD, { availableAt: new Date('+010000-01-01T00:00:00.000Z') }],
    ['the longest delayMs and ttlMs', PAYLOAD, { delayMs: 8.64e15, ttlMs: 8.64e15 }],
    ['extreme numbers', { max: Number.MAX_VALUE, min: Number.MIN_VALUE, negZero: -0, big: 1e21, small: -1.5e-300 }, {}],
    [
      'every control character but NUL, a backslash-u text, emoji',
      { s: `${Array.from({ length: 31 }, (_, i) => String.fromCharCode(i + 1)).join('')}\\u0000 😀 \u{10ffff}` },
      { partitionKey: '\\u0000😀', headers: { '😀': '\u0001' } },
    ],
    ['nested Dates and Buffers (their toJSON)', { at: new Date(0), bytes: Buffer.from('hi') }, {}],
    ['headers 1,000 levels deep', PAYLOAD, { headers: { h: deep(999) } }],
    ['a raw Buffer body', Buffer.from([0, 1, 2, 255]), { correlationId: 'c' }],
  ];

  test.each(ACCEPTED)('%s: stored exactly', async (_what, payload, options) => {
    let differences: string[] = ['not inspected'];
    const outcome = await probe.run(
      via,
      (executor) => enqueue(executor, OrderCreated, payload as never, { ...options, schema: probe.schema }),
      (rows) => {
        differences = rows.length === 1 ? storedDifferences(rows[0]!, { ...options, payload } as ProbeInput) : [`${rows.length} rows`];
      },
    );
    if (!outcome.ok) throw outcome.error;
    expect(differences).toEqual([]);
  });
});

test('defineMessage refuses what no row could carry, with an OutboxError', () => {
  const cases: [() => unknown, RegExp][] = [
    [() => defineMessage({ type: 'a\u0000' }), /^defineMessage\("a\\u0000"\): type contains a NUL/],
    [() => defineMessage({ type: 't', exchange: '\ud800' }), /^defineMessage\(t\): exchange contains a lone UTF-16 surrogate/],
    [() => defineMessage({ type: 't', routingKey: 'r\u0000' }), /routingKey contains a NUL/],
    [() => defineMessage({ type: 't', contentType: '' }), /contentType must not be empty/],
    [() => defineMessage({ type: 't', contentType: 5 as never }), /contentType must be a string, not 5/],
  ];
  for (const [define, expected] of cases) {
    expect(define).toThrow(expected);
    expect(define).toThrow(OutboxError);
  }
});
