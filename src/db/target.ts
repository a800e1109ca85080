/**
 * Naming a database: the seed's `${HOST}.${USER}.${DBMS}.${DB_NAME}` (repdb -d, rex.rc config-database,
 * programs), an `sqlite:PATH`, or a `postgresql://` / `postgres://` URL. Parsing is pure apart from the
 * environment and the passwd lookup of USER's home directory; opening is src/db/conn.ts's business.
 * docs/CONFIG.md "Configuration from a database" and docs/REPDB.md "repdb -d" describe the mapping.
 */
import { readFileSync } from 'node:fs';
import { homedir, hostname, userInfo } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { quote } from '../util/quote.js';
import { parsePostgresUrl, redactUrl } from './postgres.js';

/** A database named by the user: an SQLite file, or a PostgreSQL server, role and database. */
export type DbTarget =
  | { dbms: 'sqlite'; file: string; shown: string }
  | { dbms: 'postgresql'; url: string; shown: string };

/** What the HOST.USER.DBMS.DB_NAME mapping depends on; each defaults to the process's own. */
export interface TargetEnv {
  env?: NodeJS.ProcessEnv;
  /** A relative `sqlite:PATH` is resolved against this; without it a relative path is refused (rex.rc). */
  cwd?: string;
  /** This host's names, which mean "here" as HOST of an SQLite database (besides localhost). */
  localNames?: readonly string[];
}

/** The DBMS names HOST.USER.DBMS.DB_NAME accepts, each with the one it means. */
export const DBMS_NAMES: Readonly<Record<string, 'sqlite' | 'postgresql'>> = {
  sqlite: 'sqlite',
  sqlite3: 'sqlite',
  postgresql: 'postgresql',
  postgres: 'postgresql',
  pgsql: 'postgresql',
};

const USER_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
const DB_NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_-]{0,62}$/;
const HOST_LABEL_RE = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})$/;

/** The four parts of a HOST.USER.DBMS.DB_NAME name, DBMS normalised. */
export interface QuadName {
  host: string;
  user: string;
  dbms: 'sqlite' | 'postgresql';
  dbName: string;
}

/**
 * Splits `HOST.USER.DBMS.DB_NAME` from the right (HOST may hold dots: db.example.org.rex.postgresql.rex);
 * a string on error saying which part is wrong. USER holds no dots here, as in the seed's ${USER}.
 */
export function parseQuadName(text: string): QuadName | string {
  const want = 'expected HOST.USER.DBMS.DB_NAME, e.g. localhost.alice.sqlite.rex or db1.rex.postgresql.rex';
  if (text.length > 512) return `database name "${quote(text)}" is too long (${text.length} characters); ${want}`;
  const parts = text.split('.');
  if (parts.length < 4) return `database name "${quote(text)}" has ${parts.length} part${parts.length === 1 ? '' : 's'}; ${want}`;
  const dbName = parts.pop()!;
  const dbmsText = parts.pop()!;
  const user = parts.pop()!;
  const host = parts.join('.');
  const dbms = Object.hasOwn(DBMS_NAMES, dbmsText.toLowerCase()) ? DBMS_NAMES[dbmsText.toLowerCase()] : undefined;
  if (dbms === undefined) return `database name "${quote(text)}": DBMS "${quote(dbmsText)}" is not one REX reads; expected sqlite or postgresql`;
  if (!parts.every((p) => HOST_LABEL_RE.test(p)) || host.length > 253) return `database name "${quote(text)}": HOST "${quote(host)}" is not a host name`;
  if (!USER_RE.test(user) || user.includes('.')) return `database name "${quote(text)}": USER "${quote(user)}" is not a user or role name (letters, digits, '_', '-')`;
  if (!DB_NAME_RE.test(dbName)) return `database name "${quote(text)}": DB_NAME "${quote(dbName)}" is not a database name (letters, digits, '_', '-'; at most 63)`;
  return { host, user, dbms, dbName };
}

/** True when `text` is written as a database (a URL of a known scheme or HOST.USER.DBMS.DB_NAME), whether or not it is valid. */
export function looksLikeDbTarget(text: string): boolean {
  if (/^(sqlite:|postgres(ql)?:\/\/)/i.test(text)) return true;
  const parts = text.split('.');
  return parts.length >= 4 && !text.includes('/') && Object.hasOwn(DBMS_NAMES, parts[parts.length - 2]!.toLowerCase());
}

/** A URL with its password (in the user part or a password= parameter) replaced by `***`: what messages and `rex config show` print. */
export { redactUrl };

/** USER's home directory from the passwd file (undefined for an unknown user). */
function homeOf(user: string, env: NodeJS.ProcessEnv): string | undefined {
  let me: string | undefined;
  try {
    me = userInfo().username;
  } catch {
    me = undefined;
  }
  if (user === me && env.HOME) return env.HOME;
  try {
    for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const f = line.split(':');
      if (f[0] === user && f[5]) return f[5];
    }
  } catch {
    /* no passwd file: unknown */
  }
  return undefined;
}

/**
 * Parses a database name: `sqlite:PATH`, `postgresql://...`/`postgres://...`, or HOST.USER.DBMS.DB_NAME:
 *  - sqlite: HOST must be this host (localhost or its name); the file is $REX_DB_DIR/DB_NAME.sqlite, else
 *    ~USER/.rex/DB_NAME.sqlite;
 *  - postgresql: HOST localhost is the local server's Unix socket ($REX_PG_SOCKET, else $PGHOST when it is a
 *    directory, else /var/run/postgresql; port $PGPORT), any other HOST is TCP port $PGPORT (5432) with
 *    sslmode=verify-full (CA: $PGSSLROOTCERT, else ~/.postgresql/root.crt); USER is the role, DB_NAME the database.
 * Returns a message on error.
 */
export function parseDbTarget(text: string, opts: TargetEnv = {}): DbTarget | string {
  const env = opts.env ?? process.env;
  const t = text.trim();
  if (t === '') return 'the database name is empty; expected sqlite:PATH, postgresql://... or HOST.USER.DBMS.DB_NAME';
  if (/^sqlite:/i.test(t)) {
    let path = t.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path, as URL-minded users write it
    if (path === '') return `"${quote(t)}": the SQLite file is missing; expected sqlite:/path/to/file.sqlite`;
    if (path.includes('\0')) return `"${quote(t)}": the path contains a NUL byte`;
    if (path.startsWith('~/')) {
      if (!env.HOME) return `"${quote(t)}": ~ needs $HOME`;
      path = join(env.HOME, path.slice(2));
    }
    if (!isAbsolute(path)) {
      if (opts.cwd === undefined) return `"${quote(t)}": the SQLite file "${quote(path)}" is not an absolute path`;
      path = resolve(opts.cwd, path);
    }
    return { dbms: 'sqlite', file: path, shown: `sqlite:${path}` };
  }
  if (/^postgres(ql)?:\/\//i.test(t)) {
    try {
      const u = parsePostgresUrl(t);
      if (u.database === undefined) return `"${quote(redactUrl(t))}": the URL names no database; add /DATABASE after the host`;
    } catch (e) {
      return (e as Error).message + ((e as { hint?: string }).hint ? ` (${(e as { hint?: string }).hint})` : '');
    }
    return { dbms: 'postgresql', url: t, shown: redactUrl(t) };
  }
  const q = parseQuadName(t);
  if (typeof q === 'string') return q;
  const local = q.host === 'localhost' || q.host === '127.0.0.1' || [hostname(), hostname().split('.')[0], ...(opts.localNames ?? [])].includes(q.host);
  if (q.dbms === 'sqlite') {
    if (!local) return `database name "${quote(t)}": an SQLite database is a file on this host, so HOST must be localhost or this host's name, not "${quote(q.host)}"; use postgresql for a database on another host`;
    let dir = env.REX_DB_DIR;
    if (!dir) {
      const home = homeOf(q.user, env);
      if (home === undefined) return `database name "${quote(t)}": user "${quote(q.user)}" has no home directory here, where their SQLite databases would be (~${q.user}/.rex); set $REX_DB_DIR or use sqlite:PATH`;
      dir = join(home, '.rex');
    }
    const file = join(dir, `${q.dbName}.sqlite`);
    return { dbms: 'sqlite', file, shown: `${t} (sqlite:${file})` };
  }
  const port = env.PGPORT && /^[0-9]{1,5}$/.test(env.PGPORT) ? env.PGPORT : undefined;
  if (q.host === 'localhost') {
    const socket = env.REX_PG_SOCKET || (env.PGHOST?.startsWith('/') ? env.PGHOST : undefined) || '/var/run/postgresql';
    const url = `postgresql://${encodeURIComponent(q.user)}@/${encodeURIComponent(q.dbName)}?host=${encodeURIComponent(socket)}${port ? `&port=${port}` : ''}`;
    return { dbms: 'postgresql', url, shown: `${t} (${url})` };
  }
  // TLS with the server's certificate checked, against libpq's CA file unless $PGSSLROOTCERT names another.
  const ca = env.PGSSLROOTCERT || join(env.HOME || homedir(), '.postgresql', 'root.crt');
  const url = `postgresql://${encodeURIComponent(q.user)}@${q.host}:${port ?? '5432'}/${encodeURIComponent(q.dbName)}?sslmode=verify-full&sslrootcert=${encodeURIComponent(ca)}`;
  return { dbms: 'postgresql', url, shown: `${t} (${url})` };
}

/**
 * Checks how a database is written without mapping it to this host's files or servers (no passwd lookup, no
 * environment): rex.rc values are checked so, and mapped where they are used. A message on error.
 */
export function checkDbTarget(text: string): string | undefined {
  const t = parseDbTarget(text, { env: { REX_DB_DIR: '/', HOME: '/' } });
  return typeof t === 'string' ? t : undefined;
}
