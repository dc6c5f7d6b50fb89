/**
 * What PostgreSQL stores, as checks the producer runs before it sends anything: a value
 * the database would refuse must never reach the caller's transaction, because a refused
 * statement aborts that transaction.
 */

/** A problem with one value, named by its path (`payload.items[2].name`); enqueue adds the message. */
export class ValueProblem extends Error {
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${path} ${problem}`);
  }
}

/** An unpaired UTF-16 surrogate: not a Unicode character, so UTF-8 (and PostgreSQL) cannot hold it. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Why PostgreSQL cannot store `text` in a text or jsonb value, or undefined: a NUL
 * character (`\u0000`: text ends at it, jsonb refuses its escape) or a lone surrogate
 * (`'\ud800'`: not valid UTF-8).
 */
export function unstorableText(text: string): string | undefined {
  const nul = text.indexOf('\u0000');
  if (nul >= 0) return `contains a NUL character (\\u0000) at index ${nul}; PostgreSQL stores no NUL in text or jsonb`;
  const lone = LONE_SURROGATE.exec(text);
  if (lone) {
    const unit = lone[0].charCodeAt(0).toString(16);
    return `contains a lone UTF-16 surrogate (\\u${unit}) at index ${lone.index}; it is not a Unicode character and has no UTF-8 form`;
  }
  return undefined;
}

/** Throws a ValueProblem naming `path` when `value` is not a string PostgreSQL stores. */
export function checkText(path: string, value: unknown): string {
  if (typeof value !== 'string') throw new ValueProblem(path, `must be a string, not ${describe(value)}`);
  const problem = unstorableText(value);
  if (problem !== undefined) throw new ValueProblem(path, problem);
  return value;
}

/** A short name of what `value` is, for an error message (never the value itself: it may be large or private). */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') {
    const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
    return typeof name === 'string' && name !== 'Object' && name !== '' ? `a ${name}` : 'an object';
  }
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  return `a ${typeof value}`;
}

/** Longest text of a caller's value shown in an error message (characters). */
const SHOWN_CHARS = 80;

/**
 * A caller's string, JSON-quoted for an error message: control characters, NUL and lone
 * surrogates escaped, so the message stays one line, and cut after SHOWN_CHARS characters.
 */
export function quoted(text: string): string {
  return JSON.stringify(text.length > SHOWN_CHARS ? `${text.slice(0, SHOWN_CHARS)}…` : text);
}

/** A caller's string as an error message names it: as it is when short printable ASCII, `quoted` otherwise. */
export function shown(text: string): string {
  return text.length <= SHOWN_CHARS && /^[\x20-\x7e]*$/.test(text) ? text : quoted(text);
}

/** The earliest instant a PostgreSQL timestamptz holds: 4714-11-24 00:00:00 UTC BC (epoch ms). */
export const EARLIEST_TIMESTAMPTZ_MS = -210_866_803_200_000;

/** The latest instant a JavaScript Date holds (epoch ms, 275760-09-13); PostgreSQL's range reaches beyond it (294276 AD). */
export const LATEST_DATE_MS = 8.64e15;

/**
 * The longest delay or time to live from now (ms): the Date range. `now() + it` stays
 * within PostgreSQL's timestamptz (to 294276 AD) and its interval (±9.2e15 ms).
 */
export const MAX_OFFSET_MS = LATEST_DATE_MS;

/**
 * `date` as a timestamptz literal PostgreSQL reads back to the same millisecond. ISO 8601
 * for years 1 to 9999; PostgreSQL reads neither the sign of JavaScript's six-digit years
 * (`+012345-…`) nor year 0 and below, which it writes as `… BC` (year 0 is 1 BC).
 */
export function timestamptzText(path: string, date: unknown): string {
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) throw new ValueProblem(path, 'must be a valid Date');
  const ms = date.getTime();
  if (ms < EARLIEST_TIMESTAMPTZ_MS) {
    throw new ValueProblem(path, `is ${date.toISOString()}, before 4714-11-24 BC, the earliest instant PostgreSQL stores`);
  }
  const iso = date.toISOString();
  const year = date.getUTCFullYear();
  if (year >= 1 && year <= 9999) return iso;
  // Everything after the year: "-MM-DDTHH:MM:SS.sssZ".
  const rest = iso.slice(iso.indexOf('-', 1));
  if (year > 9999) return `${year}${rest}`;
  return `${String(1 - year).padStart(4, '0')}${rest.replace('T', ' ').replace('Z', '+00')} BC`;
}

/** A number of milliseconds from now: finite, within [min, MAX_OFFSET_MS] (exclusive of `min` when `positive`). */
export function checkOffsetMs(path: string, value: unknown, positive: boolean): number {
  const bound = positive ? '> 0' : '≥ 0';
  if (typeof value !== 'number' || !Number.isFinite(value) || (positive ? value <= 0 : value < 0) || value > MAX_OFFSET_MS) {
    throw new ValueProblem(path, `must be a finite number ${bound} and at most ${MAX_OFFSET_MS} (ms), not ${describe(value)}`);
  }
  return value;
}
