/**
 * Turns the definitions read from rc and XML files into one RexConfig: each key's
 * last definition wins, defaults fill the rest (both as the table of
 * src/config/keys.ts says), and the table's schema (ajv; schema/rex.schema.json
 * is its written form) checks the result. Every problem is mapped back to the
 * key and file:line that caused it.
 */
import { homedir, hostname, userInfo } from 'node:os';
import type { ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import { validate } from './schema-validate.generated.js';
import { ErrorCodes } from '../util/errors.js';
import {
  KEYS,
  KEYS_BY_FIELD,
  KEYS_BY_NAME,
  KEY_SPECS,
  sanitizeHostName,
  unknownKeyMessage,
  type Basis,
  type DefaultEnv,
  type Field,
  type PathContext,
  type RawValue,
} from './keys.js';
import { clip, type ConfigDiagnostic, type LoadedConfig, type RexConfig, type Source } from './types.js';

/** One `key : value` (or XML element) as read, before interpretation. */
export interface Definition {
  key: string;
  value: RawValue;
  file: string;
  line?: number;
}

/** What the defaults depend on: this machine's name, the user, and the home directory. */
export interface NormalizeEnv {
  /** System host name; the default host-name is derived from it. */
  systemHostName?: string;
  user?: string;
  home?: string;
}

/** Fills a NormalizeEnv from the process environment where the caller left gaps. */
export function resolveEnv(env: NormalizeEnv & { processEnv?: NodeJS.ProcessEnv } = {}): Required<NormalizeEnv> {
  const pe = env.processEnv ?? process.env;
  let user = env.user ?? pe.USER ?? pe.LOGNAME;
  if (user === undefined) {
    try {
      user = userInfo().username;
    } catch {
      user = 'unknown'; // no passwd entry (some containers): a name is still needed for paths
    }
  }
  return {
    systemHostName: env.systemHostName ?? hostname(),
    user,
    home: env.home ?? pe.HOME ?? homedir(),
  };
}

/**
 * The schema's validator, compiled by ajv when scripts/gen-config.mjs writes the views (with these options:
 * allErrors, verbose, strict), not at each start, which cost rexd about 100 ms; test/config/gen-config.test.ts
 * checks that it is what the table compiles to now.
 */
function getValidator(): ValidateFunction {
  return validate as unknown as ValidateFunction;
}

/** Every RexConfig is a Basis: the values derived defaults follow are typed alike in both. */
const asBasis = (c: RexConfig): Basis => c;

/** The built-in value of every key, given this host's name, user and home. */
export function defaultConfig(env: Required<NormalizeEnv>, hostName = sanitizeHostName(env.systemHostName)): RexConfig {
  const denv: DefaultEnv = { hostName, home: env.home.replace(/\/+$/, ''), user: env.user };
  const config: Record<string, unknown> = {};
  for (const s of KEY_SPECS) {
    // A copy: the table's own arrays and objects must not be shared with a config someone may change.
    config[s.field] = typeof s.default === 'function' ? (s.default as (e: DefaultEnv) => unknown)(denv) : structuredClone(s.default);
  }
  const cfg = config as RexConfig;
  for (const s of KEY_SPECS) {
    const d = s.derive?.value(asBasis(cfg));
    if (d !== undefined) config[s.field] = d.value;
  }
  return cfg;
}

/**
 * Interprets definitions in order (later ones override earlier ones) and validates
 * the result; problems are appended to `diags` rather than thrown, so that a caller
 * reading several files can report all of them together.
 */
export function normalize(defs: readonly Definition[], envIn: NormalizeEnv, diags: ConfigDiagnostic[]): LoadedConfig {
  const env = resolveEnv(envIn);
  const diag = (d: Omit<ConfigDiagnostic, 'line'> & { line?: number | undefined }) => {
    const { line, ...rest } = d;
    diags.push(line === undefined ? rest : { ...rest, line });
  };

  // Unknown keys first; the rest are grouped so the last definition of a key wins.
  const known: Definition[] = [];
  for (const d of defs) {
    if (KEYS_BY_NAME.has(d.key)) known.push(d);
    else diag({ code: ErrorCodes.CONFIG_UNKNOWN_KEY, file: d.file, line: d.line, key: clip(d.key), message: unknownKeyMessage(d.key) });
  }
  const winner = new Map<string, Definition>();
  for (const d of known) winner.set(d.key, d);

  // host-name is resolved before everything else: ${HOST} in paths depends on it.
  let hostName = sanitizeHostName(env.systemHostName);
  const hostDef = winner.get('host-name');
  const ctx: PathContext = { HOST: hostName, USER: env.user, HOME: env.home.replace(/\/+$/, '') || '/' };
  if (hostDef) {
    const r = KEYS.hostName.value.parse(hostDef.value, ctx);
    if (r.ok) hostName = r.value;
  }
  ctx.HOST = hostName;

  const config = defaultConfig(env, hostName) as unknown as Record<string, unknown>;
  const sources = {} as Record<keyof RexConfig, Source>;
  for (const s of KEY_SPECS) sources[s.field] = { file: '(default)' };
  const itemLines = new Map<string, (number | undefined)[]>();

  for (const d of known) {
    const spec = KEYS_BY_NAME.get(d.key)!;
    const r = spec.value.parse(d.value, ctx);
    if (!r.ok) {
      for (const p of r.problems) diag({ code: ErrorCodes.CONFIG_VALUE, file: d.file, line: p.line ?? d.line, key: d.key, message: p.message });
      if (r.partial === undefined) continue;
    }
    if (winner.get(d.key) !== d) continue;
    config[spec.field] = r.ok ? r.value : r.partial;
    sources[spec.field] = d.line === undefined ? { file: d.file } : { file: d.file, line: d.line };
    if (r.itemLines) itemLines.set(spec.field, r.itemLines);
  }

  // Derived defaults (listen follows this host's servers entry, paths follow state-directory),
  // computed from the values as set.
  const cfg = config as unknown as RexConfig;
  // A derived default that turns out invalid is reported at the definition it was derived from.
  const derived = new Map<Field, Field>();
  for (const s of KEY_SPECS) {
    if (s.derive === undefined || sources[s.field].file !== '(default)') continue;
    const d = s.derive.value(asBasis(cfg));
    if (d === undefined) continue;
    config[s.field] = d.value;
    const from = sources[s.derive.from];
    if (from.file !== '(default)') {
      sources[s.field] = { file: '(default)', note: `from ${d.via ?? KEYS[s.derive.from].key}${at(from)}` };
      derived.set(s.field, s.derive.from);
    }
  }

  const validate = getValidator();
  if (!validate(cfg)) {
    const errors = validate.errors ?? [];
    const failed = new Set(errors.map((e) => e.instancePath.split('/')[1]));
    for (const e of errors) {
      const field = e.instancePath.split('/')[1] as Field;
      const origin = derived.get(field);
      if (origin !== undefined && failed.has(origin)) continue; // the origin's own error says it all
      const located = origin === undefined ? sources : { ...sources, [field]: { ...sources[origin], note: sources[field].note } };
      const mapped = mapSchemaError(e, cfg, located, itemLines);
      if (mapped) diag(mapped);
    }
  }
  return { config: cfg, sources, files: [] };
}

function at(s: Source): string {
  return s.file === '(default)' ? '' : ` at ${s.file}${s.line === undefined ? '' : `:${s.line}`}`;
}

/** Maps one ajv error to the key (and list item line) it concerns, with the schema's description as "expected". */
function mapSchemaError(
  e: ErrorObject,
  cfg: RexConfig,
  sources: Record<keyof RexConfig, Source>,
  itemLines: Map<string, (number | undefined)[]>,
): ConfigDiagnostic | undefined {
  // oneOf reports each failing branch and then itself; the summary is enough.
  if (e.schemaPath.includes('/oneOf/')) return undefined;
  const parts = e.instancePath.split('/').slice(1);
  const field = parts[0] as Field | undefined;
  const spec = field === undefined ? undefined : KEYS_BY_FIELD.get(field);
  const list = spec?.value.list;
  const source: Source = field !== undefined && sources[field] ? sources[field] : { file: '(default)' };
  let line = source.line;
  let what = '';
  if (spec && list && parts[1] !== undefined) {
    const idx = Number(parts[1]);
    line = itemLines.get(spec.field)?.[idx] ?? line;
    what = list.entry(cfg[spec.field], idx) ?? '';
  }
  const leaf = parts.slice(list ? 2 : 1).join('.');
  const desc = (e.parentSchema as { description?: string } | undefined)?.description;
  // Show a top-level value the way it is written in rc (5ms, not 5); nested ones as JSON.
  let shown: string;
  try {
    shown = spec && parts.length === 1 && !list ? `"${clip(spec.value.print(e.data))}"` : clip(JSON.stringify(e.data) ?? '');
  } catch {
    shown = clip(JSON.stringify(e.data) ?? '');
  }
  const verdict: Record<string, string> = { minimum: 'is out of range', maximum: 'is out of range', maxLength: 'is too long', maxItems: 'has too many entries' };
  const subject = leaf === '' ? '' : `${leaf} `;
  const message = desc
    ? `${what}${subject}${shown} ${verdict[e.keyword] ?? 'is not valid'}; expected ${desc}`
    : `${what}${subject}${e.message ?? 'is not valid'}, got ${shown}`;
  const d: ConfigDiagnostic = { code: ErrorCodes.CONFIG_VALUE, file: source.file, message };
  if (spec) d.key = spec.key;
  if (line !== undefined) d.line = line;
  if (source.note) d.message += ` (the default, derived ${source.note.replace(/ at [^ ]*$/, '')})`;
  return d;
}
