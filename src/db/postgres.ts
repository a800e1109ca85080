/**
 * PostgreSQL for REX: connecting by URL (the libpq URI form, parsed here so
 * that every field is checked and a password never reaches a message), the
 * errors of a connection turned into ones that name the server and say what to
 * do, and a versioned migrations runner shared by every REX schema kept in
 * PostgreSQL (the central transaction log, docs/LOG.md; configuration and the
 * REXP table, docs/CONFIG.md).
 *
 * The driver is node-postgres (`pg`, docs/DEPENDENCIES.md), pure JavaScript:
 * its optional libpq binding (pg-native) is never used.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Client as PgClient, ClientConfig } from 'pg';
import { ErrorCodes, RexError } from '../util/errors.js';

const load = createRequire(import.meta.url);

/** A connection to PostgreSQL (node-postgres' Client). */
export type Client = PgClient;

/** sslmode values, as libpq defines them (`prefer` and `allow` try TLS and fall back to none; REX has no fallback: they are refused). */
export const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/** A parsed `postgresql://` URL. */
export interface PostgresUrl {
  /** A host name, an IP address, or an absolute directory holding the server's Unix socket. */
  host: string;
  port: number;
  user?: string;
  password?: string;
  database?: string;
  sslmode: SslMode;
  /** Files for TLS: the CA that signed the server's certificate; a client certificate and key. */
  sslrootcert?: string;
  sslcert?: string;
  sslkey?: string;
  applicationName?: string;
  /** Seconds to wait for the connection (libpq's connect_timeout); default 10. */
  connectTimeout: number;
}

/** The query parameters a URL may carry (libpq's names); any other is an error, as in libpq. */
const PARAMS = new Set(['host', 'port', 'user', 'password', 'dbname', 'sslmode', 'sslrootcert', 'sslcert', 'sslkey', 'application_name', 'connect_timeout']);

const URL_RE = /^(postgres(?:ql)?):\/\/(?:([^@/?#]*)@)?(\[[^\]/?#]*\]|[^:/?#]*)(?::([^/?#]*))?(?:\/([^?#]*))?(?:\?([^#]*))?$/;

/** What in a URL may be a password, raw and decoded: the user part's and every password= value (found without parsing, for URLs that do not parse). */
function secretsOf(url: string): string[] {
  const out: string[] = [];
  const scheme = url.indexOf('://');
  const at = url.lastIndexOf('@');
  if (scheme >= 0 && at > scheme) {
    const colon = url.indexOf(':', scheme + 3);
    if (colon >= 0 && colon < at) out.push(url.slice(colon + 1, at));
  }
  for (const m of url.matchAll(/password=([^&#]*)/gi)) out.push(m[1]!);
  for (const s of [...out]) {
    try {
      out.push(decodeURIComponent(s));
    } catch {
      /* not percent-encoded */
    }
  }
  return out.filter((s) => s.length > 0).sort((a, b) => b.length - a.length);
}

/** `text` without any of `secrets`. */
function scrub(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) out = out.split(s).join('***');
  return out;
}

function urlError(url: string, message: string, hint: string, where?: string): RexError {
  const secrets = secretsOf(url);
  return new RexError(ErrorCodes.DATABASE, scrub(`${redactUrl(url)}: ${message}`, secrets), { hint: scrub(hint, secrets), ...(where ? { where } : {}) });
}

function decode(url: string, s: string, what: string, where?: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw urlError(url, `the ${what} is not valid percent-encoding`, 'escape reserved characters as %XX (e.g. @ as %40)', where);
  }
}

/**
 * Parses `postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]`
 * (also `postgres://`). `host` may be a socket directory (`?host=/run/postgresql`
 * or `%2Frun%2Fpostgresql` as the host). Throws a RexError naming the field;
 * the password is never part of a message. `where` (e.g. `rex.rc:12`) prefixes errors.
 */
export function parsePostgresUrl(url: string, where?: string): PostgresUrl {
  if (typeof url !== 'string' || url.length > 4096) throw urlError(String(url).slice(0, 64), 'not a PostgreSQL URL (at most 4096 characters)', 'write postgresql://USER@HOST:PORT/DATABASE', where);
  const m = URL_RE.exec(url);
  if (!m) throw urlError(url, 'not a PostgreSQL URL', 'write postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=FILE], or ?host=/socket/dir for a Unix socket', where);
  // eslint-disable-next-line prefer-const
  let [, , auth, rawHost = '', rawPort, rawDb, query] = m;
  const out: Partial<PostgresUrl> & { sslmode?: SslMode } = {};
  if (auth !== undefined) {
    const colon = auth.indexOf(':');
    const u = decode(url, colon < 0 ? auth : auth.slice(0, colon), 'user name', where);
    if (u !== '') out.user = u;
    if (colon >= 0) out.password = decode(url, auth.slice(colon + 1), 'password', where);
  }
  let host = decode(url, rawHost.startsWith('[') ? rawHost.slice(1, -1) : rawHost, 'host', where);
  let port = rawPort;
  if (rawDb !== undefined && rawDb !== '') out.database = decode(url, rawDb, 'database name', where);
  for (const pair of (query ?? '').split('&')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq < 0) throw urlError(url, `parameter ${JSON.stringify(pair.slice(0, 40))} has no value`, 'write NAME=VALUE', where);
    const name = decode(url, pair.slice(0, eq), 'parameter name', where);
    const value = decode(url, pair.slice(eq + 1), `value of ${name}`, where);
    if (!PARAMS.has(name)) throw urlError(url, `unknown parameter ${JSON.stringify(name.slice(0, 40))}`, `known: ${[...PARAMS].join(', ')}`, where);
    switch (name) {
      case 'host':
        host = value;
        break;
      case 'port':
        port = value;
        break;
      case 'user':
        out.user = value;
        break;
      case 'password':
        out.password = value;
        break;
      case 'dbname':
        out.database = value;
        break;
      case 'sslmode':
        if (value === 'prefer' || value === 'allow') throw urlError(url, `sslmode=${value} falls back to an unencrypted connection without saying so`, 'use sslmode=verify-full (TLS, the server certificate checked against sslrootcert) or sslmode=disable (a Unix socket, a trusted network)', where);
        if (!(SSL_MODES as readonly string[]).includes(value)) throw urlError(url, `sslmode=${JSON.stringify(value.slice(0, 40))} is not one of ${SSL_MODES.join(', ')}`, 'use sslmode=verify-full with sslrootcert=FILE', where);
        out.sslmode = value as SslMode;
        break;
      case 'sslrootcert':
      case 'sslcert':
      case 'sslkey':
        if (!value.startsWith('/')) throw urlError(url, `${name} must be an absolute path`, `write ${name}=/path/to/file.pem`, where);
        out[name] = value;
        break;
      case 'application_name':
        out.applicationName = value;
        break;
      case 'connect_timeout': {
        if (!/^\d{1,4}$/.test(value) || Number(value) < 1) throw urlError(url, `connect_timeout=${JSON.stringify(value.slice(0, 40))} is not a number of seconds (1-9999)`, 'write connect_timeout=10', where);
        out.connectTimeout = Number(value);
        break;
      }
    }
  }
  if (host === '') throw urlError(url, 'no host', 'name the server (postgresql://USER@HOST/DB) or its socket directory (?host=/run/postgresql)', where);
  if (host.includes('/') && !host.startsWith('/')) throw urlError(url, `host ${JSON.stringify(host.slice(0, 80))}: a socket directory must be an absolute path`, 'write ?host=/run/postgresql', where);
  if (!host.startsWith('/') && !/^[A-Za-z0-9.:_-]{1,253}$/.test(host)) throw urlError(url, `host ${JSON.stringify(host.slice(0, 80))} is not a host name or address`, 'write a DNS name, an IP address, or an absolute socket directory', where);
  const portNum = port === undefined || port === '' ? 5432 : /^\d{1,5}$/.test(port) ? Number(port) : NaN;
  if (!(portNum >= 1 && portNum <= 65535)) throw urlError(url, `port ${JSON.stringify(String(port).slice(0, 20))} is not a port number 1-65535`, 'write HOST:5432', where);
  const sslmode = out.sslmode ?? (host.startsWith('/') ? 'disable' : 'verify-full');
  if (host.startsWith('/') && sslmode !== 'disable') throw urlError(url, `sslmode=${sslmode} over a Unix socket: PostgreSQL has no TLS on Unix sockets`, 'drop sslmode, or connect to the server by TCP', where);
  if ((sslmode === 'verify-ca' || sslmode === 'verify-full') && out.sslrootcert === undefined) {
    throw urlError(url, `sslmode=${sslmode} needs sslrootcert=FILE (the CA certificate that signed the server's)`, 'add &sslrootcert=/etc/rex/pg-ca.pem, or use a Unix socket (?host=/run/postgresql)', where);
  }
  if ((out.sslcert === undefined) !== (out.sslkey === undefined)) throw urlError(url, 'sslcert and sslkey go together', 'give both, or neither', where);
  return { ...out, host, port: portNum, sslmode, connectTimeout: out.connectTimeout ?? 10 };
}

/** The URL with its password (in the user part or as ?password=) replaced by `***`: the form for every message and log line. */
export function redactUrl(url: string): string {
  let out = url;
  // Up to the last '@': a password with an unescaped '@' or '/' is still hidden whole (over-redacting is the safe side).
  const scheme = out.indexOf('://');
  const at = out.lastIndexOf('@');
  if (scheme >= 0 && at > scheme) {
    const colon = out.indexOf(':', scheme + 3);
    if (colon >= 0 && colon < at) out = `${out.slice(0, colon)}:***${out.slice(at)}`;
  }
  return out.replace(/([?&]password=)[^&#]*/gi, '$1***');
}

/** `text` with every occurrence of the URL's password removed (a driver's message may quote it). */
export function redactSecret(text: string, url: string): string {
  return scrub(text.split(url).join(redactUrl(url)), secretsOf(url));
}

/** Where a URL points, for messages: `USER@HOST:PORT/DB` or `USER@/socket/dir (port N)/DB`, never the password. */
export function describeServer(u: PostgresUrl): string {
  const where = u.host.startsWith('/') ? `${u.host}/.s.PGSQL.${u.port}` : `${u.host.includes(':') ? `[${u.host}]` : u.host}:${u.port}`;
  return `${u.user ?? '(default user)'}@${where}/${u.database ?? u.user ?? '(default database)'}`;
}

/** node-postgres' configuration for a parsed URL (TLS files read here, so that a missing one is named). */
export function clientConfig(u: PostgresUrl, url = ''): ClientConfig {
  // TCP keepalive after 10 s idle: a server whose machine vanished is noticed without waiting for the OS default (2 h).
  const c: ClientConfig = { host: u.host, port: u.port, connectionTimeoutMillis: u.connectTimeout * 1000, keepAlive: true, keepAliveInitialDelayMillis: 10_000 };
  if (u.user !== undefined) c.user = u.user;
  if (u.password !== undefined) c.password = u.password;
  if (u.database !== undefined) c.database = u.database;
  if (u.applicationName !== undefined) c.application_name = u.applicationName;
  if (u.sslmode !== 'disable') {
    const read = (what: string, file: string): string => {
      try {
        return readFileSync(file, 'utf8');
      } catch (e) {
        throw new RexError(ErrorCodes.DATABASE, `${redactUrl(url) || describeServer(u)}: cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { where: file, hint: `check the path and its permissions in the URL's ${what}` });
      }
    };
    const ssl: NonNullable<Exclude<ClientConfig['ssl'], boolean>> = { rejectUnauthorized: u.sslmode !== 'require' };
    if (u.sslrootcert) ssl.ca = read('sslrootcert', u.sslrootcert);
    if (u.sslcert) ssl.cert = read('sslcert', u.sslcert);
    if (u.sslkey) ssl.key = read('sslkey', u.sslkey);
    // verify-ca checks the chain only; verify-full (node's default) also the host name.
    if (u.sslmode === 'verify-ca') ssl.checkServerIdentity = () => undefined;
    c.ssl = ssl;
  }
  return c;
}

/** What to do about a failed connection or query, from the server's SQLSTATE or the socket error. */
function adviceFor(e: NodeJS.ErrnoException & { code?: string; routine?: string }, u: PostgresUrl): { what: string; hint: string } {
  const msg = e.message ?? String(e);
  switch (e.code) {
    case 'ECONNREFUSED':
    case 'ENOENT':
      return { what: 'no server is listening there', hint: u.host.startsWith('/') ? `is PostgreSQL running with unix_socket_directories = '${u.host}' and port ${u.port}?` : `is PostgreSQL running and listening on ${u.host}:${u.port} (listen_addresses)?` };
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return { what: 'the server cannot be reached', hint: 'check the address, the route and firewalls; connect_timeout=N waits longer' };
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return { what: `the host name ${u.host} does not resolve`, hint: 'check the host name in the URL' };
    case 'EACCES':
      return { what: 'permission denied on the socket', hint: `this user cannot open ${u.host}; check that directory's permissions` };
    case '28P01':
      return { what: `password authentication failed for ${u.user ?? 'the user'}`, hint: "check the password in the URL (or the role's: ALTER ROLE ... PASSWORD)" };
    case '28000':
      return { what: `the server refuses ${u.user ?? 'this user'} (${msg})`, hint: 'add a pg_hba.conf line for this role, database and address, or use the role the server expects' };
    case '3D000':
      return { what: `database ${u.database ?? u.user} does not exist`, hint: 'create it (createdb -O OWNER NAME) or fix the database name in the URL' };
    case '42501':
      return { what: `permission denied (${msg})`, hint: 'grant the role what it needs (docs/LOG.md, "A log server for a cluster")' };
    case '57P01':
    case '57P02':
    case '57P03':
      return { what: `the server is shutting down or starting up (${msg})`, hint: 'try again shortly' };
  }
  if (/does not support SSL/i.test(msg)) return { what: 'the server does not support TLS, and the URL asks for it', hint: 'enable ssl on the server (ssl = on, ssl_cert_file, ssl_key_file) or, for a Unix socket or a trusted network only, use sslmode=disable' };
  if (/self[- ]signed|unable to verify|certificate|altnames|SSL|TLS/i.test(msg)) return { what: `TLS: ${msg}`, hint: "check sslrootcert (the CA that signed the server's certificate) and that the certificate names the host in the URL" };
  if (/Query read timeout/i.test(msg)) return { what: 'the server did not answer in time (hung, overloaded, or the network dropped the connection)', hint: 'check the server; REX reconnects' };
  if (/timeout/i.test(msg)) return { what: 'the connection timed out', hint: 'check that the server is up and reachable; connect_timeout=N waits longer' };
  if (/terminat|Connection terminated|ECONNRESET|EPIPE/i.test(msg + (e.code ?? ''))) return { what: 'the connection was lost', hint: 'the server restarted or went away; REX reconnects' };
  return { what: msg, hint: 'see the PostgreSQL server log' };
}

/** A RexError for a failed connection or statement: names the server (never the password) and says what to do. */
export function databaseError(e: unknown, u: PostgresUrl, url: string, doing = 'cannot connect to PostgreSQL'): RexError {
  if (e instanceof RexError) return e;
  const err = e as NodeJS.ErrnoException;
  const { what, hint } = adviceFor(err, u);
  const r = new RexError(ErrorCodes.DATABASE, redactSecret(`${doing} at ${describeServer(u)}: ${what}`, url), { hint, where: redactUrl(url) });
  (r as RexError & { sqlState?: string }).sqlState = typeof err.code === 'string' ? err.code : undefined;
  return r;
}

/**
 * Connects to the server a URL names. Errors are RexErrors (code
 * REX_ERR_DATABASE) that name the server and what to do, without the password.
 * A connection error after connect (the server went away) is given to `onError`
 * instead of being thrown in an event handler. `queryTimeoutMs` bounds every
 * query's wait for an answer.
 */
export async function connect(url: string, opts: { where?: string; onError?: (e: RexError) => void; queryTimeoutMs?: number } = {}): Promise<Client> {
  const u = parsePostgresUrl(url, opts.where);
  const pg = load('pg') as typeof import('pg');
  const config = clientConfig(u, url);
  // A server that accepts and then never answers (stopped, hung) must not hang the caller: each query fails after this.
  if (opts.queryTimeoutMs !== undefined) config.query_timeout = opts.queryTimeoutMs;
  const client = new pg.Client(config);
  // An 'error' event with no listener would throw: a server that goes away must never crash rexd.
  client.on('error', (e) => opts.onError?.(databaseError(e, u, url, 'connection to PostgreSQL lost')));
  try {
    await client.connect();
  } catch (e) {
    client.end().catch(() => {});
    throw databaseError(e, u, url);
  }
  return client;
}

/** One step of a schema: applied once, in its own transaction, in order. */
export interface MigrationStep {
  /** What the step does (kept in rex_schema_migrations). */
  description: string;
  /** SQL (several statements allowed), or a function given the client inside the step's transaction. */
  up: string | ((client: Client) => Promise<void>);
}

/** The table that records which step of which schema a database has. */
const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS rex_schema_migrations (
  schema_name TEXT NOT NULL,
  version INTEGER NOT NULL,
  description TEXT NOT NULL,
  applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (schema_name, version)
)`;

/** The advisory lock key of a schema name (two rexd starting at once migrate one after the other). */
function lockKey(name: string): number {
  let h = 0x5245_5800; // "REX\0"
  for (const c of name) h = (Math.imul(h, 31) + c.charCodeAt(0)) | 0;
  return h;
}

/** The version of schema `name` in the database (0: none; rex_schema_migrations missing counts as 0). */
export async function schemaVersion(client: Client, name: string): Promise<number> {
  const t = await client.query<{ t: string | null }>("SELECT to_regclass('rex_schema_migrations')::text AS t");
  if (t.rows[0]?.t == null) return 0;
  const r = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM rex_schema_migrations WHERE schema_name = $1', [name]);
  return r.rows[0]?.v ?? 0;
}

/**
 * Brings schema `name` to version `steps.length`: step i (version i+1) runs
 * once, in one transaction with its row in rex_schema_migrations, under an
 * advisory lock so that concurrent callers do not both apply it. Idempotent:
 * a database already at the last version is left alone (and needs no rights
 * beyond reading rex_schema_migrations). A database at a later version than
 * this REX knows is an error: an older REX must not write a newer schema.
 * Returns the versions applied now.
 */
export async function migrate(client: Client, name: string, steps: readonly MigrationStep[]): Promise<number[]> {
  const have = await schemaVersion(client, name);
  if (have > steps.length) {
    throw new RexError(ErrorCodes.DATABASE, `the database's schema ${name} is at version ${have}, newer than this REX knows (${steps.length})`, { hint: 'upgrade REX on this host to the version that migrated the database' });
  }
  if (have === steps.length) return [];
  const applied: number[] = [];
  const key = lockKey(name);
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [lockKey('rex_schema_migrations')]);
    await client.query(MIGRATIONS_TABLE);
    await client.query('COMMIT');
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  }
  for (let i = 0; i < steps.length; i++) {
    const version = i + 1;
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1)', [key]);
      const done = await client.query('SELECT 1 FROM rex_schema_migrations WHERE schema_name = $1 AND version = $2', [name, version]);
      if (done.rowCount === 0) {
        const step = steps[i]!;
        if (typeof step.up === 'string') await client.query(step.up);
        else await step.up(client);
        await client.query('INSERT INTO rex_schema_migrations (schema_name, version, description) VALUES ($1, $2, $3)', [name, version, step.description]);
        applied.push(version);
      }
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => {});
      if (e instanceof RexError) throw e;
      throw new RexError(ErrorCodes.DATABASE, `migrating schema ${name} to version ${version} (${steps[i]!.description}) failed: ${(e as Error).message}`, {
        hint: (e as { code?: string }).code === '42501' ? 'run the migration as the database owner (docs/LOG.md, "A log server for a cluster")' : 'see the PostgreSQL server log',
        cause: e,
      });
    }
  }
  return applied;
}

/**
 * Drops a connection without waiting for the server: end() sends Terminate and waits for the server to close,
 * which a hung server never does.
 */
export function abandon(client: Client): void {
  client.end().catch(() => {});
  (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream?.destroy?.();
}
