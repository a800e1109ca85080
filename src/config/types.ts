/**
 * The shapes shared by the rc reader, the XML reader and the normaliser: the
 * normalised configuration, where each value came from, and the error that
 * carries every problem found in a configuration at once.
 */
import { RexError, type ErrorCode } from '../util/errors.js';
import { QUOTE_MAX, quote } from '../util/quote.js';
import type { ConfigOf, KEYS } from './keys.js';

// The values' own types live with their parsers (values.ts), which the key table (keys.ts) uses.
export type { AutoTransfer, ProgramEntry, ServerEntry } from './values.js';

/**
 * The normalised configuration that both the rc and the XML form produce: one
 * field per key of the table in src/config/keys.ts, of the type its value
 * parses to (see that table for what each field means).
 */
export type RexConfig = ConfigOf<typeof KEYS>;

/** rex.rc placement-policy: least-loaded (the default), or round-robin / random for comparison. */
export type PlacementPolicy = RexConfig['placementPolicy'];

/** Log verbosity, most to least severe. */
export type LogLevel = RexConfig['logLevel'];

/** Where a value was set: a file and line, `(default)`, or `(override)`. */
export interface Source {
  file: string;
  line?: number;
  /** For derived defaults: what the default was derived from. */
  note?: string;
}

/** The result of loading a configuration: the values, their origins, and the files read. */
export interface LoadedConfig {
  config: RexConfig;
  sources: Record<keyof RexConfig, Source>;
  /** Every file read, in the order first read. */
  files: string[];
}

/** One problem found in a configuration, located at file:line and (when known) a key. */
export interface ConfigDiagnostic {
  code: ErrorCode;
  file: string;
  line?: number;
  key?: string;
  message: string;
}

/** Shortens a user-supplied fragment for a message so a binary file cannot flood the terminal (src/util/quote.ts). */
export function clip(s: string, max = QUOTE_MAX): string {
  return quote(s, max);
}

/** Orders diagnostics by file (in order of first appearance) and then by line. */
export function sortDiagnostics(diags: readonly ConfigDiagnostic[]): ConfigDiagnostic[] {
  const fileOrder = new Map<string, number>();
  for (const d of diags) if (!fileOrder.has(d.file)) fileOrder.set(d.file, fileOrder.size);
  return diags
    .map((d, i) => ({ d, i }))
    .sort((a, b) => fileOrder.get(a.d.file)! - fileOrder.get(b.d.file)! || (a.d.line ?? Infinity) - (b.d.line ?? Infinity) || a.i - b.i)
    .map((x) => x.d);
}

/** Formats one diagnostic as `file:line: error: key "K": message`, the form compilers use. */
export function formatDiagnostic(d: ConfigDiagnostic): string {
  const where = d.line === undefined ? d.file : `${d.file}:${d.line}`;
  return `${where}: error: ${d.key === undefined ? '' : `key "${d.key}": `}${d.message}`;
}

/**
 * The single RexError thrown for a configuration with problems; `diagnostics`
 * holds each of them so that callers (and tests) need not parse the message.
 */
export class ConfigError extends RexError {
  readonly diagnostics: ConfigDiagnostic[];

  constructor(unsorted: ConfigDiagnostic[]) {
    const diagnostics = sortDiagnostics(unsorted);
    const first = diagnostics[0]!;
    const lines = diagnostics.map(formatDiagnostic);
    super(first.code, lines.join('\n'));
    this.diagnostics = diagnostics;
  }

  /** Every diagnostic on its own line; no extra prefix, since each carries its own location. */
  override format(): string {
    return this.message;
  }
}
