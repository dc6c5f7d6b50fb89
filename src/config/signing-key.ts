import { createPrivateKey, type KeyObject } from 'node:crypto';

/** The relay's signing key, parsed once at start. */
export interface SigningKey {
  readonly keyId: string;
  /** An Ed25519 private key. */
  readonly key: KeyObject;
}

/**
 * The signing key named by OUTBOX_SIGNING_KEY_FILE with its id OUTBOX_SIGNING_KEY_ID:
 * both or neither. Problems name the variable and never show the file's content.
 */
export function readSigningKey(
  keyFile: string | undefined,
  keyId: string | undefined,
  readFile: (path: string) => string,
  problems: string[],
): SigningKey | undefined {
  if (keyFile === undefined && keyId === undefined) return undefined;
  if (keyFile === undefined) {
    problems.push('OUTBOX_SIGNING_KEY_ID is set without OUTBOX_SIGNING_KEY_FILE; set both to sign messages, or neither');
    return undefined;
  }
  if (keyId === undefined) {
    problems.push('OUTBOX_SIGNING_KEY_FILE is set without OUTBOX_SIGNING_KEY_ID; set both to sign messages, or neither');
    return undefined;
  }
  let pem: string;
  try {
    pem = readFile(keyFile);
  } catch (err: unknown) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    problems.push(`OUTBOX_SIGNING_KEY_FILE names a file that cannot be read (${code}: ${keyFile})`);
    return undefined;
  }
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    problems.push(
      `OUTBOX_SIGNING_KEY_FILE does not hold an unencrypted PEM private key (${keyFile}); expected an Ed25519 key in PKCS#8 ("BEGIN PRIVATE KEY")`,
    );
    return undefined;
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    problems.push(
      `OUTBOX_SIGNING_KEY_FILE holds a ${key.asymmetricKeyType ?? 'non-asymmetric'} key (${keyFile}); the relay signs with Ed25519 only`,
    );
    return undefined;
  }
  return Object.freeze({ keyId, key });
}
