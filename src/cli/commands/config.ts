/**
 * `rex config check [FILE]` and `rex config show [--json] [--file F]`: validate a
 * configuration, and print the effective one with the origin of every value.
 */
import type { Command } from 'commander';
// The loader (ajv and its schema) is imported by the actions: other `rex` commands must not pay for it.
import type { LoadedConfig } from '../../config/index.js';
import { ConfigError } from '../../config/types.js';
import { isRexError } from '../../util/errors.js';

/** Prints configuration errors compiler-style (one `file:line: error: ...` per line) and sets exit status 1; rethrows anything else. */
function reportConfigError(e: unknown): void {
  if (e instanceof ConfigError) {
    process.stderr.write(`${e.message}\n`);
    process.stderr.write(`${e.diagnostics.length} error${e.diagnostics.length === 1 ? '' : 's'}\n`);
  } else if (isRexError(e)) {
    process.stderr.write(`${e.format()}\n`);
  } else {
    throw e;
  }
  process.exitCode = 1;
}

/** The one-line summary printed after `FILE: ok`. */
function summary(l: LoadedConfig): string {
  const c = l.config;
  const listen = c.listen.address.includes(':') ? `[${c.listen.address}]:${c.listen.port}` : `${c.listen.address}:${c.listen.port}`;
  const n = (k: number, what: string) => `${k} ${what}${k === 1 ? '' : 's'}`;
  return `host-name ${c.hostName}, listen ${listen}, ${n(c.servers.length, 'server')}, ${n(c.clients.length, 'client entry')
    .replace('entrys', 'entries')}, ${n(l.files.length, 'file')} read`;
}

/** Adds the `config` command group (check, show) to the `rex` program. */
export function registerConfigCommands(program: Command): void {
  const config = program.command('config').description('check or show the REX configuration (rex.rc or its XML form)');

  config
    .command('check')
    .description('validate a configuration file and everything it includes (default: the active rex.rc)')
    .argument('[FILE]', 'the file to check; without it: $REX_CONFIG, ./rex.rc, ~/rex.rc, $REX_ROOT/etc/rex.rc')
    .action(async (file: string | undefined) => {
      try {
        const { loadConfig } = await import('../../config/index.js');
        const loaded = await loadConfig(file === undefined ? {} : { file });
        const name = file ?? loaded.files[0] ?? '(no configuration file: built-in defaults)';
        process.stdout.write(`${name}: ok\n${summary(loaded)}\n`);
      } catch (e) {
        reportConfigError(e);
      }
    });

  config
    .command('show')
    .description('print the effective configuration, each value with the file:line it came from')
    .option('--json', 'print JSON: {config, sources, files}')
    .option('--file <FILE>', 'read this file instead of the active rex.rc')
    .action(async (opts: { json?: boolean; file?: string }) => {
      try {
        const { formatConfig, loadConfig } = await import('../../config/index.js');
        const loaded = await loadConfig(opts.file === undefined ? {} : { file: opts.file });
        process.stdout.write(formatConfig(loaded, { json: opts.json === true }));
      } catch (e) {
        reportConfigError(e);
      }
    });
}
