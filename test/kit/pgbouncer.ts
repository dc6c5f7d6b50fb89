import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port';
import { trackOpen } from './open-resources';
import { databaseReachable } from './services';
import { waitFor } from './wait';

/** What to install when PgBouncer is missing; the kit fails with this, it never skips. */
const INSTALL_HINT = 'the PgBouncer tests start a PgBouncer of their own: install it, e.g. `apt-get install pgbouncer` on Debian';

/**
 * A PgBouncer of a test's own in front of a PostgreSQL database, in transaction pooling
 * mode (a server connection is lent to a client for one transaction at a time): its own
 * port on 127.0.0.1, config, pidfile and log in a temporary folder that `close()`
 * removes. The machine's PostgreSQL is only connected to, never reconfigured. Run as
 * root, PgBouncer (which refuses root) runs as the `postgres` OS user.
 */
export class PgBouncer {
  private readonly exited: Promise<void>;
  private closing: Promise<void> | undefined;
  private readonly untrack: () => void;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
    readonly dir: string,
    /** The database URL PgBouncer stands in front of. */
    private readonly target: URL,
  ) {
    this.exited = new Promise((resolve) => child.once('close', () => resolve()));
    this.untrack = trackOpen(this, { kind: 'PgBouncer', detail: `127.0.0.1:${port} (pool_mode=transaction) → ${target.host}` });
  }

  /** Starts PgBouncer in front of `databaseUrl` (trust authentication, as the test database uses). */
  static async start(databaseUrl: string, settings: Readonly<Record<string, string>> = {}): Promise<PgBouncer> {
    const binary = findPgBouncer();
    const target = new URL(databaseUrl);
    const database = decodeURIComponent(target.pathname.slice(1)) || 'postgres';
    const user = decodeURIComponent(target.username) || 'postgres';
    const dir = mkdtempSync(join(tmpdir(), 'outbox-pgbouncer-'));
    const port = await freePort();
    const asUser = process.getuid?.() === 0 ? 'postgres' : undefined;
    writeFileSync(join(dir, 'users.txt'), `"${user}" ""\n`);
    const ini = {
      listen_addr: '127.0.0.1',
      listen_port: String(port),
      unix_socket_dir: '',
      auth_type: 'trust',
      auth_file: join(dir, 'users.txt'),
      pool_mode: 'transaction',
      max_client_conn: '500',
      default_pool_size: '40',
      pidfile: join(dir, 'pgbouncer.pid'),
      logfile: join(dir, 'pgbouncer.log'),
      ...settings,
    };
    writeFileSync(
      join(dir, 'pgbouncer.ini'),
      [
        '[databases]',
        `${database} = host=${target.hostname} port=${target.port || '5432'} dbname=${database}`,
        '[pgbouncer]',
        ...Object.entries(ini).map(([k, v]) => `${k} = ${v}`),
        '',
      ].join('\n'),
    );
    if (asUser) {
      const uid = Number(execFileSync('id', ['-u', asUser], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', asUser], { encoding: 'utf8' }).trim());
      for (const file of ['', 'users.txt', 'pgbouncer.ini']) chownSync(join(dir, file), uid, gid);
    }
    const [command, args] = asUser
      ? ['runuser', ['-u', asUser, '--', binary, join(dir, 'pgbouncer.ini')]]
      : [binary, [join(dir, 'pgbouncer.ini')]];
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const bouncer = new PgBouncer(child, port, dir, target);
    try {
      await waitFor(
        `PgBouncer to accept connections on 127.0.0.1:${port}`,
        async () => {
          if (child.exitCode !== null) throw new Error(`PgBouncer exited at start; its log:\n${bouncer.lastLog()}`);
          return databaseReachable(bouncer.url(databaseUrl));
        },
        15_000,
        100,
      );
    } catch (err) {
      await bouncer.close();
      throw err;
    }
    return bouncer;
  }

  /** `databaseUrl` (the one PgBouncer was started for) through this PgBouncer. */
  url(databaseUrl: string): string {
    const url = new URL(databaseUrl);
    url.hostname = '127.0.0.1';
    url.port = String(this.port);
    return url.toString();
  }

  private pid(): number | undefined {
    const file = join(this.dir, 'pgbouncer.pid');
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** The last lines of PgBouncer's own log, for failure messages. */
  lastLog(lines = 20): string {
    const file = join(this.dir, 'pgbouncer.log');
    return existsSync(file) ? readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Stops PgBouncer (SIGINT, then SIGKILL if it lingers) and removes its folder. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        // runuser does not pass every signal on: signal PgBouncer itself by its pidfile.
        const pid = this.pid();
        const signal = (name: NodeJS.Signals): void => {
          if (pid !== undefined) {
            try {
              process.kill(pid, name);
            } catch {
              // already gone
            }
          }
          this.child.kill(name);
        };
        signal('SIGINT');
        const timer = setTimeout(() => signal('SIGKILL'), 5_000);
        await this.exited;
        clearTimeout(timer);
      }
      rmSync(this.dir, { recursive: true, force: true });
      this.untrack();
    })();
    return this.closing;
  }
}

function findPgBouncer(): string {
  for (const candidate of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (existsSync(candidate)) return candidate;
  }
  try {
    return execFileSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`pgbouncer not found: ${INSTALL_HINT}`);
  }
}
