import fc from 'fast-check';
import { MAX_JSON_DEPTH, serializeJson } from '../../src/producer/json-value';
import { ValueProblem } from '../../src/producer/storable';

/** JSON trees of plain values, keys of any printable text. */
const key = fc.string({ unit: 'grapheme', maxLength: 6 }).map((s) => s.split(String.fromCharCode(0)).join(''));
const leaf = fc.oneof(
  fc.string({ unit: 'grapheme', maxLength: 8 }),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
);
const tree: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('value'), { maxLength: 4 }), fc.dictionary(key, tie('value'), { maxKeys: 4 })),
})).value;

/** A step of a path, as error messages spell it. */
function step(inArray: boolean, k: string): string {
  if (inArray) return `[${k}]`;
  return /^[A-Za-z_$][\w$]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`;
}

/** Every place in `value` a value could be put (a container's slot, new or existing), with its path. */
function slots(value: unknown, path: string, out: { container: Record<string, unknown>; key: string; path: string }[] = []): typeof out {
  if (value === null || typeof value !== 'object') return out;
  const container = value as Record<string, unknown>;
  const inArray = Array.isArray(value);
  const keys = inArray ? (value as unknown[]).map((_, i) => String(i)) : Object.keys(container);
  const fresh = inArray ? String((value as unknown[]).length) : 'fresh key';
  for (const k of [...keys, fresh]) {
    out.push({ container, key: k, path: `${path}${step(inArray, k)}` });
    if (k !== fresh) slots(container[k], `${path}${step(inArray, k)}`, out);
  }
  return out;
}

test('whatever the tree, the text is exactly what JSON.stringify writes', () => {
  fc.assert(
    fc.property(tree, (value) => {
      expect(serializeJson(value, 'payload').text).toBe(JSON.stringify(value));
    }),
  );
});

test.each([
  ['a NUL string', 'a\u0000', false, /^contains a NUL character/],
  ['a lone surrogate', '\udbff', false, /^contains a lone UTF-16 surrogate \(\\udbff\)/],
  ['a BigInt', 12n, true, /is a BigInt/],
  ['NaN', Number.NaN, true, /is NaN/],
  ['Infinity', Number.POSITIVE_INFINITY, true, /is Infinity/],
  ['a function', () => 0, true, /is a function/],
  ['a Map', new Map(), true, /is a Map, which JSON writes as \{\}/],
  ['an invalid Date', new Date(Number.NaN), true, /is an invalid Date/],
])('%s put anywhere in a tree is named by its path', (_what, bad, json, expected) => {
  fc.assert(
    fc.property(fc.oneof(fc.array(tree, { maxLength: 4 }), fc.dictionary(key, tree, { maxKeys: 4 })), fc.nat(), (root, pick) => {
      const places = slots(root, 'payload');
      const slot = places[pick % places.length]!;
      slot.container[slot.key] = bad;
      let thrown: unknown;
      try {
        serializeJson(root, 'payload');
      } catch (err: unknown) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(ValueProblem);
      const { path, problem } = thrown as ValueProblem;
      if (json) {
        // What JSON cannot represent: "payload is not JSON-serialisable: <path> is …".
        expect(path).toBe('payload');
        const prefix = `is not JSON-serialisable: ${slot.path} `;
        expect(problem.startsWith(prefix)).toBe(true);
        expect(problem.slice(prefix.length)).toMatch(expected);
      } else {
        expect(path).toBe(slot.path);
        expect(problem).toMatch(expected);
      }
    }),
  );
});

test(`a key with a NUL is named, and so is nesting beyond ${MAX_JSON_DEPTH} levels`, () => {
  expect(() => serializeJson({ a: [{ 'b\u0000': 1 }] }, 'headers')).toThrow(/^headers\.a\[0\]\["b\\u0000"\] \(the key\) contains a NUL/);
  let deep: unknown = 1;
  for (let i = 0; i < MAX_JSON_DEPTH; i += 1) deep = [deep];
  expect(serializeJson(deep, 'headers').text.length).toBe(2 * MAX_JSON_DEPTH + 1);
  expect(() => serializeJson([deep], 'headers')).toThrow(
    new RegExp(`^headers(\\[0\\]){${MAX_JSON_DEPTH}} nests deeper than ${MAX_JSON_DEPTH} levels`),
  );
});
