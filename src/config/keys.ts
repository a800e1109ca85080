/**
 * The keys REX understands, how each value is written, and how it becomes a
 * typed value. Syntax is checked here; ranges (ports, durations, path lengths)
 * are left to schema/rex.schema.json so that both forms share one rule book.
 */
import { isIP } from 'node:net';
import type { AutoTransfer, ProgramEntry, RexConfig, ServerEntry } from './types.js';
import { quote } from '../util/quote.js';

/** The port a server listens on when its entry names none. */
export const DEFAULT_PORT = 7800;

/** Variables a path value may use, besides a leading `~`. */
export interface PathContext {
  HOST: string;
  USER: string;
  HOME: string;
}

/** One problem with a value; `line` is set when a list item sits on its own line (XML). */
export interface ValueProblem {
  message: string;
  line?: number;
}

/** A value as written: the whole text, and for list keys its items (each with a line when known). */
export interface RawValue {
  text: string;
  items?: { text: string; line?: number }[];
}

/** The outcome of parsing one value. */
export type Parsed<T> =
  | { ok: true; value: T; itemLines?: (number | undefined)[] }
  // `partial` holds the entries that did parse, so the schema can still report their own problems.
  | { ok: false; problems: ValueProblem[]; partial?: T; itemLines?: (number | undefined)[] };

/** How one key is read and which RexConfig field it sets. */
export interface KeySpec<F extends keyof RexConfig = keyof RexConfig> {
  key: string;
  field: F;
  /** True for comma-separated lists (each item may carry its own line). */
  list?: boolean;
  /** A short description of the expected value, used in docs and messages. */
  expected: string;
  parse(raw: RawValue, ctx: PathContext): Parsed<RexConfig[F]>;
  /** The rc text of a value, used by toRcText; must parse back to the same value. */
  print(value: RexConfig[F]): string;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
// Underscores are not legal in DNS names, but the seed's example servers
// (my_linux_x86_64_pc_1) default their address to their name, and /etc/hosts accepts them.
const HOSTNAME_RE = /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$/;

/** True when `s` is a valid REX host name (the HOST of HOST.USER.PROGRAM identities). */
export function isRexName(s: string): boolean {
  return NAME_RE.test(s) && s.length <= 63;
}

/** True when `s` is a syntactically valid DNS/hosts-file host name. */
export function isHostName(s: string): boolean {
  return HOSTNAME_RE.test(s);
}

/** Turns an arbitrary system host name into a valid REX name (first label, bad characters to '_'). */
export function sanitizeHostName(raw: string): string {
  let s = raw.split('.')[0] ?? '';
  s = s.replace(/[^A-Za-z0-9_-]/g, '_').replace(/^[_-]+/, '').slice(0, 63);
  return s === '' ? 'localhost' : s;
}

function ok<T>(value: T, itemLines?: (number | undefined)[]): Parsed<T> {
  return itemLines ? { ok: true, value, itemLines } : { ok: true, value };
}
function bad<T>(message: string, line?: number): Parsed<T> {
  return { ok: false, problems: [line === undefined ? { message } : { message, line }] };
}

/** Parses a port written as decimal digits; the range is the schema's business. */
function parsePort(s: string): number | undefined {
  return /^[0-9]{1,6}$/.test(s) ? Number(s) : undefined;
}

/** Splits `ADDRESS[:PORT]` / `[IPV6][:PORT]`; returns an error message on bad syntax. */
export function splitHostPort(s: string, what: string): { address: string; port?: number } | string {
  let address: string;
  let rest: string;
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close < 0) return `${what} "${quote(s)}": missing "]" after the IPv6 address`;
    address = s.slice(1, close);
    if (isIP(address) !== 6) return `${what} "${quote(s)}": "${quote(address)}" is not an IPv6 address`;
    rest = s.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return `${what} "${quote(s)}": expected ":PORT" after "]"`;
  } else {
    const colons = s.split(':').length - 1;
    if (colons > 1) return `${what} "${quote(s)}": write IPv6 addresses in brackets, e.g. [::1]:7801`;
    const c = s.indexOf(':');
    address = c < 0 ? s : s.slice(0, c);
    rest = c < 0 ? '' : s.slice(c);
    if (address === '') return `${what} "${quote(s)}": the address is empty`;
    if (isIP(address) === 0 && !isHostName(address)) return `${what} "${quote(s)}": "${quote(address)}" is neither an IP address nor a host name`;
  }
  if (rest === '') return { address };
  const port = parsePort(rest.slice(1));
  if (port === undefined) return `${what} "${quote(s)}": "${quote(rest.slice(1))}" is not a port number (expected 1-65535)`;
  return { address, port };
}

function formatHostPort(address: string, port: number): string {
  return `${isIP(address) === 6 ? `[${address}]` : address}:${port}`;
}

function listItems(raw: RawValue): { text: string; line?: number }[] {
  const items = raw.items ?? raw.text.split(',').map((text) => ({ text }));
  return items.map((i) => ({ ...i, text: i.text.trim() }));
}

/** Parses one `NAME[@ADDRESS][:PORT]` entry of `servers`. */
export function parseServerEntry(s: string): ServerEntry | string {
  // Split by hand: the address part may be a bracketed IPv6 address containing ':'.
  const at = s.indexOf('@');
  let name: string;
  let hostPort: string | undefined;
  if (at >= 0) {
    name = s.slice(0, at);
    hostPort = s.slice(at + 1);
  } else {
    const c = s.indexOf(':');
    name = c < 0 ? s : s.slice(0, c);
    hostPort = c < 0 ? undefined : `${name}${s.slice(c)}`;
  }
  if (name === '') return `entry "${quote(s)}": the server name is empty (expected NAME[@ADDRESS][:PORT])`;
  if (!isRexName(name)) {
    return `entry "${quote(s)}": "${quote(name)}" is not a valid server name (letters, digits, '_' and '-', starting with a letter or digit; '.' is reserved as the HOST.USER.PROGRAM separator)`;
  }
  if (hostPort === undefined) return { name, address: name, port: DEFAULT_PORT };
  if (at >= 0 && hostPort === '') return `entry "${quote(s)}": the address after "@" is empty`;
  const hp = splitHostPort(hostPort, 'entry');
  if (typeof hp === 'string') return hp.replace(/^entry "[^"]*"/, `entry "${quote(s)}"`);
  return { name, address: hp.address, port: hp.port ?? DEFAULT_PORT };
}

/** Checks one `clients` entry: host name, IP, CIDR range or `localnets`; returns an error or undefined. */
export function checkClientEntry(s: string): string | undefined {
  if (s === 'localnets') return undefined;
  const slash = s.indexOf('/');
  if (slash >= 0) {
    const addr = s.slice(0, slash);
    const bits = s.slice(slash + 1);
    const family = isIP(addr);
    if (family === 0) return `entry "${quote(s)}": "${quote(addr)}" is not an IP address (expected ADDRESS/PREFIX, e.g. 10.0.0.0/8)`;
    const max = family === 4 ? 32 : 128;
    if (!/^[0-9]{1,3}$/.test(bits) || Number(bits) > max) return `entry "${quote(s)}": prefix length "${quote(bits)}" must be 0-${max}`;
    return undefined;
  }
  if (isIP(s) !== 0 || isHostName(s)) return undefined;
  return `entry "${quote(s)}": expected a host name, an IP address, a CIDR range (10.0.0.0/8) or "localnets"`;
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `500ms`, `2s`, `1.5m`, `1h`, or a bare number of milliseconds; undefined on bad syntax. */
export function parseDuration(s: string): number | undefined {
  const m = /^([0-9]{1,12}(?:\.[0-9]{1,6})?)\s*(ms|s|m|h)?$/.exec(s);
  if (!m) return undefined;
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 'ms']!);
}

/** Prints milliseconds the way people write them (`1s`, `250ms`, `2m`). */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/**
 * Expands `~`, `~/`, `${HOST}`, `${USER}`, `${HOME}` and `$$` (a literal `$`) in a path.
 * A lone `$` not followed by `{` or `$` stays literal, as in most shells' unset-free use.
 */
export function expandPath(s: string, ctx: PathContext): string | { error: string } {
  let out = '';
  let i = 0;
  if (s === '~' || s.startsWith('~/')) {
    out = ctx.HOME;
    i = 1;
  }
  while (i < s.length) {
    const ch = s[i]!;
    if (ch === '$' && s[i + 1] === '$') {
      out += '$';
      i += 2;
    } else if (ch === '$' && s[i + 1] === '{') {
      const close = s.indexOf('}', i);
      if (close < 0) return { error: `"${quote(s)}": "\${" without a closing "}"` };
      const name = s.slice(i + 2, close);
      if (name !== 'HOST' && name !== 'USER' && name !== 'HOME') {
        return { error: `"${quote(s)}": unknown variable \${${name}} (known: \${HOST}, \${USER}, \${HOME}; write $$ for a literal $)` };
      }
      out += ctx[name];
      i = close + 1;
    } else {
      out += ch;
      i += 1;
    }
  }
  return out;
}

function pathKey(key: string, field: 'tempDirectory' | 'stateDirectory' | 'socket' | 'logDatabase'): KeySpec {
  return {
    key,
    field,
    expected: 'an absolute path (~/, ${HOME}, ${USER}, ${HOST} are expanded)',
    parse(raw, ctx) {
      if (raw.text === '') return bad('the path is empty; expected an absolute path');
      const r = expandPath(raw.text, ctx);
      return typeof r === 'string' ? ok(r) : bad(r.error);
    },
    print: (v) => String(v).replace(/\$/g, '$$$$'),
  };
}

/** Every key REX accepts, in the order `rex config show` prints them. */
export const KEY_SPECS: KeySpec[] = [
  {
    key: 'host-name',
    field: 'hostName',
    expected: "this host's REX name (letters, digits, '_' and '-')",
    parse(raw) {
      if (!isRexName(raw.text)) {
        return bad(`"${quote(raw.text)}" is not a valid REX host name; expected letters, digits, '_' and '-', starting with a letter or digit ('.' separates HOST.USER.PROGRAM)`);
      }
      return ok(raw.text);
    },
    print: (v) => String(v),
  },
  {
    key: 'listen',
    field: 'listen',
    expected: 'ADDRESS:PORT or [IPV6]:PORT',
    parse(raw) {
      const hp = splitHostPort(raw.text, 'listen address');
      if (typeof hp === 'string') return bad(`${hp}; expected ADDRESS:PORT`);
      return ok({ address: hp.address, port: hp.port ?? DEFAULT_PORT });
    },
    print: (v) => {
      const l = v as RexConfig['listen'];
      return formatHostPort(l.address, l.port);
    },
  },
  {
    key: 'servers',
    field: 'servers',
    list: true,
    expected: 'comma-separated NAME[@ADDRESS][:PORT] entries',
    parse(raw) {
      const problems: ValueProblem[] = [];
      const servers: ServerEntry[] = [];
      const lines: (number | undefined)[] = [];
      const seen = new Map<string, string>();
      const items = listItems(raw);
      if (items.length === 1 && items[0]!.text === '' && raw.items === undefined) return ok([], []);
      for (const item of items) {
        const at = (message: string) => problems.push(item.line === undefined ? { message } : { message, line: item.line });
        if (item.text === '') {
          at('empty entry (two commas in a row, or a trailing comma); expected NAME[@ADDRESS][:PORT]');
          continue;
        }
        const r = parseServerEntry(item.text);
        if (typeof r === 'string') {
          at(r);
          continue;
        }
        const prev = seen.get(r.name);
        if (prev !== undefined) {
          at(`duplicate server name "${r.name}" (already defined by entry "${prev}"); each server needs its own name`);
          continue;
        }
        seen.set(r.name, item.text);
        servers.push(r);
        lines.push(item.line);
      }
      return problems.length ? { ok: false, problems, partial: servers, itemLines: lines } : ok(servers, lines);
    },
    print: (v) => (v as ServerEntry[]).map((s) => `${s.name}@${formatHostPort(s.address, s.port)}`).join(', '),
  },
  {
    key: 'clients',
    field: 'clients',
    list: true,
    expected: 'comma-separated host names, IP addresses, CIDR ranges or "localnets"',
    parse(raw) {
      const problems: ValueProblem[] = [];
      const clients: string[] = [];
      const lines: (number | undefined)[] = [];
      const items = listItems(raw);
      if (items.length === 1 && items[0]!.text === '' && raw.items === undefined) return ok([], []);
      for (const item of items) {
        const err = item.text === '' ? 'empty entry (two commas in a row, or a trailing comma)' : checkClientEntry(item.text);
        if (err !== undefined) {
          problems.push(item.line === undefined ? { message: err } : { message: err, line: item.line });
          continue;
        }
        clients.push(item.text);
        lines.push(item.line);
      }
      return problems.length ? { ok: false, problems, partial: clients, itemLines: lines } : ok(clients, lines);
    },
    print: (v) => (v as string[]).join(', '),
  },
  pathKey('rex-temp-directory', 'tempDirectory'),
  {
    key: 'rex-auto-transfer',
    field: 'autoTransfer',
    expected: '"on", "off" or "command: <shell command>"',
    parse(raw) {
      const t = raw.text;
      if (t === 'on' || t === 'off') return ok({ mode: t });
      const m = /^command\s*:\s*(.*)$/s.exec(t);
      if (m) {
        const command = m[1]!.trim();
        if (command === '') return bad('"command:" needs a shell command after it, e.g. "command: rsync -a"');
        return ok({ mode: 'command', command });
      }
      return bad(`"${quote(t)}" is not valid; expected "on", "off" or "command: <shell command>" (e.g. "command: rsync -a")`);
    },
    print: (v) => {
      const a = v as AutoTransfer;
      return a.mode === 'command' ? `command: ${a.command}` : a.mode;
    },
  },
  {
    key: 'placement-policy',
    field: 'placementPolicy',
    expected: 'least-loaded, round-robin or random',
    parse(raw) {
      const t = raw.text;
      if (t === 'least-loaded' || t === 'round-robin' || t === 'random') return ok(t);
      return bad(`"${quote(t)}" is not a placement policy; expected least-loaded (the default), round-robin or random (docs/PLACEMENT.md)`);
    },
    print: (v) => String(v),
  },
  pathKey('state-directory', 'stateDirectory'),
  pathKey('socket', 'socket'),
  {
    key: 'log-level',
    field: 'logLevel',
    expected: 'error, warn, info, debug or trace',
    // The enum itself is checked by the schema, so the message comes from one place.
    parse: (raw) => ok(raw.text as RexConfig['logLevel']),
    print: (v) => String(v),
  },
  durationKey('load-interval', 'loadInterval'),
  durationKey('peer-timeout', 'peerTimeout'),
  pathKey('rex-log-database', 'logDatabase'),
  yesNoKey('log-fail-closed', 'logFailClosed'),
  yesNoKey('log-heartbeats', 'logHeartbeats'),
  {
    key: 'log-retention-days',
    field: 'logRetentionDays',
    expected: 'a number of days (1-36500), or "none" to keep rows forever',
    parse(raw) {
      if (raw.text === 'none') return ok(0);
      if (!/^[0-9]{1,9}$/.test(raw.text) || Number(raw.text) === 0) return bad(`"${raw.text}" is not a number of days; expected e.g. 90, or "none" to keep rows forever`);
      return ok(Number(raw.text));
    },
    print: (v) => (v === 0 ? 'none' : String(v)),
  },
  {
    key: 'log-max-size',
    field: 'logMaxSize',
    expected: 'a size: 256M, 1G, 512K (binary units), a number of bytes, or "none"',
    parse(raw) {
      if (raw.text === 'none') return ok(0);
      const n = parseSize(raw.text);
      if (n === undefined || n === 0) return bad(`"${raw.text}" is not a size; expected e.g. 256M, 1G, 512K (binary units: 1K = 1024 bytes), or "none" for no bound`);
      return ok(n);
    },
    print: (v) => (v === 0 ? 'none' : formatSize(v as number)),
  },
  durationKey('login-grace-time', 'loginGraceTime'),
  countKey('max-startups', 'maxStartups'),
  countKey('per-source-max-startups', 'perSourceMaxStartups'),
  countKey('log-denials-burst', 'logDenialsBurst'),
  durationKey('log-denials-interval', 'logDenialsInterval'),
  {
    key: 'programs',
    field: 'programs',
    list: true,
    expected: 'comma-separated NAME=OBJECT[:DEFINITIONS] or NAME=exec:PATH entries, each optionally followed by executables=PATH[:PATH...] (DEFINITIONS: repdb\'s .xml, or .sqlite/.db)',
    parse(raw, ctx) {
      const problems: ValueProblem[] = [];
      const programs: ProgramEntry[] = [];
      const lines: (number | undefined)[] = [];
      const seen = new Set<string>();
      const items = listItems(raw);
      if (items.length === 1 && items[0]!.text === '' && raw.items === undefined) return ok([], []);
      for (const item of items) {
        const r = item.text === '' ? 'empty entry (two commas in a row, or a trailing comma); expected NAME=OBJECT[:DEFINITIONS]' : parseProgramEntry(item.text, ctx);
        if (typeof r === 'string' || seen.has(r.name)) {
          const message = typeof r === 'string' ? r : `entry "${quote(item.text)}": program "${quote(r.name)}" is defined twice; each program needs one entry`;
          problems.push(item.line === undefined ? { message } : { message, line: item.line });
          continue;
        }
        seen.add(r.name);
        programs.push(r);
        lines.push(item.line);
      }
      return problems.length ? { ok: false, problems, partial: programs, itemLines: lines } : ok(programs, lines);
    },
    print: (v) => (v as ProgramEntry[]).map(formatProgramEntry).join(', '),
  },
];

const PROGRAM_RE = /^[A-Za-z0-9_][A-Za-z0-9_+-]*$/;

/** Parses one `programs` entry: `NAME=OBJECT[:DEFINITIONS]` or `NAME=exec:PATH`, then optionally ` executables=PATH[:PATH...]`; returns an error message on bad input. */
export function parseProgramEntry(s: string, ctx: PathContext): ProgramEntry | string {
  const ex = /\s+executables=/.exec(s);
  if (!ex) return parseProgramMain(s, ctx);
  const main = parseProgramMain(s.slice(0, ex.index), ctx);
  if (typeof main === 'string') return main;
  const list = s.slice(ex.index + ex[0].length).trim();
  const executables: string[] = [];
  for (const p of list.split(':')) {
    if (p.trim() === '') return `entry "${s}": executables= has an empty path (expected executables=/path/prog[:/path/other...])`;
    const x = expandPath(p.trim(), ctx);
    if (typeof x !== 'string') return `entry "${s}": executables=: ${x.error}`;
    if (!x.startsWith('/')) return `entry "${s}": the executable "${p.trim()}" is not an absolute path`;
    if (/\s/.test(x)) return `entry "${s}": the executable "${p.trim()}" contains a space; one entry carries one executables= list`;
    if (executables.includes(x)) return `entry "${s}": executable ${x} is listed twice`;
    executables.push(x);
  }
  return { ...main, executables };
}

function parseProgramMain(s: string, ctx: PathContext): ProgramEntry | string {
  const eq = s.indexOf('=');
  const want = 'expected NAME=/path/libNAME.so[:/path/libNAME.xml] or NAME=exec:/path/program';
  if (eq < 0) return `entry "${quote(s)}": no "=" after the program name; ${want}`;
  const name = s.slice(0, eq).trim();
  if (!PROGRAM_RE.test(name) || name.length > 255) return `entry "${quote(s)}": "${quote(name)}" is not a program name (letters, digits, '_', '+' and '-'; no dots: they separate HOST.USER.PROGRAM.FUNCTION)`;
  const rest = s.slice(eq + 1).trim();
  const path = (p: string, what: string): string | { error: string } => {
    if (p === '') return { error: `entry "${quote(s)}": the ${what} path is empty; ${want}` };
    const x = expandPath(p, ctx);
    if (typeof x !== 'string') return { error: `entry "${quote(s)}": ${x.error}` };
    if (!x.startsWith('/')) return { error: `entry "${quote(s)}": the ${what} "${quote(p)}" is not an absolute path` };
    return x;
  };
  if (rest.startsWith('exec:')) {
    const exec = path(rest.slice(5).trim(), 'executable');
    return typeof exec === 'string' ? { name, exec } : exec.error;
  }
  const colon = rest.indexOf(':');
  const object = path(colon < 0 ? rest : rest.slice(0, colon).trim(), 'shared object');
  if (typeof object !== 'string') return object.error;
  if (colon < 0) return { name, object };
  const defs = path(rest.slice(colon + 1).trim(), 'definitions');
  if (typeof defs !== 'string') return defs.error;
  if (/\.xml$/i.test(defs)) return { name, object, xml: defs };
  if (/\.(sqlite3?|db)$/i.test(defs)) return { name, object, db: defs };
  return `entry "${quote(s)}": definitions "${quote(defs)}" must end in .xml (repdb -gx) or .sqlite/.db (repdb -gs)`;
}

function formatProgramEntry(p: ProgramEntry): string {
  const esc = (x: string): string => x.replace(/\$/g, '$$$$');
  const executables = p.executables ? ` executables=${p.executables.map(esc).join(':')}` : '';
  if ('exec' in p) return `${p.name}=exec:${esc(p.exec)}${executables}`;
  const defs = p.xml ?? p.db;
  return `${p.name}=${esc(p.object)}${defs !== undefined ? `:${esc(defs)}` : ''}${executables}`;
}

function yesNoKey(key: string, field: 'logFailClosed' | 'logHeartbeats'): KeySpec {
  return {
    key,
    field,
    expected: '"yes" or "no"',
    parse(raw) {
      const t = raw.text.toLowerCase();
      if (t === 'yes' || t === 'no') return ok(t === 'yes');
      return bad(`"${raw.text}" is not valid; expected "yes" or "no"`);
    },
    print: (v) => (v ? 'yes' : 'no'),
  };
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Parses `256M`, `1G`, `512KiB`, `4096` (bytes); binary units; undefined on bad syntax. */
export function parseSize(s: string): number | undefined {
  const m = /^([0-9]{1,13})\s*(?:([KMGT])(?:i?B)?|B)?$/i.exec(s);
  if (!m) return undefined;
  const n = Number(m[1]) * SIZE_UNITS[(m[2] ?? '').toUpperCase()]!;
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Prints a byte count in the largest binary unit that divides it (`256M`). */
export function formatSize(n: number): string {
  for (const u of ['T', 'G', 'M', 'K']) if (n > 0 && n % SIZE_UNITS[u]! === 0) return `${n / SIZE_UNITS[u]!}${u}`;
  return String(n);
}

function durationKey(key: string, field: 'loadInterval' | 'peerTimeout' | 'loginGraceTime' | 'logDenialsInterval'): KeySpec {
  return {
    key,
    field,
    expected: 'a duration: 500ms, 2s, 1m, 1h, or a bare number of milliseconds',
    parse(raw) {
      const d = parseDuration(raw.text);
      if (d === undefined) return bad(`"${quote(raw.text)}" is not a duration; expected e.g. 500ms, 2s, 1m, 1h, or a bare number of milliseconds`);
      return ok(d);
    },
    print: (v) => formatDuration(v as number),
  };
}

/** A count of connections or rows: decimal digits; the range is the schema's business. */
function countKey(key: string, field: 'maxStartups' | 'perSourceMaxStartups' | 'logDenialsBurst'): KeySpec {
  return {
    key,
    field,
    expected: 'a whole number, e.g. 10',
    parse(raw) {
      if (!/^[0-9]{1,9}$/.test(raw.text)) return bad(`"${quote(raw.text)}" is not a whole number; expected e.g. 10`);
      return ok(Number(raw.text));
    },
    print: (v) => String(v),
  };
}

/** Key specs by rc key name. */
export const KEYS_BY_NAME: ReadonlyMap<string, KeySpec> = new Map(KEY_SPECS.map((s) => [s.key, s]));

/** Key specs by RexConfig field. */
export const KEYS_BY_FIELD: ReadonlyMap<keyof RexConfig, KeySpec> = new Map(KEY_SPECS.map((s) => [s.field, s]));

/** Edit distance between two strings (insert, delete, substitute each cost 1). */
export function levenshtein(a: string, b: string): number {
  if (a === b) return 0;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** The known key closest to `key`, if it is close enough to be a likely typo. */
export function didYouMean(key: string, known: readonly string[] = KEY_SPECS.map((s) => s.key)): string | undefined {
  const k = key.toLowerCase().slice(0, 200);
  let best: string | undefined;
  let bestD = Infinity;
  for (const cand of known) {
    const d = levenshtein(k, cand);
    if (d < bestD) {
      bestD = d;
      best = cand;
    }
  }
  // Also catch a truncated key (`rex-temp` for `rex-temp-directory`).
  const prefixed = known.find((c) => k.length >= 3 && c.startsWith(k));
  if (bestD <= Math.max(2, Math.floor(k.length / 3))) return best;
  return prefixed;
}

/** The message for an unknown key: a did-you-mean when one is close, else the list of keys. */
export function unknownKeyMessage(key: string): string {
  const guess = didYouMean(key);
  return guess !== undefined
    ? `unknown key; did you mean "${guess}"?`
    : `unknown key; expected one of: ${KEY_SPECS.map((s) => s.key).join(', ')}`;
}
