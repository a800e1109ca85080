/**
 * Local accounts for the root installation (docs/ROOT.md): who a uid is, whether a name is an
 * account, and which local account a remote HOST.USER acts as (rex.rc user-map). Accounts are
 * read through the system's name service (`getent passwd`, so LDAP or SSSD users count as they
 * do for login), cached for a short while.
 */
import { execFile, execFileSync } from 'node:child_process';
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

/** Whether `who` can name an account at all (what getent is asked). */
function askable(who: string | number): boolean {
  return typeof who === 'string' ? /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(who) : Number.isInteger(who) && who >= 0;
}

/** A passwd line as an account, or undefined. */
function parsePasswd(text: string): Account | undefined {
  const f = (text.split('\n')[0] ?? '').split(':');
  return f.length >= 7 && /^\d+$/.test(f[2]!) && /^\d+$/.test(f[3]!) ? { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]!, shell: f[6]! } : undefined;
}

function cached(key: string): { account: Account | undefined } | undefined {
  const hit = cache.get(key);
  return hit && Date.now() - hit.at < CACHE_MS ? hit : undefined;
}

/** The account of a login name or a uid, or undefined when there is none (blocks: for commands, not the monitor). */
export function lookupAccount(who: string | number): Account | undefined {
  const key = String(who);
  const hit = cached(key);
  if (hit) return hit.account;
  let account: Account | undefined;
  if (askable(who)) {
    try {
      account = parsePasswd(execFileSync('getent', ['passwd', key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }));
    } catch {
      account = undefined; // getent exits 2 for an unknown key
    }
  }
  cache.set(key, { at: Date.now(), account });
  return account;
}

const inFlight = new Map<string, Promise<Account | undefined>>();

/**
 * {@link lookupAccount} without blocking: the monitor serves every connection from one event loop, and a slow
 * name service (LDAP, SSSD) must not stall the others. One getent per key at a time; the same cache.
 */
export function lookupAccountAsync(who: string | number): Promise<Account | undefined> {
  const key = String(who);
  const hit = cached(key);
  if (hit) return Promise.resolve(hit.account);
  if (!askable(who)) return Promise.resolve(undefined);
  let p = inFlight.get(key);
  if (!p) {
    p = new Promise<Account | undefined>((resolve) => {
      execFile('getent', ['passwd', key], { encoding: 'utf8', timeout: 5000 }, (err, stdout) => {
        const account = err ? undefined : parsePasswd(stdout); // getent exits 2 for an unknown key
        cache.set(key, { at: Date.now(), account });
        inFlight.delete(key);
        resolve(account);
      });
    });
    inFlight.set(key, p);
  }
  return p;
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
