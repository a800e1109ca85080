/**
 * Finds the active configuration file (the seed's order), reads it and its
 * includes (cpp-style), and normalises everything into one LoadedConfig.
 */
import { open, realpath } from 'node:fs/promises';
import { constants, statSync, type Stats } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';
import { KEYS_BY_NAME } from './keys.js';
import { normalize, type Definition } from './normalize.js';
import { scanRc, type IncludeDirective } from './rc.js';
import { scanXml } from './xml.js';
import { CONFIG_DATABASE_KEY, configDatabaseTarget, readConfigDatabase } from './database.js';
import { ConfigError, clip, type ConfigDiagnostic, type LoadedConfig, type RexConfig } from './types.js';

/** Includes nested deeper than this are refused (cpp's own limit is 200; ours only needs to stop runaway chains). */
export const MAX_INCLUDE_DEPTH = 16;

/** A configuration file larger than this is refused unread (a rex.rc is a few kilobytes). */
export const MAX_CONFIG_BYTES = 1 << 20;

/** What kind of file a stat describes, for "is not a regular file" messages. */
function fileKind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Reads a configuration file, refusing before reading anything that is not a
 * regular file (/dev/zero, a FIFO) and a file larger than MAX_CONFIG_BYTES;
 * the descriptor it checks is the one it reads (no race with a swapped path).
 */
async function readConfigText(file: string): Promise<string> {
  const fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new Error(`it is ${fileKind(st)}, not a regular file; refusing to read it`);
    if (st.size > MAX_CONFIG_BYTES) throw new Error(`it is ${st.size} bytes, more than a configuration file can be (${MAX_CONFIG_BYTES} bytes); refusing to read it`);
    const buf = Buffer.alloc(st.size + 1);
    let n = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > st.size) throw new Error(`it grew while being read, past ${st.size} bytes; refusing to read it`);
    }
    return buf.subarray(0, n).toString('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * True when a scanned rc file looks like a rex.rc: at least one line sets a
 * known key or includes a file (or it has no settings at all). Problems in a
 * file that does not (e.g. `#include "/etc/shadow"`) are reported by line number
 * only, never with its content.
 */
function looksLikeRexRc(items: readonly { kind: string; def?: Definition }[], problems: number): boolean {
  if (items.length === 0 && problems === 0) return true;
  return items.some((it) => it.kind === 'include' || (it.def !== undefined && (KEYS_BY_NAME.has(it.def.key) || it.def.key === CONFIG_DATABASE_KEY)));
}

/** Where to look for configuration files; each defaults to the process's own. */
export interface LookupOptions {
  cwd?: string;
  home?: string;
  rexRoot?: string;
  env?: NodeJS.ProcessEnv;
}

/** Options of loadConfig. */
export interface LoadOptions extends LookupOptions {
  /** An explicit file; it must exist (CONFIG_NOT_FOUND otherwise). */
  file?: string;
  /** rc keys set after every file (e.g. from command-line flags); reported as `(override)`. */
  overrides?: Partial<Record<string, string>>;
  /** Whose view of a root installation to give (userView): default this process's uid and login name; uid 0 sees the host's. */
  uid?: number;
  userName?: string;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

function statOrUndefined(p: string): Stats | undefined {
  try {
    return statSync(p);
  } catch {
    return undefined;
  }
}

function lookup(opts: LookupOptions) {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const home = opts.home ?? env.HOME ?? '';
  const rexRoot = opts.rexRoot ?? (env.REX_ROOT || '/');
  return { env, cwd, home, rexRoot };
}

/** The candidate files in the seed's order: ./rex.rc, ~/rex.rc, ${REX_ROOT:-/}/etc/rex.rc, then the root installation's ${REX_ROOT:-/}/etc/rex/rex.rc. */
export function configCandidates(opts: LookupOptions = {}): string[] {
  const { cwd, home, rexRoot } = lookup(opts);
  const c = [join(cwd, 'rex.rc')];
  if (home !== '') c.push(join(home, 'rex.rc'));
  c.push(join(rexRoot, 'etc', 'rex.rc'));
  c.push(join(rexRoot, 'etc', 'rex', 'rex.rc'));
  return c;
}

/**
 * The active configuration file: $REX_CONFIG if set (whether or not it exists, so
 * that loadConfig can report it missing), else the first existing candidate.
 */
export function findConfigFile(opts: LookupOptions = {}): string | undefined {
  const { env, cwd } = lookup(opts);
  if (env.REX_CONFIG) return resolve(cwd, env.REX_CONFIG);
  return configCandidates(opts).find(isFile);
}

/** Directories searched for `#include <name>`, in order. */
export function systemIncludeDirs(rexRoot: string): string[] {
  return [join(rexRoot, 'etc', 'rex.d'), join(rexRoot, 'etc')];
}

interface Frame {
  file: string;
  real: string;
  line?: number;
}

/** Reads a file and everything it includes, appending definitions in cpp order (an include is read where it stands). */
class Reader {
  readonly defs: Definition[] = [];
  readonly diags: ConfigDiagnostic[] = [];
  readonly files: string[] = [];
  /** The config-database directive already followed: a configuration names one database. */
  private database?: Definition;

  constructor(
    private readonly rexRoot: string,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  async read(file: string, chain: Frame[]): Promise<void> {
    const real = await realpath(file).catch(() => resolve(file));
    const frame: Frame = { file, real };
    let text: string;
    try {
      text = await readConfigText(file);
    } catch (e) {
      const from = chain.at(-1);
      const why = (e as NodeJS.ErrnoException).code === 'EISDIR' ? 'it is a directory' : (e as Error).message;
      this.diags.push(
        from?.line !== undefined
          ? { code: ErrorCodes.CONFIG_INCLUDE, file: from.file, line: from.line, message: `cannot read included file "${file}": ${why}` }
          : { code: ErrorCodes.CONFIG_NOT_FOUND, file, message: `cannot read configuration file: ${why}` },
      );
      return;
    }
    if (!this.files.includes(file)) this.files.push(file);
    const xml = file.endsWith('.xml');
    const { items, diagnostics } = xml ? await scanXml(text, file) : scanRc(text, file);
    const defs = items.filter((it) => it.kind === 'def');
    if (!xml && !looksLikeRexRc(items, diagnostics.length)) {
      // Not a rex.rc (a secret, a binary): say where, never what. Line numbers come from the first problem.
      const first = Math.min(...diagnostics.map((d) => d.line ?? Infinity), ...defs.map((it) => it.def.line ?? Infinity));
      this.diags.push({
        code: ErrorCodes.CONFIG_SYNTAX,
        file,
        ...(Number.isFinite(first) ? { line: first } : {}),
        message: `line ${Number.isFinite(first) ? first : 1} is not a rex.rc setting, and no line of this file sets a rex.rc key: it does not look like a rex.rc, so its content is not shown (keys are: ${[...KEYS_BY_NAME.keys()].join(', ')})`,
      });
      return;
    }
    this.diags.push(...diagnostics);
    // An XML document that fails the DTD is not interpreted (its elements may not mean what they seem to).
    if (diagnostics.some((d) => d.code === ErrorCodes.CONFIG_XML)) return;
    for (const it of items) {
      if (it.kind === 'def' && it.def.key === CONFIG_DATABASE_KEY) await this.readDatabase(it.def);
      else if (it.kind === 'def') this.defs.push(it.def);
      else await this.include(it, [...chain, { ...frame, line: it.line }]);
    }
  }

  /**
   * `config-database : TARGET` (or the XML form's `<config-database target="TARGET"/>`): the table's rows, read where the directive stands (as an include), so that lines
   * after it override the database and the database overrides lines before it. A database that cannot be read
   * is an error at the directive's line: REX never runs on half a configuration.
   */
  private async readDatabase(def: Definition): Promise<void> {
    const err = (message: string) => this.diags.push({ code: ErrorCodes.CONFIG_DATABASE, file: def.file, ...(def.line !== undefined ? { line: def.line } : {}), key: CONFIG_DATABASE_KEY, message });
    if (this.database) return void err(`a second ${CONFIG_DATABASE_KEY}; the first is at ${this.database.file}:${this.database.line}, and a configuration reads one database`);
    this.database = def;
    const target = configDatabaseTarget(def.value.text, this.env);
    if (typeof target === 'string') return void err(target);
    try {
      this.defs.push(...(await readConfigDatabase(target, this.diags)));
      this.files.push(target.shown);
    } catch (e) {
      const r = e as RexError;
      err(`cannot read the configuration database ${target.shown}: ${r.message}${r.hint ? ` (${r.hint})` : ''}`);
    }
  }

  private async include(inc: IncludeDirective, chain: Frame[]): Promise<void> {
    const err = (message: string) => this.diags.push({ code: ErrorCodes.CONFIG_INCLUDE, file: inc.file, line: inc.line, message });
    const show = (frames: Frame[], last: string) => [...frames.map((f) => `${f.file}:${f.line}`), last].join(' -> ');
    if (inc.path === '') return void err('<include> needs a file name');

    // cpp semantics: "x" looks beside the including file first, then where <x> looks.
    const tried: string[] = [];
    if (!inc.system) tried.push(isAbsolute(inc.path) ? inc.path : join(dirname(inc.file), inc.path));
    if (!isAbsolute(inc.path)) tried.push(...systemIncludeDirs(this.rexRoot).map((d) => join(d, inc.path)));
    const target = tried.find(isFile);
    if (target === undefined) {
      const q = inc.system ? `<${clip(inc.path)}>` : `"${clip(inc.path)}"`;
      const special = tried.map(statOrUndefined).find((st) => st !== undefined);
      if (special) return void err(`included file ${q} is ${fileKind(special)}, not a regular file; refusing to read it`);
      return void err(`cannot find included file ${q} (looked for: ${tried.join(', ')})`);
    }
    const real = await realpath(target).catch(() => resolve(target));
    const loopAt = chain.findIndex((f) => f.real === real);
    if (loopAt >= 0) return void err(`include loop: ${show(chain.slice(loopAt), target)}`);
    if (chain.length >= MAX_INCLUDE_DEPTH) {
      return void err(`includes nested deeper than ${MAX_INCLUDE_DEPTH}: ${show(chain, target)}`);
    }
    await this.read(target, chain);
  }
}

/**
 * Loads the active configuration: the explicit `file`, else $REX_CONFIG, else the
 * first of ./rex.rc, ~/rex.rc, ${REX_ROOT}/etc/rex.rc; with no file at all the
 * defaults apply. Throws a ConfigError listing every problem in every file read.
 */
export async function loadConfig(opts: LoadOptions = {}): Promise<LoadedConfig> {
  const { env, cwd, home, rexRoot } = lookup(opts);
  const explicit = opts.file !== undefined ? resolve(cwd, opts.file) : env.REX_CONFIG ? resolve(cwd, env.REX_CONFIG) : undefined;
  const file = explicit ?? findConfigFile(opts);
  const reader = new Reader(rexRoot, env);
  if (file !== undefined) {
    // Keep a relative --file as typed: messages then name the file the way the user does.
    const shown = opts.file !== undefined && !isAbsolute(opts.file) && opts.cwd === undefined ? opts.file : file;
    const special = explicit !== undefined ? statOrUndefined(file) : undefined;
    if (special && !special.isFile()) {
      throw new RexError(ErrorCodes.CONFIG_NOT_FOUND, `configuration file is ${fileKind(special)}, not a regular file; refusing to read it`, {
        where: shown,
        hint: 'name a rex.rc file with --file/$REX_CONFIG',
      });
    }
    if (explicit !== undefined && !isFile(file)) {
      const origin = opts.file !== undefined ? '' : ' (named by $REX_CONFIG)';
      throw new RexError(ErrorCodes.CONFIG_NOT_FOUND, `configuration file not found${origin}`, {
        where: shown,
        hint: `create it, or choose another with --file/$REX_CONFIG; without one REX looks for ${configCandidates(opts).join(', ')}`,
      });
    }
    await reader.read(shown, []);
  }
  for (const [key, value] of Object.entries(opts.overrides ?? {})) {
    if (value !== undefined) reader.defs.push({ key, value: { text: value.trim() }, file: '(override)' });
  }
  const loaded = normalize(reader.defs, { user: env.USER ?? env.LOGNAME, home: home || undefined }, reader.diags);
  if (reader.diags.length) throw new ConfigError(reader.diags);
  const uid = opts.uid ?? process.getuid?.() ?? 0;
  return { ...loaded, config: uid === 0 ? loaded.config : userView(loaded.config, opts.userName ?? userInfo().username), files: reader.files };
}

/**
 * The host controller's state directory in a root installation (docs/ROOT.md section 7): the host's trust in the
 * cluster (the host keys it knows, join tokens, the members learnt by joining), owned by rex.rc host-user.
 */
export function hostTrustDir(config: RexConfig): string {
  return join(config.stateDirectory, 'host');
}

/**
 * A local user's view of a root installation's configuration (docs/ROOT.md, State and visibility): their
 * state directory is `users/USER` under the host's, and so are their transaction log and temporary
 * directory; the host's own files (host key, host log) are root's. Any other configuration is unchanged.
 */
export function userView(config: RexConfig, user: string): RexConfig {
  if (config.installation !== 'root') return config;
  const state = join(config.stateDirectory, 'users', user);
  return { ...config, stateDirectory: state, logDatabase: join(state, 'rex-log.sqlite'), tempDirectory: join(state, 'tmp') };
}
