import fc from 'fast-check';
import { daysInMonth, parseInstant } from '../../src/commands/instant-argument';
import { OutboxError } from '../../src/errors';

// replay --since/--until: an ISO 8601 date or date-time that does not exist is refused,
// never rolled over (2026-02-30 was read as 2026-03-02).

/** Fields as a user may write them, possible or not. */
const fields = fc.record({
  year: fc.oneof(fc.integer({ min: 1, max: 9999 }), fc.constantFrom(1900, 2000, 2024, 2026, 2100)),
  month: fc.integer({ min: 0, max: 13 }),
  day: fc.integer({ min: 0, max: 32 }),
  time: fc.option(
    fc.record({
      hour: fc.integer({ min: 0, max: 25 }),
      minute: fc.integer({ min: 0, max: 61 }),
      second: fc.option(fc.integer({ min: 0, max: 61 })),
      zone: fc.option(
        fc.record({ sign: fc.constantFrom('+', '-'), hours: fc.integer({ min: 0, max: 16 }), minutes: fc.integer({ min: 0, max: 60 }) }),
      ),
    }),
  ),
});

type Fields = typeof fields extends fc.Arbitrary<infer T> ? T : never;

const pad = (n: number, width = 2): string => String(n).padStart(width, '0');

/** The oracle: the instant the fields name, computed apart from the parser, or undefined when it does not exist. */
function oracle(f: Fields): number | undefined {
  const leap = f.year % 4 === 0 && (f.year % 100 !== 0 || f.year % 400 === 0);
  const days = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][f.month - 1];
  if (days === undefined || f.day < 1 || f.day > days) return undefined;
  const t = f.time ?? { hour: 0, minute: 0, second: null, zone: null };
  const second = t.second ?? 0;
  if (t.minute > 59 || second > 59 || t.hour > 24 || (t.hour === 24 && (t.minute > 0 || second > 0))) return undefined;
  if (t.zone && (t.zone.hours > 15 || t.zone.minutes > 59)) return undefined;
  // Days since 0001-01-01 counted by hand, so the oracle shares nothing with Date.
  let dayNumber = 0;
  for (let y = 1; y < f.year; y += 1) dayNumber += y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 366 : 365;
  for (let m = 1; m < f.month; m += 1) dayNumber += daysInMonth(f.year, m);
  dayNumber += f.day - 1;
  const offsetMinutes = t.zone ? (t.zone.sign === '-' ? -1 : 1) * (t.zone.hours * 60 + t.zone.minutes) : 0;
  const EPOCH_DAY = 719_162; // 1970-01-01, counted from 0001-01-01
  return ((dayNumber - EPOCH_DAY) * 86_400 + t.hour * 3_600 + t.minute * 60 + second - offsetMinutes * 60) * 1000;
}

function format(f: Fields): string {
  let text = `${pad(f.year, 4)}-${pad(f.month)}-${pad(f.day)}`;
  if (!f.time) return text;
  text += `T${pad(f.time.hour)}:${pad(f.time.minute)}`;
  if (f.time.second !== null) text += `:${pad(f.time.second)}`;
  if (f.time.zone) text += `${f.time.zone.sign}${pad(f.time.zone.hours)}:${pad(f.time.zone.minutes)}`;
  return text;
}

test('accepted exactly when the date and time exist, and then the very instant they name (property)', () => {
  fc.assert(
    fc.property(fields, (f) => {
      const text = format(f);
      const expected = oracle(f);
      if (expected === undefined) {
        expect(() => parseInstant('replay: --since', text)).toThrow(OutboxError);
      } else {
        expect(parseInstant('replay: --since', text).getTime()).toBe(expected);
      }
    }),
    { numRuns: 5_000 },
  );
});

test.each([
  ['2026-02-30', 'February 2026 has 28 days'],
  ['2026-02-29', 'February 2026 has 28 days'],
  ['2100-02-29', 'February 2100 has 28 days'],
  ['2026-04-31T10:00:00Z', 'April 2026 has 30 days'],
  ['2026-13-01', 'there is no month 13'],
  ['2026-00-10', 'there is no month 0'],
  ['2026-01-00', 'January 2026 has 31 days'],
  ['2026-01-01T25:00', 'there is no hour 25'],
  ['2026-01-01T24:30', 'after 24:00'],
  ['2026-01-01T10:60', 'there is no minute 60'],
  ['2026-01-01T10:00:60Z', 'there is no second 60'],
  ['2026-01-01T10:00:00+25:00', 'zone offset'],
  ['0000-01-01', 'no year 0000'],
  ['2026-1-1', 'not in the form'],
  ['yesterday', 'not in the form'],
])('%s is refused, saying why (%s)', (text, why) => {
  const quoted = text.replace(/[+.]/g, '\\$&');
  expect(() => parseInstant('replay: --since', text)).toThrow(new RegExp(`^replay: --since "${quoted}" is not a timestamp: .*${why}`));
});

test.each([
  ['2024-02-29', '2024-02-29T00:00:00.000Z'],
  ['2000-02-29T12:00:00+01:00', '2000-02-29T11:00:00.000Z'],
  ['2026-12-31T24:00', '2027-01-01T00:00:00.000Z'],
  ['2026-11-24 08:00:00.123456-0530', '2026-11-24T13:30:00.123Z'],
  ['0099-06-15', '0099-06-15T00:00:00.000Z'],
])('%s is %s', (text, iso) => {
  expect(parseInstant('replay: --since', text).toISOString()).toBe(iso);
});
