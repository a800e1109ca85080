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

/** Adds the `config` command group (check, show) to the `rex` program. */
export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('check or show the REX configuration (rex.rc or its XML form)');

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
}
