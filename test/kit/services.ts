import { connect } from 'amqplib';
import { Client } from 'pg';

/** The PostgreSQL the tests use: OUTBOX_TEST_DATABASE_URL, default the local `test` database. */
export function testDatabaseUrl(): string {
  return process.env['OUTBOX_TEST_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
}

/** The RabbitMQ the tests use: OUTBOX_TEST_AMQP_URL, default the local broker. */
export function testAmqpUrl(): string {
  return process.env['OUTBOX_TEST_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
}

export async function databaseReachable(url: string): Promise<boolean> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function brokerReachable(url: string): Promise<boolean> {
  try {
    const model = await connect(url, { timeout: 3_000 });
    await model.close();
    return true;
  } catch {
    return false;
  }
}
