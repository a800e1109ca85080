/**
 * The client side of key distribution (`rex_key --distribute`): connect to a
 * host's rexd over TLS, pin its key (to the ID in an enrollment token, or to
 * the key enrolled earlier), and send ENROLL. A host that cannot be reached is
 * remembered in distribute.pending and tried again on the next run.
 */
import { existsSync, readFileSync } from 'node:fs';
import type { ServerEntry } from '../config/index.js';
import { Connection } from '../protocol/connection.js';
import type { MessageOf } from '../protocol/messages.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { parseIdentityName } from './identity.js';
import { writeFileAtomic, type KeyStore, type OwnIdentity } from './store.js';
import { connectPinned } from './tls.js';
import { enrollProof, type Token } from './tokens.js';

/** Software string of rex_key in HELLO. */
export const REX_KEY_SOFTWARE = 'rex_key/0.2.0';

/**
 * Why the server's certificate `c` is not the one the token pins (its key ID
 * and name), or undefined: checked before a byte of REX is sent (`doing`:
 * what is then not done, e.g. "enrolling").
 */
export function tokenPinRefusal(token: Token, c: { id: string; name: string }, doing: string): string | undefined {
  if (c.id !== token.serverId) return `presented key ${c.id} (${c.name}), but the token was issued for key ${token.serverId} (${token.server}); NOT ${doing}`;
  if (c.name !== token.server) return `presented ${c.name}, but the token names ${token.server}`;
  return undefined;
}

/** What one host answered. */
export interface EnrollResult {
  host: string;
  /** The server identity and key ID that answered (pinned). */
  server: string;
  serverId: string;
  /** Our identity and key as the server stored it. */
  name: string;
  id: string;
  /** True when the server already knew this key. */
  already: boolean;
}

/**
 * Enrolls `own` with the rexd at `entry`. With a token, the server's key must
 * have the token's ID and the token is spent; without one, the server's key must
 * already be known here (a re-send, or a rotation when `next` is given).
 */
export async function enrollWith(opts: {
  entry: ServerEntry;
  own: OwnIdentity;
  store: KeyStore;
  token?: Token;
  /** A new key to announce, sent over a connection authenticated by `own` (rotation). */
  next?: OwnIdentity;
  timeoutMs?: number;
}): Promise<EnrollResult> {
  const { entry, own, store, token } = opts;
  const label = `${entry.name}@${entry.address}:${entry.port}`;
  const me = parseIdentityName(own.name);
  // The host's rexd is exactly HOST.USER of this user, pinned to the one key enrolled under that name.
  const peerName = `${entry.name}.${typeof me === 'string' ? 'USER' : me.user}`;
  const known = store.known().filter((k) => k.name === peerName);
  if (!token && known.length === 0) {
    throw new RexError(ErrorCodes.KEY_UNKNOWN, `${entry.name}: no key is known for this host, so it cannot be verified`, {
      hint: `ask its owner to run \`rex_key --invite --for ${own.name}\` on ${entry.name}, then run \`rex_key --distribute --token TOKEN\` here`,
    });
  }
  const { sock, cert } = await connectPinned({
    host: entry.address,
    port: entry.port,
    own,
    timeoutMs: opts.timeoutMs ?? 5000,
    label,
    pin: (c) => {
      if (!c) return 'presented no certificate';
      if (token) return tokenPinRefusal(token, c, 'enrolling');
      if (known.length > 1) return `${known.length} keys are known for ${peerName} (${known.map((x) => x.id).join(', ')}), and a host is pinned to exactly one; remove the stale one from ${store.knownDir}`;
      const k = known[0]!;
      if (k.id !== c.id) return `presented key ${c.id} (${c.name}), but the key enrolled for ${peerName} is ${k.id}`;
      if (k.name !== c.name) return `key ${c.id} is enrolled as ${k.name}, but claims ${c.name}`;
      return undefined;
    },
  });
  const conn = new Connection(sock, {
    initiator: true,
    local: { role: 'client', software: REX_KEY_SOFTWARE, ...(typeof me !== 'string' ? { host: me.host } : {}) },
    label,
    timeoutMs: opts.timeoutMs ?? 5000,
  });
  try {
    await conn.handshake();
    const req: Omit<MessageOf<'ENROLL'>, 'stream'> = { type: 'ENROLL' };
    if (token) {
      req.secret = token.secret;
      req.proof = enrollProof(token.secret, own.id, cert.id);
    }
    if (opts.next) req.cert = Buffer.from(opts.next.certPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const m = await conn.request(req);
    if (m.type !== 'ENROLLED') throw new RexError(ErrorCodes.ENROLL_FAILED, `${label} answered ENROLL with ${m.type}`);
    if (token) {
      // The token is its owner's word for the server's key: it supersedes an older key known under that name.
      const k = store.addKnown(cert.pem, 'invite', `${label} certificate`);
      for (const x of store.known()) if (x.name === k.name && x.id !== k.id) store.removeKnown(x.id);
    }
    return { host: entry.name, server: m.server, serverId: m.serverId, name: m.name, id: m.id, already: m.already ?? false };
  } finally {
    conn.close('enrollment done');
  }
}

/** One host `rex_key --distribute` could not reach. */
export interface PendingHost {
  host: string;
  since: string;
  reason: string;
}

/** Reads distribute.pending (`HOST SINCE REASON...` per line). */
export function readPending(store: KeyStore): PendingHost[] {
  if (!existsSync(store.pendingFile)) return [];
  const out: PendingHost[] = [];
  for (const line of readFileSync(store.pendingFile, 'utf8').split('\n')) {
    const m = /^(\S+)\s+(\S+)\s*(.*)$/.exec(line.trim());
    if (m && !line.startsWith('#')) out.push({ host: m[1]!, since: m[2]!, reason: m[3]! });
  }
  return out;
}

/** Rewrites distribute.pending. */
export function writePending(store: KeyStore, hosts: PendingHost[]): void {
  store.ensureDirs();
  const text = ['# Hosts `rex_key --distribute` could not reach; the next run tries them again.', ...hosts.map((h) => `${h.host} ${h.since} ${h.reason.replace(/\s+/g, ' ')}`), ''].join('\n');
  writeFileAtomic(store.pendingFile, text, 0o600);
}
