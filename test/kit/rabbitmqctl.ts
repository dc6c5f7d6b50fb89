import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The broker's own control tool, for faults only the broker can make: closing a client's
 * connection as an operator would (`rabbitmqctl close_connection`, the broker's
 * CONNECTION_FORCED). It must run where the broker runs, with its Erlang cookie (as root
 * or the rabbitmq user on the test machine).
 */

/** The pids of the connections whose client named itself `connectionName` (clientProperties.connection_name). */
export async function connectionPids(connectionName: string): Promise<string[]> {
  const { stdout } = await run('rabbitmqctl', ['list_connections', 'pid', 'client_properties', '-q'], { timeout: 20_000 });
  const needle = `{"connection_name",${JSON.stringify(connectionName)}}`;
  return stdout
    .split('\n')
    .filter((line) => line.includes(needle))
    .map((line) => line.split('\t')[0] as string)
    .filter((pid) => pid.startsWith('<'));
}

/** Closes, from the broker's side, every connection named `connectionName`; returns how many. */
export async function closeConnectionsNamed(connectionName: string, reason = 'closed by the test'): Promise<number> {
  const pids = await connectionPids(connectionName);
  for (const pid of pids) await run('rabbitmqctl', ['close_connection', pid, reason], { timeout: 20_000 });
  return pids.length;
}
