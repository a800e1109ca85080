/**
 * `rex config check [-c FILE | FILE] [--json]` and `rex config show [-c FILE] [--json]`: validate a
 * configuration, and print the effective one with the origin of every value.
 */
import { Option, type Command } from 'commander';
// The loader (ajv and its schema) is imported by the actions: other `rex` commands must not pay for it.
import type { LoadedConfig } from '../../config/index.js';
import { ConfigError } from '../../config/types.js';
import { ErrorCodes, isRexError, RexError } from '../../util/errors.js';
import { toJson } from '../format.js';

/**
 * Prints configuration errors compiler-style (one `file:line: error: ...` per line) and sets exit status 1; rethrows anything else.
 * With --json the errors are also the data: `{ok: false, errors: [{file, line, key, code, message}]}` on stdout.
 */
function reportConfigError(e: unknown, json = false): void {
  if (e instanceof ConfigError) {
    process.stderr.write(`${e.message}\n`);
    process.stderr.write(`${e.diagnostics.length} error${e.diagnostics.length === 1 ? '' : 's'}\n`);
    if (json) process.stdout.write(toJson({ ok: false, errors: e.diagnostics }));
  } else if (isRexError(e)) {
    process.stderr.write(`${e.format()}\n`);
    if (json) process.stdout.write(toJson({ ok: false, errors: [{ ...(e.where !== undefined ? { file: e.where } : {}), code: e.code, message: e.message }] }));
  } else {
    throw e;
  }
  process.exitCode = 1;
}

/** The one-line summary printed after `FILE: ok`. */
function summary(l: LoadedConfig): string {
  const c = l.config;
  const n = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
  return `host-name ${c.hostName}, listen ${listenText(l)}, ${n(c.servers.length, 'server')}, ${n(c.clients.length, 'client entry')
    .replace('entrys', 'entries')}, ${n(l.files.length, 'file')} read`;
}

function listenText(l: LoadedConfig): string {
  const { address, port } = l.config.listen;
  return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
}

/**
 * The file a `config` command reads: `-c/--config FILE` (or, for check, the FILE argument; `--file`, the hidden
 * old name of show's option); undefined for the active rex.rc.
 */
function chosenFile(arg: string | undefined, opts: { config?: string; file?: string }): string | undefined {
  const given = [arg, opts.config, opts.file].filter((f): f is string => f !== undefined);
  if (new Set(given).size > 1) throw new RexError(ErrorCodes.USAGE, `two files given (${given.join(', ')}): name one, with -c FILE`);
  return given[0];
}

/** How long `rex config reload` waits for rexd's log to say what the reload did. */
const RELOAD_WAIT_MS = 30_000;

/**
 * `rex config reload`: checks the active configuration (its files and its database) as rexd would read it, then
 * sends SIGHUP to the rexd of this configuration (its pidfile) and prints what rexd's log says the reload did.
 */
async function reloadDaemon(file: string | undefined): Promise<void> {
  const [{ loadConfig }, { daemonPaths, readPid }, { isRexdProgram }, fs, { setTimeout: wait }] = await Promise.all([
    import('../../config/index.js'),
    import('../../daemon/paths.js'),
    import('../../util/paths.js'),
    import('node:fs'),
    import('node:timers/promises'),
  ]);
  const loaded = await loadConfig(file === undefined ? {} : { file });
  const paths = daemonPaths(loaded.config.stateDirectory, loaded.config.socket);
  const pid = readPid(paths.pidFile);
  let alive = false;
  try {
    alive = pid !== undefined && fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').some((a) => isRexdProgram(a));
  } catch {
    alive = false;
  }
  if (pid === undefined || !alive) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no rexd runs for this configuration (no live rexd in ${paths.pidFile})`, { where: paths.pidFile, hint: 'start it with rexd; a starting rexd reads the configuration anyway' });
  }
  let offset = 0;
  try {
    offset = fs.statSync(paths.logFile).size;
  } catch {
    offset = 0;
  }
  process.kill(pid, 'SIGHUP');
  // rexd logs one line per reload, "reloaded" or "reload-refused"; its log is the only answer a signal gets.
  const deadline = Date.now() + RELOAD_WAIT_MS;
  let rest = '';
  while (Date.now() < deadline) {
    let chunk = '';
    try {
      const fd = fs.openSync(paths.logFile, 'r');
      try {
        const buf = Buffer.alloc(1 << 16);
        const n = fs.readSync(fd, buf, 0, buf.length, offset);
        offset += n;
        chunk = buf.subarray(0, n).toString('utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      chunk = '';
    }
    rest += chunk;
    const lines = rest.split('\n');
    rest = lines.pop() ?? '';
    for (const l of lines) {
      let rec: { event?: string; applied?: string[]; needsRestart?: string[]; diagnostics?: string[]; files?: string[]; controllers?: string[]; err?: string };
      try {
        rec = JSON.parse(l);
      } catch {
        continue;
      }
      if (rec.event === 'reloaded' && rec.controllers !== undefined) {
        // A root installation's monitor: its own keys applied, each user's session controller reloads on its own (docs/ROOT.md).
        process.stdout.write(`rexd (pid ${pid}, root installation) reloaded its configuration\n  session controllers told to reload: ${rec.controllers.join(', ') || 'none running'}\n`);
        return;
      }
      if (rec.event === 'reloaded') {
        process.stdout.write(`rexd (pid ${pid}) reloaded ${(rec.files ?? []).join(', ') || 'its configuration'}\n  applied: ${rec.applied?.length ? rec.applied.join(', ') : 'nothing changed'}\n${rec.needsRestart?.length ? `  changed, kept until rexd restarts: ${rec.needsRestart.join(', ')}\n` : ''}`);
        return;
      }
      if (rec.event === 'reload-refused') {
        throw new RexError(ErrorCodes.CONFIG_DATABASE, `rexd (pid ${pid}) refused the reload and keeps its configuration:\n${(rec.diagnostics ?? [rec.err ?? '(see its log)']).join('\n')}`, { where: paths.logFile });
      }
    }
    if (chunk === '') await wait(100);
  }
  throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd (pid ${pid}) was sent SIGHUP but its log says nothing of a reload within ${RELOAD_WAIT_MS / 1000} s`, { where: paths.logFile, hint: 'its log says what it is doing' });
}

/** Adds the `config` command group (check, show, import, export, reload) to the `rex` program. */
export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('check, show, move or reload the REX configuration (rex.rc, its XML form, or a database)');

  config
    .command('check')
    .description('validate a configuration file and everything it includes (default: the active rex.rc)')
    .argument('[FILE]', 'the file to check (the same as -c FILE); without it: $REX_CONFIG, ./rex.rc, ~/rex.rc, $REX_ROOT/etc/rex.rc')
    .option('-c, --config <file>', 'the file to check')
    .option('--json', 'print JSON: {ok, file, files, hostName, listen, servers, clients}, or {ok: false, errors} (still exit status 1)')
    .action(async (arg: string | undefined, opts: { config?: string; json?: boolean }) => {
      const file = chosenFile(arg, opts);
      try {
        const { loadConfig } = await import('../../config/index.js');
        const loaded = await loadConfig(file === undefined ? {} : { file });
        const name = file ?? loaded.files[0] ?? '(no configuration file: built-in defaults)';
        if (opts.json) {
          const c = loaded.config;
          process.stdout.write(toJson({ ok: true, file: file ?? loaded.files[0] ?? null, files: loaded.files, hostName: c.hostName, listen: listenText(loaded), servers: c.servers.length, clients: c.clients.length }));
        } else {
          process.stdout.write(`${name}: ok\n${summary(loaded)}\n`);
        }
      } catch (e) {
        reportConfigError(e, opts.json === true);
      }
    });

  config
    .command('show')
    .description('print the effective configuration, each value with the file:line it came from')
    .option('--json', 'print JSON: {config, sources, files}')
    .option('-c, --config <file>', 'read this file instead of the active rex.rc')
    // The old name of -c (before one option name per meaning), kept for scripts that use it; deprecated in rex(1).
    .addOption(new Option('--file <file>', 'deprecated: -c, --config').hideHelp())
    .action(async (opts: { json?: boolean; config?: string; file?: string }) => {
      const file = chosenFile(undefined, opts);
      try {
        const { formatConfig, loadConfig } = await import('../../config/index.js');
        const loaded = await loadConfig(file === undefined ? {} : { file });
        process.stdout.write(formatConfig(loaded, { json: opts.json === true }));
      } catch (e) {
        reportConfigError(e, opts.json === true);
      }
    });

  const toHelp = 'where to write it: FILE (rc; .xml: the XML form; -: stdout) or a database: sqlite:PATH, postgresql://..., HOST.USER.DBMS.DB_NAME';
  // Checked here rather than by commander's requiredOption, which would report a missing --to before an unknown flag.
  const needTo = (to: string | undefined): string => {
    if (to === undefined) throw new RexError(ErrorCodes.USAGE, 'say where to write the configuration with --to PLACE', { hint: 'e.g. --to sqlite:/etc/rex/cfg.sqlite, --to rex.rc, --to -' });
    return to;
  };
  const move = async (from: string | undefined, to: string) => {
    const { configPlace, loadConfigFrom, writeConfigTo } = await import('../../config/transfer.js');
    const { loadConfig } = await import('../../config/index.js');
    const source = from === undefined ? undefined : configPlace(from);
    const loaded = source === undefined ? await loadConfig() : await loadConfigFrom(source);
    const shown = source === undefined ? loaded.files.join(', ') || '(built-in defaults)' : source.kind === 'db' ? source.target.shown : source.file;
    const said = await writeConfigTo(loaded, configPlace(to), shown);
    process.stderr.write(`rex config: ${said} from ${shown}\n`);
  };

  config
    .command('import')
    .description('copy a configuration (rc, XML or a database) to another place: the keys it sets, as rex config show prints them')
    .argument('<FROM>', 'the configuration to read: FILE (rc or .xml) or a database: sqlite:PATH, postgresql://..., HOST.USER.DBMS.DB_NAME')
    .option('--to <place>', toHelp)
    .action(async (from: string, opts: { to?: string }) => {
      const to = needTo(opts.to);
      try {
        await move(from, to);
      } catch (e) {
        reportConfigError(e);
      }
    });

  config
    .command('export')
    .description('write the active (or -c FILE) configuration elsewhere: an rc or XML file, or a database table rex_config')
    .option('--to <place>', toHelp)
    .option('-c, --config <file>', 'read this configuration instead of the active rex.rc')
    .action(async (opts: { to?: string; config?: string }) => {
      const to = needTo(opts.to);
      try {
        await move(opts.config, to);
      } catch (e) {
        reportConfigError(e);
      }
    });

  config
    .command('reload')
    .description('check the active configuration, then make its rexd re-read it (SIGHUP) and print what changed')
    .option('-c, --config <file>', 'the rexd of this configuration instead of the active rex.rc')
    .action(async (opts: { config?: string }) => {
      try {
        await reloadDaemon(opts.config);
      } catch (e) {
        reportConfigError(e);
      }
    });
}
