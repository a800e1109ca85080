/**
 * Identity names: HOST.USER[.PROGRAM], as in the seed. HOST is a REX host name
 * (rex.rc `host-name`), USER the login name of the user the REX instance runs
 * for, PROGRAM an optional program name. '.' separates the parts and so may not
 * appear inside them.
 */
import { userInfo } from 'node:os';
import { ErrorCodes, RexError } from '../util/errors.js';
import { quote } from '../util/quote.js';

/** A parsed identity name. */
export interface IdentityName {
  host: string;
  user: string;
  program?: string;
}

const PART_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;

/** True when `s` is a valid HOST, USER or PROGRAM part. */
export function isNamePart(s: string): boolean {
  return PART_RE.test(s);
}

/** Parses HOST.USER[.PROGRAM]; returns a message naming what is wrong, or the parts. */
export function parseIdentityName(s: string): IdentityName | string {
  const parts = s.split('.');
  if (parts.length < 2 || parts.length > 3) return `"${quote(s)}" is not an identity name; expected HOST.USER or HOST.USER.PROGRAM`;
  const [host, user, program] = parts as [string, string, string | undefined];
  const labels = ['HOST', 'USER', 'PROGRAM'];
  for (const [i, p] of parts.entries()) {
    if (!isNamePart(p)) return `"${quote(s)}": ${labels[i]} part "${quote(p)}" must be 1-63 letters, digits, '_' or '-', not starting with '-'`;
  }
  return program === undefined ? { host, user } : { host, user, program };
}

/**
 * A host key's name (the root installation's rexd, docs/ROOT.md): HOST alone, one name part.
 * Host keys vouch for hosts (rexd to rexd) and never stand for a user.
 */
export function isHostKeyName(s: string): boolean {
  return !s.includes('.') && isNamePart(s);
}

/** Parses an identity name or throws USAGE with the reason. */
export function identityName(s: string): IdentityName {
  const r = parseIdentityName(s);
  if (typeof r === 'string') throw new RexError(ErrorCodes.USAGE, r);
  return r;
}

/** HOST.USER[.PROGRAM] as text. */
export function formatName(n: IdentityName): string {
  return n.program === undefined ? `${n.host}.${n.user}` : `${n.host}.${n.user}.${n.program}`;
}

/** HOST.USER of a name (the host-and-user identity a program identity belongs to). */
export function baseName(n: IdentityName): string {
  return `${n.host}.${n.user}`;
}

/** The login name of the user this process runs as. */
export function currentUser(): string {
  const u = process.env.REX_USER || userInfo().username;
  // Login names may hold characters REX names cannot ('.', '@' in directory users); map them to '_'.
  return u.replace(/[^A-Za-z0-9_-]/g, '_').replace(/^-/, '_').slice(0, 63) || 'user';
}

/** This host-and-user's identity name, optionally for a program. */
export function localName(host: string, program?: string, user = currentUser()): string {
  return program === undefined ? `${host}.${user}` : `${host}.${user}.${program}`;
}

/**
 * The name under which this rexd (`self`) trusts the rexd of `host`: a peer.
 * In the per-user installation every rexd of a cluster runs for one user, so
 * it is HOST.USER with this rexd's USER. In a root installation the host
 * controller's identity is the host key HOST, and its peers are the other
 * hosts' keys: HOST (docs/ROOT.md section 7).
 */
export function peerIdentity(host: string, self: string): string {
  if (isHostKeyName(self)) return host;
  const me = parseIdentityName(self);
  if (typeof me === 'string') throw new RexError(ErrorCodes.USAGE, me);
  return `${host}.${me.user}`;
}

/** True when `name` is the identity of another host's rexd for this rexd `self` (never a program key, never another user). */
export function isPeerIdentity(name: string, self: string): boolean {
  if (isHostKeyName(self)) return isHostKeyName(name) && name !== self;
  const p = parseIdentityName(name);
  const me = parseIdentityName(self);
  if (typeof p === 'string' || typeof me === 'string') return false;
  return p.program === undefined && me.program === undefined && p.user === me.user && p.host !== me.host;
}

/** The HOST of a rexd's identity: a host key's name is the host, HOST.USER[.PROGRAM] names it first; undefined for a malformed name. */
export function hostOfIdentity(name: string): string | undefined {
  if (isHostKeyName(name)) return name;
  const p = parseIdentityName(name);
  return typeof p === 'string' ? undefined : p.host;
}
