import { execFileSync } from 'node:child_process';
import { brokerReachable, databaseReachable, testAmqpUrl, testDatabaseUrl } from './services';

function dockerAvailable(): boolean {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * The tests use the PostgreSQL and RabbitMQ given by OUTBOX_TEST_DATABASE_URL /
 * OUTBOX_TEST_AMQP_URL (default: the local services). When one is unreachable and a
 * Docker engine runs, it is started with testcontainers; when neither is possible the
 * run fails here, loudly. Tests never skip for a missing service.
 */
export default async function globalSetup(): Promise<void> {
  const [dbOk, brokerOk] = await Promise.all([databaseReachable(testDatabaseUrl()), brokerReachable(testAmqpUrl())]);
  if (dbOk && brokerOk) return;
  if (!dockerAvailable()) {
    const missing = [
      !dbOk && `PostgreSQL at ${testDatabaseUrl()}`,
      !brokerOk && `RabbitMQ at ${testAmqpUrl().replace(/:[^:@/]*@/, ':***@')}`,
    ].filter(Boolean);
    throw new Error(
      `integration tests need ${missing.join(' and ')}, which cannot be reached, and no Docker engine runs to start them with testcontainers. ` +
        'Start the services or set OUTBOX_TEST_DATABASE_URL / OUTBOX_TEST_AMQP_URL.',
    );
  }
  const started: { stop(): Promise<unknown> }[] = [];
  if (!dbOk) {
    const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
    const pg = await new PostgreSqlContainer('postgres:15-alpine')
      .withDatabase('test')
      .withUsername('postgres')
      .withPassword('postgres')
      .start();
    started.push(pg);
    process.env['OUTBOX_TEST_DATABASE_URL'] = pg.getConnectionUri();
  }
  if (!brokerOk) {
    const { RabbitMQContainer } = await import('@testcontainers/rabbitmq');
    const rabbit = await new RabbitMQContainer('rabbitmq:4-alpine').start();
    started.push(rabbit);
    process.env['OUTBOX_TEST_AMQP_URL'] = rabbit.getAmqpUrl();
  }
  (globalThis as { __OUTBOX_CONTAINERS__?: unknown }).__OUTBOX_CONTAINERS__ = started;
}
