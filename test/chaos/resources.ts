import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import type { Pool } from 'pg';

/** What one relay process holds, read from /proc. */
export interface ProcessResources {
  readonly rssMiB: number;
  readonly openFds: number;
}

export function processResources(pid: number): ProcessResources {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rssMiB: Math.round(Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024),
    openFds: readdirSync(`/proc/${pid}/fd`).length,
  };
}

/**
 * Database connections opened by the relays of `schema`: their application_name is
 * `outbox-relay <replica id>[ role]`, and the ids are those of `<schema>.relay_replicas`
 * (relays of other runs and tests on the same server are not counted).
 */
export async function relayDatabaseConnections(pool: Pool, schema: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM pg_stat_activity
      WHERE application_name LIKE 'outbox-relay %'
        AND split_part(application_name, ' ', 2) IN (SELECT replica_id FROM "${schema}".relay_replicas)`,
  );
  return Number(rows[0]?.n ?? 0);
}

/** AMQP channels of connections named like `connectionName` (rabbitmqctl; undefined if unavailable). */
export function amqpChannels(connectionName: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    execFile('rabbitmqctl', ['-q', 'list_connections', 'client_properties', 'channels'], { timeout: 20_000 }, (err, stdout) => {
      if (err) return resolve(undefined);
      let total = 0;
      for (const line of stdout.split('\n')) {
        if (!line.includes(connectionName)) continue;
        const channels = Number(/\t(\d+)\s*$/.exec(line)?.[1] ?? 0);
        total += channels;
      }
      resolve(total);
    });
  });
}
