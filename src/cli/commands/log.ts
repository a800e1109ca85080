/** `rex log`: the transaction log of this user's rexd (docs/LOG.md). */
import type { Command } from 'commander';
// The config loader (ajv) and the log reader (SQLite) are imported by the action that uses them.
import type { LogQuery, LogRow, Outcome } from '../../log/txlog.js';
import { parseDuration } from '../../config/values.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { table, toJson } from '../format.js';

interface LogOpts {
  user?: string;
  identity?: string;
  host?: string;
  outcome?: string;
  kind?: string;
  since?: string;
  limit: string;
  json?: boolean;
  config?: string;
  database?: string;
  socket?: string;
  server?: string;
  local?: boolean;
}

/** `10m`, `2h`, `7d`, `30s` ago, or an ISO-8601 time; returns ms since the epoch. */
export function sinceTime(s: string, now = Date.now()): number {
  // Whole numbers of s, m or h read by rex.rc's duration parser, or of days.
  const d = /^(\d{1,9})d$/.exec(s);
  if (d) return now - Number(d[1]) * 86_400_000;
  const ms = /^\d{1,9}[smh]$/.test(s) ? parseDuration(s) : undefined;
  if (ms !== undefined) return now - ms;
  const t = Date.parse(s);
  if (/^\d{4}-\d{2}-\d{2}/.test(s) && Number.isFinite(t)) return t;
  throw new RexError(ErrorCodes.USAGE, `--since ${s}: expected a duration ago (30s, 10m, 2h, 7d) or an ISO-8601 time`);
}

/**
 * The log database to read: --database; else rex-log-database of the rex.rc
 * named by --config; else that of the rexd serving --socket or $REX_SOCKET (the
 * configuration it was started with, src/cli/daemon-config.ts), so that a shell
 * pointed at a daemon reads that daemon's log; else that of the active rex.rc.
 */
export async function logFile(opts: { config?: string; database?: string; socket?: string; user?: string }, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return (await logSource({ ...opts, local: true }, env)).file;
}

/**
 * Which log `rex log` reads: the central log (`--server URL`, else the
 * rex-log-server of the configuration chosen as for {@link logFile}) unless
 * `--local` or `--database`; else the local file.
 */
export async function logSource(
  opts: { config?: string; database?: string; socket?: string; user?: string; server?: string; local?: boolean },
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ file: string; server?: string }> {
  if (opts.server !== undefined) return { file: '', server: opts.server };
  if (opts.database) return { file: opts.database };
  const pick = (c: { logDatabase: string; logServer?: string }): { file: string; server?: string } => (c.logServer && !opts.local ? { file: c.logDatabase, server: c.logServer } : { file: c.logDatabase });
  if (opts.user !== undefined) {
    // A root installation keeps each user's log in their state directory (docs/ROOT.md); root reads any of them.
    const { loadConfig, userView } = await import('../../config/index.js');
    const { config } = await loadConfig({ ...(opts.config ? { file: opts.config } : {}), uid: 0 });
    if (config.installation !== 'root') throw new RexError(ErrorCodes.USAGE, '--user reads a user\'s log in a root installation, and rex.rc installation is user here', { where: 'rex.rc installation' });
    if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/.test(opts.user)) throw new RexError(ErrorCodes.USAGE, `--user ${opts.user}: not a login name`);
    return { file: userView(config, opts.user).logDatabase };
  }
  const socket = opts.config ? undefined : (opts.socket ?? (env.REX_SOCKET || undefined));
  if (socket) {
    const { daemonConfig } = await import('../daemon-config.js');
    return pick((await daemonConfig(socket)).config.config);
  }
  const { loadConfig } = await import('../../config/index.js');
  const { config } = await loadConfig(opts.config ? { file: opts.config } : {});
  return pick(config);
}

function who(r: LogRow): string {
  return r.identity ?? '-';
}

/** Registers `rex log`. */
export function registerLogCommands(program: Command): void {
  program
    .command('log')
    .description('show the transaction log: authentication attempts and transactions, newest first')
    .option('--identity <name-or-id>', 'only this identity (HOST.USER also matches its programs) or key ID')
    .option('--host <host>', 'only events from or on this host')
    .option('--outcome <outcome>', 'only ok, denied or error')
    .option('--kind <kind>', 'only auth, transaction, enroll, session or log (outages of the log itself)')
    .option('--since <when>', 'only events since 10m/2h/7d ago or an ISO-8601 time')
    .option('-n, --limit <n>', 'at most this many events', '50')
    .option('--json', 'machine-readable output')
    .option('-c, --config <file>', 'read the log this rex.rc names')
    .option('--socket <path>', 'read the log of the rexd serving this socket (default: $REX_SOCKET, else the active rex.rc)')
    .option('--database <file>', 'log database to read (default: rex-log-database of the configuration chosen above)')
    .option('--user <name>', "root installation: read this user's log (root reads every user's; a user reads their own by default)")
    .option('--server <url>', 'read the central log of the cluster in this PostgreSQL database (default: rex-log-server of the configuration chosen above)')
    .option('--local', "read this host's local log even where rex-log-server names a central one")
    .action(async (opts: LogOpts) => {
      const q: LogQuery = {};
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1_000_000) throw new RexError(ErrorCodes.USAGE, `--limit ${opts.limit}: expected 1..1000000`);
      q.limit = limit;
      if (opts.outcome !== undefined) {
        if (!['ok', 'denied', 'error'].includes(opts.outcome)) throw new RexError(ErrorCodes.USAGE, `--outcome ${opts.outcome}: expected ok, denied or error`);
        q.outcome = opts.outcome as Outcome;
      }
      if (opts.kind !== undefined) {
        if (!['auth', 'transaction', 'enroll', 'session', 'log'].includes(opts.kind)) throw new RexError(ErrorCodes.USAGE, `--kind ${opts.kind}: expected auth, transaction, enroll, session or log`);
        q.kind = opts.kind as LogQuery['kind'] & string;
      }
      if (opts.identity !== undefined) q.identity = opts.identity;
      if (opts.host !== undefined) q.host = opts.host;
      if (opts.since !== undefined) q.since = sinceTime(opts.since);
      const src = await logSource(opts);
      let rows: LogRow[];
      if (src.server !== undefined) {
        const { queryCentralLog } = await import('../../log/central.js');
        try {
          rows = await queryCentralLog(src.server, q, opts.server !== undefined ? '--server' : 'rex.rc rex-log-server');
        } catch (e) {
          // The local log has every row of this host, sent or not: say so next to what to fix.
          if (e instanceof RexError && e.code === ErrorCodes.DATABASE) throw new RexError(e.code, e.message, { ...(e.where ? { where: e.where } : {}), hint: `${e.hint ?? 'see the PostgreSQL server log'}; meanwhile rex log --local reads this host's own log` });
          throw e;
        }
      } else {
        const { queryLog } = await import('../../log/txlog.js');
        rows = queryLog(src.file, q);
      }
      if (opts.json) {
        process.stdout.write(toJson(rows));
        return;
      }
      if (rows.length === 0) {
        process.stdout.write('no matching events\n');
        return;
      }
      process.stdout.write(
        table(
          ['TIME', 'HOST', 'KIND', 'IDENTITY', 'FROM', 'WHAT', 'OUTCOME', 'BYTES', 'MS', 'REASON'],
          rows.map((r) => [
            r.time.replace('T', ' ').replace('Z', ''),
            r.host,
            r.kind,
            who(r),
            r.from_host ? `${r.from_host}${r.peer_address && r.peer_address !== 'local' ? `@${r.peer_address}` : ''}` : (r.peer_address ?? '-'),
            r.message_type ? `${r.message_type}${r.target ? ` ${r.target}` : ''}` : '-',
            r.outcome,
            r.bytes_in !== null ? `${r.bytes_in}/${r.bytes_out ?? 0}` : '-',
            r.duration_ms !== null ? r.duration_ms.toFixed(2) : '-',
            r.reason ?? '',
          ]),
          new Set([8]),
        ),
      );
    });
}
