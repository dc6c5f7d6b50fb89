import { randomUUID } from 'node:crypto';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics } from '../kit/relay-http';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('delivery');
const broker = TestBroker.forFile();

describe('delivery', () => {
  test("every column reaches the AMQP message as the README's SQL contract says", async () => {
    const exchange = await broker.exchange(uniqueName('ex'));
    const received = await broker.queue(uniqueName('q'), { exchange, pattern: 'order.#' });
    const messageId = randomUUID();
    const [id] = await fx.insert([
      {
        message_id: messageId,
        exchange,
        routing_key: 'order.created',
        message_type: 'order.created',
        payload: { orderId: 42, items: ['a', 'ü'] },
        headers: { 'x-tenant': 'acme', traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' },
        correlation_id: 'corr-7',
        partition_key: 'order-42',
      },
    ]);
    const { relay } = await fx.startRelay({ OUTBOX_APP_ID: 'orders-service' });
    await waitFor('the message', () => received.length === 1);
    const msg = received[0]!;
    const row = await fx.row(id!);

    expect(msg.fields.exchange).toBe(exchange);
    expect(msg.fields.routingKey).toBe('order.created');
    expect(JSON.parse(msg.content.toString())).toEqual({ orderId: 42, items: ['a', 'ü'] });
    expect(msg.properties).toMatchObject({
      messageId,
      type: 'order.created',
      contentType: 'application/json',
      correlationId: 'corr-7',
      appId: 'orders-service',
      deliveryMode: 2,
      timestamp: Math.floor((row['created_at'] as Date).getTime() / 1000),
    });
    expect(msg.properties.headers).toMatchObject({
      'x-tenant': 'acme',
      traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
    });
    await waitFor('the row marked published', async () => (await fx.row(id!))['published_at'] !== null);
    expect((await readMetrics(relay.port)).value('outbox_messages_published_total')).toBe(1);
  });

  test('a raw body (bytea) is published byte for byte with its content type', async () => {
    const queue = uniqueName('raw');
    const received = await broker.queue(queue);
    const body = Buffer.from([0x08, 0x96, 0x01, 0x00, 0xff, 0xfe]);
    await fx.insert([{ routing_key: queue, body, content_type: 'application/x-protobuf', message_type: 'Ping' }]);
    await fx.startRelay();
    await waitFor('the message', () => received.length === 1);
    expect(received[0]!.content.equals(body)).toBe(true);
    expect(received[0]!.properties.contentType).toBe('application/x-protobuf');
  });

  test('a command on the default exchange arrives in the queue named by its routing key', async () => {
    const queue = uniqueName('cmd');
    const received = await broker.queue(queue);
    await fx.insert([{ routing_key: queue, message_type: 'ship.order', payload: { orderId: 1 } }]);
    await fx.startRelay();
    await waitFor('the command', () => received.length === 1);
    expect(received[0]!.fields.exchange).toBe('');
    expect(bodies(received)).toEqual([{ orderId: 1 }]);
  });

  test('a delayed message waits for available_at', async () => {
    const queue = uniqueName('delayed');
    const received = await broker.queue(queue);
    const availableAt = new Date(Date.now() + 1_500);
    await fx.insert([{ routing_key: queue, payload: { late: true }, available_at: availableAt }]);
    await fx.insert([{ routing_key: queue, payload: { late: false } }]);
    await fx.startRelay();
    await waitFor('the undelayed message', () => received.length === 1);
    expect(bodies(received)).toEqual([{ late: false }]);
    await staysFalse(
      'the delayed message',
      () => received.length > 1 && Date.now() < availableAt.getTime(),
      availableAt.getTime() - Date.now() - 100,
    );
    await waitFor('the delayed message', () => received.length === 2);
    expect(Date.now()).toBeGreaterThanOrEqual(availableAt.getTime());
    expect(bodies(received)[1]).toEqual({ late: true });
  });

  test('an event nobody subscribes to is published and counted as unroutable (OUTBOX_UNROUTABLE=publish)', async () => {
    const exchange = await broker.exchange(uniqueName('lonely'));
    const [id] = await fx.insert([{ exchange, routing_key: 'nobody.listens', payload: {} }]);
    const { relay } = await fx.startRelay();
    await waitFor('the row marked published', async () => (await fx.row(id!))['published_at'] !== null);
    expect((await readMetrics(relay.port)).value('outbox_messages_unroutable_total')).toBe(1);
    expect((await fx.row(id!))['attempts']).toBe(0);
  });

  test('with OUTBOX_UNROUTABLE=retry an unroutable event fails and is retried', async () => {
    const exchange = await broker.exchange(uniqueName('retry'));
    const [id] = await fx.insert([{ exchange, routing_key: 'nobody.yet', payload: {} }]);
    await fx.startRelay({ OUTBOX_UNROUTABLE: 'retry', OUTBOX_MAX_ATTEMPTS: '100' });
    await waitFor('two failed attempts', async () => ((await fx.row(id!))['attempts'] as number) >= 2);
    const row = await fx.row(id!);
    expect(row['published_at']).toBeNull();
    expect(row['last_error']).toMatch(/unroutable by exchange/);
    // A subscriber appears: the next attempt goes through.
    const received = await broker.queue(uniqueName('late_sub'), { exchange, pattern: '#' });
    await waitFor('the retried message', () => received.length === 1, 10_000);
  });

  test('a command no queue takes fails, is retried with backoff, then is dead', async () => {
    const [id] = await fx.insert([{ routing_key: uniqueName('no_such_queue'), payload: {} }]);
    await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '3' });
    await waitFor('the message dead', async () => (await fx.row(id!))['dead_at'] !== null);
    const row = await fx.row(id!);
    expect(row['attempts']).toBe(3);
    expect(row['published_at']).toBeNull();
    expect(row['last_error']).toMatch(/^no queue named "no_such_queue_[0-9a-f]+" for this command \(default exchange\)$/);
  });

  test('a command whose queue disappears after it was checked is returned by the broker and fails all the same', async () => {
    const queue = uniqueName('vanishing');
    const received = await broker.queue(queue);
    await fx.insert([{ routing_key: queue, payload: { first: true } }]);
    await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '1' });
    await waitFor('the first command', () => received.length === 1);
    await broker.channel.deleteQueue(queue); // the relay still has it cached as existing
    const [id] = await fx.insert([{ routing_key: queue, payload: { first: false } }]);
    await waitFor('the message dead', async () => (await fx.row(id!))['dead_at'] !== null);
    expect((await fx.row(id!))['last_error']).toMatch(/^returned as unroutable: no queue named "vanishing_[0-9a-f]+" \(NO_ROUTE\)$/);
  });
});
