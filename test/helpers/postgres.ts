/**
 * Test fixture: a real PostgreSQL server from the distribution's packages, in a
 * temporary directory (initdb, pg_ctl), listening on a Unix socket in that
 * directory (and on 127.0.0.1 when asked). Never touches a system cluster.
 *
 *   const why = postgresUnavailable();
 *   if (why) console.warn(`skipped: ${why}`);
 *   const pg = await startPostgres();
 *   await pg.createRole('rex_alpha', { password: 'pw' });
 *   await pg.createDatabase('rexlog');
 *   ... pg.url('rexlog', 'rex_alpha', 'pw') ...
 *   await pg.stop();
 *
 * initdb and postgres refuse to run as root: as root (CI) the server runs as
 * the `postgres` account the package creates (runuser), in a directory it owns.
 * The superuser `rex_admin` logs in without a password over the socket
 * (pg_hba `trust`, only for it and only on the socket, which is in a directory
 * only root and the server's account can enter); every other role needs its
 * password (scram-sha-256), on the socket and on TCP.
 */
import { execFile, execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, appendFileSync, chmodSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The superuser the fixture makes (no password, Unix socket only). */
export const PG_ADMIN = 'rex_admin';

/** The directory of initdb, pg_ctl and postgres: $REX_PG_BIN, else the newest /usr/lib/postgresql/N/bin. */
export function postgresBin(): string | undefined {
  if (process.env.REX_PG_BIN) return process.env.REX_PG_BIN;
  let versions: string[] = [];
  try {
    versions = readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  } catch {
    return undefined;
  }
  for (const v of versions) {
    const bin = `/usr/lib/postgresql/${v}/bin`;
    if (existsSync(join(bin, 'initdb')) && existsSync(join(bin, 'pg_ctl'))) return bin;
  }
  return undefined;
}

/** The account the server runs as when the tests run as root. */
function serverAccount(): { uid: number; gid: number; name: string } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const pw = readFileSync('/etc/passwd', 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === 'postgres');
    return pw ? { name: 'postgres', uid: Number(pw[2]), gid: Number(pw[3]) } : undefined;
  } catch {
    return undefined;
  }
}

/** Why a PostgreSQL server cannot be started here (print it when skipping), or undefined when it can. */
export function postgresUnavailable(): string | undefined {
  const bin = postgresBin();
  if (!bin) return 'PostgreSQL is not installed (no /usr/lib/postgresql/N/bin/initdb; apt-get install postgresql, or set REX_PG_BIN); CI installs it (.ci/run)';
  if (!existsSync(join(bin, 'psql'))) return `no psql in ${bin} (apt-get install postgresql-client)`;
  if (process.getuid?.() === 0 && !serverAccount()) return 'running as root and there is no `postgres` account to run the server as (initdb and postgres refuse root); apt-get install postgresql creates it';
  if (process.getuid?.() === 0 && !existsSync('/usr/sbin/runuser') && !existsSync('/sbin/runuser') && !existsSync('/usr/bin/runuser')) return 'running as root and runuser (util-linux) is missing';
  return undefined;
}

/** A free TCP port on 127.0.0.1 (also names the Unix socket, .s.PGSQL.PORT). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

/** Runs a command (as the server's account when root); rejects with its output on failure. */
function run(cmd: string, args: string[], opts: { asServer?: boolean; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  const acct = opts.asServer ? serverAccount() : undefined;
  const [c, a] = acct ? ['runuser', ['-u', acct.name, '--', cmd, ...args]] : [cmd, args];
  return new Promise((resolve, reject) => {
    execFile(c, a, { encoding: 'utf8', timeout: opts.timeoutMs ?? 60_000, env: { ...process.env, LC_ALL: 'C', ...opts.env } }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`));
      else resolve(stdout);
    });
  });
}

/** Options of {@link startPostgres}. */
export interface PostgresOptions {
  /** Also listen on 127.0.0.1:port (TCP; roles authenticate with scram-sha-256). */
  tcp?: boolean;
  /** TLS on TCP: PEM files of the server's certificate and key (copied into the data directory). */
  tls?: { cert: string; key: string };
  /** Extra postgresql.conf lines. */
  conf?: string[];
}

/** A running test server. */
export interface TestPostgres {
  /** The temp dir holding everything (removed by stop()). */
  dir: string;
  dataDir: string;
  /** The Unix socket's directory. */
  socketDir: string;
  /** The port (the socket is socketDir/.s.PGSQL.port; TCP on 127.0.0.1 when tcp). */
  port: number;
  /** postgresql:// URL of a database (default `postgres`) as a user (default the superuser) over the socket; `tcp` for 127.0.0.1. */
  url(db?: string, user?: string, password?: string, opts?: { tcp?: boolean; params?: Record<string, string> }): string;
  /** Runs SQL with psql as the superuser; returns its unaligned, tuples-only output (fields split by |). */
  psql(sql: string, db?: string): Promise<string>;
  /** CREATE ROLE name LOGIN [PASSWORD]. */
  createRole(name: string, opts?: { password?: string; superuser?: boolean }): Promise<void>;
  /** CREATE DATABASE name [OWNER owner]. */
  createDatabase(name: string, owner?: string): Promise<void>;
  /** A clean shutdown (pg_ctl stop -m fast); the data stay. */
  shutdown(): Promise<void>;
  /** SIGKILL to the postmaster and every process of it: a crash, not a shutdown. Resolves when they are gone. */
  kill(): Promise<void>;
  /** SIGSTOP to the server and its processes: it still accepts connections (the kernel does) but answers nothing, as a hung server. */
  pause(): void;
  /** SIGCONT: the paused server goes on. */
  resume(): void;
  /** Starts the server again on the same directory and port (crash recovery after kill()). */
  restart(): Promise<void>;
  /** The server's log so far. */
  logs(): string;
  /** Stops the server (immediately) and removes the directory. */
  stop(): Promise<void>;
}

const quoteIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;
const quoteLit = (s: string): string => `'${s.replace(/'/g, "''")}'`;

/** The postmaster's pid, from postmaster.pid (its first line), or undefined. */
function postmasterPid(dataDir: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** The children of a process, from /proc. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

/** Sends a signal to a postmaster and its children; one that ended meanwhile (ESRCH) is skipped. */
function signalAll(pid: number, sig: NodeJS.Signals): void {
  for (const p of [pid, ...childrenOf(pid)]) {
    try {
      process.kill(p, sig);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }
}

/** Starts a PostgreSQL server in a new temp dir. Throws with the server's log when it cannot; check postgresUnavailable() first. */
export async function startPostgres(opts: PostgresOptions = {}): Promise<TestPostgres> {
  const why = postgresUnavailable();
  if (why) throw new Error(`cannot start PostgreSQL: ${why}`);
  const bin = postgresBin()!;
  const acct = serverAccount();
  const dir = mkdtempSync(join(tmpdir(), 'rex-pg-'));
  const dataDir = join(dir, 'data');
  const socketDir = join(dir, 'sock');
  const logFile = join(dir, 'server.log');
  mkdirSync(socketDir, { mode: 0o700 });
  writeFileSync(logFile, '');
  // The server's account owns the directory; only it and root can enter the socket directory.
  if (acct) for (const p of [dir, socketDir, logFile]) chownSync(p, acct.uid, acct.gid);
  chmodSync(dir, 0o700);
  if (acct) {
    // The server's account must reach its directory: a private $TMPDIR (0700 root) would make initdb fail obscurely.
    try {
      await run('test', ['-x', dir, '-a', '-w', dir], { asServer: true });
    } catch {
      rmSync(dir, { recursive: true, force: true });
      throw new Error(`cannot start PostgreSQL: the ${acct.name} account cannot enter ${dir} (is $TMPDIR, ${tmpdir()}, private to root?); set TMPDIR=/tmp`);
    }
  }
  const port = await freePort();
  try {
    await run(join(bin, 'initdb'), ['-D', dataDir, '-U', PG_ADMIN, '--auth-local=trust', '--auth-host=scram-sha-256', '-E', 'UTF8', '--locale=C', '--no-sync'], { asServer: true });
    const conf = [
      `port = ${port}`,
      `listen_addresses = '${opts.tcp || opts.tls ? '127.0.0.1' : ''}'`,
      `unix_socket_directories = '${socketDir}'`,
      'unix_socket_permissions = 0700',
      "password_encryption = 'scram-sha-256'",
      'fsync = on',
      'max_connections = 60',
      'shared_buffers = 16MB',
      "log_line_prefix = '%m [%p] %u@%d '",
      ...(opts.conf ?? []),
    ];
    if (opts.tls) {
      const cert = join(dataDir, 'server.crt');
      const key = join(dataDir, 'server.key');
      writeFileSync(cert, readFileSync(opts.tls.cert));
      writeFileSync(key, readFileSync(opts.tls.key), { mode: 0o600 });
      if (acct) for (const p of [cert, key]) chownSync(p, acct.uid, acct.gid);
      conf.push('ssl = on', `ssl_cert_file = '${cert}'`, `ssl_key_file = '${key}'`);
    }
    appendFileSync(join(dataDir, 'postgresql.conf'), `\n# rex test fixture (test/helpers/postgres.ts)\n${conf.join('\n')}\n`);
    // Only the superuser is trusted, and only on the socket; every other role gives its password.
    writeFileSync(
      join(dataDir, 'pg_hba.conf'),
      [`local all ${PG_ADMIN} trust`, 'local all all scram-sha-256', `host${opts.tls ? 'ssl' : ''} all all 127.0.0.1/32 scram-sha-256`, ''].join('\n'),
    );
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  const pgctl = (args: string[]): Promise<string> => run(join(bin, 'pg_ctl'), ['-D', dataDir, ...args], { asServer: true });
  const start = async (): Promise<void> => {
    try {
      await pgctl(['-l', logFile, '-w', '-t', '60', 'start']);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- server log ---\n${readFileSync(logFile, 'utf8').slice(-4000)}`);
    }
  };
  try {
    await start();
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }

  const psqlBin = join(bin, 'psql');
  const pg: TestPostgres = {
    dir,
    dataDir,
    socketDir,
    port,
    url(db = 'postgres', user = PG_ADMIN, password, o = {}) {
      const auth = `${encodeURIComponent(user)}${password !== undefined ? `:${encodeURIComponent(password)}` : ''}@`;
      const params = new URLSearchParams(o.params ?? {});
      if (o.tcp) return `postgresql://${auth}127.0.0.1:${port}/${encodeURIComponent(db)}${params.size ? `?${params}` : ''}`;
      params.set('host', socketDir);
      params.set('port', String(port));
      return `postgresql://${auth}/${encodeURIComponent(db)}?${params.toString().replace(/%2F/g, '/')}`;
    },
    psql(sql, db = 'postgres') {
      return run(psqlBin, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', socketDir, '-p', String(port), '-U', PG_ADMIN, '-d', db, '-c', sql]);
    },
    async createRole(name, o = {}) {
      await pg.psql(`CREATE ROLE ${quoteIdent(name)} LOGIN${o.superuser ? ' SUPERUSER' : ''}${o.password !== undefined ? ` PASSWORD ${quoteLit(o.password)}` : ''}`);
    },
    async createDatabase(name, owner) {
      await pg.psql(`CREATE DATABASE ${quoteIdent(name)}${owner ? ` OWNER ${quoteIdent(owner)}` : ''}`);
    },
    async shutdown() {
      await pgctl(['-w', '-m', 'fast', 'stop']);
    },
    async kill() {
      const pid = postmasterPid(dataDir);
      if (pid === undefined || !alive(pid)) return;
      // The whole server at once, as a machine losing it would: a backend left behind would keep the shared memory
      // and make the restart refuse to start.
      const all = [pid, ...childrenOf(pid)];
      for (const p of all) {
        try {
          process.kill(p, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
      const pause = new Int32Array(new SharedArrayBuffer(4));
      for (let i = 0; i < 1000 && all.some(alive); i++) Atomics.wait(pause, 0, 0, 10);
      if (all.some(alive)) throw new Error(`postgres processes ${all.filter(alive).join(' ')} still alive after SIGKILL`);
      // The postmaster, left by pg_ctl, may stay a zombie where nothing reaps orphans (a container without an init):
      // its pid still answers kill(pid, 0), and the lock files naming it would stop the restart. After a real crash
      // the process is gone; removing the stale lock files is what an administrator does then.
      rmSync(join(dataDir, 'postmaster.pid'), { force: true });
      rmSync(join(socketDir, `.s.PGSQL.${port}.lock`), { force: true });
    },
    pause() {
      const pid = postmasterPid(dataDir);
      if (pid === undefined) throw new Error('no postmaster to pause');
      signalAll(pid, 'SIGSTOP');
    },
    resume() {
      const pid = postmasterPid(dataDir);
      if (pid === undefined) return;
      signalAll(pid, 'SIGCONT');
    },
    async restart() {
      await start();
    },
    logs() {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async stop() {
      try {
        pg.resume(); // a paused server would not stop
      } catch {
        /* stopping goes on: pg_ctl, else SIGKILL */
      }
      try {
        if (postmasterPid(dataDir) !== undefined && alive(postmasterPid(dataDir)!)) await pgctl(['-w', '-m', 'immediate', 'stop']);
      } catch {
        await pg.kill().catch(() => {});
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return pg;
}

/** Runs psql synchronously (for afterAll hooks that cannot await). */
export function psqlSync(pg: TestPostgres, sql: string, db = 'postgres'): string {
  return execFileSync(join(postgresBin()!, 'psql'), ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', pg.socketDir, '-p', String(pg.port), '-U', PG_ADMIN, '-d', db, '-c', sql], { encoding: 'utf8' });
}
