/**
 * `rex log-server setup` and `rex log-server status`: the administrator's side
 * of the central transaction log in PostgreSQL (docs/LOG.md, "A log server for
 * a cluster"): create or migrate its schema and map each host to its role, and
 * see what the server holds per host.
 */
import type { Command } from 'commander';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { table, toJson } from '../format.js';

/** `HOST=ROLE` (a REX host name, a PostgreSQL role name). */
export function parseHostRole(s: string): { host: string; role: string } {
  const m = /^([A-Za-z0-9][A-Za-z0-9_-]{0,62})=([A-Za-z_][A-Za-z0-9_$]{0,62})$/.exec(s);
  if (!m) throw new RexError(ErrorCodes.USAGE, `--host ${s}: expected HOST=ROLE (a REX host name, a PostgreSQL role name such as rex_alpha)`);
  return { host: m[1]!, role: m[2]! };
}

/** --server is required; checked here, so that an unknown option is reported first (rex(1) conventions). */
function needServer(s: string | undefined): string {
  if (s === undefined) throw new RexError(ErrorCodes.USAGE, '--server URL is required (postgresql://USER@HOST/DATABASE?..., docs/LOG.md)');
  return s;
}

const collect = (v: string, prev: string[] = []): string[] => [...prev, v];

/** Registers `rex log-server`. */
export function registerLogServerCommands(program: Command): void {
  const cmd = program.command('log-server').description("set up and inspect the cluster's central transaction log in PostgreSQL (docs/LOG.md)");
  cmd
    .command('setup')
    .description("as the database's owner: create or migrate the log's schema, map each host to its role (INSERT only), let readers read")
    .option('--server <url>', 'postgresql:// URL of the database, as its owner (required)')
    .option('--host <host=role>', 'a host and the role its rexd logs in as (repeatable)', collect, [])
    .option('--reader <role>', 'a role that may read the whole log, e.g. for rex log (repeatable)', collect, [])
    .option('--json', 'machine-readable output')
    .action(async (opts: { server?: string; host: string[]; reader: string[]; json?: boolean }) => {
      const server = needServer(opts.server);
      const hosts = opts.host.map(parseHostRole);
      for (const r of opts.reader) if (!/^[A-Za-z_][A-Za-z0-9_$]{0,62}$/.test(r)) throw new RexError(ErrorCodes.USAGE, `--reader ${r}: not a role name`);
      const { connect, schemaVersion } = await import('../../db/postgres.js');
      const { LOG_SCHEMA, LOG_STEPS, setupLogServer } = await import('../../log/central.js');
      const c = await connect(server, { where: '--server' });
      try {
        const before = await schemaVersion(c, LOG_SCHEMA);
        await setupLogServer(c, hosts, opts.reader);
        const out = { schema: LOG_SCHEMA, from: before, version: LOG_STEPS.length, hosts, readers: opts.reader };
        process.stdout.write(opts.json ? toJson(out) : `schema ${LOG_SCHEMA}: version ${before} -> ${LOG_STEPS.length}; ${hosts.length} host(s) mapped; ${opts.reader.length} reader(s)\n`);
      } finally {
        await c.end();
      }
    });
  cmd
    .command('status')
    .description('the schema version, and per host: its role, rows, the newest row')
    .option('--server <url>', 'postgresql:// URL of the database, as a role that may read the log (required)')
    .option('--json', 'machine-readable output')
    .action(async (opts: { server?: string; json?: boolean }) => {
      const server = needServer(opts.server);
      const { connect, schemaVersion } = await import('../../db/postgres.js');
      const { LOG_SCHEMA } = await import('../../log/central.js');
      const c = await connect(server, { where: '--server' });
      try {
        const version = await schemaVersion(c, LOG_SCHEMA);
        if (version === 0) throw new RexError(ErrorCodes.DATABASE, 'this database has no REX log yet', { where: '--server', hint: 'set it up as its owner: rex log-server setup --server URL --host HOST=ROLE ...' });
        const r = await c.query<{ host: string; role: string | null; rows: string; newest: string | null }>(
          `SELECT h.host, m.role, count(l.id)::text AS rows, max(l.time) AS newest
             FROM (SELECT host FROM rex_log_hosts UNION SELECT DISTINCT host FROM rex_log) h
             LEFT JOIN rex_log_hosts m ON m.host = h.host LEFT JOIN rex_log l ON l.host = h.host
            GROUP BY h.host, m.role ORDER BY h.host`,
        );
        const hosts = r.rows.map((x) => ({ host: x.host, role: x.role, rows: Number(x.rows), newest: x.newest }));
        if (opts.json) process.stdout.write(toJson({ schema: LOG_SCHEMA, version, hosts }));
        else {
          process.stdout.write(`schema ${LOG_SCHEMA} version ${version}\n`);
          process.stdout.write(table(['HOST', 'ROLE', 'ROWS', 'NEWEST'], hosts.map((h) => [h.host, h.role ?? '-', String(h.rows), h.newest ?? '-']), new Set([2])));
        }
      } finally {
        await c.end();
      }
    });
}
