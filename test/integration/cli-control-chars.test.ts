import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

// Every command that prints stored values prints their control characters and terminal
// escapes as escapes in text output (one value per line stays one line); JSON output
// stays exact JSON with exactly the stored values.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_controls', { afterEach: 'reset' });

/** What a terminal acts on (newline and tab are the output's own layout). */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const ACTIVE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/** Text a producer or a broker may have stored: escape sequences, CR, LF, bidi overrides, C1 (PostgreSQL refuses NUL). */
const stored = fc.string({
  unit: fc.oneof(
    fc.integer({ min: 1, max: 0x1f }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0x7f, max: 0x9f }).map((c) => String.fromCharCode(c)),
    fc.constantFrom('\x1b[31m', '\x1b]0;pwned\x07', '\x1b[2J\x1b[H', '\r', '\n', '\u202e', '\u2066', '\u2028', '"', '\\'),
    fc.string({ unit: 'grapheme-ascii', maxLength: 3 }),
  ),
  minLength: 1,
  maxLength: 20,
});

interface Values {
  exchange: string;
  routingKey: string;
  messageType: string;
  partitionKey: string;
  correlationId: string;
  lastError: string;
  header: string;
}

const values: fc.Arbitrary<Values> = fc.record({
  exchange: stored,
  routingKey: stored,
  messageType: stored,
  partitionKey: stored,
  correlationId: stored,
  lastError: stored,
  header: stored,
});

async function insertDead(v: Values): Promise<string> {
  const id = randomUUID();
  await fx.pool.query(
    `INSERT INTO ${fx.table} (message_id, exchange, routing_key, message_type, partition_key, correlation_id, payload, headers,
                              attempts, last_error, next_attempt_at, dead_at)
     VALUES ($1, $2, $3, $4, $5, $6, '{}', $7::jsonb, 10, $8, 'infinity', now())`,
    [id, v.exchange, v.routingKey, v.messageType, v.partitionKey, v.correlationId, JSON.stringify({ 'x-h': v.header }), v.lastError],
  );
  return id;
}

function expectInert(stdout: string, stderr: string): void {
  expect(stdout).not.toMatch(ACTIVE);
  expect(stderr).not.toMatch(ACTIVE);
}

test('inspect and dead list: text escapes every stored control character, JSON keeps the exact values (property)', async () => {
  const plainLines = await (async () => {
    const id = await insertDead({
      exchange: 'e',
      routingKey: 'r',
      messageType: 't',
      partitionKey: 'k',
      correlationId: 'c',
      lastError: 'boom',
      header: 'h',
    });
    const result = await cli(['inspect', id], envFor(fx.schema));
    await fx.reset();
    return lines(result.stdout).length;
  })();
  await fc.assert(
    fc.asyncProperty(values, async (v) => {
      const id = await insertDead(v);
      try {
        const env = envFor(fx.schema);
        const [text, json, deadText, deadJson] = await Promise.all([
          cli(['inspect', id], env),
          cli(['inspect', id, '--json'], env),
          cli(['dead', 'list'], env),
          cli(['dead', 'list', '--json'], env),
        ]);
        for (const r of [text, json, deadText, deadJson]) {
          expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: '' });
          expectInert(r.stdout, r.stderr);
        }
        // One value per line: as many lines as for a row of plain values.
        expect(lines(text.stdout)).toHaveLength(plainLines);
        expect(lines(deadText.stdout)).toHaveLength(1);
        expect(lines(json.stdout)).toHaveLength(1);
        const inspected = JSON.parse(json.stdout) as Record<string, unknown> & { headers: Record<string, string> };
        expect({
          exchange: inspected['exchange'],
          routingKey: inspected['routingKey'],
          messageType: inspected['messageType'],
          partitionKey: inspected['partitionKey'],
          correlationId: inspected['correlationId'],
          lastError: inspected['lastError'],
          header: inspected.headers['x-h'],
        }).toEqual(v);
        const [dead] = JSON.parse(deadJson.stdout) as Record<string, unknown>[];
        expect(dead).toMatchObject({
          exchange: v.exchange,
          routingKey: v.routingKey,
          messageType: v.messageType,
          partitionKey: v.partitionKey,
          lastError: v.lastError,
        });
      } finally {
        await fx.reset();
      }
    }),
    { numRuns: 5 },
  );
}, 240_000);

test('replay --dry-run, check and error messages: stored values and arguments are escaped, errors stay one line', async () => {
  const hostile = 'evil\x1b]0;pwned\x07\r\n\x1b[2J\u202e\x9b31m';
  const [published] = await fx.insert([
    { exchange: hostile, routing_key: hostile, message_type: hostile, partition_key: hostile, payload: {} },
  ]);
  await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = $1`, [published]);
  await fx.insert([{ exchange: `${hostile}-pending`, routing_key: 'r', payload: {} }]);
  const env = envFor(fx.schema);

  const dryRun = await cli(['replay', '--since', '2000-01-01', '--dry-run', '--type', hostile], env);
  expect(dryRun.code).toBe(0);
  expectInert(dryRun.stdout, dryRun.stderr);
  expect(lines(dryRun.stdout)).toHaveLength(3);

  const check = await cli(['check'], env);
  expectInert(check.stdout, check.stderr);
  expect(check.stdout).toContain('do not exist: "evil\\u001b]0;pwned\\u0007\\r\\n\\u001b[2J\\u202e\\u009b31m-pending"');

  for (const args of [
    ['inspect', hostile],
    ['replay', '--since', hostile],
    ['dead', 'retry', hostile],
  ]) {
    const failed = await cli(args, env);
    expectOneLineFailure(failed, 2);
    expectInert(failed.stdout, failed.stderr);
  }
});
