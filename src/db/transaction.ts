import type { ClientBase, Pool, PoolClient } from 'pg';

/**
 * Settings for one transaction (`SET LOCAL`), e.g. `{ synchronous_commit: 'off' }`.
 * Names and values are placed in the statement, so they are restricted to plain
 * identifiers and numbers; they come from code, never from input.
 */
export type LocalSettings = Readonly<Record<string, string | number>>;

const PLAIN = /^[A-Za-z0-9_.]+$/;

function beginStatement(local: LocalSettings | undefined, afterBegin: string | undefined): string {
  const sets = Object.entries(local ?? {}).map(([name, value]) => {
    if (!PLAIN.test(name) || !PLAIN.test(String(value))) throw new Error(`invalid transaction setting ${name}=${String(value)}`);
    return `SET LOCAL ${name} = ${String(value)}`;
  });
  return ['BEGIN', ...sets, ...(afterBegin === undefined ? [] : [afterBegin])].join('; ');
}

/**
 * Runs `work` in a transaction on `client`: BEGIN, the local settings and `afterBegin`
 * (a statement from code, never from input) in one round trip, COMMIT when `work`
 * resolves, ROLLBACK (its own failure ignored) when it throws.
 */
export async function inTransaction<T>(client: ClientBase, work: () => Promise<T>, local?: LocalSettings, afterBegin?: string): Promise<T> {
  await client.query(beginStatement(local, afterBegin));
  try {
    const result = await work();
    await client.query('COMMIT');
    return result;
  } catch (err: unknown) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  }
}

/**
 * Runs `work` in a transaction on a client of `pool`. A client whose transaction failed
 * is destroyed rather than returned to the pool: its connection may be broken or in an
 * unknown state. `track` sees the client while it is checked out (to drop it at shutdown).
 */
export async function withPoolTransaction<T>(
  pool: Pool,
  work: (client: PoolClient) => Promise<T>,
  options: { local?: LocalSettings; afterBegin?: string; track?: Set<PoolClient> } = {},
): Promise<T> {
  const client = await pool.connect();
  options.track?.add(client);
  let failure: Error | undefined;
  try {
    return await inTransaction(client, () => work(client), options.local, options.afterBegin);
  } catch (err: unknown) {
    failure = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    // Not tracked any more: the shutdown already destroyed it.
    if (!options.track || options.track.delete(client)) client.release(failure);
  }
}

/** Runs `work` on a client of `pool` and returns the client whatever happens. */
export async function withClient<T>(pool: Pool, work: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    return await work(client);
  } finally {
    client.release();
  }
}
