import { createPrivateKey, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { dirname, join } from 'node:path';
import { publishBatch, publishProperties } from '../../src/broker/publisher';
import { MessageSigner } from '../../src/broker/signer';
import { loadConfig } from '../../src/config/load-config';
import { checkSignature } from '../../src/domain/signature-check';
import { canonicalBytes, canonicalJson, parseSignatureHeader, signatureHeader, SIGNATURE_HEADER } from '../../src/domain/signature';
import { verifySettings } from '../../src/consumer/verify';
import { exitCodeFor } from '../../src/errors';
import { configError, names } from './config-errors';
import { waitFor } from '../kit/wait';
import { fakeChannel } from './fake-confirm-channel';
import { fakeMessage } from './fake-message';

/* eslint-disable @typescript-eslint/no-require-imports -- amqplib's codec has no typed entry point */
const codec = require(join(dirname(require.resolve('amqplib')), 'lib', 'codec.js')) as {
  encodeTable(buffer: Buffer, value: unknown, offset: number): number;
  decodeFields(slice: Buffer): Record<string, unknown>;
};
/* eslint-enable @typescript-eslint/no-require-imports */

const { privateKey, publicKey } = generateKeyPairSync('ed25519');
const PEM = privateKey.export({ format: 'pem', type: 'pkcs8' }) as string;

/** The message as a consumer receives it: properties through amqplib's own encoder and decoder. */
function delivered(properties: ReturnType<typeof publishProperties>, content: Buffer) {
  const scratch = Buffer.alloc(65_536);
  const length = codec.encodeTable(scratch, properties.headers, 0);
  const headers = codec.decodeFields(scratch.subarray(4, length));
  return { content, properties: { ...properties, headers } };
}

describe('canonical form', () => {
  test('ten length-prefixed fields, the body last and as it is', () => {
    const bytes = canonicalBytes({
      keyId: 'k',
      messageId: 'm',
      type: undefined,
      timestamp: 12,
      contentType: 'é',
      exchange: '',
      routingKey: 'rk',
      headersJson: '{}',
      body: Buffer.from([0, 255]),
    });
    const fields: Buffer[] = [];
    for (let offset = 0; offset < bytes.length;) {
      const length = bytes.readUInt32BE(offset);
      fields.push(bytes.subarray(offset + 4, offset + 4 + length));
      offset += 4 + length;
    }
    expect(fields.map((f) => f.toString('utf8')).slice(0, 9)).toEqual(['outbox-signature-v1', 'k', 'm', '', '12', 'é', '', 'rk', '{}']);
    expect(fields[5]).toEqual(Buffer.from([0xc3, 0xa9]));
    expect(fields[9]).toEqual(Buffer.from([0, 255]));
    expect(fields).toHaveLength(10);
  });

  test('canonical JSON: keys sorted at every depth, no whitespace, numbers as ECMAScript writes them', () => {
    expect(canonicalJson({ b: 1, a: [true, null, 'x"\n'], c: { z: 2.5, y: 1e21, x: -0 }, d: 12345678901234567890n })).toBe(
      '{"a":[true,null,"x\\"\\n"],"b":1,"c":{"x":0,"y":1e+21,"z":2.5},"d":12345678901234567890}',
    );
    // UTF-16 code units: U+FFFD sorts after U+1F600 (a surrogate pair starts with 0xD83D).
    expect(canonicalJson({ '\uFFFD': 1, '😀': 2 })).toBe('{"😀":2,"\uFFFD":1}');
    expect(() => canonicalJson({ bytes: Buffer.from('x') })).toThrow('a byte array');
    expect(() => canonicalJson(Number.NaN)).toThrow();
  });

  test('the header round-trips; anything else is not a signature', () => {
    const sig = Buffer.alloc(64, 7);
    const text = signatureHeader('key-1', sig);
    expect(text).toBe(`v1;kid=key-1;sig=${sig.toString('base64')}`);
    expect(parseSignatureHeader(text)).toEqual({ keyId: 'key-1', signature: sig });
    for (const bad of ['', 'v2;kid=a;sig=' + sig.toString('base64'), text.slice(0, -2), `${text};x`, 'v1;kid=a b;sig=x']) {
      expect(parseSignatureHeader(bad)).toBeUndefined();
    }
  });
});

describe('sign and verify', () => {
  const signer = new MessageSigner('k1', privateKey);
  const keys = new Map([['k1', publicKey]]);
  const message = fakeMessage({
    headers: { 'x-tenant': 'acme', n: 5n, d: 1.5, whole: 2, nested: { b: [1n, 'x'], a: null }, CC: ['a'] },
    partitionKey: 'order-1',
  });

  test('what the relay publishes verifies after amqplib encoded and decoded it, and with Node crypto alone', () => {
    const properties = publishProperties(message, { appId: 'app', signer });
    const header = properties.headers?.[SIGNATURE_HEADER] as string;
    const msg = delivered(properties, message.content);
    const route = { exchange: message.exchange, routingKey: message.routingKey };
    expect(checkSignature(msg, route, keys, false)).toEqual({ ok: true, keyId: 'k1' });
    // The signed timestamp is the property's value.
    const data = canonicalBytes({
      keyId: 'k1',
      messageId: message.messageId,
      type: message.messageType ?? undefined,
      timestamp: properties.timestamp as number,
      contentType: message.contentType,
      exchange: message.exchange,
      routingKey: message.routingKey,
      headersJson: '{"CC":["a"],"d":1.5,"n":5,"nested":{"a":null,"b":[1,"x"]},"whole":2,"x-tenant":"acme"}',
      body: message.content,
    });
    expect(verify(null, data, publicKey, parseSignatureHeader(header)?.signature as Buffer)).toBe(true);
  });

  test('each covered field changed is a bad signature; broker and consumer headers are not covered', () => {
    const properties = publishProperties(message, { appId: 'app', signer });
    const route = { exchange: message.exchange, routingKey: message.routingKey };
    const base = delivered(properties, message.content);
    const changed: [string, typeof base, typeof route][] = [
      ['body', { ...base, content: Buffer.from('{"n":0}') }, route],
      ['message id', { ...base, properties: { ...base.properties, messageId: 'other' } }, route],
      ['type', { ...base, properties: { ...base.properties, type: 'order.cancelled' } }, route],
      ['timestamp', { ...base, properties: { ...base.properties, timestamp: (properties.timestamp as number) + 1 } }, route],
      ['content type', { ...base, properties: { ...base.properties, contentType: 'text/plain' } }, route],
      ['exchange', base, { ...route, exchange: 'other' }],
      ['routing key', base, { ...route, routingKey: 'order.cancelled' }],
      ['a header', { ...base, properties: { ...base.properties, headers: { ...base.properties.headers, 'x-tenant': 'evil' } } }, route],
      ['a new header', { ...base, properties: { ...base.properties, headers: { ...base.properties.headers, extra: 1 } } }, route],
    ];
    for (const [what, msg, where] of changed) {
      expect([what, checkSignature(msg, where, keys, false)]).toEqual([
        what,
        expect.objectContaining({ ok: false, reason: 'bad_signature' }),
      ]);
    }
    const added = { ...base.properties.headers, 'x-death': [{ count: 1 }], 'x-delivery-count': 2, 'x-outbox-consumer-attempts': 1 };
    expect(checkSignature({ ...base, properties: { ...base.properties, headers: added } }, route, keys, false).ok).toBe(true);
  });

  test('missing, malformed, unknown key; the unsigned policy', () => {
    const unsigned = delivered(publishProperties(message, { appId: 'app' }), message.content);
    const route = { exchange: message.exchange, routingKey: message.routingKey };
    expect(checkSignature(unsigned, route, keys, false)).toMatchObject({ ok: false, reason: 'missing' });
    expect(checkSignature(unsigned, route, keys, true)).toEqual({ ok: true, keyId: undefined });
    const withHeader = (value: unknown) => ({
      ...unsigned,
      properties: { ...unsigned.properties, headers: { [SIGNATURE_HEADER]: value } },
    });
    expect(checkSignature(withHeader('nonsense'), route, keys, true)).toMatchObject({ ok: false, reason: 'malformed' });
    expect(checkSignature(withHeader(signatureHeader('k2', Buffer.alloc(64))), route, keys, true)).toMatchObject({
      ok: false,
      reason: 'unknown_key',
      keyId: 'k2',
    });
  });

  test('without a signer nothing is signed', () => {
    expect(publishProperties(message, { appId: 'app' }).headers?.[SIGNATURE_HEADER]).toBeUndefined();
  });
});

describe('OUTBOX_SIGNING_KEY_FILE', () => {
  const files: Record<string, string> = {
    '/keys/ed25519.pem': PEM,
    '/keys/rsa.pem': generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'pem', type: 'pkcs8' }) as string,
    '/keys/garbage.pem': 'not a key at all',
  };
  const readFile = (path: string): string => {
    const text = files[path];
    if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
    return text;
  };

  test('a key file and its id: the key is read once into a KeyObject', () => {
    const config = loadConfig({ OUTBOX_SIGNING_KEY_FILE: '/keys/ed25519.pem', OUTBOX_SIGNING_KEY_ID: 'k1' }, readFile);
    expect(config.signing?.keyId).toBe('k1');
    expect(createPublicKey(config.signing?.key as never).export({ format: 'pem', type: 'spki' })).toEqual(
      publicKey.export({ format: 'pem', type: 'spki' }),
    );
  });

  test.each([
    [{ OUTBOX_SIGNING_KEY_FILE: '/keys/ed25519.pem' }, 'OUTBOX_SIGNING_KEY_FILE', /set without OUTBOX_SIGNING_KEY_ID/],
    [{ OUTBOX_SIGNING_KEY_ID: 'k1' }, 'OUTBOX_SIGNING_KEY_ID', /set without OUTBOX_SIGNING_KEY_FILE/],
    [{ OUTBOX_SIGNING_KEY_FILE: '/keys/missing.pem', OUTBOX_SIGNING_KEY_ID: 'k1' }, 'OUTBOX_SIGNING_KEY_FILE', /cannot be read \(ENOENT/],
    [{ OUTBOX_SIGNING_KEY_FILE: '/keys/rsa.pem', OUTBOX_SIGNING_KEY_ID: 'k1' }, 'OUTBOX_SIGNING_KEY_FILE', /holds a rsa key/],
    [
      { OUTBOX_SIGNING_KEY_FILE: '/keys/garbage.pem', OUTBOX_SIGNING_KEY_ID: 'k1' },
      'OUTBOX_SIGNING_KEY_FILE',
      /does not hold an unencrypted PEM/,
    ],
  ])('%j: exit 2, one line naming %s, never the key', (env, name, pattern) => {
    const err = configError(env, readFile);
    expect(exitCodeFor(err)).toBe(2);
    expect(names(err.message, name)).toBe(true);
    expect(err.message).toMatch(pattern);
    expect(err.message).not.toMatch(/[\r\n]/);
    expect(err.message).not.toContain(PEM.split('\n')[1]);
    expect(err.message).not.toContain('not a key at all');
  });

  test('OUTBOX_PUBLISH_USER_ID: the URL user, guest without one; several URLs must name one user', () => {
    expect(loadConfig({ OUTBOX_PUBLISH_USER_ID: 'true', OUTBOX_AMQP_URL: 'amqp://rel%40y:pw@h' }).userId).toBe('rel@y');
    expect(loadConfig({ OUTBOX_PUBLISH_USER_ID: 'true', OUTBOX_AMQP_URL: 'amqp://h1,amqp://h2' }).userId).toBe('guest');
    expect(loadConfig({ OUTBOX_AMQP_URL: 'amqp://a@h1' }).userId).toBeUndefined();
    const err = configError({ OUTBOX_PUBLISH_USER_ID: 'true', OUTBOX_AMQP_URL: 'amqp://a:x@h1,amqp://b:y@h2' });
    expect(names(err.message, 'OUTBOX_PUBLISH_USER_ID')).toBe(true);
    expect(err.message).not.toContain(':x@');
  });

  test('the user-id goes out as a property', () => {
    expect(publishProperties(fakeMessage(), { appId: 'app', userId: 'relay' }).userId).toBe('relay');
    expect(publishProperties(fakeMessage(), { appId: 'app' }).userId).toBeUndefined();
  });
});

describe('the consumer verify option', () => {
  const problemsOf = (value: unknown): string[] => {
    const problems: string[] = [];
    verifySettings(value, problems);
    return problems;
  };
  const publicPem = publicKey.export({ format: 'pem', type: 'spki' }) as string;

  test('PEM text, a KeyObject, or a private key (its public half)', () => {
    const settings = verifySettings({ keys: { a: publicPem, b: publicKey, c: createPrivateKey(PEM) }, unsigned: 'accept' }, []);
    expect([...(settings?.keys.keys() ?? [])]).toEqual(['a', 'b', 'c']);
    expect(settings?.keys.get('c')?.type).toBe('public');
    expect(settings?.acceptUnsigned).toBe(true);
    expect(verifySettings({ keys: { a: publicPem } }, [])?.acceptUnsigned).toBe(false);
  });

  test('bad values are named', () => {
    expect(problemsOf('yes')).toEqual(['verify must be an object { keys, unsigned }']);
    expect(problemsOf({ keys: {} })).toEqual([expect.stringMatching(/^verify.keys must be an object of at least one key id/)]);
    expect(problemsOf({ keys: { a: publicPem }, unsgined: 'accept' })).toEqual(['unknown option "verify.unsgined"']);
    expect(problemsOf({ keys: { a: publicPem }, unsigned: 'allow' })).toEqual(['verify.unsigned must be "reject" or "accept"']);
    expect(problemsOf({ keys: { a: 'nonsense' } })).toEqual(['verify.keys["a"] must be an Ed25519 public key (PEM text or a KeyObject)']);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey;
    expect(problemsOf({ keys: { 'r;1': rsa } })).toEqual(['verify.keys["r;1"]: a key id is 1 to 64 letters, digits or ._:-']);
    expect(problemsOf({ keys: { r: rsa } })).toEqual(['verify.keys["r"] must be an Ed25519 public key (PEM text or a KeyObject)']);
  });
});

describe('publishBatch with a signer', () => {
  test('signs every message ahead on the thread pool, each as publishProperties would sign it', async () => {
    const { fake, target } = fakeChannel();
    const signer = new MessageSigner('k1', privateKey);
    const batch = [fakeMessage(), fakeMessage({ headers: { b: 1n, a: 'x' } }), fakeMessage({ messageType: null })];
    const result = publishBatch(target, batch, { appId: 'app', timeoutMs: 10_000, signer, userId: 'relay' });
    await waitFor('all written', () => fake.published.length === 3);
    fake.published.forEach((p, i) => {
      expect(p.options).toEqual(publishProperties(batch[i]!, { appId: 'app', signer, userId: 'relay' }));
      const msg = delivered(p.options as ReturnType<typeof publishProperties>, p.content);
      expect(checkSignature(msg, { exchange: p.exchange, routingKey: p.routingKey }, new Map([['k1', publicKey]]), false).ok).toBe(true);
    });
    fake.ack(0);
    fake.ack(1);
    fake.ack(2);
    await expect(result).resolves.toEqual([{ kind: 'confirmed' }, { kind: 'confirmed' }, { kind: 'confirmed' }]);
  });
});
