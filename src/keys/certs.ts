/**
 * Key pairs and self-signed certificates. Keys are Ed25519, made by Node's
 * crypto (OpenSSL); certificates are X.509 v3, self-signed with the same key,
 * made by @peculiar/x509 on WebCrypto. The certificate only carries the public
 * key and the identity name (subject CN) into the TLS handshake: REX pins keys
 * by ID, it does not use certificate chains or validity periods.
 */
import { X509Certificate, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, webcrypto } from 'node:crypto';
import { ErrorCodes, RexError } from '../util/errors.js';
import { keyId } from './id.js';

type X509 = typeof import('@peculiar/x509');
let x509: Promise<X509> | undefined;

/**
 * @peculiar/x509 (with the reflect-metadata it needs) is loaded when a
 * certificate is first made: reading one needs only node:crypto, so rexd,
 * which reads certificates and makes none, does not load it (it was a fifth of
 * rexd's start-up).
 */
function loadX509(): Promise<X509> {
  x509 ??= (async () => {
    await import('reflect-metadata');
    const ns = await import('@peculiar/x509');
    // A CommonJS package: Node's loader gives its exports as named exports and as `default`, a bundle
    // (scripts/bundle.mjs, dist/bin/) as `default` only.
    const m = (ns as unknown as { default?: X509 }).default ?? ns;
    // The two-argument overload types the same under every lib setting: with the
    // DOM lib the one-argument form's `Crypto` differs from Node's webcrypto type,
    // which broke type-checking of code that imports the runtime (generated stubs).
    m.cryptoProvider.set(m.CryptoProvider.DEFAULT, webcrypto as unknown as Parameters<typeof m.cryptoProvider.set>[1]);
    return m;
  })();
  return x509;
}

/** A new key pair and its certificate, PEM encoded. */
export interface KeyMaterial {
  keyPem: string;
  certPem: string;
  id: string;
}

type CryptoKeyPairLike = Parameters<X509["X509CertificateGenerator"]["createSelfSigned"]>[0]["keys"];

const ED25519 = { name: 'Ed25519' } as const;
/** Certificates outlive any key rotation policy: REX trusts keys by ID and grants carry expiry. */
const CERT_YEARS = 100;

/** Makes an Ed25519 key pair and a self-signed certificate whose subject CN is `name`. */
export async function createKeyMaterial(name: string): Promise<KeyMaterial> {
  const { privateKey } = generateKeyPairSync('ed25519');
  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return { keyPem, certPem: await certificateFor(keyPem, name), id: privateKeyId(keyPem, 'new key') };
}

/** A self-signed certificate for an existing Ed25519 private key (PEM), with subject CN `name`. */
export async function certificateFor(keyPem: string, name: string): Promise<string> {
  const privateKey = createPrivateKey(keyPem);
  const spki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  const priv = await webcrypto.subtle.importKey('pkcs8', privateKey.export({ type: 'pkcs8', format: 'der' }), ED25519, false, ['sign']);
  const pub = await webcrypto.subtle.importKey('spki', spki, ED25519, true, ['verify']);
  const now = Date.now();
  const cert = await (await loadX509()).X509CertificateGenerator.createSelfSigned({
    serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'), // positive INTEGER
    name: `CN=${name}`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + CERT_YEARS * 365 * 86_400_000),
    signingAlgorithm: ED25519,
    keys: { privateKey: priv, publicKey: pub } as unknown as CryptoKeyPairLike,
  });
  return cert.toString('pem') + '\n';
}

/** What a certificate says: the ID of its key and the name in its subject CN. */
export interface CertInfo {
  id: string;
  /** Subject CN, or '' when there is none. */
  name: string;
  der: Buffer;
  pem: string;
}

/** Reads a certificate (PEM or DER); throws KEY_INVALID naming `where` when it is not one. */
export function certInfo(cert: string | Uint8Array, where: string): CertInfo {
  let x: X509Certificate;
  try {
    x = new X509Certificate(typeof cert === 'string' ? cert : Buffer.from(cert));
  } catch (e) {
    throw new RexError(ErrorCodes.KEY_INVALID, `${where} is not an X.509 certificate: ${(e as Error).message}`, { where });
  }
  const spki = x.publicKey.export({ type: 'spki', format: 'der' });
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(x.subject)?.[1] ?? '';
  return { id: keyId(spki), name: cn, der: Buffer.from(x.raw), pem: x.toString() };
}

/** The ID of the public key inside a PEM private key (to check a key file matches its certificate). */
export function privateKeyId(keyPem: string, where: string): string {
  try {
    return keyId(createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' }));
  } catch (e) {
    throw new RexError(ErrorCodes.KEY_INVALID, `${where} is not a readable private key: ${(e as Error).message}`, {
      where,
      hint: 'create a new key with `rex_key --create --force`',
    });
  }
}
