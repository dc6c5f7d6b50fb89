import { execFile, spawn } from 'node:child_process';
import { chmodSync, chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port';
import { trackOpen } from './open-resources';

const run = promisify(execFile);

/** The OS user the machine's RabbitMQ runs as: its nodes share that user's Erlang cookie. */
const RABBITMQ_USER = 'rabbitmq';
/** The server script itself (the /usr/sbin wrapper would log into the machine broker's startup_log). */
const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';
/** The rabbitmq user's home: its .erlang.cookie is the one the machine's broker and the CLI use. */
const RABBITMQ_HOME = '/var/lib/rabbitmq';
/**
 * One scheduler and 4 async threads per node: three nodes stay light on a 2-core
 * machine (measured: ~130 MB RSS per node, a cluster up in about 15 s here).
 */
const ERL_ARGS = '+S 1:1 +A 4';
const CTL_TIMEOUT_MS = 60_000;

/** One node of the cluster. */
export interface ClusterNode {
  /** Erlang node name, e.g. `outbox-t1-1a2b3c@localhost`. */
  readonly name: string;
  /** AMQP port on 127.0.0.1. */
  readonly port: number;
  /** `amqp://guest:guest@127.0.0.1:<port>` (guest may log in from localhost). */
  readonly url: string;
  readonly pidFile: string;
  /** False once killed. */
  alive: boolean;
}

/**
 * A three-node RabbitMQ cluster of the installed RabbitMQ, apart from the machine's
 * broker (which is never touched): each node runs as the `rabbitmq` user under its own
 * node name, ports and directories in a fresh temporary folder, with no plugins and
 * its own config file (the machine's /etc/rabbitmq config names the machine's port).
 * Nodes 2 and 3 join node 1. `stop()` kills every node (kill -9 by pid file) and
 * removes the folder; `forFile()` registers it in afterAll, so it runs also when a
 * test fails. Must run as root (tests do) or as the rabbitmq user.
 */
export class RabbitCluster {
  private stopped = false;
  private readonly untrack: () => void;

  private constructor(
    readonly dir: string,
    readonly nodes: readonly ClusterNode[],
  ) {
    this.untrack = trackOpen(this, { kind: 'RabbitMQ cluster', detail: `${nodes.map((n) => n.name).join(', ')} in ${dir}` });
  }

  /** Starts `size` nodes (default 3) and clusters them; on failure nothing is left running. */
  static async start(size = 3): Promise<RabbitCluster> {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-rabbit-'));
    const tag = Math.random().toString(16).slice(2, 8);
    const nodes: ClusterNode[] = [];
    for (let i = 1; i <= size; i += 1) {
      const port = await freePort();
      nodes.push({
        name: `outbox-t${i}-${tag}@localhost`,
        port,
        url: `amqp://guest:guest@127.0.0.1:${port}`,
        pidFile: join(dir, `n${i}`, 'pid'),
        alive: true,
      });
    }
    const cluster = new RabbitCluster(dir, nodes);
    try {
      await cluster.prepare();
      await Promise.all(nodes.map((node, i) => cluster.startNode(node, i + 1)));
      await Promise.all(nodes.map((node) => cluster.awaitStartup(node)));
      const first = nodes[0] as ClusterNode;
      for (const node of nodes.slice(1)) {
        await cluster.ctl(node, ['stop_app']);
        await cluster.ctl(node, ['join_cluster', first.name]);
        await cluster.ctl(node, ['start_app']);
      }
      await cluster.awaitStartup(first);
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  /** A cluster for a whole test file: started in beforeAll, stopped in afterAll (also after a failure). */
  static forFile(size = 3, startTimeoutMs = 120_000): { get(): RabbitCluster } {
    let cluster: RabbitCluster | undefined;
    beforeAll(async () => {
      cluster = await RabbitCluster.start(size);
    }, startTimeoutMs);
    afterAll(async () => {
      await cluster?.stop();
    });
    return {
      get: () => {
        if (!cluster) throw new Error('RabbitCluster is not started (RabbitCluster.forFile starts it in beforeAll)');
        return cluster;
      },
    };
  }

  /** Every node's URL, in node order (what OUTBOX_AMQP_URL takes, comma-separated). */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** The node whose AMQP port `url` names, or undefined. */
  nodeOf(url: string): number | undefined {
    const index = this.nodes.findIndex((n) => url.includes(`:${n.port}`));
    return index < 0 ? undefined : index;
  }

  /** `rabbitmqctl -n <node> …args` (the CLI finds the rabbitmq user's cookie); its stdout. */
  async ctl(node: ClusterNode, args: readonly string[]): Promise<string> {
    const { stdout } = await run('rabbitmqctl', ['-n', node.name, ...args], { timeout: CTL_TIMEOUT_MS });
    return stdout;
  }

  /** The client-given connection names on node `index` (rabbitmqctl list_connections). */
  async connectionNames(index: number): Promise<string[]> {
    const stdout = await this.ctl(this.nodes[index] as ClusterNode, ['list_connections', 'client_properties', '-q', '--no-table-headers']);
    return [...stdout.matchAll(/\{"connection_name","((?:[^"\\]|\\.)*)"\}/g)].map((m) => m[1] as string);
  }

  /** kill -9 of node `index` (its beam process, by pid file); resolves once the process is gone. */
  async killNode(index: number): Promise<void> {
    const node = this.nodes[index] as ClusterNode;
    node.alive = false;
    const pid = readPid(node.pidFile);
    if (pid === undefined) return;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return; // already gone
    }
    const deadline = Date.now() + 10_000;
    while (isRunning(pid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  }

  /**
   * Starts node `index` again after `killNode` (same name, AMQP port and data): it
   * rejoins the cluster, and its quorum queue members catch up. Resolves once it runs.
   */
  async restartNode(index: number): Promise<void> {
    const node = this.nodes[index] as ClusterNode;
    if (this.stopped) throw new Error('the cluster is stopped');
    await this.startNode(node, index + 1);
    node.alive = true;
    await this.awaitStartup(node);
  }

  /** Kills every node and removes the folder. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      await Promise.all(this.nodes.map((_, i) => this.killNode(i)));
    } finally {
      // A node's last writes may still be landing: retried, not left behind.
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
      this.untrack();
    }
  }

  /** The folder and the files every node reads: owned by the rabbitmq user. */
  private async prepare(): Promise<void> {
    const { stdout } = await run('id', ['-u', RABBITMQ_USER]);
    const uid = Number(stdout.trim());
    const gid = Number((await run('id', ['-g', RABBITMQ_USER])).stdout.trim());
    const own = (path: string): void => chownSync(path, uid, gid);
    own(this.dir);
    chmodSync(this.dir, 0o700);
    // No plugins (the management plugin alone doubles a node's start time).
    writeFileSync(join(this.dir, 'enabled_plugins'), '');
    // Not the machine's /etc/rabbitmq files: they name its node and its port.
    writeFileSync(join(this.dir, 'rabbitmq-env.conf'), 'ERL_EPMD_ADDRESS=127.0.0.1\n');
    writeFileSync(join(this.dir, 'rabbitmq.conf'), 'disk_free_limit.absolute = 50MB\nvm_memory_high_watermark.absolute = 512MB\n');
    for (const file of ['enabled_plugins', 'rabbitmq-env.conf', 'rabbitmq.conf']) own(join(this.dir, file));
  }

  private async startNode(node: ClusterNode, n: number): Promise<void> {
    const base = join(this.dir, `n${n}`);
    const env = {
      HOME: RABBITMQ_HOME,
      RABBITMQ_NODENAME: node.name,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_NODE_PORT: String(node.port),
      RABBITMQ_DIST_PORT: String(await freePort()),
      RABBITMQ_MNESIA_BASE: join(base, 'mnesia'),
      RABBITMQ_LOG_BASE: join(base, 'log'),
      RABBITMQ_PID_FILE: node.pidFile,
      RABBITMQ_ENABLED_PLUGINS_FILE: join(this.dir, 'enabled_plugins'),
      RABBITMQ_CONFIG_FILE: join(this.dir, 'rabbitmq.conf'),
      RABBITMQ_CONF_ENV_FILE: join(this.dir, 'rabbitmq-env.conf'),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: ERL_ARGS,
    };
    const args = ['-u', RABBITMQ_USER, '--', 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), RABBITMQ_SERVER, '-detached'];
    await new Promise<void>((resolve, reject) => {
      const child = spawn('runuser', args, { cwd: this.dir, stdio: 'ignore' });
      child.on('error', reject);
      child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`rabbitmq-server -detached for ${node.name} exited ${code}`))));
    });
  }

  /** Waits until the node runs its app (it registers with epmd a moment after -detached returns). */
  private async awaitStartup(node: ClusterNode): Promise<void> {
    const deadline = Date.now() + CTL_TIMEOUT_MS;
    for (;;) {
      try {
        await this.ctl(node, ['await_startup', '--timeout', '60']);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`node ${node.name} did not start (logs in ${this.dir})`, { cause: err });
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
    }
  }
}

function readPid(pidFile: string): number | undefined {
  try {
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
