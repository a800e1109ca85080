/**
 * The grants file: who may use REX as this user on this host. A line-based,
 * hand-editable format (docs/KEYS.md "Grants file"):
 *
 *   # comment
 *   grant SUBJECT [id=ID] [program=P [functions=F,G | deny=H,I]] [from=WHERE] [expires=ISO-8601]
 *   revoke ID [name=NAME] [at=ISO-8601]
 *
 * SUBJECT is an identity name HOST.USER (or HOST.USER.PROGRAM, short for
 * program=PROGRAM) or an ID. `functions=` limits a program grant to calls of
 * the functions it names, `deny=` takes functions out of it. Grants add up: a
 * request is allowed when one grant allows it. `revoke` refuses a key whatever
 * grants say. A file
 * with any syntax error grants nothing: a typo must never widen access, and a
 * half-read file could.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { clientAllowed } from '../config/clients.js';
import { checkClientEntry } from '../config/keys.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { quote } from '../util/quote.js';
import { parseId } from './id.js';
import { isHostKeyName, parseIdentityName } from './identity.js';

/** One `grant` line. */
export interface Grant {
  /** HOST.USER, when the grant names one. */
  name?: string;
  /** Key ID, when the grant pins one. */
  id?: string;
  program?: string;
  /** `functions=`: the only functions of `program` this grant lets its subject call (and no EXEC). */
  functions?: string[];
  /** `deny=`: functions of `program` this grant does not let its subject call. */
  deny?: string[];
  /** A `clients`-style entry: host name, address, CIDR or `localnets`; or a cluster host name. */
  from?: string;
  /** Milliseconds since the epoch. */
  expires?: number;
  line: number;
}

/** One `revoke` line. */
export interface Revocation {
  id: string;
  name?: string;
  at?: string;
  line: number;
}

/** A parsed grants file. */
export interface Grants {
  grants: Grant[];
  revoked: Revocation[];
}

/** A grants file syntax error; `line` is 1-based. */
export class GrantsSyntaxError extends RexError {
  constructor(
    readonly file: string,
    readonly line: number,
    message: string,
  ) {
    super(ErrorCodes.GRANTS_SYNTAX, `${message}; this file grants nothing until it is fixed`, {
      where: `${file}:${line}`,
      hint: 'fix the line (see docs/KEYS.md, "Grants file") or rewrite it with rex_key --grant/--revoke',
    });
  }
}

const MAX_LINE = 4096;

/** A function name in `functions=` / `deny=`: a C identifier, as entry points are. */
const C_IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,254}$/;

function parseTime(v: string): number | undefined {
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})?)?$/.test(v)) return undefined;
  const t = Date.parse(v);
  return Number.isFinite(t) ? t : undefined;
}

/** Parses grants text; throws GrantsSyntaxError at the first bad line. */
export function parseGrants(text: string, file = 'grants'): Grants {
  const out: Grants = { grants: [], revoked: [] };
  const lines = text.split('\n');
  for (const [i, raw] of lines.entries()) {
    const n = i + 1;
    const fail = (msg: string): never => {
      throw new GrantsSyntaxError(file, n, msg);
    };
    if (raw.length > MAX_LINE) fail(`line is longer than ${MAX_LINE} characters`);
    const line = raw.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    if (/[\u0000-\u0008\u000b-\u001f\u007f]/.test(line)) fail('control character in line');
    const words = line.split(/[ \t]+/);
    const verb = words[0]!;
    if (verb !== 'grant' && verb !== 'revoke') fail(`unknown word "${clip(verb)}"; a line starts with "grant" or "revoke" (or "#" for a comment)`);
    const subject = words[1];
    if (subject === undefined || subject.includes('=')) fail(`"${verb}" needs a subject (${verb === 'grant' ? 'HOST.USER or an ID' : 'an ID'}) after it`);
    const opts = new Map<string, string>();
    for (const w of words.slice(2)) {
      const eq = w.indexOf('=');
      if (eq <= 0) fail(`"${clip(w)}" is not KEY=VALUE`);
      const k = w.slice(0, eq);
      const v = w.slice(eq + 1);
      if (v === '') fail(`${k}= has no value`);
      if (opts.has(k)) fail(`${k}= given twice`);
      opts.set(k, v);
    }
    const allowed = verb === 'grant' ? ['id', 'program', 'functions', 'deny', 'from', 'expires'] : ['name', 'at'];
    for (const k of opts.keys()) if (!allowed.includes(k)) fail(`unknown option "${clip(k)}=" for ${verb}; expected ${allowed.map((a) => `${a}=`).join(', ')}`);
    if (verb === 'revoke') {
      const id = parseId(subject!);
      if (!id) fail(`"${clip(subject!)}" is not a key ID (32 base32 characters, e.g. ABCD-EFGH-...)`);
      const r: Revocation = { id: id!, line: n };
      const name = opts.get('name');
      if (name !== undefined) {
        if (typeof parseIdentityName(name) === 'string' && !isHostKeyName(name)) fail(`name=${clip(name)} is not HOST.USER[.PROGRAM] nor a host key HOST`);
        r.name = name;
      }
      const at = opts.get('at');
      if (at !== undefined) {
        if (parseTime(at) === undefined) fail(`at=${clip(at)} is not an ISO-8601 time`);
        r.at = at;
      }
      out.revoked.push(r);
      continue;
    }
    const g: Grant = { line: n };
    if (subject!.includes('.')) {
      const p = parseIdentityName(subject!);
      if (typeof p === 'string') fail(p);
      const pp = p as Exclude<typeof p, string>;
      g.name = `${pp.host}.${pp.user}`;
      if (pp.program !== undefined) g.program = pp.program;
    } else {
      const id = parseId(subject!);
      if (!id) fail(`"${clip(subject!)}" is neither HOST.USER nor a key ID`);
      g.id = id!;
    }
    const id = opts.get('id');
    if (id !== undefined) {
      if (g.id !== undefined) fail('id= given with an ID subject');
      const pid = parseId(id);
      if (!pid) fail(`id=${clip(id)} is not a key ID`);
      g.id = pid!;
    }
    const program = opts.get('program');
    if (program !== undefined) {
      if (g.program !== undefined) fail('program= given with a HOST.USER.PROGRAM subject');
      if (!/^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/.test(program)) fail(`program=${clip(program)} is not a program name (letters, digits, '_', '-')`);
      g.program = program;
    }
    for (const k of ['functions', 'deny'] as const) {
      const v = opts.get(k);
      if (v === undefined) continue;
      if (g.program === undefined) fail(`${k}= needs program= (or a HOST.USER.PROGRAM subject): functions belong to a program`);
      const names = v.split(',');
      for (const f of names) {
        if (f === '') fail(`${k}=${clip(v)} has an empty function name (two commas in a row, or one at an end)`);
        if (!C_IDENTIFIER.test(f)) fail(`${k}=: "${clip(f)}" is not a function name (a C identifier: letters, digits and '_', not starting with a digit)`);
      }
      if (new Set(names).size !== names.length) fail(`${k}=${clip(v)} names a function twice`);
      g[k] = names;
    }
    if (g.functions && g.deny) fail('functions= and deny= on one grant: functions= already allows only the functions it names; give one of them');
    const from = opts.get('from');
    if (from !== undefined) {
      const err = checkClientEntry(from);
      if (err !== undefined) fail(`from=: ${err}`);
      g.from = from;
    }
    const expires = opts.get('expires');
    if (expires !== undefined) {
      const t = parseTime(expires);
      if (t === undefined) fail(`expires=${clip(expires)} is not an ISO-8601 time (e.g. 2030-01-31T12:00:00Z)`);
      g.expires = t!;
    }
    out.grants.push(g);
  }
  return out;
}

function clip(s: string): string {
  return quote(s);
}

/** One grants line as text (the inverse of parseGrants for a single entry). */
export function formatGrant(g: Omit<Grant, 'line'>): string {
  const subject = g.name ?? g.id!;
  const parts = ['grant', subject];
  if (g.name !== undefined && g.id !== undefined) parts.push(`id=${g.id}`);
  if (g.program !== undefined) parts.push(`program=${g.program}`);
  if (g.functions !== undefined) parts.push(`functions=${g.functions.join(',')}`);
  if (g.deny !== undefined) parts.push(`deny=${g.deny.join(',')}`);
  if (g.from !== undefined) parts.push(`from=${g.from}`);
  if (g.expires !== undefined) parts.push(`expires=${new Date(g.expires).toISOString()}`);
  return parts.join(' ');
}

/** One revoke line as text. */
export function formatRevocation(r: Omit<Revocation, 'line'>): string {
  return ['revoke', r.id, ...(r.name ? [`name=${r.name}`] : []), ...(r.at ? [`at=${r.at}`] : [])].join(' ');
}

/** The header a new grants file starts with. */
export const GRANTS_HEADER = [
  '# REX grants: who may use REX as this user on this host (docs/KEYS.md, "Grants file").',
  '#   grant HOST.USER|ID [id=ID] [program=P [functions=F,G | deny=H,I]] [from=HOST|ADDRESS|CIDR|localnets] [expires=ISO-8601]',
  '#   revoke ID [name=HOST.USER] [at=ISO-8601]',
  '# A syntax error anywhere makes the whole file grant nothing.',
  '',
].join('\n');

/** Who is asking: the authenticated key, the name it is known by, and where from. */
export interface Requester {
  id: string;
  /** HOST.USER (base name; a program key's program goes in `program`). */
  name: string;
  program?: string;
  address: string;
  /**
   * Root installation (docs/ROOT.md): the requester is a user of another host, asserted by that
   * host's rexd with its host key (`id` is the host key's). Set only from what the monitor established.
   */
  hostbased?: true;
}

/** The outcome of checking a requester against the grants. */
export type Decision = { ok: true; grant: Grant } | { ok: false; reason: string };

/** Options for {@link decide}. */
export interface DecideOptions {
  now?: number;
  /** Ignore program restrictions (when a connection is checked before any request names one). */
  anyProgram?: boolean;
  /** Maps a `from=` cluster host name to its address (rex.rc servers). */
  hostAddress?: (name: string) => string | undefined;
  /** What this host is called in messages (HOST.USER). */
  self?: string;
  /** The function a CALL names: grants with `functions=` / `deny=` are checked against it. */
  function?: string;
}

/** True when grant `g` lets its subject call function `fn` of its program (or of any program). */
export function grantAllowsFunction(g: Pick<Grant, 'functions' | 'deny'>, fn: string): boolean {
  if (g.functions) return g.functions.includes(fn);
  return !g.deny?.includes(fn);
}

/** How much a grant allows: all programs, then a whole program, a program but some functions, only some functions. */
function breadth(g: Grant): number {
  if (g.program === undefined) return 3;
  return g.functions ? 0 : g.deny ? 1 : 2;
}

/** Decides whether `who` may use this host now; the reason names the rule that refused. */
export function decide(g: Grants, who: Requester, opts: DecideOptions = {}): Decision {
  const now = opts.now ?? Date.now();
  const label = `${who.name}${who.program ? `.${who.program}` : ''} (key ${who.id})`;
  const here = opts.self ? ` on ${opts.self}` : '';
  const rev = g.revoked.find((r) => r.id === who.id);
  if (rev) return { ok: false, reason: `key ${who.id} (${who.name}) was revoked${rev.at ? ` at ${rev.at}` : ''}${here}` };
  const mine = g.grants.filter((x) => (x.name === undefined || x.name === who.name) && (x.id === undefined || x.id === who.id));
  if (mine.length === 0) {
    return { ok: false, reason: `${label} has no grant${here}; its owner can run \`rex_key --grant ${who.name}\` there` };
  }
  const live = mine.filter((x) => x.expires === undefined || x.expires > now);
  if (live.length === 0) {
    const last = Math.max(...mine.map((x) => x.expires!));
    return { ok: false, reason: `the grant for ${label}${here} expired at ${new Date(last).toISOString()}` };
  }
  const forProgram = opts.anyProgram ? live : live.filter((x) => x.program === undefined || x.program === who.program);
  if (forProgram.length === 0) {
    const progs = [...new Set(live.map((x) => x.program))].join(', ');
    return {
      ok: false,
      reason: `${who.program ? `program ${who.program}` : 'a transaction without a program'} of ${who.name} is not granted${here}: its grants cover only program ${progs}`,
    };
  }
  const fromOk = forProgram.filter((x) => {
    if (x.from === undefined) return true;
    const addr = opts.hostAddress?.(x.from);
    return clientAllowed([addr ?? x.from], who.address) || (addr !== undefined && addr === who.address);
  });
  if (fromOk.length === 0) {
    return { ok: false, reason: `${label} is granted${here} only from ${forProgram.map((x) => x.from).join(', ')}, not from ${who.address}` };
  }
  const fn = opts.function;
  const forFunction = fn === undefined ? fromOk : fromOk.filter((x) => grantAllowsFunction(x, fn));
  if (fn !== undefined && forFunction.length === 0) {
    const g0 = fromOk[0]!;
    const what = fromOk.map((x) => (x.functions ? `only ${x.functions.join(', ')} (line ${x.line})` : `all but ${x.deny!.join(', ')} (line ${x.line})`));
    const fix = g0.functions ? `--functions ${[...g0.functions, fn].join(',')}` : g0.deny!.length > 1 ? `--deny ${g0.deny!.filter((d) => d !== fn).join(',')}` : '';
    return {
      ok: false,
      reason: `function ${fn} of program ${who.program} is not granted to ${label}${here}: its grants allow ${what.join('; ')}; its owner can run \`rex_key --grant ${who.name} --program ${who.program}${fix ? ` ${fix}` : ''}\` there`,
    };
  }
  // The broadest grant that matched: the caller limits what a program grant allows (EXEC of the program's executables).
  const best = forFunction.reduce((a, b) => (breadth(b) > breadth(a) ? b : a));
  return { ok: true, grant: best };
}

/**
 * A grants file read on demand: `current()` re-reads it when its size, mtime or
 * inode changed, so an edit or a revocation applies to the next request. A file
 * that does not exist grants nothing; one with a syntax error grants nothing and
 * keeps the error for messages.
 */
export class GrantsFile {
  private stamp = '';
  private cached: Grants = { grants: [], revoked: [] };
  private err: GrantsSyntaxError | RexError | undefined;

  constructor(readonly file: string) {}

  /** The grants now in force, and the error that voided the file, if any. */
  current(): { grants: Grants; error?: RexError; changed: boolean } {
    let stamp = 'absent';
    try {
      const st = statSync(this.file);
      stamp = `${st.ino}:${st.size}:${st.mtimeMs}`;
    } catch {
      /* absent: grants nothing */
    }
    let changed = false;
    if (stamp !== this.stamp) {
      changed = this.stamp !== '';
      this.stamp = stamp;
      this.err = undefined;
      this.cached = { grants: [], revoked: [] };
      if (stamp !== 'absent') {
        try {
          this.cached = parseGrants(readFileSync(this.file, 'utf8'), this.file);
        } catch (e) {
          this.err = e instanceof RexError ? e : new RexError(ErrorCodes.GRANTS_SYNTAX, `cannot read ${this.file}: ${(e as Error).message}`, { where: this.file });
        }
      }
    }
    return this.err ? { grants: this.cached, error: this.err, changed } : { grants: this.cached, changed };
  }

  /** Reads the file for editing; throws its syntax error (an edit must not silently drop lines). */
  static read(file: string): Grants {
    if (!existsSync(file)) return { grants: [], revoked: [] };
    return parseGrants(readFileSync(file, 'utf8'), file);
  }
}
