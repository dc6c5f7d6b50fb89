import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { publishProperties } from '../src/broker/publisher';
import { MessageSigner } from '../src/broker/signer';
import type { OutboxMessage } from '../src/domain/message';
import { checkSignature } from '../src/domain/signature-check';
import { canonicalBytes, canonicalHeaders } from '../src/domain/signature';
import { drain, type DrainResult } from './scenarios';
import { PAD } from './support';

/** Whether a drain of the signing scenario signed. */
export type SigningArm = 'off' | 'on';

export interface SigningRun extends DrainResult {
  readonly signing: SigningArm;
}

/**
 * `--only signing`: the same backlog (1 KiB messages) drained by one relay without and
 * with OUTBOX_SIGNING_KEY_FILE, alternated, so that drift of the machine hits each alike.
 */
export async function signingRuns(pool: Pool, count: number, rounds: number): Promise<SigningRun[]> {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-bench-signing-'));
  const keyFile = join(dir, 'bench.pem');
  writeFileSync(keyFile, generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
  const runs: SigningRun[] = [];
  try {
    for (let round = 0; round < rounds; round += 1) {
      for (const signing of ['off', 'on'] as const) {
        const env: Record<string, string> = signing === 'on' ? { OUTBOX_SIGNING_KEY_FILE: keyFile, OUTBOX_SIGNING_KEY_ID: 'bench-1' } : {};
        runs.push({ ...(await drain(pool, count, 0, 1, env)), signing });
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return runs;
}

/** CPU µs per message of each part, measured in this process on the bench's 1 KiB message. */
export interface SigningParts {
  /** The AMQP properties of an unsigned message (what the relay does per message without a key). */
  readonly propertiesUnsigned: number;
  /** The canonical form alone: the headers' canonical JSON and the length-prefixed bytes. */
  readonly canonicalForm: number;
  /** `crypto.sign` (Ed25519) of those bytes alone. */
  readonly ed25519Sign: number;
  /** The properties of a signed message: all of the above and the header. */
  readonly propertiesSigned: number;
  /** The consumer's check of one delivery: the canonical form rebuilt and `crypto.verify`. */
  readonly consumerVerify: number;
}

function cpuMicrosPer(iterations: number, work: (i: number) => unknown): number {
  for (let i = 0; i < Math.min(2_000, iterations); i += 1) work(i);
  const before = process.cpuUsage();
  for (let i = 0; i < iterations; i += 1) work(i);
  const spent = process.cpuUsage(before);
  return (spent.user + spent.system) / iterations;
}

/** The parts of signing and verifying, timed one by one (CPU, this process). */
export function signingParts(iterations: number): SigningParts {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const message = (n: number): OutboxMessage => ({
    id: String(n + 1),
    messageId: `00000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    exchange: 'bench',
    routingKey: 'bench',
    messageType: 'bench.event',
    content: Buffer.from(JSON.stringify({ n, pad: PAD })),
    contentType: 'application/json',
    headers: { 'x-tenant': 'acme', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
    partitionKey: null,
    correlationId: null,
    createdAt: new Date(),
    availableAt: new Date(),
    attempts: 0,
  });
  const messages = Array.from({ length: 1_000 }, (_, n) => message(n));
  const at = (i: number): OutboxMessage => messages[i % messages.length] as OutboxMessage;
  const signer = new MessageSigner('bench-1', privateKey);
  const canonical = (m: OutboxMessage): Buffer =>
    canonicalBytes({
      keyId: 'bench-1',
      messageId: m.messageId,
      type: m.messageType ?? undefined,
      timestamp: Math.floor(m.createdAt.getTime() / 1000),
      contentType: m.contentType,
      exchange: m.exchange,
      routingKey: m.routingKey,
      headersJson: canonicalHeaders(m.headers),
      body: m.content,
    });
  const bytes = messages.map(canonical);
  const keys = new Map<string, KeyObject>([['bench-1', publicKey]]);
  const deliveries = messages.map((m) => {
    const properties = publishProperties(m, { appId: 'bench', signer });
    const headers = { ...(properties.headers as Record<string, unknown>), 'x-outbox-position': Number(m.id) };
    return { content: m.content, properties: { ...properties, headers } };
  });
  return {
    propertiesUnsigned: cpuMicrosPer(iterations, (i) => publishProperties(at(i), { appId: 'bench' })),
    canonicalForm: cpuMicrosPer(iterations, (i) => canonical(at(i))),
    ed25519Sign: cpuMicrosPer(iterations, (i) => sign(null, bytes[i % bytes.length] as Buffer, privateKey)),
    propertiesSigned: cpuMicrosPer(iterations, (i) => publishProperties(at(i), { appId: 'bench', signer })),
    consumerVerify: cpuMicrosPer(iterations, (i) =>
      checkSignature(deliveries[i % deliveries.length]!, { exchange: 'bench', routingKey: 'bench' }, keys, false),
    ),
  };
}
