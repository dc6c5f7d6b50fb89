import {
  EARLIEST_DATE_MS,
  instant,
  LATEST_DATE_MS,
  MAX_HEADER_DEPTH,
  parseHeaders,
  toMessage,
  type ClaimedRow,
} from '../../src/outbox/rows';

function row(overrides: Partial<ClaimedRow> = {}): ClaimedRow {
  return {
    id: '7',
    message_id: '2b1e8f6c-3a43-4a5e-9b1c-5f0d7e6a9c11',
    exchange: 'orders',
    routing_key: 'order.created',
    message_type: 'order.created',
    payload_text: '{"orderId": 42}',
    body: null,
    content_type: 'application/json',
    headers_text: '{}',
    partition_key: null,
    correlation_id: null,
    created_at: new Date('2026-01-01T00:00:00Z'),
    available_at: new Date('2026-01-01T00:00:00Z'),
    attempts: 0,
    ...overrides,
  };
}

describe('parseHeaders: the jsonb text of headers, without loss', () => {
  test('integers of any size are exact bigints; numbers with a fraction are doubles', () => {
    expect(
      parseHeaders('{"a": 9007199254740993, "b": -9223372036854775808, "c": 123456789012345678901234567890, "d": 1.0, "e": 0.25}'),
    ).toEqual({
      a: 9007199254740993n,
      b: -9223372036854775808n,
      c: 123456789012345678901234567890n,
      d: 1,
      e: 0.25,
    });
  });

  test('strings, unicode, nesting, arrays, null and booleans as JSON has them; "!" and "__proto__" are plain keys', () => {
    const headers = parseHeaders('{"ключ": "値 €", "n": {"!": 1}, "l": [true, false, null, "x"], "__proto__": {"x": 1}}');
    expect(headers).toEqual({ ключ: '値 €', n: { '!': 1n }, l: [true, false, null, 'x'], ['__proto__']: { x: 1n } });
    expect(Object.getPrototypeOf(headers)).toBe(Object.prototype);
    expect(Object.keys(headers)).toContain('__proto__');
  });

  test('headers nested deeper than the limit throw a clear error instead of overflowing the stack', () => {
    const nest = (levels: number): string => `${'{"a":'.repeat(levels - 1)}{"a":1}${'}'.repeat(levels - 1)}`;
    expect(() => parseHeaders(nest(MAX_HEADER_DEPTH))).not.toThrow();
    expect(() => parseHeaders(nest(MAX_HEADER_DEPTH + 1))).toThrow(
      `headers nest more than ${MAX_HEADER_DEPTH} levels deep; the relay reads at most ${MAX_HEADER_DEPTH}`,
    );
    expect(() => parseHeaders(nest(20_000))).toThrow(/nest more than/);
    // Brackets inside strings are not nesting.
    expect(parseHeaders(JSON.stringify({ s: `${'['.repeat(5000)}"\\` }))).toEqual({ s: `${'['.repeat(5000)}"\\` });
  });

  test('anything but an object throws', () => {
    expect(() => parseHeaders('[1]')).toThrow('headers is not a JSON object');
    expect(() => parseHeaders('null')).toThrow('headers is not a JSON object');
  });
});

describe('instant: every timestamptz as a valid Date', () => {
  test('infinity and -infinity (node-postgres gives ±Infinity) become the latest and the earliest Date', () => {
    expect(instant(Number.POSITIVE_INFINITY).getTime()).toBe(LATEST_DATE_MS);
    expect(instant(Number.NEGATIVE_INFINITY).getTime()).toBe(EARLIEST_DATE_MS);
    expect(instant(Number.POSITIVE_INFINITY).toISOString()).toBe('+275760-09-13T00:00:00.000Z');
    expect(instant(Number.NEGATIVE_INFINITY).toISOString()).toBe('-271821-04-20T00:00:00.000Z');
  });

  test('a date past the latest Date (node-postgres gives an Invalid Date) becomes the latest Date; others stay', () => {
    expect(instant(new Date(Number.NaN)).getTime()).toBe(LATEST_DATE_MS);
    const d = new Date('2026-05-01T00:00:00Z');
    expect(instant(d)).toBe(d);
  });
});

describe('toMessage', () => {
  test('maps the columns; infinite timestamps and exact headers never break what comes after', () => {
    const m = toMessage(
      row({ headers_text: '{"x": 9223372036854775807}', available_at: Number.NEGATIVE_INFINITY, created_at: Number.POSITIVE_INFINITY }),
    );
    expect(m.headers).toEqual({ x: 9223372036854775807n });
    expect(m.availableAt.toISOString()).toBe('-271821-04-20T00:00:00.000Z');
    expect(Date.now() - m.availableAt.getTime()).toBeGreaterThan(0);
    expect(Number.isFinite(m.createdAt.getTime())).toBe(true);
    expect(m.content.toString()).toBe('{"orderId": 42}');
  });

  test('a JSON null payload is the body "null"; an empty bytea body is empty', () => {
    expect(toMessage(row({ payload_text: 'null' })).content.toString()).toBe('null');
    expect(toMessage(row({ payload_text: null, body: Buffer.alloc(0) })).content.length).toBe(0);
  });
});
