import { OutboxError } from '../errors';

/**
 * ISO 8601 as `replay --since/--until` take it: a date, or a date and a time (`T` or a
 * space between), seconds and fractions optional, and a zone (`Z`, `+01`, `+0100`,
 * `+01:00`) or none (UTC).
 */
const ISO_INSTANT =
  /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})(?:[T ](?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2})(?:\.(?<fraction>\d{1,9}))?)?(?<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?$/i;

const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
] as const;

/** Days in `month` (1-12) of `year`, by the Gregorian calendar's leap years. */
export function daysInMonth(year: number, month: number): number {
  if (month === 2) return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28;
  return [4, 6, 9, 11].includes(month) ? 30 : 31;
}

/** The fields of an ISO 8601 instant as written (not yet known to exist). */
interface Fields {
  readonly year: number;
  readonly month: number;
  readonly day: number;
  readonly hour: number;
  readonly minute: number;
  readonly second: number;
  /** The fraction of the second, in nanoseconds. */
  readonly nanos: number;
  readonly zoneHours: number;
  readonly zoneMinutes: number;
}

/** Why the fields do not make an instant (a date that does not exist, a minute 75, …), or undefined. */
function impossibility(fields: Fields): string | undefined {
  const { year, month, day, hour, minute, second, nanos, zoneHours, zoneMinutes } = fields;
  if (year === 0) return 'there is no year 0000 (the year before 0001 is 1 BC)';
  if (month < 1 || month > 12) return `there is no month ${month}`;
  const days = daysInMonth(year, month);
  if (day < 1 || day > days) return `${MONTHS[month - 1]} ${year} has ${days} days`;
  // 24:00 is the end of a day (ISO 8601, as PostgreSQL reads it): the next day's midnight.
  if (hour === 24 && (minute !== 0 || second !== 0 || nanos !== 0)) return 'after 24:00 there is no time of the same day';
  if (hour > 24) return `there is no hour ${hour}`;
  if (minute > 59) return `there is no minute ${minute}`;
  if (second > 59) return `there is no second ${second} (leap seconds are not stored)`;
  if (zoneHours > 15 || zoneMinutes > 59) return 'the zone offset is out of range (at most ±15:59)';
  return undefined;
}

/**
 * An ISO 8601 date or date-time as a `Date`; without a zone it is UTC. A date or time
 * that does not exist (2026-02-30, 25:00, minute 60, an offset of +25:00) is refused,
 * never rolled over into the next month or day. Throws `INVALID_ARGUMENT` naming
 * `option` (`replay: --since`) and what is wrong.
 */
export function parseInstant(option: string, text: string): Date {
  const fail = (why: string): never => {
    throw new OutboxError(
      'INVALID_ARGUMENT',
      `${option} "${text}" is not a timestamp: ${why} (ISO 8601, e.g. 2026-11-24 or 2026-11-24T08:00:00Z; without a zone it is UTC)`,
    );
  };
  const groups = ISO_INSTANT.exec(text.trim())?.groups;
  if (groups === undefined) return fail('not in the form YYYY-MM-DD[THH:MM[:SS[.fff]][Z|±HH[:MM]]]');
  const number = (name: string): number => Number(groups[name] ?? 0);
  const zone = groups['zone']?.toUpperCase() ?? 'Z';
  const zoneSign = zone.startsWith('-') ? -1 : 1;
  const fields: Fields = {
    year: number('year'),
    month: number('month'),
    day: number('day'),
    hour: number('hour'),
    minute: number('minute'),
    second: number('second'),
    nanos: Number((groups['fraction'] ?? '').padEnd(9, '0')),
    zoneHours: zone === 'Z' ? 0 : Number(zone.slice(1, 3)),
    zoneMinutes: zone === 'Z' ? 0 : Number(zone.slice(1).replace(':', '').slice(2) || '0'),
  };
  const why = impossibility(fields);
  if (why !== undefined) return fail(why);
  // setUTCFullYear, unlike Date.UTC, takes the years 1-99 as they are; hour 24 rolls to the next day.
  const date = new Date(0);
  date.setUTCFullYear(fields.year, fields.month - 1, fields.day);
  date.setUTCHours(fields.hour, fields.minute, fields.second, Math.floor(fields.nanos / 1_000_000));
  const offsetMs = zoneSign * (fields.zoneHours * 60 + fields.zoneMinutes) * 60_000;
  return new Date(date.getTime() - offsetMs);
}
