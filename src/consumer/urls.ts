/**
 * AMQP URLs as the consumer prints and dials them. The daemon's masking lives in its
 * configuration layer, which this library does not load; this is the small part of it
 * a consumer needs: a URL's password never reaches a log line, an event or an error.
 */

/**
 * `scheme://user:password@` anywhere in a text; the password runs to the last `@` before
 * white space, so an unescaped `@` in it is masked too (when in doubt, more is masked).
 */
const USER_INFO = /([A-Za-z][A-Za-z0-9+.-]*:\/\/[^:/@\s]*):\S*@/g;

/** `text` with the password of every `scheme://user:password@…` in it replaced by `***`. */
export function maskUrls(text: string): string {
  return text.includes('://') ? text.replace(USER_INFO, '$1:***@') : text;
}

/** The URL as it may be printed: `amqp://guest:***@mq:5672/vhost`. */
export function displayUrl(url: string): string {
  const start = url.indexOf('://') + 3;
  const at = url.lastIndexOf('@');
  const colon = url.indexOf(':', start);
  if (start < 3 || at < 0 || colon < 0 || colon > at) return url;
  return `${url.slice(0, colon)}:***${url.slice(at)}`;
}

/**
 * The URL with `heartbeat=<seconds>` in its query, unless it names a heartbeat itself
 * (amqplib reads it only from there).
 */
export function withHeartbeat(url: string, heartbeatSeconds: number): string {
  // A password may hold `?` or `#` unescaped: the query starts after the user info.
  const host = Math.max(0, url.lastIndexOf('@'));
  const hash = url.indexOf('#', host);
  const base = hash >= 0 ? url.slice(0, hash) : url;
  const query = base.indexOf('?', host);
  if (query >= 0 && /[?&]heartbeat=/i.test(base.slice(query))) return url;
  return `${base}${query >= 0 ? '&' : '?'}heartbeat=${heartbeatSeconds}${hash >= 0 ? url.slice(hash) : ''}`;
}
