/**
 * The rc form: flat `key : value` lines, `#`/`//` whole-line comments, cpp-style
 * `/* ... *\/` block comments and backslash line splicing, and `#include`.
 * Scanning is pure (no file access); the loader resolves includes.
 */
import { ErrorCodes } from '../util/errors.js';
import { normalize, type Definition, type NormalizeEnv } from './normalize.js';
import { ConfigError, clip, type ConfigDiagnostic, type LoadedConfig } from './types.js';

/** An `#include` directive: `"path"` (relative to the includer) or `<name>` (system directories). */
export interface IncludeDirective {
  kind: 'include';
  path: string;
  system: boolean;
  file: string;
  line: number;
}

/** One item of a scanned file, in file order: a definition or an include. */
export type ConfigItem = { kind: 'def'; def: Definition } | IncludeDirective;

/** The items of one file and the problems found while scanning it. */
export interface ScanResult {
  items: ConfigItem[];
  diagnostics: ConfigDiagnostic[];
}

// cpp conditionals and macros would silently be read as comments and change the
// meaning of the file (both branches of an #ifdef would apply): refuse them.
const UNSUPPORTED_DIRECTIVE = /^#(ifdef|ifndef|if|elif|else|endif|define|undef|pragma|error)\b/;

/** Scans rc text into definitions and includes, collecting every syntax problem. */
export function scanRc(text: string, file: string): ScanResult {
  const items: ConfigItem[] = [];
  const diagnostics: ConfigDiagnostic[] = [];
  const err = (line: number, message: string, key?: string, code: ConfigDiagnostic['code'] = ErrorCodes.CONFIG_SYNTAX) => {
    const d: ConfigDiagnostic = { code, file, line, message };
    if (key !== undefined) d.key = key;
    diagnostics.push(d);
  };

  const physical = text.split('\n');
  let inBlock = false;
  let blockStart = 0;
  for (let i = 0; i < physical.length; i++) {
    const lineNo = i + 1;
    let logical = stripCr(physical[i]!);
    // Backslash splicing, as cpp does before anything else; the logical line keeps its first line number.
    while (logical.endsWith('\\') && i + 1 < physical.length) {
      i += 1;
      logical = logical.slice(0, -1) + stripCr(physical[i]!);
    }

    let rest = logical;
    const startedInBlock = inBlock;
    if (inBlock) {
      const end = rest.indexOf('*/');
      if (end < 0) continue;
      inBlock = false;
      rest = rest.slice(end + 2);
    }
    const trimmed = rest.trim();
    if (!startedInBlock && trimmed.startsWith('//')) continue;
    if (!startedInBlock && trimmed.startsWith('#')) {
      const inc = /^#\s*include\b\s*(.*)$/.exec(trimmed);
      if (inc) {
        const directive = parseIncludeOperand(inc[1]!.trim());
        if (typeof directive === 'string') err(lineNo, directive, undefined, ErrorCodes.CONFIG_INCLUDE);
        else items.push({ kind: 'include', ...directive, file, line: lineNo });
      } else if (UNSUPPORTED_DIRECTIVE.test(trimmed)) {
        const name = UNSUPPORTED_DIRECTIVE.exec(trimmed)![1];
        err(lineNo, `unsupported preprocessor directive "#${name}"; only #include is supported (other lines starting with "#" are comments)`);
      }
      continue;
    }

    // Block comments may start anywhere on a line (cpp replaces each with a space).
    let body = '';
    for (;;) {
      const open = rest.indexOf('/*');
      if (open < 0) {
        body += rest;
        break;
      }
      body += `${rest.slice(0, open)} `;
      const close = rest.indexOf('*/', open + 2);
      if (close < 0) {
        inBlock = true;
        blockStart = lineNo;
        break;
      }
      rest = rest.slice(close + 2);
    }
    const stmt = body.trim();
    if (stmt === '') continue;
    const colon = stmt.indexOf(':');
    if (colon < 0) {
      err(lineNo, `expected "key : value", got "${clip(stmt)}" (no ":")`);
      continue;
    }
    const key = stmt.slice(0, colon).trim();
    if (key === '') {
      err(lineNo, `expected "key : value", got "${clip(stmt)}" (the key before ":" is empty)`);
      continue;
    }
    items.push({ kind: 'def', def: { key, value: { text: stmt.slice(colon + 1).trim() }, file, line: lineNo } });
  }
  if (inBlock) err(blockStart, 'unterminated comment: "/*" has no matching "*/"');
  return { items, diagnostics };
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

function parseIncludeOperand(s: string): { path: string; system: boolean } | string {
  const m = /^(?:"([^"]*)"|<([^>]*)>)\s*$/.exec(s);
  if (!m) return `#include expects "relative/path" or <name>, got ${s === '' ? 'nothing' : `"${clip(s)}"`}`;
  const path = m[1] ?? m[2]!;
  if (path.trim() === '') return '#include names an empty path';
  if (path.includes('\u0000')) return '#include path contains a NUL byte';
  return { path, system: m[2] !== undefined };
}

/**
 * Parses one rc text on its own (no file access: `#include` is reported, since
 * only loadConfig resolves it) and returns the normalised configuration.
 * Throws a ConfigError listing every problem.
 */
export function parseRc(text: string, file: string, env: NormalizeEnv = {}): LoadedConfig {
  const { items, diagnostics } = scanRc(text, file);
  const defs: Definition[] = [];
  for (const it of items) {
    if (it.kind === 'def' && it.def.key === 'config-database') diagnostics.push({ code: ErrorCodes.CONFIG_DATABASE, file, line: it.def.line!, key: it.def.key, message: 'config-database needs a database; use loadConfig() to read it' });
    else if (it.kind === 'def') defs.push(it.def);
    else diagnostics.push({ code: ErrorCodes.CONFIG_INCLUDE, file, line: it.line, message: `#include "${clip(it.path)}" needs the file system; use loadConfig() to read included files` });
  }
  const loaded = normalize(defs, env, diagnostics);
  if (diagnostics.length) throw new ConfigError(diagnostics);
  return { ...loaded, files: [file] };
}
