/**
 * The cluster members this rexd learnt by joining (docs/KEYS.md "Joining a
 * cluster", docs/CONFIG.md `servers`): the `hosts` file in the state
 * directory, one member a line,
 *
 *   NAME@ADDRESS:PORT identity=HOST.USER id=KEY-ID via=HOW added=ISO
 *
 * written by `rex_key --join` on the joining host and by rexd on the members
 * (JOIN, INTRODUCE). rexd's peers are rex.rc `servers` plus these entries; a
 * name in both is taken from rex.rc (the administrator's word wins). rexd
 * re-reads the file when it changes, and on SIGHUP.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerEntry } from '../config/index.js';
import { parseServerEntry } from '../config/values.js';
import { writeFileAtomic } from './store.js';
import { withLock } from './tokens.js';

/** One member in the hosts file. */
export interface MemberEntry extends ServerEntry {
  /** The identity its rexd is trusted as (a peer identity). */
  identity?: string;
  id?: string;
  /** How it was learnt: `join` (it joined here, or we joined through it), `introduced-by=NAME`. */
  via?: string;
  added?: string;
}

const HEADER = '# REX cluster members learnt by rex_key --join (docs/KEYS.md "Joining a cluster"); rex.rc servers wins for a name in both.\n';

/** The hosts file of one state directory. */
export class HostsFile {
  readonly file: string;

  constructor(stateDir: string) {
    this.file = join(stateDir, 'hosts');
  }

  /** The members; a line that does not parse is skipped and named in `problems`. */
  read(problems: string[] = []): MemberEntry[] {
    if (!existsSync(this.file)) return [];
    const out: MemberEntry[] = [];
    for (const [i, raw] of readFileSync(this.file, 'utf8').split('\n').entries()) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const [first, ...rest] = line.split(/\s+/);
      const e = parseServerEntry(first!);
      if (typeof e === 'string' || !first!.includes('@')) {
        problems.push(`${this.file}:${i + 1}: ${typeof e === 'string' ? e : 'expected NAME@ADDRESS:PORT'}`);
        continue;
      }
      const m: MemberEntry = { ...e };
      for (const w of rest) {
        const eq = w.indexOf('=');
        const k = w.slice(0, eq);
        const v = w.slice(eq + 1);
        if (eq > 0 && (k === 'identity' || k === 'id' || k === 'via' || k === 'added')) m[k] = v;
      }
      if (!out.some((x) => x.name === m.name)) out.push(m);
    }
    return out;
  }

  /** Removes the member of this name; true when there was one. */
  remove(name: string): boolean {
    return withLock(this.file, () => {
      const all = this.read();
      const keep = all.filter((x) => x.name !== name);
      if (keep.length === all.length) return false;
      this.write(keep);
      return true;
    });
  }

  private write(all: MemberEntry[]): void {
    const host = (a: string) => (a.includes(':') ? `[${a}]` : a);
    const lines = all.map((m) => [`${m.name}@${host(m.address)}:${m.port}`, ...(['identity', 'id', 'via', 'added'] as const).filter((k) => m[k]).map((k) => `${k}=${String(m[k]).replace(/\s+/g, '_')}`)].join(' '));
    writeFileAtomic(this.file, `${HEADER}${lines.join('\n')}${lines.length ? '\n' : ''}`, 0o600);
  }

  /** Adds or updates the member of this name (its address, identity and key). */
  upsert(e: MemberEntry): void {
    withLock(this.file, () => {
      const all = this.read().filter((x) => x.name !== e.name);
      all.push({ ...e, added: e.added ?? new Date().toISOString() });
      this.write(all);
    });
  }
}

/** rex.rc `servers` and the joined members: a name in both keeps its rex.rc entry. */
export function mergeServers(servers: readonly ServerEntry[], members: readonly MemberEntry[]): ServerEntry[] {
  const names = new Set(servers.map((s) => s.name));
  return [...servers, ...members.filter((m) => !names.has(m.name)).map((m) => ({ name: m.name, address: m.address, port: m.port }))];
}
