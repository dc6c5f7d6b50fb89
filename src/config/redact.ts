/**
 * Masking of credentials in URLs: the password of a URL's user info, and the value of
 * a `password=` / `sslpassword=` query parameter, become `***`. Everything else of the
 * URL (scheme, user name, hosts, ports, path) and of the text around it stays as it
 * was. Nothing here ever replaces a bare password: a password like `1`, `a` or `outbox`
 * is only recognised where it stands in a URL, so numbers, JSON and words are never
 * touched.
 */

const MASK = '***';

/** `password=` and `sslpassword=` (libpq and node-postgres read them from the query). */
const SECRET_PARAMETER = /([?&](?:ssl)?password=)[^&#]*/gi;

/** The start of a URL in a comma-separated list: `,` then `scheme://`. */
const LIST_SEPARATOR = /,(?=\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)/;

const SCHEME_PREFIX = /^\s*[A-Za-z][A-Za-z0-9+.-]*:\/\//;

/**
 * Masks the credentials in `rest`, the part of one URL after `scheme://`: the password
 * runs from the first `:` to the last `@`. So a password holding an unescaped `@`, `/`,
 * `?`, `#` or `:` (a URL that does not parse, or parses other than meant) is masked
 * whole, as are libpq multi-host URLs (`u:p@h1:5432,h2:5432/db`) and `%`-escapes. When
 * in doubt more is masked, never less: an `@` in the query is taken for the end of the
 * user info (`h:5432/db?application_name=me@x` becomes `h:***@x`).
 */
function redactAfterScheme(rest: string): string {
  let redacted = rest;
  const lastAt = rest.lastIndexOf('@');
  const colon = rest.indexOf(':');
  // An empty password has nothing to hide.
  if (colon >= 0 && colon < lastAt - 1) redacted = `${rest.slice(0, colon + 1)}${MASK}${rest.slice(lastAt)}`;
  return redacted.replace(SECRET_PARAMETER, `$1${MASK}`);
}

/**
 * The URL (or comma-separated list of URLs) `url` with its credentials masked, for
 * printing: `amqp://guest:***@mq:5672`. Works on the text as written, so a URL that
 * does not parse is masked too; a URL without a scheme (`u:p@h/db`) is taken as user
 * info, host and path.
 */
export function redactUrl(url: string): string {
  return url
    .split(LIST_SEPARATOR)
    .map((part) => {
      const scheme = SCHEME_PREFIX.exec(part)?.[0];
      return scheme === undefined ? redactAfterScheme(part) : scheme + redactAfterScheme(part.slice(scheme.length));
    })
    .join(',');
}

function isSchemeChar(code: number): boolean {
  return isLetter(code) || (code >= 0x30 && code <= 0x39) || code === 0x2b || code === 0x2d || code === 0x2e;
}

function isLetter(code: number): boolean {
  return (code >= 0x41 && code <= 0x5a) || (code >= 0x61 && code <= 0x7a);
}

/**
 * Where a URL inside a text ends: white space, control characters, `"`, `\`, `<`, `>`
 * and `` ` ``. A URL inside a JSON string therefore never reaches past the string, nor
 * into an escape sequence.
 */
function endsUrl(code: number): boolean {
  return code <= 0x20 || code === 0x7f || code === 0x22 || code === 0x5c || code === 0x3c || code === 0x3e || code === 0x60;
}

/**
 * Masks the credentials of every `scheme://…` URL in `text`. Linear in the length of
 * `text`: each `://` is found once, its scheme read backwards, its URL forwards up to an
 * end character or the next URL. The masked parts hold none of `"`, `\` or control
 * characters and are replaced by `***`, so a JSON text stays the same JSON shape.
 */
function maskUrlShapes(text: string): string {
  const starts: { readonly scheme: number; readonly rest: number }[] = [];
  for (let at = text.indexOf('://'); at >= 0; at = text.indexOf('://', at + 3)) {
    let scheme = at;
    while (scheme > 0 && isSchemeChar(text.charCodeAt(scheme - 1))) scheme -= 1;
    while (scheme < at && !isLetter(text.charCodeAt(scheme))) scheme += 1;
    if (scheme < at) starts.push({ scheme, rest: at + 3 });
  }
  let masked = '';
  let copied = 0;
  for (const [index, start] of starts.entries()) {
    if (start.rest < copied) continue;
    const limit = Math.max(starts[index + 1]?.scheme ?? text.length, start.rest);
    let end = start.rest;
    while (end < limit && !endsUrl(text.charCodeAt(end))) end += 1;
    masked += text.slice(copied, start.rest) + redactAfterScheme(text.slice(start.rest, end));
    copied = end;
  }
  return masked + text.slice(copied);
}

/** Replaces every occurrence of `from` by `to`. */
function replaceAll(text: string, from: string, to: string): string {
  return text.includes(from) ? text.split(from).join(to) : text;
}

/** The configured URLs that hold a credential, each with its masked form; longest first. */
function credentialUrls(secretUrls: readonly string[]): { readonly url: string; readonly redacted: string }[] {
  return [...new Set(secretUrls)]
    .map((url) => ({ url, redacted: redactUrl(url) }))
    .filter(({ url, redacted }) => url.includes('://') && redacted !== url)
    .sort((a, b) => b.url.length - a.url.length);
}

/**
 * Masks URL credentials in a free text that is not JSON (an error message, a line of
 * command output).
 *
 * Two layers: every URL-shaped `scheme://user:password@host` in the text, and, as a last
 * line of defence, every occurrence of one of `secretUrls` (the configured URLs, as
 * given) — whole, as written or JSON-escaped — so that a configured URL whose password
 * holds a space or a quote is masked even where a driver quotes it. Only whole URLs
 * (with their `://`) are looked for, never a bare password.
 */
export function maskUrlsInText(text: string, secretUrls: readonly string[] = []): string {
  if (!text.includes('://')) return text;
  let masked = text;
  for (const { url, redacted } of credentialUrls(secretUrls)) {
    masked = replaceAll(masked, url, redacted);
    masked = replaceAll(masked, jsonEscaped(url), jsonEscaped(redacted));
  }
  return maskUrlShapes(masked);
}

function jsonEscaped(text: string): string {
  return JSON.stringify(text).slice(1, -1);
}

/** A JSON string literal, escapes included. Unambiguous, so linear. */
const JSON_STRING = /"(?:[^"\\]|\\.)*"/g;

/**
 * Masks URL credentials inside the string values of a JSON text (a log line, `--json`
 * output), as `maskUrlsInText` does. Only the contents of string literals are changed,
 * each decoded, masked and encoded again: numbers, keys' structure and everything
 * outside strings stay byte for byte, so valid JSON stays valid JSON whatever the
 * password. `JSON.stringify` and pino never escape `:` or `/`, so a literal without
 * `://` holds no URL and is left alone.
 */
export function maskUrlsInJson(json: string, secretUrls: readonly string[] = []): string {
  if (!json.includes('://')) return json;
  return json.replace(JSON_STRING, (literal) => {
    if (!literal.includes('://')) return literal;
    let value: unknown;
    try {
      value = JSON.parse(literal);
    } catch {
      return literal;
    }
    if (typeof value !== 'string') return literal;
    const masked = maskUrlsInText(value, secretUrls);
    return masked === value ? literal : JSON.stringify(masked);
  });
}

/**
 * Masks URL credentials in a text written to stdout or stderr: as JSON when it is a
 * JSON document (`status --json`, `dead list --json`), so it stays one; as free text
 * otherwise.
 */
export function maskUrlsInOutput(text: string, secretUrls: readonly string[] = []): string {
  if (!text.includes('://')) return text;
  return isJson(text) ? maskUrlsInJson(text, secretUrls) : maskUrlsInText(text, secretUrls);
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}
