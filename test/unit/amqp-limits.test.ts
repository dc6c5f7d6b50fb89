import { messageProblem, shortStringProblem, SHORT_STRING_MAX_BYTES } from '../../src/broker/amqp-limits';
import { publishProperties } from '../../src/broker/publisher';
import type { OutboxMessage } from '../../src/domain/message';
import { amqplibEncodePublish } from './amqplib-encoder';
import { fakeMessage as message } from './fake-message';

/**
 * Whether amqplib would send `m` (it throws before writing a frame when it would not).
 * The headers go to amqplib as they are, not through the relay's encoder, so that
 * amqplib alone judges them: the tests give it only strings and objects, which it
 * encodes as the relay would.
 */
function amqplibAccepts(m: OutboxMessage, appId: string): boolean {
  try {
    amqplibEncodePublish(m.exchange, m.routingKey, m.content, {
      ...publishProperties({ ...m, headers: {} }, { appId }),
      headers: m.headers,
    });
    return true;
  } catch {
    return false;
  }
}

/** Strings around the 255-byte limit, in 1-, 2-, 3- and 4-byte characters. */
const LENGTHS: readonly string[] = [
  '',
  'x'.repeat(255),
  'x'.repeat(256),
  'é'.repeat(127) + 'x',
  'é'.repeat(128),
  '€'.repeat(85),
  '€'.repeat(86),
  '😀'.repeat(63) + 'xxx',
  '😀'.repeat(64),
  '€'.repeat(300),
];

describe('shortStringProblem', () => {
  test('counts bytes of UTF-8, not characters', () => {
    expect(shortStringProblem('exchange', 'x'.repeat(SHORT_STRING_MAX_BYTES))).toBeUndefined();
    expect(shortStringProblem('exchange', '€'.repeat(85))).toBeUndefined();
    expect(shortStringProblem('exchange', 'x'.repeat(256))).toBe('exchange is 256 bytes; AMQP allows at most 255 bytes');
    expect(shortStringProblem('exchange', '€'.repeat(100))).toBe('exchange is 300 bytes; AMQP allows at most 255 bytes');
    expect(shortStringProblem('exchange', '😀'.repeat(64))).toBe('exchange is 256 bytes; AMQP allows at most 255 bytes');
  });
});

describe('messageProblem: what amqplib would refuse, named by column, in bytes', () => {
  test('each short string names its column and the limit', () => {
    const long = '€'.repeat(100);
    const cases: [Partial<OutboxMessage>, string][] = [
      [{ exchange: long }, 'exchange is 300 bytes; AMQP allows at most 255 bytes'],
      [{ exchange: '', routingKey: 'q'.repeat(256) }, 'routing_key is 256 bytes; AMQP allows at most 255 bytes'],
      [{ routingKey: long }, 'routing_key is 300 bytes; AMQP allows at most 255 bytes'],
      [{ messageType: long }, 'message_type (AMQP type) is 300 bytes; AMQP allows at most 255 bytes'],
      [{ contentType: long }, 'content_type (AMQP content-type) is 300 bytes; AMQP allows at most 255 bytes'],
      [{ correlationId: long }, 'correlation_id (AMQP correlation-id) is 300 bytes; AMQP allows at most 255 bytes'],
      [{ messageId: long }, 'message_id (AMQP message-id) is 300 bytes; AMQP allows at most 255 bytes'],
      [{ createdAt: new Date(-1) }, 'created_at (AMQP timestamp) is before 1970; AMQP timestamps are unsigned seconds since 1970'],
      [{ headers: { ['h'.repeat(256)]: 1n } }, `header key "${'h'.repeat(40)}…" is 256 bytes; AMQP allows at most 255 bytes`],
      [{ headers: { n: 2n ** 63n } }, expect.stringMatching(/^header "n" is the integer 9223372036854775808, beyond/) as unknown as string],
    ];
    for (const [overrides, error] of cases) expect(messageProblem(message(overrides), 'app')).toEqual(error);
    expect(messageProblem(message(), '€'.repeat(86))).toBe('OUTBOX_APP_ID (AMQP app-id) is 258 bytes; AMQP allows at most 255 bytes');
  });

  test('a message with every value at its limit has no problem, and null type and correlation id are fine', () => {
    const at = '€'.repeat(85);
    const m = message({
      exchange: at,
      routingKey: at,
      messageType: at,
      contentType: at,
      correlationId: at,
      headers: { [at]: { [at]: -(2n ** 63n) } },
    });
    expect(messageProblem(m, at)).toBeUndefined();
    expect(messageProblem(message({ messageType: null, correlationId: null, createdAt: new Date(0) }), 'app')).toBeUndefined();
  });

  test('agrees with amqplib: no problem exactly when amqplib encodes the publish and its properties', () => {
    let accepted = 0;
    let refused = 0;
    for (const value of LENGTHS) {
      const variants: Partial<OutboxMessage>[] = [
        { exchange: value },
        { exchange: '', routingKey: value },
        { messageType: value },
        { contentType: value },
        { correlationId: value },
        { headers: { [value]: 'v' } },
        { headers: { nested: { [value]: 'v' } } },
      ];
      for (const overrides of variants) {
        const m = message(overrides);
        const problem = messageProblem(m, 'app');
        expect(amqplibAccepts(m, 'app')).toBe(problem === undefined);
        if (problem === undefined) {
          accepted += 1;
        } else {
          expect(problem).toMatch(/is \d+ bytes.*; AMQP allows at most 255 bytes$/);
          refused += 1;
        }
      }
      const app = messageProblem(message(), value === '' ? 'a' : value);
      expect(app === undefined).toBe(amqplibAccepts(message(), value === '' ? 'a' : value));
    }
    expect(accepted).toBeGreaterThan(20);
    expect(refused).toBeGreaterThan(20);
  });

  test('amqplib refuses what messageProblem reports, with its own unhelpful words', () => {
    const m = message({ exchange: 'x'.repeat(256) });
    expect(messageProblem(m, 'app')).toBeDefined();
    expect(() => amqplibEncodePublish(m.exchange, m.routingKey, m.content, publishProperties(m, { appId: 'app' }))).toThrow(
      "Field 'exchange' is the wrong type; must be a string (up to 255 chars)",
    );
  });
});
