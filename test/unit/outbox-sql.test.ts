import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEAD, DUE, ENDED, EXPIRED, holdsKey, noLaterThanExpiry, PENDING, UNEXPIRED } from '../../src/outbox/sql';

const MIGRATIONS = join(__dirname, '..', '..', 'migrations');

describe('the named states and times of a row (outbox/sql.ts)', () => {
  test("DUE is messages_pending_due_idx's expression, word for word (the planner matches the text)", () => {
    expect(DUE).toBe('LEAST(GREATEST(available_at, next_attempt_at), expires_at)');
    const sql = readdirSync(MIGRATIONS)
      .filter((f) => f.endsWith('.sql'))
      .map((f) => readFileSync(join(MIGRATIONS, f), 'utf8'))
      .join('\n');
    expect(sql).toContain(DUE);
  });

  test('a time is capped by the expiry of the row, or of the aliased row', () => {
    expect(noLaterThanExpiry('now()')).toBe('LEAST(now(), expires_at)');
    expect(noLaterThanExpiry('h.at', 'm.')).toBe('LEAST(h.at, m.expires_at)');
  });

  test('pending, ended, dead and expired, as the statements spell them', () => {
    expect(PENDING).toBe('published_at IS NULL AND dead_at IS NULL');
    expect(ENDED).toBe('dead_at IS NOT NULL');
    expect(DEAD).toBe('dead_at IS NOT NULL AND expired_at IS NULL');
    expect(EXPIRED).toBe('expired_at IS NOT NULL');
    expect(UNEXPIRED).toBe('(expires_at IS NULL OR expires_at > now())');
  });

  test('a row holds its key while pending, while dead only when dead rows block, never when expired', () => {
    expect(holdsKey('$4::boolean')).toBe('(dead_at IS NULL OR ($4::boolean AND dead_at IS NOT NULL AND expired_at IS NULL))');
  });
});
