/**
 * Stored values (routing keys, last errors, headers, role names) may hold control
 * characters: printed raw, an escape sequence (`ESC [ …`, `ESC ] …`) would recolour,
 * retitle or clear the operator's terminal, a carriage return would overwrite the line,
 * a bidirectional override would show text in another order than it is. These functions
 * make such characters visible instead.
 */

/**
 * C0 controls but newline and tab, DEL, C1 controls (U+009B is a one-character CSI for
 * terminals that read 8-bit controls), the Unicode line and paragraph separators and the
 * bidirectional formatting characters.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const UNSAFE_IN_OUTPUT = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;
/** The same, and newline and tab: what may not appear raw inside one value of a text line. */
// eslint-disable-next-line no-control-regex -- as above
const UNSAFE_IN_VALUE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/gu;

const NAMED: Readonly<Record<string, string>> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

const unicodeEscape = (char: string): string => `\\u${(char.codePointAt(0) ?? 0).toString(16).padStart(4, '0')}`;

/**
 * One stored value for a line of text output: every control or formatting character is
 * written as an escape (`\n`, `\r`, `\t`, `\u001b`, `\u202e`), so the value stays on its
 * line and shows what it holds.
 */
export function escapeControls(value: string): string {
  return value.replace(UNSAFE_IN_VALUE, (char) => NAMED[char] ?? unicodeEscape(char));
}

/**
 * The last line of defence for whole output (text or JSON): every control or formatting
 * character but newline and tab becomes `\uXXXX`. In JSON such a character can only
 * stand inside a string, where `\uXXXX` is its own escape: JSON output keeps exactly its
 * values.
 */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE_IN_OUTPUT, unicodeEscape);
}
