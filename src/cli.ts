import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type * as AppModule from './app';
import type * as AuditModule from './commands/audit';
import type * as CheckModule from './commands/check';
import type * as CleanupModule from './commands/cleanup';
import type * as DeadModule from './commands/dead';
import type { DeadListOptions } from './commands/dead';
import type * as InspectModule from './commands/inspect';
import { CliOutput, type Io } from './commands/io';
import type * as MigrateModule from './commands/migrate';
import type * as ReplayModule from './commands/replay';
import type { ReplayOptions } from './commands/replay';
import type * as SelftestModule from './commands/selftest';
import { exchangeProblem, SELFTEST_TIMEOUT_MS } from './commands/selftest-arguments';
import type * as StatusModule from './commands/status';
import type * as ConfigModule from './config/load-config';
import type { Config } from './config/load-config';
import { maskUrlsInOutput, maskUrlsInText } from './config/redact';
import type * as DemoModule from './demo/demo';
import { errorMessage, exitCodeFor, OutboxError } from './errors';
import type * as LoggerModule from './observability/logger';
import type { Logger } from './observability/logger';
import type * as WatchdogModule from './shutdown-watchdog';
import { escapeControls, terminalSafe } from './util/terminal-text';

/**
 * What the commands run, each module required when its command runs and not before:
 * `--help` loads commander and the definitions below, `status` the configuration, pg and
 * the status queries; no command but `run` loads metrics or tracing, and only those that
 * talk to the broker load its client. Startup is most of a one-shot command's time
 * (docs/development.md has the figures).
 */
/* eslint-disable @typescript-eslint/no-require-imports -- required on first use, on purpose (above) */
const load = {
  app: () => require('./app') as typeof AppModule,
  audit: () => require('./commands/audit') as typeof AuditModule,
  check: () => require('./commands/check') as typeof CheckModule,
  cleanup: () => require('./commands/cleanup') as typeof CleanupModule,
  config: () => require('./config/load-config') as typeof ConfigModule,
  dead: () => require('./commands/dead') as typeof DeadModule,
  demo: () => require('./demo/demo') as typeof DemoModule,
  inspect: () => require('./commands/inspect') as typeof InspectModule,
  logger: () => require('./observability/logger') as typeof LoggerModule,
  migrate: () => require('./commands/migrate') as typeof MigrateModule,
  replay: () => require('./commands/replay') as typeof ReplayModule,
  selftest: () => require('./commands/selftest') as typeof SelftestModule,
  status: () => require('./commands/status') as typeof StatusModule,
  watchdog: () => require('./shutdown-watchdog') as typeof WatchdogModule,
};
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * The only module that touches the process: argv, env, signals, stdout/stderr and the
 * exit code. Exit codes: 0 success, 2 bad configuration or usage, 1 any other
 * failure, with a one-line reason on stderr and no stack trace. Returns once the
 * output is written whole (bin/outbox-relay.js exits then).
 */
export async function main(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const output = new CliOutput(process.stdout, process.stderr);
  try {
    await runCommand(argv, env, output);
  } finally {
    await output.flush();
    const writeError = output.writeError;
    if (writeError !== undefined) {
      output.writeErr(`outbox-relay: ${writeError}\n`);
      await output.flush();
      if (!process.exitCode) process.exitCode = 1;
    }
  }
}

async function runCommand(argv: readonly string[], env: NodeJS.ProcessEnv, output: CliOutput): Promise<void> {
  // Commands print URLs through `redactUrl`; this is the last line of defence for URL
  // credentials quoted by a driver's error. It masks URLs only, never a bare password:
  // JSON output stays JSON, numbers and words stay as they are. `terminalSafe` then shows
  // any control character a stored value brought along as an escape.
  let secrets: readonly string[] = [];
  const io: Io = {
    out: (text) => output.writeOut(`${terminalSafe(maskUrlsInOutput(text, secrets))}\n`),
    err: (text) => output.writeErr(`${terminalSafe(maskUrlsInText(text, secrets))}\n`),
  };
  let config: Config | undefined;
  const configured = (): Config => {
    const { loadConfig, secretsOf } = load.config();
    config ??= loadConfig(env);
    secrets = secretsOf(config);
    return config;
  };
  const toolLogger = (): Logger => load.logger().createLogger({ level: 'warn', secrets, fd: 2 });

  const program = buildProgram(output, {
    run: async () => {
      const cfg = configured();
      await runDaemon(cfg, load.logger().createLogger({ level: cfg.logLevel, secrets }));
    },
    migrate: (options) => load.migrate().migrateCommand(configured(), toolLogger(), io, options),
    status: (options) => load.status().statusCommand(configured(), toolLogger(), io, options),
    deadList: (options) => load.dead().deadListCommand(configured(), toolLogger(), io, options),
    deadRetry: (ids, options) => load.dead().deadRetryCommand(configured(), toolLogger(), io, ids, options.all),
    deadDiscard: (ids, options) => load.dead().deadDiscardCommand(configured(), toolLogger(), io, ids, options.all),
    inspect: (messageId, options) => load.inspect().inspectCommand(configured(), toolLogger(), io, messageId, options),
    audit: (options) => load.audit().auditCommand(configured(), toolLogger(), io, options),
    cleanup: () => load.cleanup().cleanupCommand(configured(), toolLogger(), io),
    check: () => load.check().checkCommand(configured(), toolLogger(), io),
    selftest: (options) => load.selftest().selftestCommand(configured(), toolLogger(), io, options, interruptSignal()),
    replay: (ids, options) => load.replay().replayCommand(configured(), toolLogger(), io, ids, options, interruptSignal()),
    demo: async (options) => {
      await load.demo().runDemo(configured(), load.logger().createLogger({ level: 'error', secrets, fd: 2 }), io, {
        ...options,
        interactive: process.stdout.isTTY === true,
      });
    },
  });
  try {
    await program.parseAsync(argv as string[]);
    process.exitCode = 0;
  } catch (err: unknown) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every other commander error is a usage error.
      process.exitCode = err.exitCode === 0 ? 0 : 2;
      return;
    }
    // One line, whatever the message quotes (a stored value, an argument).
    io.err(`outbox-relay: ${escapeControls(errorMessage(err))}`);
    if (!(err instanceof OutboxError) && env['OUTBOX_LOG_LEVEL'] === 'debug') io.err(String((err as Error).stack));
    process.exitCode = exitCodeFor(err);
  }
}

interface Handlers {
  run(): Promise<void>;
  migrate(options: { print?: boolean; all?: boolean; inbox?: boolean }): Promise<void>;
  status(options: { json?: boolean }): Promise<void>;
  deadList(options: DeadListOptions): Promise<void>;
  deadRetry(ids: string[], options: { all?: boolean }): Promise<void>;
  deadDiscard(ids: string[], options: { all?: boolean }): Promise<void>;
  inspect(messageId: string, options: { json?: boolean }): Promise<void>;
  audit(options: { json?: boolean; limit: number }): Promise<void>;
  cleanup(): Promise<void>;
  check(): Promise<void>;
  selftest(options: { exchange?: string; timeoutMs: number; json?: boolean }): Promise<void>;
  replay(ids: string[], options: ReplayOptions): Promise<void>;
  demo(options: { seconds: number; rate: number }): Promise<void>;
}

function positiveInt(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 1_000_000) {
    throw new InvalidArgumentError('must be a whole number from 1 to 1000000');
  }
  return Number(value);
}

function buildProgram(output: CliOutput, handlers: Handlers): Command {
  const program = new Command('outbox-relay')
    .description('Publishes messages committed to a PostgreSQL outbox table to RabbitMQ. Configured by OUTBOX_* environment variables.')
    .version(version(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run outbox-relay --help for usage)')
    // Subcommands inherit these settings when they are created below.
    .configureOutput({
      writeOut: (text) => output.writeOut(terminalSafe(text)),
      writeErr: (text) => output.writeErr(terminalSafe(text)),
      outputError: (text, write) => write(`outbox-relay: ${text.replace(/^error: /, '').trim()}\n`),
    })
    // Excess arguments are reported by the preAction hook, which can name them.
    .allowExcessArguments(true)
    .hook('preAction', (_program, action) => {
      const expected = action.registeredArguments;
      const variadic = expected.some((a) => a.variadic);
      const extra = action.args.slice(expected.length);
      if (!variadic && extra.length > 0) {
        const path: string[] = [];
        for (let c: Command | null = action; c?.parent; c = c.parent) path.unshift(c.name());
        const name = path.join(' ');
        throw new OutboxError(
          'USAGE',
          `${name}: unexpected argument ${extra.map((a) => `"${a}"`).join(' ')} (run outbox-relay ${name} --help)`,
        );
      }
    });

  program.command('run').description('run the relay daemon (stops on SIGTERM/SIGINT)').action(handlers.run);
  program
    .command('migrate')
    .description('apply pending migrations to OUTBOX_SCHEMA and print what was applied')
    .option('--print', 'print the SQL of the migrations not yet applied (all of them when the database does not answer), applying nothing')
    .option('--all', 'with --print: every migration, whatever is applied')
    .option('--inbox', "the idempotent consumer's inbox table instead (in the consuming service's database)")
    .action(handlers.migrate);
  program
    .command('status')
    .description('pending, due, delayed, dead and published counts, lag and the oldest pending message')
    .option('--json', 'print one JSON object')
    .action(handlers.status);

  const dead = program.command('dead').description('inspect and handle dead messages');
  dead
    .command('list')
    .description('list dead messages with their last error, newest first')
    .option('--json', 'print a JSON array')
    .addOption(new Option('--limit <n>', 'at most this many').argParser(positiveInt).default(100))
    .option('--type <type>', 'only this message_type')
    .option('--exchange <exchange>', "only this exchange ('' for the default exchange)")
    .option('--routing-key <key>', 'only this routing key')
    .option('--key <key>', 'only this partition key')
    .option('--since <ts>', 'only messages dead since this instant (ISO 8601, or any timestamptz PostgreSQL reads)')
    .action(handlers.deadList);
  dead
    .command('retry')
    .description('make dead messages due again, attempts reset')
    .argument('[message_id...]', 'message ids (UUIDs)')
    .option('--all', 'every dead message')
    .action(handlers.deadRetry);
  dead
    .command('discard')
    .description('delete dead messages (asks nothing; prints how many)')
    .argument('[message_id...]', 'message ids (UUIDs)')
    .option('--all', 'every dead message')
    .action(handlers.deadDiscard);
  program
    .command('inspect')
    .description("one message: every column but its body, its state, attempts, last error and its key's messages ahead of it")
    .argument('<message_id>', 'the message id (a UUID)')
    .option('--json', 'print one JSON object')
    .action(handlers.inspect);
  program
    .command('audit')
    .description('the operator actions that changed messages (dead retry, dead discard, replay), newest first')
    .option('--json', 'print a JSON array')
    .addOption(new Option('--limit <n>', 'at most this many').argParser(positiveInt).default(100))
    .action(handlers.audit);

  program
    .command('cleanup')
    .description('delete published and expired messages older than OUTBOX_RETENTION, and old audit entries, once')
    .action(handlers.cleanup);
  program
    .command('check')
    .description('verify database, schema, privileges, broker and the exchanges pending messages name')
    .action(handlers.check);
  program
    .command('selftest')
    .description('a canary message through the database and the broker to a temporary queue: each step timed, nothing left behind')
    .addOption(
      new Option('--exchange <name>', 'bind the temporary queue to this exchange (default: a temporary exchange of its own)').argParser(
        (name: string) => {
          const problem = exchangeProblem(name);
          if (problem !== undefined) throw new InvalidArgumentError(problem);
          return name;
        },
      ),
    )
    .addOption(new Option('--timeout-ms <n>', 'from the insert to the delivery (ms)').argParser(positiveInt).default(SELFTEST_TIMEOUT_MS))
    .option('--json', 'print one JSON object')
    .action(handlers.selftest);
  program
    .command('replay')
    .description('publish again messages already published and still kept, in their per-key order, marked x-outbox-replay: true')
    .argument('[message_id...]', 'message ids (UUIDs), instead of --since')
    .option('--since <ts>', 'messages created at or after this instant (ISO 8601; UTC unless a zone is given)')
    .option('--until <ts>', 'and before this instant (default: when the replay first started)')
    .option('--type <type>', 'only this message_type')
    .option('--exchange <exchange>', "only this exchange ('' for the default exchange)")
    .option('--routing-key <key>', 'only this routing key')
    .option('--key <key>', 'only this partition key')
    .option('--rate <n>', 'at most n messages per second, or unlimited (default 500)')
    .option('--dry-run', 'print how many would be published again and the first ids; publish and record nothing')
    .option('--restart', 'start over instead of resuming an unfinished replay with the same arguments')
    .option('--json', 'print one JSON object')
    .action(handlers.replay);
  program
    .command('demo')
    .description('end-to-end demonstration on the configured services: orders written in transactions, relayed, consumed exactly once')
    .addOption(new Option('--seconds <n>', 'how long the orders service writes').argParser(positiveInt).default(20))
    .addOption(new Option('--rate <n>', 'orders per second').argParser(positiveInt).default(50))
    .action(handlers.demo);
  return program;
}

/**
 * Aborts on the first SIGINT or SIGTERM, with the signal's name as the reason (a command
 * then stops at its next safe point and cleans up); a second one ends the process.
 */
function interruptSignal(): AbortSignal {
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => controller.abort(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return controller.signal;
}

function version(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../package.json') as { version: string }).version;
}

/** Beyond OUTBOX_SHUTDOWN_TIMEOUT_MS, how long closing the connections may take before the process exits 1 (ms). */
const SHUTDOWN_GRACE_MS = 8_000;
/** Beyond that, how long before the watchdog kills a process whose main thread cannot exit (ms). */
const WATCHDOG_MARGIN_MS = 1_000;

/**
 * `outbox-relay run`: starts the relay and stops it gracefully on SIGTERM/SIGINT
 * (exit 0). A second signal exits at once with 1. A schema that is not migrated, or
 * newer than this build, exits 1 with the instruction. Whatever a dependency does, the
 * process is gone OUTBOX_SHUTDOWN_TIMEOUT_MS + 9 s after the signal at the latest.
 */
async function runDaemon(config: Config, log: Logger): Promise<void> {
  const { startRelay } = load.app();
  // Loaded now, not in the signal handler: the shutdown path reads no file.
  const { startShutdownWatchdog } = load.watchdog();
  // A signal that comes while the relay starts (a rolling restart of a replica that just
  // came up) stops it as soon as it has started, instead of killing it mid-start.
  const early: NodeJS.Signals[] = [];
  const onEarlySignal = (signal: NodeJS.Signals): void => {
    early.push(signal);
  };
  process.on('SIGTERM', onEarlySignal);
  process.on('SIGINT', onEarlySignal);
  const relay = await startRelay(config, log, { version: version() }).finally(() => {
    process.off('SIGTERM', onEarlySignal);
    process.off('SIGINT', onEarlySignal);
  });
  let signals = 0;
  const done = new Promise<void>((resolve, reject) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      signals += 1;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting now');
        process.exit(1);
      }
      log.info({ signal }, 'signal received');
      // The in-flight batch has OUTBOX_SHUTDOWN_TIMEOUT_MS, closing the connections a few
      // seconds more; past that the process exits anyway, naming the step that hung. If
      // the main thread is blocked so that this timer cannot fire, the watchdog's thread
      // kills the process a little later.
      const graceMs = config.shutdownTimeoutMs + SHUTDOWN_GRACE_MS;
      setTimeout(() => {
        log.error({ step: relay.shutdownStep(), graceMs }, 'shutdown overran its time: exiting now');
        process.exit(1);
      }, graceMs).unref();
      startShutdownWatchdog(graceMs + WATCHDOG_MARGIN_MS, graceMs, 1);
      relay.stop().then(resolve, reject);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    for (const signal of early) onSignal(signal);
    relay.started.catch((err: unknown) => {
      void relay.stop().finally(() => reject(err));
    });
  });
  await done;
}
