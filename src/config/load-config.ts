import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { OutboxError } from '../errors';
import { parseDatabaseUrl } from './database-url';
import { redactUrl } from './redact';
import { SETTINGS, type SettingKey } from './settings';
import { readSigningKey, type SigningKey } from './signing-key';

/** The zod shape of the whole configuration: each setting's own schema under its key. */
type ConfigShape = { readonly [K in SettingKey]: (typeof SETTINGS)[K]['schema'] };

// Object.fromEntries cannot carry per-key types; the entries are exactly SETTINGS', so
// this assertion only restates the mapping. Values are typed by zod's parse, not by a cast.
const CONFIG_SCHEMA = z.object(Object.fromEntries(Object.entries(SETTINGS).map(([key, setting]) => [key, setting.schema])) as ConfigShape);

/** The validated, frozen configuration of one relay process. */
export type Config = Readonly<
  z.output<typeof CONFIG_SCHEMA> & {
    /** The key messages are signed with (OUTBOX_SIGNING_KEY_FILE, OUTBOX_SIGNING_KEY_ID); undefined: unsigned. */
    readonly signing: SigningKey | undefined;
    /** The AMQP `user-id` of every message (OUTBOX_PUBLISH_USER_ID): the URLs' user; undefined: none. */
    readonly userId: string | undefined;
  }
>;

/** Reads the file a `<NAME>_FILE` variable names; injectable for tests. */
export type FileReader = (path: string) => string;

const readUtf8: FileReader = (path) => readFileSync(path, 'utf8');

/** Where a setting's raw value came from, for error messages. */
interface RawValue {
  readonly source: string;
  readonly text: string;
}

/**
 * Whether a variable set to `''` counts as unset. The OpenTelemetry specification says so
 * for its `OTEL_*` variables; any other variable set but empty (or only whitespace) is
 * refused: it is a templating mistake far more often than a choice
 * (`OUTBOX_DATABASE_URL=${DB_URL}` with DB_URL unset must not quietly mean localhost).
 */
function emptyMeansUnset(name: string): boolean {
  return name.startsWith('OTEL_');
}

function rawValue(
  env: NodeJS.ProcessEnv,
  names: readonly string[],
  fromFile: boolean,
  readFile: FileReader,
  problems: string[],
): RawValue | undefined {
  const isSet = (value: string | undefined, name: string): value is string =>
    value !== undefined && (value !== '' || !emptyMeansUnset(name));
  for (const name of names) {
    const direct = env[name];
    const filePath = fromFile ? env[`${name}_FILE`] : undefined;
    const directSet = isSet(direct, name);
    const fileSet = isSet(filePath, name);
    if (directSet && fileSet) {
      problems.push(`${name} and ${name}_FILE are both set; set only one`);
      return undefined;
    }
    if (directSet) {
      if (direct.trim() === '') {
        problems.push(`${name} is set but empty (unset it for the default, or give a value)`);
        return undefined;
      }
      return { source: name, text: direct };
    }
    if (fileSet) {
      if (filePath.trim() === '') {
        problems.push(`${name}_FILE is set but empty (give the path of a file holding the value, or unset it)`);
        return undefined;
      }
      let text: string;
      try {
        text = readFile(filePath).trim();
      } catch (err: unknown) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
        problems.push(`${name}_FILE names a file that cannot be read (${code}: ${filePath})`);
        return undefined;
      }
      if (text === '') {
        problems.push(`${name}_FILE names an empty file (${filePath})`);
        return undefined;
      }
      return { source: `${name}_FILE`, text };
    }
  }
  return undefined;
}

/**
 * Parses and validates every setting of `SETTINGS` from `env`. Pure apart from
 * reading `_FILE` secrets through `readFile`. Collects every problem and throws one
 * `OutboxError('CONFIG_INVALID')` naming each variable; secret values are never echoed.
 */
export function loadConfig(env: NodeJS.ProcessEnv, readFile: FileReader = readUtf8): Config {
  const sourceProblems = new Map<string, string>();
  const sources: Record<string, string> = {};
  const texts: Record<string, string> = {};
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const names = [setting.env, ...('aliases' in setting ? setting.aliases : [])];
    const fromFile = 'fromFile' in setting && setting.fromFile;
    const problems: string[] = [];
    const raw = rawValue(env, names, fromFile, readFile, problems) ?? { source: setting.env, text: setting.defaultValue };
    if (problems.length > 0) sourceProblems.set(key, problems.join('; '));
    sources[key] = raw.source;
    texts[key] = raw.text;
  }
  const result = CONFIG_SCHEMA.safeParse(texts);
  const issuesByKey = new Map<PropertyKey, string[]>();
  for (const issue of result.error?.issues ?? []) {
    const key = issue.path[0] ?? '';
    issuesByKey.set(key, [...(issuesByKey.get(key) ?? []), issue.message]);
  }
  // One problem per variable, in the order of SETTINGS.
  const problems: string[] = [];
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const sourceProblem = sourceProblems.get(key);
    if (sourceProblem !== undefined) problems.push(sourceProblem);
    const issues = issuesByKey.get(key);
    if (issues === undefined) continue;
    const source = sources[key] ?? setting.env;
    const messages = [...new Set(issues)].join('; ');
    const isSecret = 'secret' in setting && setting.secret;
    problems.push(isSecret ? `${source} ${messages}` : `${source} ${messages} (got ${JSON.stringify(texts[key])})`);
  }
  if (result.success && problems.length === 0) {
    const { backoffBaseMs: base, backoffMaxMs: max, bspMaxExportBatchSize: batch, bspMaxQueueSize: queue } = result.data;
    if (base > max) problems.push(`OUTBOX_BACKOFF_BASE_MS (${base}) must not exceed OUTBOX_BACKOFF_MAX_MS (${max})`);
    if (batch > queue) problems.push(`OTEL_BSP_MAX_EXPORT_BATCH_SIZE (${batch}) must not exceed OTEL_BSP_MAX_QUEUE_SIZE (${queue})`);
    const signing = readSigningKey(result.data.signingKeyFile, result.data.signingKeyId, readFile, problems);
    const userId = result.data.publishUserId ? brokerUser(result.data.amqpUrls, problems) : undefined;
    if (problems.length === 0) return Object.freeze({ ...result.data, signing, userId });
  }
  throw new OutboxError('CONFIG_INVALID', `invalid configuration: ${problems.join('; ')}`);
}

/**
 * The user the relay connects to RabbitMQ as, for OUTBOX_PUBLISH_USER_ID: the URL's user
 * name (amqplib's default `guest` without one). The broker checks `user-id` against the
 * connection's user, so every URL of a list must name the same user.
 */
function brokerUser(urls: readonly string[], problems: string[]): string | undefined {
  const users = new Set(urls.map((url) => userOf(url)));
  if (users.size === 1) return [...users][0];
  problems.push(
    "OUTBOX_PUBLISH_USER_ID=true needs every URL of OUTBOX_AMQP_URL to name the same user (RabbitMQ checks user-id against the connection's user)",
  );
  return undefined;
}

function userOf(url: string): string {
  const name = new URL(url).username;
  try {
    return decodeURIComponent(name) || 'guest';
  } catch {
    return name;
  }
}

/**
 * The configured values that hold credentials, as given (from the variable or its
 * `<NAME>_FILE`): the database URL, the single-host URL the relay builds for each host
 * of a multi-host database URL, and each AMQP URL. Output masking looks for these
 * whole URLs as a last line of defence (`maskUrlsInText`), never for their passwords
 * alone; URLs without a password are left out.
 */
export function secretsOf(config: Pick<Config, 'databaseUrl' | 'amqpUrls'>): readonly string[] {
  const perHost = hostUrls(config.databaseUrl);
  return [...new Set([config.databaseUrl, ...perHost, ...config.amqpUrls])].filter((url) => redactUrl(url) !== url);
}

/** The single-host URLs the relay connects with (db/pool.ts); none where it uses the URL itself. */
function hostUrls(databaseUrl: string): readonly string[] {
  try {
    const { hosts, targetSessionAttrs } = parseDatabaseUrl(databaseUrl);
    return hosts.length > 1 || targetSessionAttrs !== 'any' ? hosts.map((host) => host.url) : [];
  } catch {
    return [];
  }
}
