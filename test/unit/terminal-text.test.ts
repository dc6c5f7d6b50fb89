import fc from 'fast-check';
import { escapeControls, terminalSafe } from '../../src/util/terminal-text';

// Stored values printed by the CLI: control characters, terminal escapes and bidirectional
// overrides are shown as escapes; JSON output keeps exactly its values.

/** Every character a terminal acts on, but newline and tab (the output's own layout). */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const ACTIVE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;
// eslint-disable-next-line no-control-regex -- as above
const ACTIVE_OR_LAYOUT = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

/** Strings rich in what matters here: controls, escape sequences, bidi, and ordinary text. */
const hostile = fc.string({
  unit: fc.oneof(
    fc.integer({ min: 0, max: 0x1f }).map((c) => String.fromCharCode(c)),
    fc.integer({ min: 0x7f, max: 0x9f }).map((c) => String.fromCharCode(c)),
    fc.constantFrom('\u061c', '\u200e', '\u200f', '\u2028', '\u2029', '\u202a', '\u202e', '\u2066', '\u2069', '\\', '"', '[', ']', ';'),
    fc.constantFrom('\x1b[31m', '\x1b]0;pwned\x07', '\x1b[2J', '\r'),
    fc.string({ unit: 'grapheme' }),
  ),
  maxLength: 40,
});

test('escapeControls: a value keeps to its line and nothing in it acts on a terminal (property)', () => {
  fc.assert(
    fc.property(fc.oneof(hostile, fc.string({ unit: 'binary' })), (value) => {
      expect(escapeControls(value)).not.toMatch(ACTIVE_OR_LAYOUT);
      // Printable text is left alone.
      if (!ACTIVE_OR_LAYOUT.test(value)) expect(escapeControls(value)).toBe(value);
    }),
  );
  expect(escapeControls('a\x1b[31mred\r\n\u202eevil')).toBe('a\\u001b[31mred\\r\\n\\u202eevil');
});

test('terminalSafe: whole output keeps its lines, loses what acts on a terminal (property)', () => {
  fc.assert(
    fc.property(fc.array(hostile), (lines) => {
      const text = lines.join('\n');
      const safe = terminalSafe(text);
      expect(safe).not.toMatch(ACTIVE);
      expect(safe.split('\n').length).toBeGreaterThanOrEqual(lines.length);
    }),
  );
});

test('terminalSafe on JSON output: still JSON, with exactly the same values (property)', () => {
  const json = fc.jsonValue({ maxDepth: 3 });
  fc.assert(
    fc.property(fc.oneof(json, fc.dictionary(hostile, hostile), fc.array(hostile)), (value) => {
      const text = JSON.stringify(value);
      const safe = terminalSafe(text);
      expect(safe).not.toMatch(ACTIVE);
      expect(JSON.parse(safe)).toEqual(JSON.parse(text));
    }),
  );
});
