import { randomBytes } from 'node:crypto';

/** A unique, lower-case identifier for a test's schema, exchanges and queues: `<prefix>_<8 hex>`. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}
