import { type Client, escapeIdentifier, type Notification } from 'pg';
import { OutboxFixture } from '../kit/outbox-fixture';
import { installOptionalTrigger } from '../kit/outbox-schema';
import { connected, withClient } from '../kit/pg-client';
import { waitFor } from '../kit/wait';

let fx: OutboxFixture;

beforeAll(async () => {
  fx = await OutboxFixture.create('mig_notify');
});

afterAll(async () => {
  await fx.close();
});

describe('the optional NOTIFY trigger', () => {
  let listener: Client;
  let installed = false;
  async function ensureTrigger(): Promise<void> {
    if (!installed) await installOptionalTrigger(fx.pool, fx.schema);
    installed = true;
  }
  const notifications: Notification[] = [];

  beforeAll(async () => {
    listener = await connected();
    listener.on('notification', (n) => notifications.push(n));
    await listener.query(`LISTEN ${escapeIdentifier(`${fx.schema}.messages`)}`);
  });

  afterAll(async () => {
    await listener.end();
  });

  /** Sends a marker on the channel from `client` and waits for it: everything sent before it has arrived. */
  async function sync(client: Client, marker: string): Promise<Notification[]> {
    await client.query('SELECT pg_notify($1, $2)', [`${fx.schema}.messages`, marker]);
    await waitFor(`marker ${marker}`, () => notifications.some((n) => n.payload === marker));
    const index = notifications.findIndex((n) => n.payload === marker);
    return notifications.splice(0, index + 1).slice(0, -1);
  }

  test('by default an INSERT raises no NOTIFY: producers do not pay for one', async () => {
    await withClient(async (producer) => {
      await sync(producer, 'default-start');
      await producer.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}')`);
      expect(await sync(producer, 'default-after')).toEqual([]);
    });
  });

  test('a committed INSERT notifies channel "<schema>.messages" once, at commit', async () => {
    await ensureTrigger();
    await withClient(async (producer) => {
      await sync(producer, 'start');
      await producer.query('BEGIN');
      await producer.query(
        `INSERT INTO ${fx.table} (routing_key, payload) SELECT 'q', jsonb_build_object('n', g) FROM generate_series(1, 3) g`,
      );
      // Not delivered while the transaction is open.
      await withClient(async (other) => {
        expect(await sync(other, 'still-open')).toEqual([]);
      });
      await producer.query('COMMIT');
      await waitFor('the notification of the committed insert', () => notifications.length > 0);
      const before = await sync(producer, 'after-commit');
      // One per inserting statement (FOR EACH STATEMENT), not per row.
      expect(before).toHaveLength(1);
      expect(before[0]!.channel).toBe(`${fx.schema}.messages`);
    });
  });

  test('a rolled-back INSERT notifies nobody', async () => {
    await ensureTrigger();
    await withClient(async (producer) => {
      await sync(producer, 'before-rollback');
      await producer.query('BEGIN');
      await producer.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}')`);
      await producer.query('ROLLBACK');
      // Notifications of one session arrive in order: anything the rollback had sent
      // would arrive before this marker.
      expect(await sync(producer, 'after-rollback')).toEqual([]);
    });
  });
});
