import { parse } from 'pg-connection-string';
import { DatabaseUrlError, parseDatabaseUrl } from '../../src/config/database-url';
import { loadConfig } from '../../src/config/load-config';
import { configError } from './config-errors';

function problem(url: string): string {
  try {
    parseDatabaseUrl(url);
  } catch (err: unknown) {
    expect(err).toBeInstanceOf(DatabaseUrlError);
    return (err as Error).message;
  }
  throw new Error(`accepted ${url}`);
}

describe('parseDatabaseUrl', () => {
  test('one host: default port 5432, target_session_attrs any', () => {
    const target = parseDatabaseUrl('postgres://relay:pw@db.internal/orders');
    expect(target.targetSessionAttrs).toBe('any');
    expect(target.hosts).toEqual([
      { host: 'db.internal', port: 5432, label: 'db.internal:5432', url: 'postgres://relay:pw@db.internal:5432/orders' },
    ]);
  });

  test('hosts with and without ports, IPv6 in brackets, in the order given', () => {
    const target = parseDatabaseUrl('postgresql://u@h1:5433,[::1]:5434,h3,[fe80::2]/db?target_session_attrs=read-write');
    expect(target.targetSessionAttrs).toBe('read-write');
    expect(target.hosts.map((h) => [h.host, h.port, h.label])).toEqual([
      ['h1', 5433, 'h1:5433'],
      ['::1', 5434, '[::1]:5434'],
      ['h3', 5432, 'h3:5432'],
      ['fe80::2', 5432, '[fe80::2]:5432'],
    ]);
    expect(target.hosts.map((h) => h.url)).toEqual([
      'postgresql://u@h1:5433/db',
      'postgresql://u@[::1]:5434/db',
      'postgresql://u@h3:5432/db',
      'postgresql://u@[fe80::2]:5432/db',
    ]);
  });

  test('user info, path and the other parameters pass unchanged; node-postgres reads them as from a one-host URL', () => {
    const url =
      'postgres://re%40lay:p%40ss%2Fw@ss:rd@h1:5432,h2:6543/my%20db?sslmode=disable&target_session_attrs=primary&application_name=a';
    const target = parseDatabaseUrl(url);
    expect(target.targetSessionAttrs).toBe('primary');
    const second = target.hosts[1]!;
    expect(second.url).toBe('postgres://re%40lay:p%40ss%2Fw@ss:rd@h2:6543/my%20db?sslmode=disable&application_name=a');
    const config = parse(second.url);
    expect(config).toMatchObject({
      user: 're@lay',
      password: 'p@ss/w@ss:rd',
      host: 'h2',
      port: '6543',
      database: 'my db',
      sslmode: 'disable',
    });
    expect(config).not.toHaveProperty('target_session_attrs');
  });

  test('a percent-encoded host (a socket directory) is decoded', () => {
    const [host] = parseDatabaseUrl('postgres://u@%2Fvar%2Frun%2Fpostgresql,h2/db').hosts;
    expect(host?.host).toBe('/var/run/postgresql');
  });

  test('target_session_attrs: any, read-write and primary, in any case', () => {
    for (const [value, expected] of [
      ['any', 'any'],
      ['READ-WRITE', 'read-write'],
      ['primary', 'primary'],
    ] as const) {
      expect(parseDatabaseUrl(`postgres://u@h1,h2/db?target_session_attrs=${value}`).targetSessionAttrs).toBe(expected);
    }
  });

  test('the standby choices of libpq are refused: the relay writes', () => {
    for (const value of ['read-only', 'standby', 'prefer-standby']) {
      expect(problem(`postgres://u@h1,h2/db?target_session_attrs=${value}`)).toBe(
        `has target_session_attrs=${value}, which picks a standby; the relay writes, so use read-write, primary or any`,
      );
    }
    expect(problem('postgres://u@h/db?target_session_attrs=primary-ish')).toBe(
      'has an unknown target_session_attrs (must be one of any, read-write, primary)',
    );
  });

  test('what is wrong is named, by host position', () => {
    expect(problem('mysql://u@h/db')).toBe('must start with postgres:// or postgresql://');
    expect(problem('postgres://u@/db')).toMatch(/^names no host/);
    expect(problem('postgres://u:pw@')).toMatch(/^names no host/);
    expect(problem('postgres://u@h1,,h3/db')).toBe('host #2 is empty');
    expect(problem('postgres://u@h1,h2:0/db')).toBe('host #2 has a bad port (must be a number from 1 to 65535)');
    expect(problem('postgres://u@h1,h2:65536/db')).toBe('host #2 has a bad port (must be a number from 1 to 65535)');
    expect(problem('postgres://u@h1:54x2/db')).toBe('host #1 has a bad port (must be a number from 1 to 65535)');
    expect(problem('postgres://u@[::1/db')).toBe('host #1 opens an IPv6 address with [ but never closes it');
    expect(problem('postgres://u@[::1]x/db')).toBe('host #1 has text after its IPv6 address');
    expect(problem('postgres://u@h%zz/db')).toBe('host #1 holds a bad %-escape');
    expect(problem('postgres://a@h1/db,postgres://b@h2/db')).toMatch(/^must be a single URL/);
  });

  test('a password where the host should be is never echoed', () => {
    // The host was forgotten: "Secret9" stands where the port would.
    expect(problem('postgres://relay:Secret9/orders')).not.toContain('Secret9');
  });
});

describe('OUTBOX_DATABASE_URL in loadConfig', () => {
  test('a multi-host URL is accepted as given', () => {
    const url = 'postgres://relay:pw@h1:5432,h2:5433/orders?target_session_attrs=read-write&sslmode=disable';
    expect(loadConfig({ OUTBOX_DATABASE_URL: url }).databaseUrl).toBe(url);
  });

  test('a bad one names the variable and what is wrong, never the password', () => {
    const err = configError({ OUTBOX_DATABASE_URL: 'postgres://relay:Secret7@h1:5432,h2:70000/orders' });
    expect(err.message).toBe('invalid configuration: OUTBOX_DATABASE_URL host #2 has a bad port (must be a number from 1 to 65535)');
    const standby = configError({ DATABASE_URL: 'postgres://relay:Secret7@h1,h2/orders?target_session_attrs=standby' });
    expect(standby.message).toMatch(/^invalid configuration: DATABASE_URL has target_session_attrs=standby/);
    expect(`${err.message}${standby.message}`).not.toContain('Secret7');
  });
});
