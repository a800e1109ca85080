/**
 * One-time enrollment tokens (`rex_key --invite`). A token is
 *
 *   rex1:SERVER-NAME:SERVER-ID:SECRET
 *
 * SERVER-NAME is the inviting identity (HOST.USER), SERVER-ID its key ID without
 * dashes (32 base32 characters), SECRET 160 random bits (32 base32 characters).
 * The client pins the server's key to SERVER-ID before it sends anything, so it
 * never trusts on first use; it then sends SECRET inside that TLS connection
 * with an HMAC binding it to its own key. The server keeps only SHA-256(SECRET),
 * an expiry, the subject the token was issued for (one HOST.USER[.PROGRAM],
 * optionally one key ID, and whether it may replace that name's known key), and
 * whether the token was used. A `join=yes` token (`rex_key --invite --join HOST`)
 * is spent only by JOIN (the host joins the cluster: docs/KEYS.md "Joining a
 * cluster"), any other only by ENROLL:
 *
 *   token HASH expires=ISO created=ISO for=NAME [key=ID] [replace=yes] [join=yes]
 *   used HASH at=ISO by=ID
 *
 * Lines are appended; issuing a token rewrites the file without the tokens that
 * are used or expired, so it does not grow forever. Both happen under a lock
 * file (tokens.lock) shared by rex_key and rexd.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, openSync, readFileSync, statSync, unlinkSync } from 'node:fs';
import { ErrorCodes, RexError } from '../util/errors.js';
import { base32, groupId, parseId } from './id.js';
import { isHostKeyName, parseIdentityName } from './identity.js';
import { writeFileAtomic } from './store.js';

/** A parsed token. */
export interface Token {
  server: string;
  serverId: string;
  secret: string;
}

const TOKEN_RE = /^rex1:([^:\s]{1,200}):([A-Z2-7]{32}):([A-Z2-7]{32})$/;

/** Reads a token as pasted (surrounding white space ignored); throws TOKEN_INVALID saying which part is wrong. */
export function parseToken(text: string): Token {
  const t = text.trim();
  const bad = (why: string) =>
    new RexError(ErrorCodes.TOKEN_INVALID, `not an enrollment token: ${why}`, { hint: 'copy the whole line `rex_key --invite` printed on the server, e.g. rex1:beta.alice:ABCD...:WXYZ...' });
  if (t.length > 400) throw bad(`${t.length} characters, a token has fewer than 300`);
  if (!t.startsWith('rex1:')) throw bad('it does not start with "rex1:"');
  const parts = t.split(':');
  if (parts.length !== 4) throw bad(`expected 4 parts separated by ":", found ${parts.length}`);
  const name = parts[1]!;
  // HOST.USER: a user's rexd (the per-user installation); HOST: a root installation's host controller (join tokens).
  const p = isHostKeyName(name) ? undefined : parseIdentityName(name);
  if (typeof p === 'string' || p?.program !== undefined) throw bad(`the server part "${name.slice(0, 60)}" is neither HOST.USER nor HOST`);
  if (!/^[A-Z2-7]{32}$/.test(parts[2]!) || !parseId(parts[2]!)) throw bad('the server key ID (third part) must be 32 characters A-Z and 2-7');
  if (!/^[A-Z2-7]{32}$/.test(parts[3]!)) throw bad('the secret (fourth part) must be 32 characters A-Z and 2-7');
  if (!TOKEN_RE.test(t)) throw bad('unexpected characters'); // unreachable while the checks above mirror TOKEN_RE
  return { server: name, serverId: groupId(parts[2]!), secret: parts[3]! };
}

/** The text form of a token. */
export function formatToken(t: Token): string {
  return `rex1:${t.server}:${t.serverId.replace(/-/g, '')}:${t.secret}`;
}

/** SHA-256 of the secret, hex: what the server stores. */
export function secretHash(secret: string): string {
  return createHash('sha256').update(`rex-token-v1:${secret}`).digest('hex');
}

/** The client's proof that it binds the token to its key: HMAC-SHA256(secret, client SPKI ID and server ID). */
export function enrollProof(secret: string, clientId: string, serverId: string): Buffer {
  return createHmac('sha256', secret).update(`rex-enroll-v1\n${clientId}\n${serverId}`).digest();
}

/** Constant-time check of a proof. */
export function proofMatches(secret: string, clientId: string, serverId: string, proof: Uint8Array): boolean {
  const want = enrollProof(secret, clientId, serverId);
  return proof.length === want.length && timingSafeEqual(want, Buffer.from(proof));
}

/** Whom a token may enroll: chosen by the server's owner (`rex_key --invite --for NAME [--key ID] [--replace]`). */
export interface TokenBinding {
  /** The one identity name (HOST.USER or HOST.USER.PROGRAM) the token enrolls. */
  subject: string;
  /** Only this key (an ID), if given. */
  keyId?: string;
  /** The token may replace a key already known under `subject` (the admin's deliberate replacement). */
  replace?: boolean;
  /** The token admits `subject`'s rexd to the cluster (JOIN): it is then a peer of every member, not just known here. */
  join?: boolean;
}

/** The stored state of one token. */
export interface TokenRecord {
  hash: string;
  expires: number;
  created: string;
  /** Undefined for a token written before tokens were bound to a subject: such a token enrolls nobody. */
  binding?: TokenBinding;
  used?: { at: string; by: string };
}

const LOCK_STALE_MS = 10_000;
const LOCK_WAIT_MS = 5_000;

/**
 * Runs `fn` holding `FILE.lock` (created O_EXCL): rex_key's rewrite of the
 * tokens file must not lose a `used` line rexd appends at the same moment.
 * A lock older than 10 s is left by a crashed process and is broken.
 */
export function withLock<T>(file: string, fn: () => T): T {
  const lock = `${file}.lock`;
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let age = 0;
      try {
        age = Date.now() - statSync(lock).mtimeMs;
      } catch {
        continue; // released meanwhile
      }
      if (age > LOCK_STALE_MS) {
        try {
          unlinkSync(lock);
        } catch {
          /* someone else broke it */
        }
        continue;
      }
      if (Date.now() > deadline) {
        throw new RexError(ErrorCodes.TOKEN_INVALID, `${lock} has been held for ${Math.round(age / 1000)} s by another rex_key or rexd`, { where: lock, hint: 'try again; if no rex_key is running, remove the lock file' });
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    }
  }
  try {
    return fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {
      /* already gone */
    }
  }
}

function tokenLine(r: TokenRecord): string {
  const b = r.binding;
  const bound = b ? ` for=${b.subject}${b.keyId ? ` key=${b.keyId}` : ''}${b.replace ? ' replace=yes' : ''}${b.join ? ' join=yes' : ''}` : '';
  return `token ${r.hash} expires=${new Date(r.expires).toISOString()} created=${r.created}${bound}\n`;
}

/** The tokens file of a server: issue, and consume once. */
export class TokenStore {
  constructor(readonly file: string) {}

  /**
   * Issues a token for `server` (HOST.USER with key `serverId`) valid for
   * `ttlMs`, that enrolls only `binding.subject` (and `binding.keyId`, if
   * given). Drops used and expired tokens from the file first.
   */
  issue(server: string, serverId: string, ttlMs: number, binding: TokenBinding, now = Date.now()): { token: string; expires: Date } {
    // A join token of a root installation is for a host key (HOST); every other token for HOST.USER[.PROGRAM].
    const subject = binding.join && isHostKeyName(binding.subject) ? undefined : parseIdentityName(binding.subject);
    if (typeof subject === 'string') throw new RexError(ErrorCodes.USAGE, `a token is issued for one identity: ${subject}`);
    const secret = base32(randomBytes(20));
    const expires = new Date(now + ttlMs);
    const rec: TokenRecord = { hash: secretHash(secret), expires: expires.getTime(), created: new Date(now).toISOString(), binding };
    withLock(this.file, () => {
      const keep = [...this.records().values()].filter((r) => !r.used && r.expires > now);
      writeFileAtomic(this.file, [...keep, rec].map(tokenLine).join(''), 0o600);
    });
    return { token: formatToken({ server, serverId, secret }), expires };
  }

  private records(): Map<string, TokenRecord> {
    const out = new Map<string, TokenRecord>();
    if (!existsSync(this.file)) return out;
    for (const line of readFileSync(this.file, 'utf8').split('\n')) {
      const w = line.trim().split(/\s+/);
      const opt = (k: string) => w.find((x) => x.startsWith(`${k}=`))?.slice(k.length + 1);
      if (w[0] === 'token' && w[1]) {
        const exp = Date.parse(opt('expires') ?? '');
        const subject = opt('for');
        const keyId = opt('key');
        const binding: TokenBinding | undefined = subject ? { subject, ...(keyId ? { keyId } : {}), ...(opt('replace') === 'yes' ? { replace: true } : {}), ...(opt('join') === 'yes' ? { join: true } : {}) } : undefined;
        if (Number.isFinite(exp)) out.set(w[1], { hash: w[1], expires: exp, created: opt('created') ?? '', ...(binding ? { binding } : {}) });
      } else if (w[0] === 'used' && w[1]) {
        const r = out.get(w[1]);
        if (r) r.used = { at: opt('at') ?? '?', by: opt('by') ?? '?' };
      }
    }
    return out;
  }

  /**
   * The record of the token with this secret if it can still be spent; throws
   * TOKEN_INVALID, TOKEN_EXPIRED or TOKEN_USED (a replay) otherwise. Spends nothing.
   */
  check(secret: string, now = Date.now()): TokenRecord & { binding: TokenBinding } {
    const r = this.records().get(secretHash(secret));
    if (!r) {
      throw new RexError(ErrorCodes.TOKEN_INVALID, 'this host never issued that enrollment token', { hint: 'ask the owner for a new one (rex_key --invite on this host)' });
    }
    if (r.used) {
      throw new RexError(ErrorCodes.TOKEN_USED, `the enrollment token was already used at ${r.used.at} (by key ${r.used.by}); tokens are single use`, {
        hint: 'ask the owner for a new one (rex_key --invite)',
      });
    }
    if (r.expires <= now) {
      throw new RexError(ErrorCodes.TOKEN_EXPIRED, `the enrollment token expired at ${new Date(r.expires).toISOString()}`, { hint: 'ask the owner for a new one (rex_key --invite --for NAME --expires 1h)' });
    }
    if (!r.binding) {
      throw new RexError(ErrorCodes.TOKEN_INVALID, 'the enrollment token was issued before tokens named the identity they enroll, so it enrolls nobody', { hint: 'ask the owner for a new one (rex_key --invite --for NAME)' });
    }
    return r as TokenRecord & { binding: TokenBinding };
  }

  /**
   * Marks the token with this secret used by key `by`; throws as {@link check}
   * does (a token spent meanwhile is a replay).
   */
  consume(secret: string, by: string, now = Date.now()): TokenRecord & { binding: TokenBinding } {
    return withLock(this.file, () => {
      const r = this.check(secret, now);
      appendFileSync(this.file, `used ${r.hash} at=${new Date(now).toISOString()} by=${by}\n`, { mode: 0o600 });
      return r;
    });
  }

  /** Tokens not yet used nor expired. */
  pending(now = Date.now()): { hash: string; expires: Date; binding?: TokenBinding }[] {
    return [...this.records().values()].filter((r) => !r.used && r.expires > now).map((r) => ({ hash: r.hash, expires: new Date(r.expires), ...(r.binding ? { binding: r.binding } : {}) }));
  }
}
