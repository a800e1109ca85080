/**
 * What `rex_key --grant`, `--revoke` and `--invite` do to the files, as
 * functions the CLI and the test fixtures share. Grants edits keep every other
 * line of the file (comments and hand edits) as it was, and refuse to edit a
 * file with a syntax error rather than drop what they cannot read.
 */
import { existsSync, readFileSync } from 'node:fs';
import { ErrorCodes, RexError } from '../util/errors.js';
import { formatGrant, formatRevocation, GRANTS_HEADER, parseGrants, type Grant } from './grants.js';
import { isIdPrefix, parseId } from './id.js';
import { HostsFile } from './hosts.js';
import { isHostKeyName, parseIdentityName } from './identity.js';
import { writeFileAtomic, type KeyStore, type KnownKey } from './store.js';
import { TokenStore, type TokenBinding } from './tokens.js';
import { quote } from '../util/quote.js';

/** What NAME-or-ID stands for: a name, and the known keys it matches. */
export interface Subject {
  /** HOST.USER when given as a name (a HOST.USER.PROGRAM name puts PROGRAM in `program`). */
  name?: string;
  program?: string;
  /** Set when given as an ID (or an unambiguous ID prefix). */
  id?: string;
  keys: KnownKey[];
}

/** Resolves NAME-or-ID against the trust store; throws USAGE for input that is neither. */
export function resolveSubject(store: KeyStore, nameOrId: string): Subject {
  if (nameOrId.includes('.')) {
    const p = parseIdentityName(nameOrId);
    if (typeof p === 'string') throw new RexError(ErrorCodes.USAGE, p);
    const name = `${p.host}.${p.user}`;
    return { name, ...(p.program ? { program: p.program } : {}), keys: store.known().filter((k) => k.name === nameOrId || k.name === name) };
  }
  const full = parseId(nameOrId);
  if (full) return { id: full, keys: store.resolve(full) };
  if (isIdPrefix(nameOrId)) {
    const keys = store.resolve(nameOrId);
    if (keys.length === 1) return { id: keys[0]!.id, keys };
    throw new RexError(ErrorCodes.KEY_UNKNOWN, keys.length === 0 ? `no known key has an ID starting with ${nameOrId}` : `${nameOrId} matches ${keys.length} keys: ${keys.map((k) => `${k.id} (${k.name})`).join(', ')}`, {
      hint: 'give more of the ID, or the name; `rex_key --list` shows both',
    });
  }
  throw new RexError(ErrorCodes.USAGE, `"${quote(nameOrId)}" is neither an identity name (HOST.USER[.PROGRAM]) nor a key ID`);
}

function readLines(file: string): string[] {
  if (!existsSync(file)) return GRANTS_HEADER.split('\n').slice(0, -1);
  const text = readFileSync(file, 'utf8');
  parseGrants(text, file); // refuse to edit a file we cannot read
  return text.replace(/\n$/, '').split('\n');
}

function lineOf(line: string, file: string): { grant?: Grant; revokeId?: string } {
  const g = parseGrants(line, file);
  return { ...(g.grants[0] ? { grant: g.grants[0] } : {}), ...(g.revoked[0] ? { revokeId: g.revoked[0].id } : {}) };
}

/** Adds a grant (replacing one for the same subject, program and origin) and lifts revocations of its keys. */
export function addGrant(store: KeyStore, nameOrId: string, opts: { program?: string; functions?: string[]; deny?: string[]; from?: string; expires?: number } = {}): { line: string; subject: Subject } {
  const subject = resolveSubject(store, nameOrId);
  const program = opts.program ?? subject.program;
  if ((opts.functions || opts.deny) && !program) {
    throw new RexError(ErrorCodes.USAGE, `--${opts.functions ? 'functions' : 'deny'} needs --program (or a HOST.USER.PROGRAM name): functions belong to a program`);
  }
  const g: Omit<Grant, 'line'> = {
    ...(subject.name ? { name: subject.name } : {}),
    ...(subject.id ? { id: subject.id } : {}),
    ...(program ? { program } : {}),
    ...(opts.functions ? { functions: opts.functions } : {}),
    ...(opts.deny ? { deny: opts.deny } : {}),
    ...(opts.from ? { from: opts.from } : {}),
    ...(opts.expires !== undefined ? { expires: opts.expires } : {}),
  };
  const text = formatGrant(g);
  try {
    parseGrants(text, 'new grant'); // validates program=, functions=, deny= and from=
  } catch (e) {
    throw new RexError(ErrorCodes.USAGE, `cannot grant: ${(e as Error).message.replace(/; this file grants nothing until it is fixed$/, '')}`);
  }
  const ids = new Set(subject.keys.map((k) => k.id));
  if (subject.id) ids.add(subject.id);
  const lines = readLines(store.grantsFile).filter((l) => {
    const x = lineOf(l, store.grantsFile);
    if (x.revokeId && ids.has(x.revokeId)) return false;
    if (x.grant && x.grant.name === g.name && x.grant.id === g.id && x.grant.program === g.program && x.grant.from === g.from) return false;
    return true;
  });
  lines.push(text);
  store.ensureDirs();
  writeFileAtomic(store.grantsFile, `${lines.join('\n')}\n`, 0o600);
  return { line: text, subject };
}

/**
 * Removes the grants of NAME-or-ID (only those for `program` when given). Without
 * a program it also adds a `revoke` line for each of its known keys, so that the
 * keys stay refused even if another grant would match them.
 */
export function revokeGrants(store: KeyStore, nameOrId: string, opts: { program?: string; now?: number } = {}): { removed: string[]; revoked: string[]; subject: Subject } {
  const subject = resolveSubject(store, nameOrId);
  const program = opts.program ?? subject.program;
  const removed: string[] = [];
  const ids = new Set(subject.keys.map((k) => k.id));
  if (subject.id) ids.add(subject.id);
  const lines = readLines(store.grantsFile).filter((l) => {
    const x = lineOf(l, store.grantsFile);
    if (!x.grant) return true;
    const same = (subject.name !== undefined && x.grant.name === subject.name) || (x.grant.id !== undefined && ids.has(x.grant.id));
    if (same && (program === undefined || x.grant.program === program)) {
      removed.push(l.trim());
      return false;
    }
    return true;
  });
  const revoked: string[] = [];
  if (program === undefined) {
    const at = new Date(opts.now ?? Date.now()).toISOString();
    for (const id of ids) {
      const name = subject.keys.find((k) => k.id === id)?.name;
      const line = formatRevocation({ id, ...(name ? { name } : {}), at });
      lines.push(line);
      revoked.push(line);
    }
  }
  store.ensureDirs();
  writeFileAtomic(store.grantsFile, `${lines.join('\n')}\n`, 0o600);
  return { removed, revoked, subject };
}

/**
 * Revokes a host key in a root installation's host controller store (`rex_key --revoke HOST` as root, docs/ROOT.md
 * section 7): a `revoke` line for each of its keys (so that no member's INTRODUCE brings it back), the keys removed
 * from `known/` (the monitor stops trusting them for new connections and ends the open ones), and the host removed
 * from the members.
 */
export function revokeHost(store: KeyStore, hostOrId: string, now = Date.now()): { revoked: string[]; removedKeys: string[]; member: boolean } {
  const keys = isHostKeyName(hostOrId) ? store.known().filter((k) => k.name === hostOrId) : resolveSubject(store, hostOrId).keys.filter((k) => isHostKeyName(k.name));
  if (keys.length === 0) throw new RexError(ErrorCodes.KEY_UNKNOWN, `no host key of ${hostOrId} is known here`, { hint: 'rex_key --list (as root) shows the host keys this host knows' });
  const at = new Date(now).toISOString();
  const lines = readLines(store.grantsFile);
  const revoked: string[] = [];
  for (const k of keys) {
    if (isRevoked(store, k.id)) continue;
    const line = formatRevocation({ id: k.id, name: k.name, at });
    lines.push(line);
    revoked.push(line);
  }
  store.ensureDirs();
  writeFileAtomic(store.grantsFile, `${lines.join('\n')}\n`, 0o600);
  for (const k of keys) store.removeKnown(k.id);
  const member = new HostsFile(store.stateDir).remove(keys[0]!.name);
  return { revoked, removedKeys: keys.map((k) => `${k.name} ${k.id}`), member };
}

/**
 * Issues an enrollment token for this host's identity `own` (`rex_key --invite
 * --for NAME`) that enrolls only `binding.subject` (and only key
 * `binding.keyId`, if given). Only with `binding.replace` may it replace a key
 * already known under that name.
 */
export function invite(store: KeyStore, own: { name: string; id: string }, ttlMs: number, binding: TokenBinding): { token: string; expires: Date } {
  if (binding.subject === own.name) {
    throw new RexError(ErrorCodes.USAGE, `--for ${binding.subject} is this host's own identity; a token enrolls another identity's key`, { hint: 'name the identity that will present the token: HOST.USER or HOST.USER.PROGRAM' });
  }
  store.ensureDirs();
  return new TokenStore(store.tokensFile).issue(own.name, own.id, ttlMs, binding);
}

/**
 * The grant of a peer (a host's rexd) that joined the cluster: `grant NAME`,
 * added unless a grant for NAME without program or origin limits is there
 * already. Unlike {@link addGrant} it never lifts a `revoke` line: an
 * introduction by another member must not undo the owner's revocation.
 * Returns the line added, or undefined when nothing was added.
 */
export function addPeerGrant(store: KeyStore, name: string): string | undefined {
  // A host key needs no grant: a host controller trusts the host keys it knows (docs/ROOT.md section 7).
  if (isHostKeyName(name)) return undefined;
  const lines = readLines(store.grantsFile);
  const has = lines.some((l) => {
    const g = lineOf(l, store.grantsFile).grant;
    return g !== undefined && g.name === name && g.id === undefined && g.program === undefined && g.from === undefined && g.expires === undefined;
  });
  if (has) return undefined;
  const text = formatGrant({ name });
  lines.push(text);
  store.ensureDirs();
  writeFileAtomic(store.grantsFile, `${lines.join('\n')}\n`, 0o600);
  return text;
}

/** True when a `revoke` line of the grants file names key `id`. */
export function isRevoked(store: KeyStore, id: string): boolean {
  if (!existsSync(store.grantsFile)) return false;
  try {
    return parseGrants(readFileSync(store.grantsFile, 'utf8'), store.grantsFile).revoked.some((r) => r.id === id);
  } catch {
    return true; // a grants file with an error grants nothing; do not add to it
  }
}
