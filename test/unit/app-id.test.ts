import { loadConfig } from '../../src/config/load-config';
import { exitCodeFor, OutboxError } from '../../src/errors';

function appIdError(value: string): OutboxError {
  try {
    loadConfig({ OUTBOX_APP_ID: value });
  } catch (err: unknown) {
    expect(err).toBeInstanceOf(OutboxError);
    return err as OutboxError;
  }
  throw new Error(`loadConfig accepted OUTBOX_APP_ID of ${Buffer.byteLength(value)} bytes`);
}

describe('OUTBOX_APP_ID is counted in bytes, as AMQP counts its app-id', () => {
  test('255 bytes pass, in 1-, 3- and 4-byte characters', () => {
    expect(loadConfig({ OUTBOX_APP_ID: 'x'.repeat(255) }).appId).toBe('x'.repeat(255));
    expect(loadConfig({ OUTBOX_APP_ID: '€'.repeat(85) }).appId).toBe('€'.repeat(85));
    expect(loadConfig({ OUTBOX_APP_ID: `${'😀'.repeat(63)}xxx` }).appId).toHaveLength(129);
  });

  test('more than 255 bytes exits 2, naming the variable, the byte limit and the byte count', () => {
    for (const [value, bytes] of [
      ['€'.repeat(100), 300],
      ['€'.repeat(86), 258],
      ['x'.repeat(256), 256],
      ['😀'.repeat(64), 256],
    ] as const) {
      const err = appIdError(value);
      expect(err.code).toBe('CONFIG_INVALID');
      expect(exitCodeFor(err)).toBe(2);
      expect(err.message).toContain(`OUTBOX_APP_ID must be at most 255 bytes of UTF-8, AMQP's limit for app-id (it is ${bytes} bytes)`);
    }
  });

  test('100 × "€" (100 characters, 300 bytes), which the old character count let through, is refused', () => {
    expect('€'.repeat(100)).toHaveLength(100);
    expect(appIdError('€'.repeat(100)).message).toMatch(/^invalid configuration: OUTBOX_APP_ID must be at most 255 bytes/);
  });
});
