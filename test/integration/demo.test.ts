import { Client } from 'pg';
import { loadConfig } from '../../src/config/load-config';
import { runDemo } from '../../src/demo/demo';
import { createLogger } from '../../src/observability/logger';
import { LogCapture } from '../kit/log-capture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';

test('the demo ends with every order consumed exactly once, and removes what it created', async () => {
  const out: string[] = [];
  const config = loadConfig({ OUTBOX_DATABASE_URL: testDatabaseUrl(), OUTBOX_AMQP_URL: testAmqpUrl() });
  const logs = new LogCapture();
  const summary = await runDemo(
    config,
    createLogger({ level: 'error', secrets: [], destination: logs.stream }),
    { out: (t) => out.push(t), err: (t) => out.push(t) },
    {
      seconds: 3,
      rate: 40,
      interactive: false,
    },
  );
  expect(summary.written).toBeGreaterThan(60);
  expect(summary.consumedOnce).toBe(summary.written);
  expect(summary.published).toBe(summary.written);
  expect(summary.duplicatesSkipped).toBeGreaterThanOrEqual(1);
  expect(out.join('\n')).toMatch(/OK: every order's event was consumed exactly once/);
  expect(out.join('\n')).toMatch(/written \d+ · published \d+ · consumed \d+/);
  const schema = /schema "(outbox_demo_[0-9a-f]+)"/.exec(out[0] ?? '')?.[1];
  expect(schema).toBeDefined();
  const client = new Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
    expect(rowCount).toBe(0);
  } finally {
    await client.end();
  }
  expect(logs.lines).toEqual([]);
}, 60_000);
