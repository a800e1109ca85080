/**
 * The kinds of value rex.rc keys take: how each is written (parser and printer
 * of its rc text, which the XML form shares) and the JSON Schema of what it
 * parses to. src/config/keys.ts gives each key one of these.
 */
import { parsePostgresUrl, redactUrl } from '../db/postgres.js';
import { isIP } from 'node:net';
import { quote } from '../util/quote.js';
import { checkDbTarget, looksLikeDbTarget } from '../db/target.js';

/** How REX copies program files to an executor host that lacks them. */
export type AutoTransfer = { mode: 'on' | 'off' } | { mode: 'command'; command: string };

/** One peer host of the cluster, from the `servers` key. */
export interface ServerEntry {
  /** The REX host name (letters, digits, '_' and '-'): the HOST of HOST.USER.PROGRAM. */
  name: string;
  /** Host name or IP address to connect to (IPv6 without brackets). */
  address: string;
  port: number;
}

/**
 * One program offered for remote calls (rex.rc `programs`): a shared object
 * with its entry-point definitions (repdb's XML or SQLite file, or `database`: the REXP table of a database
 * named as repdb -d names it, HOST.USER.DBMS.DB_NAME or a URL; absent: the object's
 * own debug info), or an executable linked with librex that serves itself.
 * `executables` are the files a requester granted only this program may run
 * by EXEC (docs/KEYS.md, "Grants file"); none listed: such a requester may run nothing.
 */
export type ProgramEntry = ({ name: string; object: string; xml?: string; db?: string; database?: string } | { name: string; exec: string }) & { executables?: string[] };

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


/** A JSON Schema fragment (2020-12), as src/config/keys.ts assembles it into schema/rex.schema.json. */
export type JsonSchema = { readonly [k: string]: unknown };

/** Shared definitions of schema/rex.schema.json, referred to as `#/$defs/NAME`. */
export const SCHEMA_DEFS = {
  rexName: {
    description: "a REX host name: letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters",
    type: 'string',
    pattern: '^[A-Za-z0-9][A-Za-z0-9_-]*$',
    maxLength: 63,
  },
  address: { description: 'a host name or an IP address', type: 'string', minLength: 1, maxLength: 253 },
  port: { description: 'a port number 1-65535', type: 'integer', minimum: 1, maximum: 65535 },
  absolutePath: {
    description: 'an absolute path (after ~ and ${HOME}/${USER}/${HOST} expansion)',
    type: 'string',
    pattern: '^/',
    maxLength: 4095,
  },
  duration: { description: 'a duration between 10ms and 1h', type: 'integer', minimum: 10, maximum: 3600000 },
} as const satisfies Record<string, JsonSchema>;

const ref = (name: keyof typeof SCHEMA_DEFS): JsonSchema => ({ $ref: `#/$defs/${name}` });

/**
 * How one kind of value is written and checked: the parser and printer of its
 * rc text (the XML form shares them), and the JSON Schema of the parsed value.
 * Syntax is the parser's business; ranges are the schema's, so that every form
 * shares one rule book and one set of messages.
 */
export interface ValueType<T> {
  /** What a value looks like, for messages and docs. */
  expected: string;
  parse(raw: RawValue, ctx: PathContext): Parsed<T>;
  /** The rc text of a value, used by toRcText and `rex config show`; must parse back to the same value. */
  print(value: T): string;
  /** The JSON Schema of the parsed value; its `description` is the "expected ..." of range errors. */
  schema: JsonSchema;
  /** Set for comma-separated lists, each item of which may carry its own line (XML). */
  list?: {
    /** How a message names the entry at an index of the parsed list (`entry "beta": `). */
    entry(value: T, index: number): string | undefined;
    /** In the XML form, the items are child elements of this name instead of one text (see schema/rex.dtd). */
    xml?: ListXml;
  };
}

/** The XML form of a list value: one child element per item. */
export interface ListXml {
  /** The child element's name. */
  child: string;
  /** The DTD declarations of the child element (schema/rex.dtd, section 1, is generated from them). */
  dtd: string;
  /** Rebuilds an item's rc text from the child element, so both forms share one parser and one set of messages. */
  text(attr: (name: string) => string | undefined, content: string): string;
}

/** The type of the values a ValueType parses to. */
export type ValueOf<V> = V extends ValueType<infer T> ? T : never;

/** Parses a comma-separated list item by item (`item` returns the item, or a problem), collecting every problem and the line of each good item. */
function listOf<T>(raw: RawValue, empty: string, item: (text: string) => { item: T } | string): Parsed<T[]> {
  const problems: ValueProblem[] = [];
  const out: T[] = [];
  const lines: (number | undefined)[] = [];
  const items = listItems(raw);
  if (items.length === 1 && items[0]!.text === '' && raw.items === undefined) return ok([], []);
  for (const it of items) {
    const r = it.text === '' ? empty : item(it.text);
    if (typeof r === 'string') {
      problems.push(it.line === undefined ? { message: r } : { message: r, line: it.line });
      continue;
    }
    out.push(r.item);
    lines.push(it.line);
  }
  return problems.length ? { ok: false, problems, partial: out, itemLines: lines } : ok(out, lines);
}

/** This host's REX name (`host-name`). */
export const rexNameValue: ValueType<string> = {
  expected: "this host's REX name (letters, digits, '_' and '-')",
  parse(raw) {
    if (!isRexName(raw.text)) {
      return bad(`"${quote(raw.text)}" is not a valid REX host name; expected letters, digits, '_' and '-', starting with a letter or digit ('.' separates HOST.USER.PROGRAM)`);
    }
    return ok(raw.text);
  },
  print: (v) => v,
  schema: ref('rexName'),
};

/** A local account name (`host-user`). */
export const accountValue: ValueType<string> = {
  expected: 'a local account name (letters, digits, _ . -, starting with a letter or _)',
  parse(raw) {
    if (!LOCAL_ACCOUNT.test(raw.text) || raw.text === '-') return bad(`"${quote(raw.text)}" is not a local account name; expected letters, digits, '_', '.' and '-', starting with a letter or '_', at most 32 characters`);
    return ok(raw.text);
  },
  print: (v) => v,
  schema: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_.-]{0,31}$' },
};

/** `ADDRESS[:PORT]` or `[IPV6][:PORT]` (`listen`). */
export const listenValue: ValueType<{ address: string; port: number }> = {
  expected: 'ADDRESS:PORT or [IPV6]:PORT',
  parse(raw) {
    const hp = splitHostPort(raw.text, 'listen address');
    if (typeof hp === 'string') return bad(`${hp}; expected ADDRESS:PORT`);
    return ok({ address: hp.address, port: hp.port ?? DEFAULT_PORT });
  },
  print: (l) => formatHostPort(l.address, l.port),
  schema: {
    description: 'the address and port rexd listens on for peers',
    type: 'object',
    additionalProperties: false,
    required: ['address', 'port'],
    properties: { address: ref('address'), port: ref('port') },
  },
};

/** Comma-separated `NAME[@ADDRESS][:PORT]` entries (`servers`). */
export const serversValue: ValueType<ServerEntry[]> = {
  expected: 'comma-separated NAME[@ADDRESS][:PORT] entries',
  parse(raw) {
    const seen = new Map<string, string>();
    return listOf<ServerEntry>(raw, 'empty entry (two commas in a row, or a trailing comma); expected NAME[@ADDRESS][:PORT]', (text) => {
      const r = parseServerEntry(text);
      if (typeof r === 'string') return r;
      const prev = seen.get(r.name);
      if (prev !== undefined) return `duplicate server name "${r.name}" (already defined by entry "${prev}"); each server needs its own name`;
      seen.set(r.name, text);
      return { item: r };
    });
  },
  print: (v) => v.map((s) => `${s.name}@${formatHostPort(s.address, s.port)}`).join(', '),
  schema: {
    description: 'the hosts of the cluster',
    type: 'array',
    maxItems: 1024,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'address', 'port'],
      properties: { name: ref('rexName'), address: ref('address'), port: ref('port') },
    },
  },
  list: {
    entry: (v, i) => (v[i] ? `entry "${v[i].name}": ` : undefined),
    xml: {
      child: 'server',
      dtd: [
        '<!-- address defaults to name, port to 7800. IPv6 addresses without brackets. -->',
        '<!ELEMENT server EMPTY>',
        '<!ATTLIST server',
        '          name    CDATA #REQUIRED',
        '          address CDATA #IMPLIED',
        '          port    CDATA #IMPLIED>',
      ].join('\n'),
      text(attr) {
        const address = attr('address');
        const port = attr('port');
        return `${attr('name') ?? ''}${address === undefined ? '' : `@${isIP(address) === 6 ? `[${address}]` : address}`}${port === undefined ? '' : `:${port}`}`;
      },
    },
  },
};

/** Comma-separated host names, IP addresses, CIDR ranges or `localnets` (`clients`). */
export const clientsValue: ValueType<string[]> = {
  expected: 'comma-separated host names, IP addresses, CIDR ranges or "localnets"',
  parse: (raw) => listOf<string>(raw, 'empty entry (two commas in a row, or a trailing comma)', (text) => checkClientEntry(text) ?? { item: text }),
  print: (v) => v.join(', '),
  schema: {
    description: 'host names, IP addresses, CIDR ranges or "localnets"',
    type: 'array',
    maxItems: 4096,
    items: { type: 'string', minLength: 1, maxLength: 253 },
  },
  list: {
    entry: (v, i) => `entry "${quote(String(v[i]))}": `,
    xml: {
      child: 'client',
      dtd: ['<!-- A host name, an IP address, a CIDR range, or "localnets". -->', '<!ELEMENT client (#PCDATA)>'].join('\n'),
      text: (_attr, content) => content,
    },
  },
};

/** One `user-map` entry: a remote HOST.USER pattern (`*` for any) and the local account, `-` to refuse. */
export interface UserMapEntry {
  host: string;
  user: string;
  local: string;
}

const MAP_SIDE = /^(\*|[A-Za-z0-9][A-Za-z0-9_-]{0,62})$/;
const LOCAL_ACCOUNT = /^(-|[A-Za-z_][A-Za-z0-9_.-]{0,31})$/;

/** Comma-separated `HOST.USER = LOCAL` (`user-map`, root installation). */
export const userMapValue: ValueType<UserMapEntry[]> = {
  expected: 'comma-separated HOST.USER = LOCAL entries (* for any host or user, - as LOCAL to refuse)',
  parse: (raw) =>
    listOf<UserMapEntry>(raw, 'empty entry (two commas in a row, or a trailing comma)', (text) => {
      const m = /^([^=\s]+)\s*=\s*(\S*)$/.exec(text);
      if (!m) return `entry "${quote(text)}" is not valid; expected HOST.USER = LOCAL, e.g. "alpha.alice = al"`;
      const parts = m[1]!.split('.');
      if (parts.length !== 2 || !parts.every((p) => MAP_SIDE.test(p))) return `entry "${quote(text)}": "${quote(m[1]!)}" is not valid; expected HOST.USER, each a REX name or *`;
      if (!LOCAL_ACCOUNT.test(m[2]!)) return `entry "${quote(text)}": "${quote(m[2]!)}" is not valid; expected a local account name, or - to refuse`;
      return { item: { host: parts[0]!, user: parts[1]!, local: m[2]! } };
    }),
  print: (v) => v.map((e) => `${e.host}.${e.user} = ${e.local}`).join(', '),
  schema: {
    description: 'remote HOST.USER patterns and the local account each acts as',
    type: 'array',
    maxItems: 4096,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['host', 'user', 'local'],
      properties: {
        host: { type: 'string', pattern: '^(\\*|[A-Za-z0-9][A-Za-z0-9_-]{0,62})$' },
        user: { type: 'string', pattern: '^(\\*|[A-Za-z0-9][A-Za-z0-9_-]{0,62})$' },
        local: { type: 'string', pattern: '^(-|[A-Za-z_][A-Za-z0-9_.-]{0,31})$' },
      },
    },
  },
  list: {
    entry: (v, i) => `entry "${quote(`${v[i]!.host}.${v[i]!.user}`)}": `,
    xml: {
      child: 'map',
      dtd: [
        '<!-- A remote HOST.USER (either may be *) and the local account it acts as (- refuses). -->',
        '<!ELEMENT map EMPTY>',
        '<!ATTLIST map',
        '          host  CDATA #REQUIRED',
        '          user  CDATA #REQUIRED',
        '          local CDATA #REQUIRED>',
      ].join('\n'),
      text: (attr) => `${attr('host') ?? ''}.${attr('user') ?? ''} = ${attr('local') ?? ''}`,
    },
  },
};

/** One `user-limits` entry: a resource limit a session controller and its jobs get (rex-session --rlimit). */
export interface UserLimit {
  name: string;
  soft: string;
  hard: string;
}

/** The resources of setrlimit(2) by their rex-session names. */
export const RLIMIT_NAMES = ['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'] as const;

const LIMIT_VALUE = /^([0-9]{1,19}|unlimited)$/;

/** Comma-separated `NAME=SOFT[:HARD]` (`user-limits`, root installation). */
export const userLimitsValue: ValueType<UserLimit[]> = {
  expected: 'comma-separated NAME=SOFT[:HARD] entries (nofile=4096:8192, nproc=unlimited)',
  parse: (raw) =>
    listOf<UserLimit>(raw, 'empty entry (two commas in a row, or a trailing comma)', (text) => {
      const m = /^([a-z]+)\s*=\s*([^:\s]+)(?::([^:\s]+))?$/.exec(text);
      if (!m) return `entry "${quote(text)}" is not valid; expected NAME=SOFT[:HARD], e.g. "nofile=4096:8192"`;
      if (!(RLIMIT_NAMES as readonly string[]).includes(m[1]!)) return `entry "${quote(text)}": "${quote(m[1]!)}" is not valid; expected one of ${RLIMIT_NAMES.join(', ')}`;
      const soft = m[2]!;
      const hard = m[3] ?? soft;
      for (const v of [soft, hard]) if (!LIMIT_VALUE.test(v)) return `entry "${quote(text)}": "${quote(v)}" is not valid; expected a number or "unlimited"`;
      if (soft !== 'unlimited' && (hard === 'unlimited' ? false : BigInt(soft) > BigInt(hard))) return `entry "${quote(text)}": the soft limit ${soft} is above the hard limit ${hard}; expected SOFT <= HARD`;
      if (soft === 'unlimited' && hard !== 'unlimited') return `entry "${quote(text)}": the soft limit is unlimited but the hard limit is ${hard}; expected SOFT <= HARD`;
      return { item: { name: m[1]!, soft, hard } };
    }),
  print: (v) => v.map((e) => `${e.name}=${e.soft}${e.hard === e.soft ? '' : `:${e.hard}`}`).join(', '),
  schema: {
    description: 'resource limits of the users\' session controllers and their jobs',
    type: 'array',
    maxItems: 16,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name', 'soft', 'hard'],
      properties: {
        name: { enum: [...RLIMIT_NAMES] },
        soft: { type: 'string', pattern: '^([0-9]{1,19}|unlimited)$' },
        hard: { type: 'string', pattern: '^([0-9]{1,19}|unlimited)$' },
      },
    },
  },
  list: {
    entry: (v, i) => `entry "${quote(v[i]!.name)}": `,
    xml: {
      child: 'limit',
      dtd: [
        '<!-- A resource limit of the users\' session controllers (setrlimit(2) name: nofile, nproc, ...); hard defaults to soft. -->',
        '<!ELEMENT limit EMPTY>',
        '<!ATTLIST limit',
        '          name CDATA #REQUIRED',
        '          soft CDATA #REQUIRED',
        '          hard CDATA #IMPLIED>',
      ].join('\n'),
      text: (attr) => `${attr('name') ?? ''}=${attr('soft') ?? ''}${attr('hard') === undefined ? '' : `:${attr('hard')}`}`,
    },
  },
};

/** A path, with `~`, `${HOME}`, `${USER}`, `${HOST}` expanded; `schema` may narrow it (the socket's sun_path limit). */
export function pathValue(schema: JsonSchema = ref('absolutePath')): ValueType<string> {
  return {
    expected: 'an absolute path (~/, ${HOME}, ${USER}, ${HOST} are expanded)',
    parse(raw, ctx) {
      if (raw.text === '') return bad('the path is empty; expected an absolute path');
      const r = expandPath(raw.text, ctx);
      return typeof r === 'string' ? ok(r) : bad(r.error);
    },
    print: (v) => v.replace(/\$/g, '$$$$'),
    schema,
  };
}

/** `on`, `off` or `command: SHELL COMMAND` (`rex-auto-transfer`). */
export const autoTransferValue: ValueType<AutoTransfer> = {
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
  print: (a) => (a.mode === 'command' ? `command: ${a.command}` : a.mode),
  schema: {
    description: '"on", "off" or "command: <shell command>"',
    oneOf: [
      { type: 'object', additionalProperties: false, required: ['mode'], properties: { mode: { enum: ['on', 'off'] } } },
      {
        type: 'object',
        additionalProperties: false,
        required: ['mode', 'command'],
        properties: { mode: { const: 'command' }, command: { type: 'string', minLength: 1, maxLength: 4096 } },
      },
    ],
  },
};

/**
 * One word of a fixed set. With `invalid`, the parser refuses other words with
 * that message; without, the schema does (`expected one of ...`).
 */
export function enumValue<const W extends string>(words: readonly W[], invalid?: (text: string) => string): ValueType<W> {
  return {
    expected: `${words.slice(0, -1).join(', ')} or ${words.at(-1)}`,
    parse(raw) {
      if (invalid === undefined || (words as readonly string[]).includes(raw.text)) return ok(raw.text as W);
      return bad(invalid(quote(raw.text)));
    },
    print: (v) => v,
    schema: { description: `one of ${words.join(', ')}`, enum: [...words] },
  };
}

/** A duration (`500ms`, `2s`, `1m`, `1h`, bare milliseconds) between `min` and `max` milliseconds. */
export function durationValue(range: { min: number; max: number } = { min: 10, max: 3_600_000 }): ValueType<number> {
  const { min, max } = range;
  const ofDefs = min === SCHEMA_DEFS.duration.minimum && max === SCHEMA_DEFS.duration.maximum;
  return {
    expected: 'a duration: 500ms, 2s, 1m, 1h, or a bare number of milliseconds',
    parse(raw) {
      const d = parseDuration(raw.text);
      if (d === undefined) return bad(`"${quote(raw.text)}" is not a duration; expected e.g. 500ms, 2s, 1m, 1h, or a bare number of milliseconds`);
      return ok(d);
    },
    print: formatDuration,
    schema: ofDefs
      ? ref('duration')
      : { description: `a duration between ${formatDuration(min)} and ${formatDuration(max)}`, type: 'integer', minimum: min, maximum: max },
  };
}

/** A whole number of `what` (connections, rows) between `min` and `max`. */
export function countValue(what: string, min: number, max: number): ValueType<number> {
  return {
    expected: 'a whole number, e.g. 10',
    parse(raw) {
      if (!/^[0-9]{1,9}$/.test(raw.text)) return bad(`"${quote(raw.text)}" is not a whole number; expected e.g. 10`);
      return ok(Number(raw.text));
    },
    print: String,
    schema: { description: `a number of ${what} between ${min} and ${max}`, type: 'integer', minimum: min, maximum: max },
  };
}

/** `yes` or `no` (any case). */
export const yesNoValue: ValueType<boolean> = {
  expected: '"yes" or "no"',
  parse(raw) {
    const t = raw.text.toLowerCase();
    if (t === 'yes' || t === 'no') return ok(t === 'yes');
    return bad(`"${raw.text}" is not valid; expected "yes" or "no"`);
  },
  print: (v) => (v ? 'yes' : 'no'),
  schema: { description: 'yes or no', type: 'boolean' },
};

/** A number of days, or `none` (0: keep forever). */
export const daysValue: ValueType<number> = {
  expected: 'a number of days (1-36500), or "none" to keep rows forever',
  parse(raw) {
    if (raw.text === 'none') return ok(0);
    if (!/^[0-9]{1,9}$/.test(raw.text) || Number(raw.text) === 0) return bad(`"${raw.text}" is not a number of days; expected e.g. 90, or "none" to keep rows forever`);
    return ok(Number(raw.text));
  },
  print: (v) => (v === 0 ? 'none' : String(v)),
  schema: { description: 'a number of days between 1 and 36500, or none', type: 'integer', minimum: 0, maximum: 36500 },
};

/** A size in binary units (`256M`), or `none` (0: no bound). */
export const sizeValue: ValueType<number> = {
  expected: 'a size: 256M, 1G, 512K (binary units), a number of bytes, or "none"',
  parse(raw) {
    if (raw.text === 'none') return ok(0);
    const n = parseSize(raw.text);
    if (n === undefined || n === 0) return bad(`"${raw.text}" is not a size; expected e.g. 256M, 1G, 512K (binary units: 1K = 1024 bytes), or "none" for no bound`);
    return ok(n);
  },
  print: (v) => (v === 0 ? 'none' : formatSize(v)),
  schema: { description: 'a size between 1M and 1T, or none', type: 'integer', oneOf: [{ const: 0 }, { minimum: 1048576, maximum: 1099511627776 }] },
};

/** Comma-separated program entries (`programs`). */
export const programsValue: ValueType<ProgramEntry[]> = {
  expected:
    "comma-separated NAME=OBJECT[:DEFINITIONS] or NAME=exec:PATH entries, each optionally followed by executables=PATH[:PATH...] (DEFINITIONS: repdb's .xml, .sqlite/.db, or a database HOST.USER.DBMS.DB_NAME, sqlite:PATH, postgresql://...)",
  parse(raw, ctx) {
    const seen = new Set<string>();
    return listOf<ProgramEntry>(raw, 'empty entry (two commas in a row, or a trailing comma); expected NAME=OBJECT[:DEFINITIONS]', (text) => {
      const r = parseProgramEntry(text, ctx);
      if (typeof r === 'string') return r;
      if (seen.has(r.name)) return `entry "${quote(text)}": program "${quote(r.name)}" is defined twice; each program needs one entry`;
      seen.add(r.name);
      return { item: r };
    });
  },
  print: (v) => v.map(formatProgramEntry).join(', '),
  schema: {
    description:
      'programs offered for remote calls: NAME=OBJECT[:DEFINITIONS] or NAME=exec:PATH, optionally followed by executables=PATH[:PATH...] (what a requester granted only this program may run by EXEC)',
    type: 'array',
    maxItems: 1024,
    items: {
      type: 'object',
      additionalProperties: false,
      required: ['name'],
      properties: {
        name: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9_+-]*$', maxLength: 255 },
        object: ref('absolutePath'),
        xml: ref('absolutePath'),
        db: ref('absolutePath'),
        database: { description: 'a database holding the REXP table: HOST.USER.DBMS.DB_NAME, sqlite:PATH or postgresql://...', type: 'string', minLength: 1, maxLength: 4096 },
        exec: ref('absolutePath'),
        executables: {
          description: 'the executables a requester granted only this program may run by EXEC (compared after resolving symbolic links)',
          type: 'array',
          minItems: 1,
          maxItems: 256,
          uniqueItems: true,
          items: ref('absolutePath'),
        },
      },
    },
  },
  list: { entry: (v, i) => (v[i] ? `entry "${quote(v[i].name)}": ` : undefined) },
};

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
  const dbText = rest.slice(colon + 1).trim();
  if (looksLikeDbTarget(dbText)) {
    // A database, named as repdb -d names it; checked here, opened (with the environment then) when rexd loads the program.
    const problem = checkDbTarget(dbText);
    if (problem !== undefined) return `entry "${quote(redactUrl(s))}": ${problem}`;
    if (/\s|,/.test(dbText)) return `entry "${quote(redactUrl(s))}": the database name contains a space or a comma`;
    return { name, object, database: dbText };
  }
  const defs = path(rest.slice(colon + 1).trim(), 'definitions');
  if (typeof defs !== 'string') return defs.error;
  if (/\.xml$/i.test(defs)) return { name, object, xml: defs };
  if (/\.(sqlite3?|db)$/i.test(defs)) return { name, object, db: defs };
  return `entry "${quote(s)}": definitions "${quote(defs)}" must end in .xml (repdb -gx) or .sqlite/.db (repdb -gd), or be a database (HOST.USER.DBMS.DB_NAME, sqlite:PATH, postgresql://...)`;
}

function formatProgramEntry(p: ProgramEntry): string {
  const esc = (x: string): string => x.replace(/\$/g, '$$$$');
  const executables = p.executables ? ` executables=${p.executables.map(esc).join(':')}` : '';
  if ('exec' in p) return `${p.name}=exec:${esc(p.exec)}${executables}`;
  if (p.database !== undefined) return `${p.name}=${esc(p.object)}:${p.database}${executables}`;
  const defs = p.xml ?? p.db;
  return `${p.name}=${esc(p.object)}${defs !== undefined ? `:${esc(defs)}` : ''}${executables}`;
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

/**
 * `none`, or the URL of a PostgreSQL database (`postgresql://USER@HOST/DB?sslmode=verify-full&sslrootcert=FILE`
 * or `?host=/socket/dir`), with `${HOST}`, `${USER}` and `${HOME}` expanded: `rex-log-server`. Checked by
 * src/db/postgres.ts's parser, whose messages never contain the password.
 */
export const postgresUrlValue: ValueType<string> = {
  expected: 'none, or a postgresql:// URL',
  parse(raw, ctx) {
    if (raw.text === 'none' || raw.text === '') return ok('');
    const r = expandPath(raw.text, ctx);
    if (typeof r !== 'string') return bad(redactUrl(r.error));
    try {
      parsePostgresUrl(r);
    } catch (e) {
      return bad(`${(e as Error).message}; expected none or a postgresql:// URL${(e as { hint?: string }).hint ? ` (${(e as { hint?: string }).hint})` : ''}`);
    }
    return ok(r);
  },
  print: (v) => (v === '' ? 'none' : v.replace(/\$/g, '$$$$')),
  schema: { description: 'none (empty), or a postgresql:// URL', type: 'string', maxLength: 4096, pattern: '^(|postgres(ql)?://.*)$' },
};
