import fc from 'fast-check';
import { buildIfMissing, cli, envFor, expectOneLineFailure } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

// Every date/time argument of every command refuses a date or time that does not exist
// (replay --since/--until, dead list --since), exit 2 and one line saying why, instead of
// rolling it over (replay --since 2026-02-30 used to mean 2026-03-02).

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_instants', { afterEach: 'reset' });

/** ISO-looking instants, many of which do not exist. */
const instantText = fc
  .record({
    year: fc.constantFrom('2024', '2026', '2100', '2000', '1999'),
    month: fc.integer({ min: 0, max: 13 }),
    day: fc.integer({ min: 0, max: 32 }),
    time: fc.option(fc.record({ hour: fc.integer({ min: 0, max: 25 }), minute: fc.integer({ min: 0, max: 61 }) })),
  })
  .map(({ year, month, day, time }) => {
    const pad = (n: number): string => String(n).padStart(2, '0');
    return `${year}-${pad(month)}-${pad(day)}${time ? `T${pad(time.hour)}:${pad(time.minute)}Z` : ''}`;
  });

/** Whether PostgreSQL (the judge of dead list --since) reads it as a timestamptz. */
async function postgresReads(text: string): Promise<boolean> {
  try {
    await fx.pool.query('SELECT $1::timestamptz', [text]);
    return true;
  } catch {
    return false;
  }
}

test('replay --since 2026-02-30, --until 2026-04-31, dead list --since 2026-02-30: exit 2, one line saying why', async () => {
  const env = envFor(fx.schema);
  const since = await cli(['replay', '--since', '2026-02-30', '--dry-run'], env);
  expect(expectOneLineFailure(since, 2)).toContain('--since "2026-02-30" is not a timestamp: February 2026 has 28 days');
  const until = await cli(['replay', '--since', '2026-04-01', '--until', '2026-04-31T12:00:00Z', '--dry-run'], env);
  expect(expectOneLineFailure(until, 2)).toContain('--until "2026-04-31T12:00:00Z" is not a timestamp: April 2026 has 30 days');
  const dead = await cli(['dead', 'list', '--since', '2026-02-30'], env);
  expect(expectOneLineFailure(dead, 2)).toContain('--since "2026-02-30" is not a timestamp: date/time field value out of range');
});

test('each command accepts exactly the instants that exist, as PostgreSQL does (property)', async () => {
  const env = envFor(fx.schema);
  await fc.assert(
    fc.asyncProperty(instantText, async (text) => {
      const exists = await postgresReads(text);
      const [replay, dead] = await Promise.all([
        cli(['replay', '--since', text, '--dry-run', '--json'], env),
        cli(['dead', 'list', '--since', text, '--json'], env),
      ]);
      for (const result of [replay, dead]) {
        if (exists) expect({ text, code: result.code, stderr: result.stderr }).toEqual({ text, code: 0, stderr: '' });
        else expect(expectOneLineFailure(result, 2)).toContain(`--since "${text}" is not a timestamp: `);
      }
    }),
    { numRuns: 8 },
  );
}, 180_000);

test('a cleanup schedule on a day that does not exist (OUTBOX_CLEANUP_CRON="0 0 30 2 *") is refused too: exit 2 naming it', async () => {
  for (const schedule of ['0 0 30 2 *', '0 0 31 4 *', '0 0 0 1 *']) {
    const result = await cli(['status'], envFor(fx.schema, { OUTBOX_CLEANUP_CRON: schedule }));
    expect(expectOneLineFailure(result, 2)).toContain('OUTBOX_CLEANUP_CRON');
  }
});
