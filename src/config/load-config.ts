import { readFileSync } from 'node:fs';
import { OutboxError } from '../errors';
import { SETTINGS, type SettingKey } from './settings';

/** The validated, frozen configuration of one relay process. */
export type Config = {
  readonly [K in SettingKey]: (typeof SETTINGS)[K] extends { schema: { _zod: { output: infer T } } } ? T : never;
};

/** Reads the file a `<NAME>_FILE` variable names; injectable for tests. */
export type FileReader = (path: string) => string;

const readUtf8: FileReader = (path) => readFileSync(path, 'utf8');

/** Where a setting's raw value came from, for error messages. */
interface RawValue {
  readonly source: string;
  readonly text: string;
}

function rawValue(env: NodeJS.ProcessEnv, names: readonly string[], fromFile: boolean, readFile: FileReader, problems: string[]): RawValue | undefined {
  for (const name of names) {
    const direct = env[name];
    const filePath = fromFile ? env[`${name}_FILE`] : undefined;
    if (direct !== undefined && direct !== '' && filePath !== undefined && filePath !== '') {
      problems.push(`${name} and ${name}_FILE are both set; set only one`);
      return undefined;
    }
    if (direct !== undefined && direct !== '') return { source: name, text: direct };
    if (filePath !== undefined && filePath !== '') {
      try {
        return { source: `${name}_FILE`, text: readFile(filePath).trim() };
      } catch (err: unknown) {
        const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
        problems.push(`${name}_FILE names a file that cannot be read (${code}: ${filePath})`);
        return undefined;
      }
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
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const [key, setting] of Object.entries(SETTINGS)) {
    const names = [setting.env, ...('aliases' in setting ? setting.aliases : [])];
    const fromFile = 'fromFile' in setting && setting.fromFile;
    const raw = rawValue(env, names, fromFile, readFile, problems) ?? { source: setting.env, text: setting.defaultValue };
    const result = setting.schema.safeParse(raw.text);
    if (result.success) {
      values[key] = result.data;
      continue;
    }
    const isSecret = 'secret' in setting && setting.secret;
    const messages = [...new Set(result.error.issues.map((issue) => issue.message))].join('; ');
    problems.push(isSecret ? `${raw.source} ${messages}` : `${raw.source} ${messages} (got ${JSON.stringify(raw.text)})`);
  }
  if (problems.length === 0) {
    const base = values['backoffBaseMs'] as number;
    const max = values['backoffMaxMs'] as number;
    if (base > max) problems.push(`OUTBOX_BACKOFF_BASE_MS (${base}) must not exceed OUTBOX_BACKOFF_MAX_MS (${max})`);
  }
  if (problems.length > 0) {
    throw new OutboxError('CONFIG_INVALID', `invalid configuration: ${problems.join('; ')}`);
  }
  return Object.freeze(values) as unknown as Config;
}

/** The passwords held by the configured URLs, so logs and errors can mask them. */
export function secretsOf(config: Pick<Config, 'databaseUrl' | 'amqpUrls'>): readonly string[] {
  const secrets = new Set<string>();
  for (const url of [config.databaseUrl, ...config.amqpUrls]) {
    try {
      const password = new URL(url).password;
      if (password) {
        secrets.add(password);
        secrets.add(decodeURIComponent(password));
      }
    } catch {
      // An unparsable URL was rejected by loadConfig already.
    }
  }
  return [...secrets].filter((s) => s.length > 0);
}
