import { z } from 'zod';

/**
 * libpq's multi-host connection URLs, which node-postgres does not read:
 * `postgres://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write`.
 *
 * The URL is split as written, never decoded and encoded again: user info, path and the
 * query other than `target_session_attrs` (sslmode, application_name, …) are handed to
 * node-postgres unchanged, one single-host URL per host. Only the host list is read here.
 */

/** `target_session_attrs` values a relay can use: it writes, so it wants the primary. */
export const SESSION_ATTRS = ['any', 'read-write', 'primary'] as const;

/** Which hosts qualify: `any` the first that answers, `read-write` / `primary` the writable one. */
export type TargetSessionAttrs = (typeof SESSION_ATTRS)[number];

/** libpq's values that pick a standby: a relay cannot work there. */
const STANDBY_ATTRS: ReadonlySet<string> = new Set(['read-only', 'standby', 'prefer-standby']);

/** One host of the list, with the single-host URL node-postgres connects with. */
export interface DatabaseHost {
  /** The host as node-postgres takes it: decoded, IPv6 without brackets, or a socket directory. */
  readonly host: string;
  readonly port: number;
  /** `host:port` for logs and errors (IPv6 in brackets); holds no credential. */
  readonly label: string;
  /** The URL with this host alone and without `target_session_attrs`: holds the password, if any. */
  readonly url: string;
}

/** A validated database URL. */
export interface DatabaseTarget {
  readonly hosts: readonly DatabaseHost[];
  readonly targetSessionAttrs: TargetSessionAttrs;
}

const DEFAULT_PORT = 5432;
const SCHEME = /^(postgres|postgresql):\/\//i;
const TARGET_SESSION_ATTRS = /^target_session_attrs=(.*)$/i;

/** Thrown by `parseDatabaseUrl`; the message names what is wrong and never echoes a credential. */
export class DatabaseUrlError extends Error {
  override readonly name = 'DatabaseUrlError';
}

/** `h`, `h:5433`, `[::1]:5433`, `%2Fvar%2Frun%2Fpostgresql` → host and port. */
function parseHost(text: string, position: number): { host: string; port: number; rawHost: string } {
  const where = `host #${position}`;
  let rawHost: string;
  let rawPort: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) throw new DatabaseUrlError(`${where} opens an IPv6 address with [ but never closes it`);
    rawHost = text.slice(0, close + 1);
    const after = text.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw new DatabaseUrlError(`${where} has text after its IPv6 address`);
    rawPort = after === '' ? undefined : after.slice(1);
  } else {
    const colon = text.lastIndexOf(':');
    rawHost = colon < 0 ? text : text.slice(0, colon);
    rawPort = colon < 0 ? undefined : text.slice(colon + 1);
  }
  if (rawHost === '' || rawHost === '[]') throw new DatabaseUrlError(`${where} is empty`);
  // The port text is never echoed: in a URL without its host, `user:secret/db`, it is the password.
  let port = DEFAULT_PORT;
  if (rawPort !== undefined) {
    port = /^\d{1,5}$/.test(rawPort) ? Number(rawPort) : Number.NaN;
    if (!(port >= 1 && port <= 65_535)) throw new DatabaseUrlError(`${where} has a bad port (must be a number from 1 to 65535)`);
  }
  let host: string;
  try {
    host = decodeURIComponent(rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost);
  } catch {
    throw new DatabaseUrlError(`${where} holds a bad %-escape`);
  }
  return { host, port, rawHost };
}

/**
 * Parses a `postgres://` or `postgresql://` URL with one or more comma-separated hosts
 * (`host`, `host:port`, `[ipv6]:port`; port 5432 when omitted) and the optional
 * `target_session_attrs` (`any`, the default, `read-write` or `primary`; libpq's
 * standby choices are refused: the relay writes). Throws `DatabaseUrlError`.
 */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  const text = url.trim();
  const scheme = SCHEME.exec(text)?.[0];
  if (scheme === undefined) throw new DatabaseUrlError('must start with postgres:// or postgresql://');
  if (/,\s*[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw new DatabaseUrlError('must be a single URL (several hosts go into one: postgres://user@host1:5432,host2:5432/database)');
  }
  const rest = text.slice(scheme.length);
  // As the WHATWG URL parser: the authority ends at the first / ? or #, the user info at its last @.
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const tail = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  const at = authority.lastIndexOf('@');
  const userInfo = at < 0 ? '' : authority.slice(0, at + 1);
  const hostList = authority.slice(at + 1);
  if (hostList.trim() === '') throw new DatabaseUrlError('names no host (expected postgres://user@host:port/database)');

  const hashAt = tail.indexOf('#');
  const beforeHash = hashAt < 0 ? tail : tail.slice(0, hashAt);
  const queryAt = beforeHash.indexOf('?');
  const path = queryAt < 0 ? beforeHash : beforeHash.slice(0, queryAt);
  const parameters = queryAt < 0 ? [] : beforeHash.slice(queryAt + 1).split('&');
  let targetSessionAttrs: TargetSessionAttrs = 'any';
  const kept: string[] = [];
  for (const parameter of parameters) {
    const match = TARGET_SESSION_ATTRS.exec(parameter);
    if (!match) {
      if (parameter !== '') kept.push(parameter);
      continue;
    }
    let value: string;
    try {
      value = decodeURIComponent(match[1] ?? '').toLowerCase();
    } catch {
      value = '';
    }
    if (STANDBY_ATTRS.has(value)) {
      throw new DatabaseUrlError(
        `has target_session_attrs=${value}, which picks a standby; the relay writes, so use read-write, primary or any`,
      );
    }
    if (!(SESSION_ATTRS as readonly string[]).includes(value)) {
      throw new DatabaseUrlError(`has an unknown target_session_attrs (must be one of ${SESSION_ATTRS.join(', ')})`);
    }
    targetSessionAttrs = value as TargetSessionAttrs;
  }
  const suffix = `${path}${kept.length > 0 ? `?${kept.join('&')}` : ''}`;

  const hosts = hostList.split(',').map((entry, index): DatabaseHost => {
    const { host, port, rawHost } = parseHost(entry.trim(), index + 1);
    const label = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    return { host, port, label, url: `${scheme}${userInfo}${rawHost}:${port}${suffix}` };
  });
  return Object.freeze({ hosts: Object.freeze(hosts), targetSessionAttrs });
}

/** The settings-table schema of `OUTBOX_DATABASE_URL`: the URL as given, once `parseDatabaseUrl` accepts it. */
export const databaseUrlSchema: z.ZodType<string, string> = z.string().transform((text, ctx) => {
  try {
    parseDatabaseUrl(text);
  } catch (err: unknown) {
    if (!(err instanceof DatabaseUrlError)) throw err;
    ctx.addIssue({ code: 'custom', message: err.message });
    return z.NEVER;
  }
  return text.trim();
});
