import { describe, quoted, unstorableText, ValueProblem } from './storable';

/**
 * How deeply a payload or headers may nest (objects and arrays). The relay reads headers
 * up to this depth (outbox/rows.ts MAX_HEADER_DEPTH); PostgreSQL's jsonb parser, with its
 * default max_stack_depth of 2 MB, gives up between 12,000 and 20,000 levels.
 */
export const MAX_JSON_DEPTH = 1_000;

/**
 * The largest jsonb value PostgreSQL builds (bytes): a container's entries are addressed
 * with 28 bits, so one value, and each string in it, stays under 256 MiB.
 */
export const MAX_JSONB_BYTES = 0x0fff_ffff;

/** A value serialised to JSON text, with an upper bound of the bytes jsonb takes for it. */
export interface SerializedJson {
  readonly text: string;
  /** At least the size of the jsonb PostgreSQL builds from `text`. */
  readonly jsonbBytes: number;
}

/**
 * Upper bounds of jsonb's bytes. Every entry: a 4-byte JEntry and up to 3 bytes of
 * alignment. A number: a numeric of at most 8 bytes of header and 6 base-10000 digits
 * (a double has 17 significant digits), 2 bytes each. A container: a 4-byte header. The
 * whole value: its varlena header, and the one-element array jsonb wraps a scalar in.
 */
const ENTRY_BYTES = 7;
const NUMBER_BYTES = 20;
const CONTAINER_BYTES = 4;
const ROOT_BYTES = 16;

/** A string this long or shorter is counted as 3 bytes per UTF-16 unit (an upper bound) instead of being measured. */
const MEASURE_FROM_CHARS = 1_024;

const SURROGATE = /[\ud800-\udfff]/;

/** NUL or any surrogate: only strings with one of them need the closer look of `unstorableText`. */
function suspect(text: string): boolean {
  return text.includes('\u0000') || SURROGATE.test(text);
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

function step(holder: unknown, key: string): string {
  if (Array.isArray(holder)) return `[${key}]`;
  return IDENTIFIER.test(key) ? `.${key}` : `[${quoted(key)}]`;
}

/**
 * The containers from JSON.stringify's wrapper of the root down to the holder of the value
 * being checked. JSON.stringify goes depth first, so a holder is either the container
 * entered last or one already on the trail: no lookup by identity is needed (a Map of
 * them made checking twice as slow).
 */
class Trail {
  private readonly holders: unknown[] = [];
  private readonly keys: string[] = [];
  private entered: unknown;
  private enteredKey = '';

  /** Moves to `holder`; returns the depth of its values (0: the root value). */
  at(holder: unknown): number {
    const top = this.holders.length - 1;
    if (top >= 0 && this.holders[top] === holder) return top;
    if (top >= 0 && holder === this.entered) {
      this.holders.push(holder);
      this.keys.push(this.enteredKey);
      this.entered = undefined;
      return top + 1;
    }
    if (top < 0) {
      this.holders.push(holder);
      this.keys.push('');
      return 0;
    }
    while (this.holders.length > 1 && this.holders[this.holders.length - 1] !== holder) {
      this.holders.pop();
      this.keys.pop();
    }
    return this.holders.length - 1;
  }

  /** The container just returned to JSON.stringify, under `key`: its values come next. */
  enter(container: unknown, key: string): void {
    this.entered = container;
    this.enteredKey = key;
  }

  /** The path of the value under `key` of the current holder. */
  path(root: string, key: string): string {
    const depth = this.holders.length - 1;
    if (depth <= 0) return root;
    let path = root;
    for (let i = 2; i <= depth; i += 1) path += step(this.holders[i - 1], this.keys[i] as string);
    return path + step(this.holders[depth], key);
  }
}

/** Upper bound of a string's UTF-8 bytes: measured when long, 3 per unit when short. */
function utf8Bytes(text: string): number {
  return text.length <= MEASURE_FROM_CHARS ? text.length * 3 : Buffer.byteLength(text, 'utf8');
}

/**
 * `value` as JSON text, as `JSON.stringify` writes it (`toJSON` applied, `undefined`
 * properties left out), refusing what jsonb cannot hold and what JSON would silently
 * change: throws a ValueProblem naming the path (under `root`) of the first such value —
 * a string or key with a NUL or a lone surrogate, a BigInt, a number JSON writes as
 * `null` (NaN, ±Infinity), a function or symbol (left out or written as `null`), a Map or
 * a Set (written as `{}`), an invalid Date (written as `null`), a cycle, nesting deeper
 * than MAX_JSON_DEPTH, or more than MAX_JSONB_BYTES.
 */
export function serializeJson(value: unknown, root: string): SerializedJson {
  const trail = new Trail();
  let jsonbBytes = ROOT_BYTES;
  const fail = (key: string, what: string, json: boolean): ValueProblem => {
    const path = trail.path(root, key);
    return json ? new ValueProblem(root, `is not JSON-serialisable: ${path} ${what}`) : new ValueProblem(path, what);
  };
  function check(this: unknown, key: string, current: unknown): unknown {
    const holder = this as Record<string, unknown>;
    const depth = trail.at(holder);
    if (depth > 0 && !Array.isArray(holder)) {
      if (current === undefined) return current;
      if (suspect(key)) {
        const problem = unstorableText(key);
        if (problem !== undefined) throw fail(key, `(the key) ${problem}`, false);
      }
      jsonbBytes += ENTRY_BYTES + utf8Bytes(key);
    }
    jsonbBytes += ENTRY_BYTES;
    if (jsonbBytes > MAX_JSONB_BYTES) throw tooLarge(root, jsonbBytes);
    let scalar = current;
    if (typeof current === 'object' && current !== null) {
      if (current instanceof Number || current instanceof String || current instanceof Boolean || current instanceof BigInt) {
        scalar = current.valueOf();
      } else {
        if (current instanceof Map || current instanceof Set || current instanceof WeakMap || current instanceof WeakSet) {
          throw fail(key, `is ${describe(current)}, which JSON writes as {} (convert it to an object or an array)`, true);
        }
        if (depth >= MAX_JSON_DEPTH) throw fail(key, `nests deeper than ${MAX_JSON_DEPTH} levels`, false);
        jsonbBytes += CONTAINER_BYTES;
        trail.enter(current, key);
        return current;
      }
    }
    switch (typeof scalar) {
      case 'string':
        if (suspect(scalar)) {
          const problem = unstorableText(scalar);
          if (problem !== undefined) throw fail(key, problem, false);
        }
        jsonbBytes += utf8Bytes(scalar);
        break;
      case 'number':
        if (!Number.isFinite(scalar))
          throw fail(key, `is ${describe(scalar)}, which JSON cannot represent (it would be written as null)`, true);
        jsonbBytes += NUMBER_BYTES;
        break;
      case 'bigint':
        throw fail(key, 'is a BigInt, which JSON cannot represent (write it as a string or a number)', true);
      case 'symbol':
      case 'function':
        throw fail(key, `is a ${typeof scalar}, which JSON cannot represent`, true);
      default:
        // null, a boolean, undefined (null in an array; refused at the top by the caller).
        if (scalar === null && holder[key] instanceof Date) throw fail(key, 'is an invalid Date (JSON would write it as null)', true);
    }
    return current;
  }
  let text: string | undefined;
  try {
    text = JSON.stringify(value, check);
  } catch (err: unknown) {
    if (err instanceof ValueProblem) throw err;
    // A cycle (TypeError), a toJSON or getter that threw, or a string beyond V8's length limit (RangeError).
    throw new ValueProblem(root, `is not JSON-serialisable (${err instanceof Error ? err.message.split('\n')[0] : String(err)})`);
  }
  if (text === undefined) throw new ValueProblem(root, `is not JSON-serialisable: it is ${describe(value)}`);
  if (jsonbBytes > MAX_JSONB_BYTES) throw tooLarge(root, jsonbBytes);
  return { text, jsonbBytes };
}

function tooLarge(root: string, bytes: number): ValueProblem {
  return new ValueProblem(root, `takes more than ${bytes} bytes as jsonb; PostgreSQL's jsonb holds at most ${MAX_JSONB_BYTES} bytes`);
}
