/**
 * Local accounts for the root installation (docs/ROOT.md): who a uid is, whether a name is an
 * account, and which local account a remote HOST.USER acts as (rex.rc user-map). Accounts are
 * read through the system's name service (`getent passwd`, so LDAP or SSSD users count as they
 * do for login), cached for a short while.
 */
import { execFileSync } from 'node:child_process';
import type { UserMapEntry } from '../config/values.js';

/** A local account, as passwd has it. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

const CACHE_MS = 30_000;
const cache = new Map<string, { at: number; account: Account | undefined }>();

/** The account of a login name or a uid, or undefined when there is none. */
export function lookupAccount(who: string | number): Account | undefined {
  const key = String(who);
  const hit = cache.get(key);
  if (hit && Date.now() - hit.at < CACHE_MS) return hit.account;
  let account: Account | undefined;
  if (typeof who === 'string' ? /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(who) : Number.isInteger(who) && who >= 0) {
    try {
      const line = execFileSync('getent', ['passwd', key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split('\n')[0] ?? '';
      const f = line.split(':');
      if (f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!)) account = { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell: f[6]! };
    } catch {
      account = undefined; // getent exits 2 for an unknown key
    }
  }
  cache.set(key, { at: Date.now(), account });
  return account;
}

/** What user-map says of a remote HOST.USER: the local name it acts as, or a refusal. */
export type Mapped = { local: string; via: string } | { refused: string };

/** Applies rex.rc user-map: the first matching entry wins; no match keeps the user's name. */
export function mapRemoteUser(map: readonly UserMapEntry[], host: string, user: string): Mapped {
  for (const e of map) {
    if ((e.host === '*' || e.host === host) && (e.user === '*' || e.user === user)) {
      const via = `user-map ${e.host}.${e.user} = ${e.local}`;
      return e.local === '-' ? { refused: `${host}.${user} is refused by rex.rc ${via}` } : { local: e.local, via };
    }
  }
  return { local: user, via: 'same name' };
}
