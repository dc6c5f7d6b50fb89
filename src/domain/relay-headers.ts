/**
 * The headers the relay itself puts on every message, so that a consumer can keep a
 * key's order: the row's `partition_key` (a long string, absent when the key is null)
 * and its position in the outbox's order (the row's `id`, a signed 64-bit integer).
 * Shared by the publisher, which sets them, and the consumer, which reads them.
 */
export const RELAY_HEADERS = Object.freeze({
  partitionKey: 'x-outbox-partition-key',
  position: 'x-outbox-position',
});
