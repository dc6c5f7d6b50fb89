import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { freePort } from './free-port';
import { waitFor } from './wait';

/**
 * PostgreSQL servers of a test's own, from the installed binaries (`pg_config --bindir`):
 * a primary and a streaming standby (`pg_basebackup -R`), each on a free port of
 * 127.0.0.1 with trust authentication, in a fresh temporary folder that `close()`
 * removes. The machine's PostgreSQL is never touched. Run as root, every server command
 * runs as the `postgres` OS user (`runuser`), which PostgreSQL requires.
 *
 * Small on purpose (shared_buffers 32MB, max_connections 50, fsync off: a killed server
 * keeps what the OS has cached, and nothing here survives the test).
 */

/** What to install when the server binaries are missing; the kit fails with this, it never skips. */
const INSTALL_HINT =
  'the failover tests start their own PostgreSQL servers and need its server binaries (initdb, pg_ctl, pg_basebackup, found by `pg_config --bindir`): install them, e.g. `apt-get install postgresql-15` on Debian';

/** One server of a test cluster. */
export class PgNode {
  constructor(
    readonly name: string,
    readonly port: number,
    readonly dataDir: string,
    readonly logFile: string,
  ) {}

  /** A URL to `database` on this server alone. */
  url(database = 'postgres'): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** The postmaster's pid while it runs (postmaster.pid), else undefined. */
  pid(): number | undefined {
    const file = join(this.dataDir, 'postmaster.pid');
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /** The last lines of its server log, for failure messages. */
  lastLog(lines = 10): string {
    return existsSync(this.logFile) ? readFileSync(this.logFile, 'utf8').split('\n').slice(-lines).join('\n') : '(no log)';
  }

  /** Runs `sql` on a connection of its own and returns the rows. */
  async query<R extends Record<string, unknown>>(sql: string, values: unknown[] = [], database = 'postgres'): Promise<R[]> {
    const client = new Client({ connectionString: this.url(database), connectionTimeoutMillis: 5_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      return (await client.query<R>(sql, values)).rows;
    } finally {
      await client.end().catch(() => undefined);
    }
  }
}

function binDir(): string {
  let dir: string;
  try {
    dir = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error(`pg_config not found: ${INSTALL_HINT}`);
  }
  for (const tool of ['initdb', 'pg_ctl', 'pg_basebackup', 'postgres']) {
    if (!existsSync(join(dir, tool))) throw new Error(`${tool} not found in ${dir}: ${INSTALL_HINT}`);
  }
  return dir;
}

/** The uid and gid of the `postgres` OS user, when the tests run as root. */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    return { uid, gid };
  } catch {
    throw new Error('the tests run as root, and PostgreSQL refuses to: there must be a `postgres` OS user to run it as');
  }
}

/** Runs a server tool; as root, as the `postgres` user. Rejects with its output. */
function run(bin: string, tool: string, args: readonly string[], asPostgres: boolean, timeoutMs = 60_000): Promise<string> {
  const [command, commandArgs] = asPostgres ? ['runuser', ['-u', 'postgres', '--', join(bin, tool), ...args]] : [join(bin, tool), args];
  return new Promise((resolve, reject) => {
    execFile(command, commandArgs, { timeout: timeoutMs, encoding: 'utf8', cwd: tmpdir() }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${tool} ${args.join(' ')} failed: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A primary and its streaming standby. */
export class PgCluster {
  private readonly nodes: PgNode[] = [];
  private closed = false;

  private constructor(
    private readonly bin: string,
    readonly root: string,
    private readonly asPostgres: boolean,
  ) {}

  /**
   * Starts a primary (wal_level=replica) and a hot standby streaming from it; resolves
   * once the standby streams. Whatever was started is stopped again if a step fails.
   */
  static async primaryAndStandby(): Promise<{ cluster: PgCluster; primary: PgNode; standby: PgNode }> {
    const bin = binDir();
    const user = postgresUser();
    const root = mkdtempSync(join(tmpdir(), 'outbox-pg-'));
    if (user) chownSync(root, user.uid, user.gid);
    const cluster = new PgCluster(bin, root, user !== undefined);
    try {
      const primary = await cluster.initPrimary('primary');
      const standby = await cluster.startStandby('standby', primary);
      return { cluster, primary, standby };
    } catch (err) {
      await cluster.close();
      throw err;
    }
  }

  private async node(name: string): Promise<PgNode> {
    const port = await freePort();
    const node = new PgNode(name, port, join(this.root, name), join(this.root, `${name}.log`));
    this.nodes.push(node);
    return node;
  }

  private settings(node: PgNode): string {
    return [
      '',
      `port = ${node.port}`,
      "listen_addresses = '127.0.0.1'",
      `unix_socket_directories = '${this.root}'`,
      'wal_level = replica',
      'hot_standby = on',
      'max_wal_senders = 5',
      'wal_keep_size = 256MB',
      'shared_buffers = 32MB',
      'max_connections = 50',
      'fsync = off',
      'full_page_writes = off',
      '',
    ].join('\n');
  }

  private async initPrimary(name: string): Promise<PgNode> {
    const node = await this.node(name);
    await run(
      this.bin,
      'initdb',
      ['-D', node.dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions'],
      this.asPostgres,
    );
    appendFileSync(join(node.dataDir, 'postgresql.conf'), this.settings(node));
    await this.start(node);
    return node;
  }

  private async startStandby(name: string, primary: PgNode): Promise<PgNode> {
    const node = await this.node(name);
    await run(
      this.bin,
      'pg_basebackup',
      [
        '-h',
        '127.0.0.1',
        '-p',
        String(primary.port),
        '-U',
        'postgres',
        '-D',
        node.dataDir,
        '-R',
        '-X',
        'stream',
        '-c',
        'fast',
        '--no-sync',
      ],
      this.asPostgres,
    );
    appendFileSync(join(node.dataDir, 'postgresql.conf'), `\nport = ${node.port}\n`);
    await this.start(node);
    await waitFor(
      `standby on port ${node.port} streaming from port ${primary.port}`,
      async () =>
        (await primary.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_replication WHERE state = 'streaming'"))[0]?.n === '1',
      30_000,
      100,
    );
    return node;
  }

  /**
   * Makes a new streaming standby of `primary` (`pg_basebackup -R`, a directory and a
   * port of its own) and resolves once it streams: after a failover, the topology is two
   * nodes again, ready for the next one. Replication is asynchronous until
   * `makeSynchronous(primary)`.
   */
  async addStandby(primary: PgNode): Promise<PgNode> {
    const name = `standby-${this.nodes.length + 1}`;
    return this.startStandby(name, primary);
  }

  /** Stops `node` if it runs (immediate) and removes its data directory; its log stays for failure messages. */
  async discard(node: PgNode): Promise<void> {
    if (node.pid() !== undefined) await this.kill(node);
    rmSync(node.dataDir, { recursive: true, force: true });
  }

  /**
   * Resolves once every standby of `primary` has flushed all the WAL the primary had
   * inserted when called: every commit acknowledged before then, also those made while
   * replication was asynchronous, is on a standby.
   */
  async standbysFlushed(primary: PgNode, timeoutMs = 30_000): Promise<void> {
    const [row] = await primary.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn');
    await waitFor(
      `the standbys of port ${primary.port} flushed up to ${row?.lsn}`,
      async () => {
        const rows = await primary.query<{ flushed: boolean }>('SELECT flush_lsn >= $1::pg_lsn AS flushed FROM pg_stat_replication', [
          row?.lsn,
        ]);
        return rows.length > 0 && rows.every((r) => r.flushed);
      },
      timeoutMs,
      20,
    );
  }

  /** Starts `node` (pg_ctl start -w). */
  async start(node: PgNode): Promise<void> {
    try {
      await run(this.bin, 'pg_ctl', ['-D', node.dataDir, '-l', node.logFile, '-w', '-t', '60', 'start'], this.asPostgres, 70_000);
    } catch (err) {
      throw new Error(`${(err as Error).message}\nserver log:\n${node.lastLog()}`, { cause: err });
    }
  }

  /** Stops `node` with `pg_ctl stop -m immediate`: no shutdown checkpoint, as a crash. */
  async kill(node: PgNode): Promise<void> {
    await run(this.bin, 'pg_ctl', ['-D', node.dataDir, '-m', 'immediate', '-w', '-t', '20', 'stop'], this.asPostgres, 30_000);
  }

  /** Promotes the standby `node` and waits until it accepts writes. */
  async promote(node: PgNode): Promise<void> {
    await run(this.bin, 'pg_ctl', ['-D', node.dataDir, '-w', '-t', '60', 'promote'], this.asPostgres, 70_000);
    await waitFor(
      `port ${node.port} out of recovery`,
      async () => (await node.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r'))[0]?.r === false,
    );
  }

  /**
   * Starts a stopped node again on another port, on its own (no standby follows it):
   * after `kill`, it replays its WAL and shows what it had committed. Returns the node
   * on its new port (the old port stays free: a relay given it finds nothing there).
   */
  async restartElsewhere(node: PgNode): Promise<PgNode> {
    const moved = new PgNode(`${node.name}-after`, await freePort(), node.dataDir, join(this.root, `${node.name}-after.log`));
    this.nodes.push(moved);
    // No standby.signal in a primary's directory: it comes back as a primary.
    appendFileSync(join(node.dataDir, 'postgresql.conf'), `\nport = ${moved.port}\n`);
    await this.start(moved);
    return moved;
  }

  /**
   * Makes the primary's replication synchronous (`synchronous_standby_names = '*'`): a
   * commit then waits until the standby has flushed it. Resolves once the standby is the
   * synchronous one.
   */
  async makeSynchronous(primary: PgNode): Promise<void> {
    await primary.query(`ALTER SYSTEM SET synchronous_standby_names = '*'`);
    await primary.query('SELECT pg_reload_conf()');
    await waitFor(
      `the standby of port ${primary.port} synchronous`,
      async () =>
        (await primary.query<{ n: string }>("SELECT count(*) AS n FROM pg_stat_replication WHERE sync_state = 'sync'"))[0]?.n === '1',
      30_000,
      100,
    );
  }

  /** Replication lag of every standby in bytes, from the primary's point of view (0: caught up). */
  async caughtUp(primary: PgNode): Promise<boolean> {
    const rows = await primary.query<{ lag: string | null }>(
      'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::text AS lag FROM pg_stat_replication',
    );
    return rows.length > 0 && rows.every((r) => r.lag === '0');
  }

  /** Stops every server it started (immediate; SIGKILL by pid file if pg_ctl fails) and removes the folder. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const seen = new Set<string>();
    for (const node of this.nodes.reverse()) {
      if (seen.has(node.dataDir) || !existsSync(join(node.dataDir, 'postmaster.pid'))) continue;
      seen.add(node.dataDir);
      const pid = node.pid();
      try {
        await this.kill(node);
      } catch {
        if (pid !== undefined) killQuietly(pid);
      }
    }
    rmSync(this.root, { recursive: true, force: true });
  }
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}
