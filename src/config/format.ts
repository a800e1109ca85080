/**
 * Printing configurations: the effective configuration with the origin of each
 * value (`rex config show`), and any RexConfig as rc text that reads back to it.
 */
import { redactUrl } from '../db/postgres.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { KEY_SPECS } from './keys.js';
import type { LoadedConfig, RexConfig, Source } from './types.js';

/**
 * Text with the password of every postgresql:// URL in it (a programs entry's database) replaced by `***`: what
 * `rex config show` prints. Passwords belong in ~/.pgpass or $PGPASSWORD, not in rex.rc (docs/CONFIG.md).
 */
export function redactPasswords(text: string): string {
  return text.replace(/(postgres(?:ql)?:\/\/[^:/@\s"]*):[^@\s"]*@/gi, '$1:***@').replace(/([?&]password=)[^&\s",]*/gi, '$1***');
}

/** Renders a Source as `file:line`, `(default)` or `(default, from ...)`. */
export function formatSource(s: Source): string {
  const base = s.line === undefined ? s.file : `${s.file}:${s.line}`;
  return s.note === undefined ? base : `${base.replace(/\)$/, '')}, ${s.note})`;
}

/**
 * The effective configuration for `rex config show`: as JSON (`{config, sources,
 * files}`), or as rc text where each line ends with a block comment naming the
 * file:line the value came from, so the output is itself a valid rex.rc.
 */
export function formatConfig(loaded: LoadedConfig, opts: { json?: boolean } = {}): string {
  // A password in rex-log-server's URL is not shown (docs/LOG.md), nor one in a programs entry's database URL.
  const config = loaded.config.logServer ? { ...loaded.config, logServer: redactUrl(loaded.config.logServer) } : loaded.config;
  if (opts.json) return `${redactPasswords(JSON.stringify({ config, sources: loaded.sources, files: loaded.files }, null, 2))}\n`;
  const width = Math.max(...KEY_SPECS.map((s) => s.key.length));
  const rows = KEY_SPECS.map((s) => ({
    left: `${s.key.padEnd(width)} : ${redactPasswords(s.value.print(config[s.field]))}`,
    src: formatSource(loaded.sources[s.field]),
  }));
  const col = Math.min(72, Math.max(...rows.map((r) => r.left.length)));
  const head = [
    '# Effective REX configuration; later definitions override earlier ones.',
    `# Files read: ${loaded.files.length ? loaded.files.join(', ') : '(none: built-in defaults)'}`,
  ];
  return `${[...head, ...rows.map((r) => `${r.left.padEnd(col)}  /* ${r.src.replace(/\*\//g, '* /')} */`)].join('\n')}\n`;
}

/**
 * Prints a valid RexConfig as rc text that parses back to the same config.
 * Throws CONFIG_VALUE for the few values rc syntax cannot carry (a newline,
 * a comment opener, a trailing backslash); the XML form can carry those.
 */
export function toRcText(config: RexConfig): string {
  const lines = ['# Written by REX (toRcText); see docs/CONFIG.md.'];
  for (const s of KEY_SPECS) {
    const text = s.value.print(config[s.field]);
    if (/[\r\n]|\/\*|\\$/.test(text) || text !== text.trim()) {
      throw new RexError(ErrorCodes.CONFIG_VALUE, `key "${s.key}": the value ${JSON.stringify(text)} cannot be written in rc syntax`, {
        hint: 'use the XML form for values with newlines, "/*", a trailing backslash or surrounding spaces',
      });
    }
    lines.push(`${s.key} : ${text}`);
  }
  return `${lines.join('\n')}\n`;
}
