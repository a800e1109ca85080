/**
 * The TLS layer under protocol v1 between hosts: TLS 1.3 only, both sides
 * present their self-signed REX certificate, and each side pins the other's key
 * by ID against its own trust store (certificate chains and names play no part:
 * OpenSSL's chain check is off, REX's pin check replaces it). See docs/PROTOCOL.md
 * section 6.
 */
import { connect as tlsConnect, createSecureContext, type ConnectionOptions, type SecureContext, type TLSSocket, type TlsOptions } from 'node:tls';
import { ErrorCodes, RexError } from '../util/errors.js';
import { certInfo, type CertInfo } from './certs.js';
import { currentUser } from './identity.js';
import type { KeyStore, OwnIdentity } from './store.js';

/** Options shared by both ends: TLS 1.3 and nothing older. */
/**
 * TLS 1.3 only, and no certificate authorities: REX pins each key by its ID (rejectUnauthorized is false, the
 * peer's certificate is checked by the caller), so a chain is never verified. Without `ca`, Node would parse its
 * bundled root certificates (some 140) into the first context it makes: about 10 ms of rexd's start-up for nothing.
 */
const TLS13 = { minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ca: [] as string[] } as const;

/** Server-side options: ask for the client's certificate, judge it ourselves after the handshake. */
export function tlsServerOptions(own: OwnIdentity): TlsOptions {
  // A client that opens TCP and never finishes the handshake is dropped after 10 s (Node's default is 120 s).
  return { ...TLS13, key: own.keyPem, cert: own.certPem, requestCert: true, rejectUnauthorized: false, handshakeTimeout: 10_000 };
}

/** Secure contexts by key: parsing the key and building an OpenSSL context costs about as much as the handshake itself. */
const contexts = new Map<string, SecureContext>();

/** Client-side options; the pin check happens in {@link connectPinned}. */
export function tlsClientOptions(own: OwnIdentity): ConnectionOptions {
  // Keyed by key and certificate: the same key may come with another certificate (a renamed or rotated identity).
  const cacheKey = own.keyPem + own.certPem;
  let ctx = contexts.get(cacheKey);
  if (!ctx) {
    ctx = createSecureContext({ ...TLS13, key: own.keyPem, cert: own.certPem });
    if (contexts.size > 64) contexts.clear();
    contexts.set(cacheKey, ctx);
  }
  return { ...TLS13, secureContext: ctx, rejectUnauthorized: false };
}

/** The certificate the other end presented, or undefined if none. */
export function peerCert(sock: TLSSocket): CertInfo | undefined {
  const c = sock.getPeerCertificate(true);
  if (!c || !c.raw || c.raw.length === 0) return undefined;
  try {
    return certInfo(c.raw, 'peer certificate');
  } catch {
    return undefined;
  }
}

/** Decides whether the server's certificate is the one we expect; returns a refusal message or undefined. */
export type PinCheck = (cert: CertInfo | undefined) => string | undefined;

/**
 * Opens a TLS connection and checks the server's key before a single byte of
 * REX traffic is sent; resolves with the socket and the server's certificate.
 */
export function connectPinned(opts: { host: string; port: number; own: OwnIdentity; pin: PinCheck; timeoutMs: number; label: string }): Promise<{ sock: TLSSocket; cert: CertInfo }> {
  return new Promise((resolve, reject) => {
    const sock = tlsConnect({ ...tlsClientOptions(opts.own), host: opts.host, port: opts.port });
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new RexError(ErrorCodes.CONN_TIMEOUT, `TLS connection to ${opts.label} timed out after ${opts.timeoutMs} ms`));
    }, opts.timeoutMs);
    sock.once('error', (e) => {
      clearTimeout(timer);
      reject(new RexError(ErrorCodes.CONN_CLOSED, `TLS connection to ${opts.label} failed: ${e.message}`, { cause: e }));
    });
    sock.once('secureConnect', () => {
      clearTimeout(timer);
      const cert = peerCert(sock);
      const refusal = opts.pin(cert);
      if (refusal !== undefined || !cert) {
        sock.destroy();
        reject(new RexError(ErrorCodes.AUTH_DENIED, `${opts.label}: ${refusal ?? 'the server presented no certificate'}`, { hint: 'a server whose key does not match may be an impostor; compare IDs with `rex_key --list` on that host' }));
        return;
      }
      resolve({ sock, cert });
    });
  });
}

/**
 * A pin check for the rexd of a peer host: it accepts exactly one key, the one
 * this user enrolled under the name `HOST.USER` of that peer. `peer` is HOST (a
 * rex.rc servers name; the peer's user is `user`, by default this process's
 * user, as every rexd of a cluster runs for the same user) or a full
 * HOST.USER. A key enrolled as another user of that host (`beta.evil`) or as a
 * program of it (`beta.alice.render`) is not that host's rexd.
 */
export function pinKnownHost(store: KeyStore, peer: string, user = currentUser()): PinCheck {
  const name = peer.includes('.') ? peer : `${peer}.${user}`;
  const host = name.split('.')[0]!;
  return (cert) => {
    if (!cert) return 'presented no certificate';
    const known = store.known().filter((k) => k.name === name);
    if (known.length === 0) {
      return `no key is known for ${name}, the rexd of host ${host} (it presented ${cert.name}, key ${cert.id}); enroll first: on ${host} run \`rex_key --invite --for ${store.ownNames().find((n) => n.split('.').length === 2) ?? `THIS-HOST.${user}`}\`, here \`rex_key --distribute --token TOKEN\``;
    }
    if (known.length > 1) {
      return `${known.length} keys are known for ${name} (${known.map((k) => k.id).join(', ')}), and a peer is pinned to exactly one; remove the stale one from ${store.knownDir}`;
    }
    const k = known[0]!;
    if (cert.id !== k.id) return `host ${host} presented key ${cert.id} (${cert.name}), but the key enrolled for ${name} is ${k.id}; NOT trusting it`;
    if (cert.name !== name) return `key ${cert.id} is enrolled as ${k.name}, but claims to be ${cert.name}`;
    return undefined;
  };
}
