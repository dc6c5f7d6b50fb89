import { createPrivateKey, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { canonicalBytes, canonicalHeaders, parseSignatureHeader } from '../../src/domain/signature';

// The README's worked example (its "Signed messages" section), checked from the page
// itself: Node's own crypto on the documented bytes (not the library's code), then the
// library against the same bytes; and docs/signing.md's public key is that key's.

const readme = readFileSync(join(__dirname, '../../README.md'), 'utf8');
const section = readme.slice(readme.indexOf('\n## Signed messages\n'), readme.indexOf('\n## Configuration\n'));
const example = section.slice(section.indexOf('**Worked example.**'));
const signingPage = readFileSync(join(__dirname, '../../docs/signing.md'), 'utf8');

function block(after: string, fence = '```'): string {
  const start = example.indexOf(`${fence}\n`, example.indexOf(after));
  const end = example.indexOf('```', start + fence.length + 1);
  return example.slice(start + fence.length + 1, end);
}

test('the documented signature verifies the documented bytes with the documented key (Node crypto alone)', () => {
  const privatePem = /-----BEGIN PRIVATE KEY-----[^-]+-----END PRIVATE KEY-----/.exec(example)?.[0] as string;
  const publicPem = /-----BEGIN PUBLIC KEY-----[^-]+-----END PUBLIC KEY-----/.exec(signingPage)?.[0] as string;
  const bytes = Buffer.from(block('in hex', '```hex').replace(/\s+/g, ''), 'hex');
  const header = /x-outbox-signature: (v1;kid=[^;]+;sig=[^`\s]+)/.exec(example)?.[1] as string;
  const signature = Buffer.from(/sig=(\S+)/.exec(header)?.[1] as string, 'base64');

  expect(bytes).toHaveLength(227);
  const publicKey = createPublicKey(publicPem);
  expect(createPublicKey(createPrivateKey(privatePem)).export({ format: 'der', type: 'spki' })).toEqual(
    publicKey.export({ format: 'der', type: 'spki' }),
  );
  expect(verify(null, bytes, publicKey, signature)).toBe(true);
  const tampered = Buffer.from(bytes);
  tampered.writeUInt8(tampered.readUInt8(tampered.length - 2) ^ 1, tampered.length - 2);
  expect(verify(null, tampered, publicKey, signature)).toBe(false);

  // Each line of the hex is one field: its length, then that many bytes.
  for (const line of block('in hex', '```hex').trim().split('\n')) {
    const [length, data] = line.split(' ') as [string, string];
    expect(parseInt(length, 16)).toBe(data.length / 2);
  }
});

test('the library builds the documented bytes from the documented message', () => {
  const bytes = Buffer.from(block('in hex', '```hex').replace(/\s+/g, ''), 'hex');
  const header = /x-outbox-signature: (v1;kid=[^;]+;sig=[^`\s]+)/.exec(example)?.[1] as string;
  const headers = { 'x-tenant': 'acme', priority: 2n, 'x-outbox-partition-key': 'order-42', 'x-outbox-position': 1001n };
  expect(canonicalHeaders(headers)).toBe('{"priority":2,"x-tenant":"acme"}');
  expect(example).toContain('`{"priority":2,"x-tenant":"acme"}`');
  expect(
    canonicalBytes({
      keyId: parseSignatureHeader(header)?.keyId as string,
      messageId: '0b7f1c9e-3d2a-4c61-9e0f-5a8b2d4c6e10',
      type: 'order.created',
      timestamp: 1767225600,
      contentType: 'application/json',
      exchange: 'orders',
      routingKey: 'order.created',
      headersJson: canonicalHeaders(headers),
      body: Buffer.from('{"orderId":42,"total":"19.90"}'),
    }),
  ).toEqual(bytes);
});
