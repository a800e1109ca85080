/**
 * THE table of rex.rc keys: each key is described here once (name, kind of
 * value, default, help text, who reads it, examples), and everything else is
 * derived from this table: the RexConfig type (src/config/types.ts),
 * normalisation and its schema (src/config/normalize.ts), `rex config show`,
 * and, by scripts/gen-config.mjs, schema/rex.schema.json, section 1 of
 * schema/rex.dtd, the key table of docs/CONFIG.md and the key list of
 * docs/man/rex.rc.5.md (checked by test/config/gen-config.test.ts).
 * Adding a key is adding an entry here and running that script.
 */
import leven from 'leven';
import type { ServerEntry } from './values.js';
import {
  DEFAULT_PORT,
  SCHEMA_DEFS,
  accountValue,
  autoTransferValue,
  clientsValue,
  countValue,
  daysValue,
  durationValue,
  enumValue,
  listenValue,
  pathValue,
  postgresUrlValue,
  programsValue,
  rexNameValue,
  serversValue,
  sizeValue,
  userMapValue,
  userLimitsValue,
  yesNoValue,
  type JsonSchema,
  type ValueType,
} from './values.js';

export {
  DEFAULT_PORT,
  checkClientEntry,
  expandPath,
  formatDuration,
  formatSize,
  isHostName,
  isRexName,
  parseDuration,
  parseProgramEntry,
  parseServerEntry,
  parseSize,
  sanitizeHostName,
  splitHostPort,
  type Parsed,
  type PathContext,
  type RawValue,
  type ValueProblem,
  type ValueType,
} from './values.js';

/** Who reads a key: rexd, `rex_key`, `rex log`, or every client of rexd (rex, rtop, programs using the runtime) to find its socket. */
export type Reader = 'rexd' | 'rex_key' | 'rex log' | 'clients';

/** What defaults that do not depend on other keys are computed from. */
export interface DefaultEnv {
  /** This host's REX name (host-name, or the sanitised system host name). */
  hostName: string;
  /** The home directory, without trailing slashes ('' for /). */
  home: string;
  user: string;
}

/**
 * The values other keys' defaults are derived from. A key whose default
 * follows another key adds that key here (normalize.ts checks the types agree).
 */
export interface Basis {
  hostName: string;
  servers: readonly ServerEntry[];
  stateDirectory: string;
}

/** One key of rex.rc. */
export interface KeyDef<T> {
  /** The rc key, also the element name of the XML form. */
  key: string;
  value: ValueType<T>;
  /** The built-in value, or how it follows from this host and user. */
  default: NoInfer<T> | ((env: DefaultEnv) => NoInfer<T>);
  /**
   * A default that follows another key's value: when this key is not set and
   * `value` returns something, it replaces `default`; `show config` notes the
   * origin (`from VIA at FILE:LINE`) and an invalid result is reported there.
   */
  derive?: { from: keyof Basis; value(basis: Basis): { value: NoInfer<T>; via?: string } | undefined };
  /** docs/CONFIG.md's "value" column (markdown): what is written and what it does. */
  help: string;
  /** docs/CONFIG.md's "default" column (markdown). */
  defaultHelp: string;
  readBy: readonly Reader[];
  /** Written values and what they parse to (HOME=/home/tester, USER=tester, HOST=vm): test/config/keys.test.ts reads every key through them, in both forms. */
  examples: readonly { rc: string; value: NoInfer<T> }[];
  /** Values refused with a message at file:line that says what is expected instead (test/config/keys.test.ts). */
  invalid: readonly string[];
}

/** Infers T from the value type alone (NoInfer elsewhere), so the normalised config's type is that of the parsers. */
function key<T>(d: KeyDef<T>): KeyDef<T> {
  return d;
}

const stateDir = (b: Basis): string => b.stateDirectory.replace(/\/+$/, '');

/** Every key REX accepts, in the order `rex config show` prints them; the field names are RexConfig's. */
export const KEYS = {
  hostName: key({
    key: 'host-name',
    value: rexNameValue,
    default: (env) => env.hostName,
    help: "this host's REX name: letters, digits, `_` and `-`, starting with a letter or digit, at most 63 characters",
    defaultHelp: 'the system host name up to its first `.`, with other characters replaced by `_`',
    readBy: ['rexd', 'rex_key'],
    examples: [{ rc: 'alpha', value: 'alpha' }, { rc: 'my_linux_x86_64_pc_1', value: 'my_linux_x86_64_pc_1' }],
    invalid: ['alpha.example.org', '-x'],
  }),
  listen: key({
    key: 'listen',
    value: listenValue,
    default: { address: '127.0.0.1', port: DEFAULT_PORT },
    derive: {
      from: 'servers',
      value(b) {
        const self = b.servers.find((s) => s.name === b.hostName);
        return self && { value: { address: self.address, port: self.port }, via: `servers entry "${self.name}"` };
      },
    },
    help: '`ADDRESS[:PORT]` or `[IPV6][:PORT]`: where rexd accepts peers',
    defaultHelp: 'the address and port of the `servers` entry whose name equals `host-name`; else `127.0.0.1:7800`',
    readBy: ['rexd'],
    examples: [
      { rc: '127.0.0.1:7801', value: { address: '127.0.0.1', port: 7801 } },
      { rc: '[::1]:7802', value: { address: '::1', port: 7802 } },
      { rc: '0.0.0.0', value: { address: '0.0.0.0', port: 7800 } },
    ],
    invalid: ['127.0.0.1:x', '127.0.0.1:70000', '::1:7800'],
  }),
  servers: key({
    key: 'servers',
    value: serversValue,
    default: [],
    help: 'comma-separated `NAME[@ADDRESS][:PORT]`: the hosts of the cluster',
    defaultHelp: 'none',
    readBy: ['rexd', 'rex_key'],
    examples: [
      { rc: '', value: [] },
      {
        rc: 'a@10.0.0.1:7801, b, c:7803, d@[::1]',
        value: [
          { name: 'a', address: '10.0.0.1', port: 7801 },
          { name: 'b', address: 'b', port: 7800 },
          { name: 'c', address: 'c', port: 7803 },
          { name: 'd', address: '::1', port: 7800 },
        ],
      },
    ],
    invalid: ['a,,b', 'a:0', 'a:x'],
  }),
  clients: key({
    key: 'clients',
    value: clientsValue,
    default: ['localnets'],
    help: 'comma-separated host names, IP addresses, CIDR ranges (`10.0.0.0/8`, `fd00::/8`) or the word `localnets`',
    defaultHelp: '`localnets`',
    readBy: ['rexd'],
    examples: [
      { rc: '', value: [] },
      { rc: 'localnets, 10.0.0.0/8, fd00::/8, beta.example.org', value: ['localnets', '10.0.0.0/8', 'fd00::/8', 'beta.example.org'] },
    ],
    invalid: ['a b', '300.1.2.3/8'],
  }),
  tempDirectory: key({
    key: 'rex-temp-directory',
    value: pathValue(),
    default: (env) => `${env.home}/.rex/tmp`,
    derive: { from: 'stateDirectory', value: (b) => ({ value: `${stateDir(b)}/tmp` }) },
    help: 'path: where a program runs when its caller\'s working directory does not exist on the executor; checked at start (below)',
    defaultHelp: '`<state-directory>/tmp`',
    readBy: ['rexd'],
    examples: [{ rc: '/tmp/.rex_${HOST}_${USER}', value: '/tmp/.rex_vm_tester' }, { rc: '~/t$$', value: '/home/tester/t$' }],
    invalid: ['tmp', ''],
  }),
  autoTransfer: key({
    key: 'rex-auto-transfer',
    value: autoTransferValue,
    default: { mode: 'on' },
    help: '`on`, `off`, or `command: SHELL COMMAND`',
    defaultHelp: '`on`',
    readBy: ['rexd'],
    examples: [
      { rc: 'on', value: { mode: 'on' } },
      { rc: 'off', value: { mode: 'off' } },
      { rc: 'command: rsync -a', value: { mode: 'command', command: 'rsync -a' } },
    ],
    invalid: ['onn', 'rsync'],
  }),
  placementPolicy: key({
    key: 'placement-policy',
    value: enumValue(
      ['least-loaded', 'round-robin', 'random'],
      (t) => `"${t}" is not a placement policy; expected least-loaded (the default), round-robin or random (docs/PLACEMENT.md)`,
    ),
    default: 'least-loaded',
    help: '`least-loaded`, `round-robin` or `random`: how `rex run`, rexecve() and spawn() pick a host when the caller names none (docs/PLACEMENT.md)',
    defaultHelp: '`least-loaded`',
    readBy: ['rexd'],
    examples: [{ rc: 'round-robin', value: 'round-robin' }, { rc: 'random', value: 'random' }],
    invalid: ['fastest'],
  }),
  stateDirectory: key({
    key: 'state-directory',
    value: pathValue(),
    default: (env) => `${env.home}/.rex`,
    help: "path: the user's REX directory (keys, socket, pid file)",
    defaultHelp: '`~/.rex`',
    readBy: ['rexd', 'rex_key'],
    examples: [{ rc: '~/.rex-${HOST}', value: '/home/tester/.rex-vm' }],
    invalid: ['.rex', ''],
  }),
  socket: key({
    key: 'socket',
    value: pathValue({
      description: 'an absolute path of at most 107 bytes (the sun_path limit of a Unix socket)',
      type: 'string',
      pattern: '^/',
      maxLength: 107,
    }),
    default: (env) => `${env.home}/.rex/run/rexd.sock`,
    derive: { from: 'stateDirectory', value: (b) => ({ value: `${stateDir(b)}/run/rexd.sock` }) },
    help: "path of the local rexd's Unix socket, at most 107 bytes",
    defaultHelp: '`<state-directory>/run/rexd.sock`',
    readBy: ['rexd', 'clients'],
    examples: [{ rc: '/run/user/1000/rexd.sock', value: '/run/user/1000/rexd.sock' }],
    invalid: ['rexd.sock', `/${'s'.repeat(107)}`],
  }),
  logLevel: key({
    key: 'log-level',
    // The words are checked by the schema, so the message comes from one place.
    value: enumValue(['error', 'warn', 'info', 'debug', 'trace']),
    default: 'info',
    help: '`error`, `warn`, `info`, `debug` or `trace`',
    defaultHelp: '`info`',
    readBy: ['rexd'],
    examples: [{ rc: 'debug', value: 'debug' }, { rc: 'error', value: 'error' }],
    invalid: ['loud'],
  }),
  loadInterval: key({
    key: 'load-interval',
    value: durationValue(),
    default: 1000,
    help: 'duration: how often each host measures and announces its load',
    defaultHelp: '`1s`',
    readBy: ['rexd'],
    examples: [{ rc: '500ms', value: 500 }, { rc: '1.5s', value: 1500 }, { rc: '250', value: 250 }],
    invalid: ['soon', '0ms', '2h'],
  }),
  peerTimeout: key({
    key: 'peer-timeout',
    value: durationValue(),
    default: 5000,
    help: 'duration: a peer whose last load figure is older is *stale*',
    defaultHelp: '`5s`',
    readBy: ['rexd'],
    examples: [{ rc: '2s', value: 2000 }, { rc: '1m', value: 60_000 }],
    invalid: ['soon', '5ms'],
  }),
  logDatabase: key({
    key: 'rex-log-database',
    value: pathValue(),
    default: (env) => `${env.home}/.rex/rex-log.sqlite`,
    derive: { from: 'stateDirectory', value: (b) => ({ value: `${stateDir(b)}/rex-log.sqlite` }) },
    help: 'path: the transaction log, an SQLite file (docs/LOG.md)',
    defaultHelp: '`<state-directory>/rex-log.sqlite`',
    readBy: ['rexd', 'rex log'],
    examples: [{ rc: '/var/log/rex/${USER}.sqlite', value: '/var/log/rex/tester.sqlite' }],
    invalid: ['log.sqlite'],
  }),
  logFailClosed: key({
    key: 'log-fail-closed',
    value: yesNoValue,
    default: false,
    help: '`yes` or `no`: refuse new remote work (EXEC, rfork, CALL, PING, ENROLL from the TLS port) while the transaction log cannot be written (docs/LOG.md)',
    defaultHelp: '`no`',
    readBy: ['rexd'],
    examples: [{ rc: 'yes', value: true }, { rc: 'NO', value: false }],
    invalid: ['maybe'],
  }),
  logServer: key({
    key: 'rex-log-server',
    value: postgresUrlValue,
    default: '',
    help: '`none`, or a `postgresql://` URL (`${HOST}`, `${USER}` expanded): a PostgreSQL database that every host of the cluster also sends its transaction log to, read by `rex log` (docs/LOG.md, "A log server for a cluster"); a URL with a password must be in a rex.rc only its owner can read',
    defaultHelp: '`none`',
    readBy: ['rexd', 'rex log'],
    examples: [
      { rc: 'none', value: '' },
      { rc: 'postgresql://rex_${HOST}@db.example/rexlog?sslmode=verify-full&sslrootcert=/etc/rex/pg-ca.pem', value: 'postgresql://rex_vm@db.example/rexlog?sslmode=verify-full&sslrootcert=/etc/rex/pg-ca.pem' },
      { rc: 'postgresql://rex_vm@/rexlog?host=/run/postgresql', value: 'postgresql://rex_vm@/rexlog?host=/run/postgresql' },
    ],
    invalid: ['mysql://db/rex', 'postgresql://u@db/rex?sslmode=prefer', 'postgresql://u@db/rex?sslmode=verify-full'],
  }),
  logServerFailClosed: key({
    key: 'log-server-fail-closed',
    value: yesNoValue,
    default: false,
    help: '`yes` or `no`: with `rex-log-server`, also refuse new remote work while rows cannot be made durable on the log server (not connected, or the last send failed; docs/LOG.md)',
    defaultHelp: '`no`',
    readBy: ['rexd'],
    examples: [{ rc: 'yes', value: true }, { rc: 'no', value: false }],
    invalid: ['server'],
  }),
  logHeartbeats: key({
    key: 'log-heartbeats',
    value: yesNoValue,
    default: false,
    help: '`yes` or `no`: also log heartbeats (LOAD_GET and HOSTS_GET answered ok) as transactions',
    defaultHelp: '`no`',
    readBy: ['rexd'],
    examples: [{ rc: 'yes', value: true }, { rc: 'no', value: false }],
    invalid: ['on'],
  }),
  logRetentionDays: key({
    key: 'log-retention-days',
    value: daysValue,
    default: 90,
    help: 'days (1-36500), or `none`: older rows of the transaction log are deleted',
    defaultHelp: '`90`',
    readBy: ['rexd'],
    examples: [{ rc: '30', value: 30 }, { rc: 'none', value: 0 }],
    invalid: ['0', 'forever', '40000'],
  }),
  logMaxSize: key({
    key: 'log-max-size',
    value: sizeValue,
    default: 256 * 1024 * 1024,
    help: 'size (`256M`, `1G`, `512K`: binary units; 1M-1T), or `none`: the transaction log (with its WAL) is kept under it by deleting its oldest rows',
    defaultHelp: '`256M`',
    readBy: ['rexd'],
    examples: [{ rc: '64M', value: 64 * 1024 * 1024 }, { rc: '1GiB', value: 1024 ** 3 }, { rc: 'none', value: 0 }],
    invalid: ['big', '1K', '0'],
  }),
  loginGraceTime: key({
    key: 'login-grace-time',
    value: durationValue({ min: 100, max: 3_600_000 }),
    default: 10_000,
    help: 'duration (100 ms to 1 h): how long a connection may take to authenticate (TLS handshake, HELLO, at most an ENROLL) before rexd closes it, as OpenSSH\'s LoginGraceTime',
    defaultHelp: '`10s`',
    readBy: ['rexd'],
    examples: [{ rc: '5s', value: 5000 }],
    invalid: ['50ms', 'later'],
  }),
  maxStartups: key({
    key: 'max-startups',
    value: countValue('connections', 1, 100_000),
    default: 100,
    help: 'whole number (1 to 100000): unauthenticated connections rexd holds at once; more are closed at accept, before any TLS work',
    defaultHelp: '`100`',
    readBy: ['rexd'],
    examples: [{ rc: '50', value: 50 }],
    invalid: ['0', 'many'],
  }),
  perSourceMaxStartups: key({
    key: 'per-source-max-startups',
    value: countValue('connections', 1, 100_000),
    default: 10,
    help: 'whole number (1 to 100000): unauthenticated connections rexd holds at once from one source address',
    defaultHelp: '`10`',
    readBy: ['rexd'],
    examples: [{ rc: '5', value: 5 }],
    invalid: ['0', '-1'],
  }),
  logDenialsBurst: key({
    key: 'log-denials-burst',
    value: countValue('rows', 1, 100_000),
    default: 100,
    help: 'whole number (1 to 100000): denials from one source that get a log row of their own per `log-denials-interval`; the rest are summed up in one row (docs/LOG.md, "Denials")',
    defaultHelp: '`100`',
    readBy: ['rexd'],
    examples: [{ rc: '20', value: 20 }],
    invalid: ['0', 'lots'],
  }),
  logDenialsInterval: key({
    key: 'log-denials-interval',
    value: durationValue({ min: 100, max: 3_600_000 }),
    default: 60_000,
    help: 'duration (100 ms to 1 h): the interval of `log-denials-burst`',
    defaultHelp: '`1m`',
    readBy: ['rexd'],
    examples: [{ rc: '30s', value: 30_000 }],
    invalid: ['10ms', 'hourly'],
  }),
  programs: key({
    key: 'programs',
    value: programsValue,
    default: [],
    help: 'comma-separated `NAME=OBJECT[:DEFINITIONS]` or `NAME=exec:PATH`, each optionally followed by ` executables=PATH[:PATH...]`: programs this host offers for remote calls (docs/CALLS.md), and what a program grant lets EXEC run',
    defaultHelp: 'none',
    readBy: ['rexd'],
    examples: [
      {
        rc: 'demo=~/lib/libdemo.so:~/lib/libdemo.xml, srv=exec:/opt/srv/bin/srv executables=/opt/srv/bin/srv',
        value: [
          { name: 'demo', object: '/home/tester/lib/libdemo.so', xml: '/home/tester/lib/libdemo.xml' },
          { name: 'srv', exec: '/opt/srv/bin/srv', executables: ['/opt/srv/bin/srv'] },
        ],
      },
    ],
    invalid: ['demo', 'a=/x.so,'],
  }),
  installation: key({
    key: 'installation',
    value: enumValue(['user', 'root'], (t) => `"${t}" is not an installation; expected user (a rexd per user, the default) or root (one rexd per host, started as root: docs/ROOT.md)`),
    default: 'user',
    help: '`user` (this rexd serves the user who runs it) or `root` (one rexd per host, started as root, that hands each connection to a session controller running as its user: docs/ROOT.md)',
    defaultHelp: '`user`',
    readBy: ['rexd'],
    examples: [{ rc: 'root', value: 'root' }, { rc: 'user', value: 'user' }],
    invalid: ['admin'],
  }),
  permitRoot: key({
    key: 'permit-root',
    value: yesNoValue,
    default: false,
    help: '`yes` or `no`, root installation only: whether REX serves the local account root (a local root client, or a remote user mapped to root); like sshd\'s PermitRootLogin',
    defaultHelp: '`no`',
    readBy: ['rexd'],
    examples: [{ rc: 'no', value: false }, { rc: 'yes', value: true }],
    invalid: ['sometimes'],
  }),
  hostUser: key({
    key: 'host-user',
    value: accountValue,
    default: 'rex',
    help: "a local system account, root installation only: the host controller runs as it and keeps the host's trust in the cluster (the host keys it knows, join tokens, the members learnt by joining) in `state-directory`/host; serves `rex_key --join` between root installations (docs/ROOT.md). It is never a user of REX: its local connections are refused",
    defaultHelp: '`rex` (made at install by rex.sysusers)',
    readBy: ['rexd', 'rex_key'],
    examples: [{ rc: 'rex', value: 'rex' }, { rc: '_rex', value: '_rex' }],
    invalid: ['-', '9lives', 'a b'],
  }),
  userLimits: key({
    key: 'user-limits',
    value: userLimitsValue,
    default: [],
    help: 'comma-separated `NAME=SOFT[:HARD]` (setrlimit names: nofile, nproc, as, cpu, ...; numbers or `unlimited`), root installation only: the limits of every session controller and so of the jobs, restores and call controllers it starts (docs/ROOT.md)',
    defaultHelp: "none: the limits rexd itself has",
    readBy: ['rexd'],
    examples: [
      { rc: '', value: [] },
      {
        rc: 'nofile=4096:8192, nproc=unlimited',
        value: [
          { name: 'nofile', soft: '4096', hard: '8192' },
          { name: 'nproc', soft: 'unlimited', hard: 'unlimited' },
        ],
      },
    ],
    invalid: ['nofile', 'files=10', 'nofile=10:5', 'nproc=lots'],
  }),
  userMap: key({
    key: 'user-map',
    value: userMapValue,
    default: [],
    help: 'comma-separated `HOST.USER = LOCAL`, root installation only: the local account a remote user acts as (`*` matches any host or user; `LOCAL` `-` refuses; the first match wins; unmatched users keep their name: docs/ROOT.md)',
    defaultHelp: 'none: a remote user acts as the local account of the same name',
    readBy: ['rexd'],
    examples: [
      { rc: '', value: [] },
      {
        rc: 'alpha.alice = al, *.guest = nobody, gamma.* = -',
        value: [
          { host: 'alpha', user: 'alice', local: 'al' },
          { host: '*', user: 'guest', local: 'nobody' },
          { host: 'gamma', user: '*', local: '-' },
        ],
      },
    ],
    invalid: ['alice', 'alpha.alice = ', 'alpha.alice.x = al'],
  }),
};

/** The name of a RexConfig field, that is of a key in the table. */
export type Field = keyof typeof KEYS;

/** The normalised configuration of a table of keys: one field per key, of the type its value parses to. */
export type ConfigOf<K> = { -readonly [F in keyof K]: K[F] extends KeyDef<infer T> ? T : never };

/** A key of the table with its RexConfig field name, as the readers and printers walk them. */
export interface KeySpec extends KeyDef<unknown> {
  field: Field;
}

/** Every key, in table order. */
export const KEY_SPECS: readonly KeySpec[] = (Object.keys(KEYS) as Field[]).map((field) => ({ ...(KEYS[field] as KeyDef<unknown>), field }));

/** Key specs by rc key name. */
export const KEYS_BY_NAME: ReadonlyMap<string, KeySpec> = new Map(KEY_SPECS.map((s) => [s.key, s]));

/** Key specs by RexConfig field. */
export const KEYS_BY_FIELD: ReadonlyMap<Field, KeySpec> = new Map(KEY_SPECS.map((s) => [s.field, s]));

/**
 * The JSON Schema (2020-12) of the normalised configuration: the value types'
 * schemas, one property per key. normalize.ts validates with it;
 * schema/rex.schema.json is this, written by scripts/gen-config.mjs.
 */
export function configSchema(): JsonSchema {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://rex.invalid/schema/rex.schema.json',
    title: 'RexConfig',
    description:
      'The normalised REX configuration that rex.rc and its XML form both produce (see docs/CONFIG.md). Keys are the camelCase forms of the rc keys.',
    type: 'object',
    additionalProperties: false,
    required: KEY_SPECS.map((s) => s.field),
    $defs: SCHEMA_DEFS,
    properties: Object.fromEntries(KEY_SPECS.map((s) => [s.field, s.value.schema])),
  };
}

/** The known key closest to `key`, if it is close enough to be a likely typo. */
export function didYouMean(key: string, known: readonly string[] = KEY_SPECS.map((s) => s.key)): string | undefined {
  const k = key.toLowerCase().slice(0, 200);
  let best: string | undefined;
  let bestD = Infinity;
  for (const cand of known) {
    const d = leven(k, cand);
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
