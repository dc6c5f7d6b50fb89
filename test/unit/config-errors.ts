import { loadConfig } from '../../src/config/load-config';
import { SETTINGS } from '../../src/config/settings';
import { OutboxError } from '../../src/errors';

// Shared by the config*.test.ts files.

/** Runs loadConfig and returns the error it throws; fails the test when it does not throw. */
export function configError(env: NodeJS.ProcessEnv, readFile?: (path: string) => string): OutboxError {
  try {
    loadConfig(env, readFile);
  } catch (err: unknown) {
    expect(err).toBeInstanceOf(OutboxError);
    return err as OutboxError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

export const ALL_ENV_NAMES = Object.values(SETTINGS).map((s) => s.env);

/** Whether `text` names the variable `name` as a whole word (OUTBOX_HTTP_HOST is not OUTBOX_HTTP_HOST_X). */
export function names(text: string, name: string): boolean {
  return new RegExp(`(^|[^A-Z_])${name}([^A-Z_]|$)`).test(text);
}
