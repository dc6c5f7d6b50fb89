import type { Config } from '../config/load-config';
import type { Logger } from '../observability/logger';
import { runCleanup } from '../outbox/retention';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** `outbox-relay cleanup`: the retention cleanup, once. */
export async function cleanupCommand(config: Config, log: Logger, io: Io): Promise<void> {
  const deleted = await withDatabase(config, log, (pool) => runCleanup(pool, config.schema, config.retentionMs));
  if (deleted === undefined) io.out('another relay is cleaning right now; nothing done');
  else io.out(`deleted ${deleted} published message${deleted === 1 ? '' : 's'} older than OUTBOX_RETENTION`);
}
