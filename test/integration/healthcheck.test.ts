import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { join } from 'node:path';
import { execForm, parseDockerfile } from '../kit/dockerfile';
import { freePort } from '../kit/free-port';
import { OutboxFixture } from '../kit/outbox-fixture';

// The Dockerfile's HEALTHCHECK command, run as Docker would run it inside the image
// (with the image's `node`), against a real relay.

const ROOT = join(__dirname, '..', '..');

function healthcheckCommand(): string[] {
  const { stages } = parseDockerfile(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'));
  const healthcheck = stages[stages.length - 1]!.instructions.filter((i) => i.keyword === 'HEALTHCHECK').pop()!;
  return execForm(healthcheck.args.replace(/^(?:--[a-z-]+=\S+\s+)*CMD\s+/i, ''))!;
}

function runHealthcheck(port: number): Promise<number> {
  const [command, ...args] = healthcheckCommand();
  expect(command).toBe('node');
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      args,
      { env: { PATH: process.env['PATH'] ?? '', OUTBOX_HTTP_PORT: String(port) }, timeout: 10_000 },
      (err) => {
        resolve(err ? Number((err as { code?: unknown }).code ?? 1) : 0);
      },
    );
  });
}

const fx = OutboxFixture.forFile('healthcheck');

test('the HEALTHCHECK command exits 0 against a running relay', async () => {
  const { relay } = await fx.startRelay();
  expect(await runHealthcheck(relay.port)).toBe(0);
  await fx.stopRelays();
});

test('the HEALTHCHECK command exits 1 when nothing answers on OUTBOX_HTTP_PORT', async () => {
  expect(await runHealthcheck(await freePort())).toBe(1);
});

test('the HEALTHCHECK command exits 1 when /healthz answers 503 (a stuck loop)', async () => {
  const paths: string[] = [];
  const server = createHttpServer((req, res) => {
    paths.push(req.url ?? '');
    res.writeHead(503).end('stuck');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    expect(await runHealthcheck((server.address() as { port: number }).port)).toBe(1);
    expect(paths).toEqual(['/healthz']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
