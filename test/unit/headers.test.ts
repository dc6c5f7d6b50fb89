import { encodeHeaders, HEADERS_MAX_BYTES, publishedHeaders } from '../../src/broker/headers';
import { RELAY_HEADERS } from '../../src/domain/relay-headers';
import { messageProblem } from '../../src/broker/amqp-limits';
import { publishProperties } from '../../src/broker/publisher';
import { fakeMessage } from './fake-message';
import type { HeaderTable } from '../../src/domain/message';
import { parseHeaders } from '../../src/outbox/rows';
import { decodeFieldTable } from '../kit/amqp-wire';
import { amqplibEncodeHeaders } from './amqplib-encoder';

/** Encodes `headers` as the relay does, then through amqplib's codec, and reads the bytes back exactly. */
function roundTrip(headers: HeaderTable): { wire: ReturnType<typeof decodeFieldTable>; bytes: number; reported: number } {
  const encoded = encodeHeaders(headers);
  if (!encoded.ok) throw new Error(encoded.error);
  const bytes = amqplibEncodeHeaders(encoded.table);
  return { wire: decodeFieldTable(bytes.subarray(4)), bytes: bytes.length, reported: encoded.bytes };
}

function problem(headers: HeaderTable): string {
  const encoded = encodeHeaders(headers);
  if (encoded.ok) throw new Error(`expected a problem with ${JSON.stringify(Object.keys(headers))}`);
  return encoded.error;
}

describe('encodeHeaders: the row headers in exact AMQP types', () => {
  test('integers arrive as signed 64-bit integers, exactly, up to the ends of the range', () => {
    const headers = parseHeaders(
      '{"safe": 42, "beyond53": 9007199254740993, "max": 9223372036854775807, "min": -9223372036854775808, "zero": 0, "neg": -1}',
    );
    const { wire } = roundTrip(headers);
    expect(wire).toEqual({
      safe: 42n,
      beyond53: 9007199254740993n,
      max: 9223372036854775807n,
      min: -9223372036854775808n,
      zero: 0n,
      neg: -1n,
    });
  });

  test('other numbers arrive as doubles, also those with a whole value (1.0)', () => {
    const { wire } = roundTrip(parseHeaders('{"half": 0.5, "one": 1.0, "tiny": 1.5e-300, "neg": -2.25}'));
    expect(wire).toEqual({ half: 0.5, one: 1, tiny: 1.5e-300, neg: -2.25 });
  });

  test('an integer beyond signed 64 bits fails, naming the header, never as a rounded double', () => {
    expect(problem(parseHeaders('{"x-big": 9223372036854775808}'))).toBe(
      'header "x-big" is the integer 9223372036854775808, beyond AMQP\'s signed 64-bit integers (-9223372036854775808 to 9223372036854775807)',
    );
    expect(problem(parseHeaders('{"x-small": -9223372036854775809}'))).toMatch(
      /^header "x-small" is the integer -9223372036854775809, beyond/,
    );
    expect(problem(parseHeaders('{"outer": {"list": [1, 123456789012345678901234567890]}}'))).toMatch(
      /^header "outer"\."list"\[1\] is the integer 123456789012345678901234567890, beyond AMQP's signed 64-bit integers/,
    );
  });

  test('nested objects are always tables: a key named "!" is a plain key, not a type hint', () => {
    const { wire } = roundTrip(parseHeaders('{"n": {"!": 1}, "t": {"!": "timestamp", "value": 5}, "deep": {"a": {"!": {"!": "x"}}}}'));
    expect(wire).toEqual({ n: { '!': 1n }, t: { '!': 'timestamp', value: 5n }, deep: { a: { '!': { '!': 'x' } } } });
  });

  test('arrays, tables in arrays, null, booleans, strings and unicode keys arrive as they are', () => {
    const { wire } = roundTrip(
      parseHeaders(
        '{"list": [1, "two", null, true, {"!": false}, [2.5]], "ключ-€-鍵": "значение €", "empty": "", "": "empty key", "nil": null}',
      ),
    );
    expect(wire).toEqual({
      list: [1n, 'two', null, true, { '!': false }, [2.5]],
      'ключ-€-鍵': 'значение €',
      empty: '',
      '': 'empty key',
      nil: null,
    });
  });

  test('a key named __proto__ is a plain key at any depth', () => {
    const { wire } = roundTrip(parseHeaders('{"__proto__": {"__proto__": 1}}'));
    expect(Object.keys(wire)).toEqual(['__proto__']);
    expect(Object.keys(wire['__proto__'] as object)).toEqual(['__proto__']);
  });

  test('the size it reports is the size amqplib encodes', () => {
    for (const text of [
      '{}',
      '{"a": 1}',
      '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}',
      '{"€": [1, 2.5, null, true, {"x": "ü"}], "n": {"!": 1}}',
    ]) {
      const { bytes, reported } = roundTrip(parseHeaders(text));
      expect(reported).toBe(bytes);
    }
  });

  test('a header key over 255 bytes fails at any depth, naming the key and the limit in bytes; 255 bytes pass', () => {
    expect(encodeHeaders({ ['k'.repeat(255)]: 'v' }).ok).toBe(true);
    expect(roundTrip({ ['€'.repeat(85)]: 'v' }).wire).toEqual({ ['€'.repeat(85)]: 'v' });
    expect(problem({ ['k'.repeat(256)]: 'v' })).toBe(`header key "${'k'.repeat(40)}…" is 256 bytes; AMQP allows at most 255 bytes`);
    expect(problem({ outer: { ['€'.repeat(100)]: 1n } })).toBe(
      `header key "${'€'.repeat(40)}…" is 300 bytes (in header "outer"); AMQP allows at most 255 bytes`,
    );
    expect(problem({ list: [{ ['x'.repeat(256)]: 1n }] })).toMatch(
      /^header key "x+…" is 256 bytes \(in header "list"\[0\]\); AMQP allows at most 255 bytes$/,
    );
    // amqplib agrees: it refuses the 256-byte key, with a message that says nothing of headers.
    expect(() => amqplibEncodeHeaders({ ['k'.repeat(256)]: 'v' })).toThrow(/Received 256/);
  });

  test("headers over amqplib's 64 KiB fail with their size and the limit; exactly 64 KiB pass", () => {
    // A table of one string header "x": 4 (table length) + 1 + 1 (key) + 1 (tag) + 4 (string length) + the string.
    const fits = { x: 'a'.repeat(HEADERS_MAX_BYTES - 11) };
    expect(roundTrip(fits).bytes).toBe(HEADERS_MAX_BYTES);
    const over = { x: 'a'.repeat(HEADERS_MAX_BYTES - 10) };
    expect(problem(over)).toBe(
      `headers are ${HEADERS_MAX_BYTES + 1} bytes encoded; the AMQP client encodes at most 65536 bytes of headers`,
    );
    expect(() => amqplibEncodeHeaders(over)).toThrow(/exceeds the 65536 byte encoding buffer/);
    // 4 + 1 + 3 (key) + 1 + 4 + 102,400 (50 Ki × 2-byte é)
    expect(problem({ big: 'é'.repeat(50 * 1024) })).toMatch(
      /^headers are 102413 bytes encoded; the AMQP client encodes at most 65536 bytes/,
    );
  });

  test('CC and BCC, by which RabbitMQ routes, must be arrays (RabbitMQ closes the channel otherwise)', () => {
    expect(problem({ CC: 'audit' })).toBe(
      'header "CC" must be an array of strings: RabbitMQ routes the message by it (sender-selected distribution)',
    );
    expect(problem({ BCC: 1n })).toMatch(/^header "BCC" must be an array/);
    expect(encodeHeaders({ CC: ['audit'], cc: 'lower case is no routing header' }).ok).toBe(true);
  });

  test('a number that is not finite fails (JSON has none; a float too large for a double)', () => {
    expect(problem({ x: Number.POSITIVE_INFINITY })).toBe('header "x" is a number beyond the range of a double');
    expect(problem(parseHeaders(`{"x": 1${'0'.repeat(400)}.5}`))).toBe('header "x" is a number beyond the range of a double');
  });
});

describe("publishedHeaders: the row's key and position travel with the message", () => {
  test('the partition key as a string and the id as an exact signed 64-bit integer, also past 2^53', () => {
    const m = fakeMessage({ id: '9223372036854775807', partitionKey: 'order-42', headers: { 'x-tenant': 'acme' } });
    const encoded = publishProperties(m, { appId: 'app' }).headers;
    expect(decodeFieldTable(amqplibEncodeHeaders(encoded).subarray(4))).toEqual({
      'x-tenant': 'acme',
      [RELAY_HEADERS.partitionKey]: 'order-42',
      [RELAY_HEADERS.position]: 9223372036854775807n,
    });
  });

  test('a row without a key has no key header; the position is always there', () => {
    const wire = decodeFieldTable(
      amqplibEncodeHeaders(publishProperties(fakeMessage({ id: '17', partitionKey: null }), { appId: 'a' }).headers).subarray(4),
    );
    expect(wire).not.toHaveProperty(RELAY_HEADERS.partitionKey);
    expect(wire[RELAY_HEADERS.position]).toBe(17n);
  });

  test("the row's own headers of those names cannot spoof them: the relay's values win, a key header of a keyless row is dropped", () => {
    const spoof = { [RELAY_HEADERS.partitionKey]: 'someone-else', [RELAY_HEADERS.position]: 1n, keep: 'me' };
    expect(publishedHeaders({ id: '5', partitionKey: 'mine', headers: spoof })).toEqual({
      keep: 'me',
      [RELAY_HEADERS.partitionKey]: 'mine',
      [RELAY_HEADERS.position]: 5n,
    });
    expect(publishedHeaders({ id: '6', partitionKey: null, headers: spoof })).toEqual({ keep: 'me', [RELAY_HEADERS.position]: 6n });
  });

  test('the added headers count in the 64 KiB limit, so the preflight judges what is sent', () => {
    // What fits alone no longer fits with the key and the position: the message fails before it is sent.
    const headers = { x: 'a'.repeat(HEADERS_MAX_BYTES - 11) };
    expect(encodeHeaders(headers).ok).toBe(true);
    expect(messageProblem(fakeMessage({ headers, partitionKey: 'k' }), 'app')).toMatch(/^headers are \d+ bytes encoded/);
    expect(() => publishProperties(fakeMessage({ headers, partitionKey: 'k' }), { appId: 'app' })).toThrow(
      /^headers are \d+ bytes encoded/,
    );
  });
});
