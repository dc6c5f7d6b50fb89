import { randomUUID } from 'node:crypto';
import { cli, envFor, expectOneLineFailure, STACK_FRAME } from '../kit/cli';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';

// The CLI's exit codes (README, CLI): bad configuration or usage exits 2 with one line
// naming what is wrong.
describe('configuration and usage errors exit 2', () => {
  // One bad value for every variable of the README's configuration table.
  const BAD: readonly [string, string][] = [
    ['OUTBOX_DATABASE_URL', 'mysql://relay:secretpw@db/orders'],
    ['OUTBOX_AMQP_URL', 'http://guest:secretpw@localhost:15672'],
    ['OUTBOX_SCHEMA', 'bad-schema'],
    ['OUTBOX_BATCH_SIZE', '0'],
    ['OUTBOX_POLL_INTERVAL_MS', 'often'],
    ['OUTBOX_MAX_ATTEMPTS', '-1'],
    ['OUTBOX_BACKOFF_BASE_MS', 'x'],
    ['OUTBOX_BACKOFF_MAX_MS', '0'],
    ['OUTBOX_PUBLISH_TIMEOUT_MS', '1'],
    ['OUTBOX_UNROUTABLE', 'drop'],
    ['OUTBOX_ORDERING_ON_DEAD', 'wait'],
    ['OUTBOX_RETENTION', 'forever'],
    ['OUTBOX_CLEANUP_CRON', 'every minute'],
    ['OUTBOX_SHUTDOWN_TIMEOUT_MS', 'soon'],
    ['OUTBOX_HTTP_HOST', '  '],
    ['OUTBOX_HTTP_PORT', '70000'],
    ['OUTBOX_APP_ID', ' '],
    ['OUTBOX_LOG_LEVEL', 'chatty'],
    ['DATABASE_URL', 'mysql://relay:secretpw@db/orders'],
    ['OUTBOX_DATABASE_URL_FILE', '/nonexistent/outbox-db-url'],
    ['OUTBOX_AMQP_URL_FILE', '/nonexistent/outbox-amqp-url'],
  ];

  test.each(BAD)('%s=%j: exit 2, one stderr line naming it, no stack trace, no password', async (name, value) => {
    const env: Record<string, string> = { OUTBOX_SCHEMA: 'outbox_cli_never_created', [name]: value };
    if (name !== 'OUTBOX_DATABASE_URL' && name !== 'DATABASE_URL' && name !== 'OUTBOX_DATABASE_URL_FILE')
      env['OUTBOX_DATABASE_URL'] = testDatabaseUrl();
    if (name !== 'OUTBOX_AMQP_URL' && name !== 'OUTBOX_AMQP_URL_FILE') env['OUTBOX_AMQP_URL'] = testAmqpUrl();
    const result = await cli(['status'], env);
    const stderr = expectOneLineFailure(result, 2);
    expect(stderr).toContain(name);
    expect(stderr).not.toContain('secretpw');
    expect(result.stdout).toBe('');
  });

  test.each([
    'OUTBOX_DATABASE_URL',
    'OUTBOX_DATABASE_URL_FILE',
    'OUTBOX_AMQP_URL',
    'OUTBOX_AMQP_URL_FILE',
    'DATABASE_URL',
    'OUTBOX_SCHEMA',
  ])('%s set but empty: exit 2 naming it, instead of the default', async (name) => {
    const env: Record<string, string> = { OUTBOX_SCHEMA: 'outbox_cli_never_created', [name]: '' };
    if (!name.includes('DATABASE_URL')) env['OUTBOX_DATABASE_URL'] = testDatabaseUrl();
    if (!name.includes('AMQP_URL')) env['OUTBOX_AMQP_URL'] = testAmqpUrl();
    const result = await cli(['status'], env);
    expect(expectOneLineFailure(result, 2)).toContain(`${name} is set but empty`);
  });

  test('several bad variables are all named, on one line', async () => {
    const result = await cli(['check'], { OUTBOX_BATCH_SIZE: '0', OUTBOX_LOG_LEVEL: 'chatty', OUTBOX_RETENTION: 'forever' });
    const stderr = expectOneLineFailure(result, 2);
    for (const name of ['OUTBOX_BATCH_SIZE', 'OUTBOX_LOG_LEVEL', 'OUTBOX_RETENTION']) expect(stderr).toContain(name);
  });

  test('OUTBOX_BACKOFF_BASE_MS above OUTBOX_BACKOFF_MAX_MS: exit 2', async () => {
    const result = await cli(
      ['status'],
      envFor('outbox_cli_never_created', { OUTBOX_BACKOFF_BASE_MS: '5000', OUTBOX_BACKOFF_MAX_MS: '1000' }),
    );
    expect(expectOneLineFailure(result, 2)).toContain('OUTBOX_BACKOFF_BASE_MS');
  });

  test('a bad variable fails `run` before it connects to anything', async () => {
    const result = await cli(['run'], { OUTBOX_DATABASE_URL: 'postgres://u:secretpw@127.0.0.1:1/x', OUTBOX_MAX_ATTEMPTS: 'zero' });
    expect(expectOneLineFailure(result, 2)).toContain('OUTBOX_MAX_ATTEMPTS');
    expect(result.stdout).not.toContain('secretpw');
  });

  test.each([
    [['frobnicate'], 'frobnicate'],
    [['status', '--jsn'], '--jsn'],
    [['dead', 'list', '--limit', '0'], '--limit'],
    [['dead', 'list', '--limit', 'ten'], '--limit'],
    [['dead', 'resurrect'], 'resurrect'],
    [['migrate', '--dry-run'], '--dry-run'],
  ])('usage error %j: exit 2, naming %s, no stack trace', async (args, named) => {
    const result = await cli(args, envFor('outbox_cli_never_created'));
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(named);
    expect(result.stderr).not.toContain(STACK_FRAME);
  });

  test('an excess argument: exit 2, and the message names the argument', async () => {
    const result = await cli(['status', 'now'], envFor('outbox_cli_never_created'));
    expect(result.code).toBe(2);
    expect(result.stderr).not.toContain(STACK_FRAME);
    expect(result.stderr).toContain('now');
  });

  test('--help and --version exit 0', async () => {
    const help = await cli(['--help'], {});
    expect(help.code).toBe(0);
    for (const command of ['run', 'migrate', 'status', 'dead', 'cleanup', 'check']) expect(help.stdout).toContain(command);
    const version = await cli(['--version'], {});
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  test('dead retry with a non-UUID: exit 2 naming it', async () => {
    const result = await cli(['dead', 'retry', randomUUID(), 'not-a-uuid'], envFor('outbox_cli_never_created'));
    expect(expectOneLineFailure(result, 2)).toContain('not-a-uuid');
    const discard = await cli(['dead', 'discard', '12345'], envFor('outbox_cli_never_created'));
    expect(expectOneLineFailure(discard, 2)).toContain('12345');
  });

  test('dead retry / discard with neither ids nor --all, or with both: exit 2', async () => {
    for (const verb of ['retry', 'discard']) {
      const neither = await cli(['dead', verb], envFor('outbox_cli_never_created'));
      expect(expectOneLineFailure(neither, 2)).toMatch(/--all/);
      const both = await cli(['dead', verb, '--all', randomUUID()], envFor('outbox_cli_never_created'));
      expect(expectOneLineFailure(both, 2)).toMatch(/--all/);
    }
  });
});
