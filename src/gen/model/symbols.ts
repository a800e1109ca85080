/**
 * Checks entry points against an ELF object's symbol table, so that definitions
 * written before `strip` (or by hand) are known to still name real functions.
 */
import leven from 'leven';
import { RexError, ErrorCodes } from '../../util/errors.js';
import { locString, makeEntryPoint, type EntryPoint, type EntryPointSet, type EntrySpec, type Owner, type PublicName } from './entrypoint.js';

/** A defined function symbol (the fields of src/gen/elf's ElfSymbol that matter here). */
export interface FunctionSymbol {
  name: string;
  value: bigint;
}

/** Warnings from {@link checkSymbols} (an address that moved is not fatal). */
export interface SymbolWarning {
  where: string;
  message: string;
}

/**
 * Throws ENTRY_SYMBOL_MISSING, located at the entry point's definition, for the
 * first entry point with no defined function symbol; returns warnings for moved addresses.
 */
export function checkSymbols(set: EntryPointSet, symbols: FunctionSymbol[], elfName: string): SymbolWarning[] {
  const byName = new Map(symbols.map((s) => [s.name, s]));
  const warnings: SymbolWarning[] = [];
  const missing = set.entries.filter((ep) => !byName.has(ep.name));
  if (missing.length > 0) {
    const ep = missing[0]!;
    const near = [...byName.keys()].map((n) => [n, leven(n, ep.name)] as const).filter(([, d]) => d <= 2).sort((a, b) => a[1] - b[1])[0];
    const more = missing.length > 1 ? ` (also missing: ${missing.slice(1, 6).map((m) => m.name).join(', ')}${missing.length > 6 ? ', ...' : ''})` : '';
    throw new RexError(ErrorCodes.ENTRY_SYMBOL_MISSING, `entry point '${ep.name}' is not a defined function in ${elfName}${more}`, {
      where: locString(ep.origin),
      hint: near ? `did you mean '${near[0]}'? Otherwise remove the entry point or rebuild the library` : 'the library no longer exports it: remove the entry point or use the library it was written for',
    });
  }
  for (const ep of set.entries) {
    const s = byName.get(ep.name)!;
    if (ep.address !== undefined && ep.address !== s.value) {
      warnings.push({ where: locString(ep.origin), message: `'${ep.name}' was recorded at 0x${ep.address.toString(16)} but ${elfName} has it at 0x${s.value.toString(16)}; the symbol's address is used` });
      ep.address = s.value;
    }
  }
  return warnings;
}

/** An exported function symbol of .dynsym (the fields of src/gen/elf's ElfSymbol that matter here). */
export interface ExportedSymbol {
  name: string;
  value: bigint;
  binding: string;
  type: string;
  version?: string;
  versionHidden?: boolean;
}

/** Suffixes of IFUNC implementations (glibc's multiarch names: __sin_fma, __memcpy_avx_unaligned_erms). */
const IFUNC_VARIANTS = '(?:sse2|sse3|ssse3|sse4_1|sse4_2|sse41|sse42|avx|avx2|avx512f|avx512|evex|evex512|fma|fma4|c|generic|x86_64)(?:_[a-z0-9_]+)?';

/** Options of {@link publicEntryPoints}. */
export interface PublicNamesOptions {
  /** Also list the DWARF functions no exported symbol reaches (hidden or local), marked internal. */
  internal?: boolean;
}

/** The name a caller uses for an exported symbol: plain for the default (or no) version, `name@VERSION` for an older one. */
export function callerName(s: ExportedSymbol): string {
  return s.version !== undefined && s.versionHidden ? `${s.name}@${s.version}` : s.name;
}

/**
 * Which of the names at one address is the public one, the others being its
 * aliases: a default version before an older one, GLOBAL before WEAK, fewer
 * leading underscores, then the shorter name, then by name.
 */
function primaryFirst(a: ExportedSymbol, b: ExportedSymbol): number {
  const key = (s: ExportedSymbol): [number, number, number, number] => [s.versionHidden ? 1 : 0, s.binding === 'global' ? 0 : 1, /^_*/.exec(s.name)![0].length, s.name.length];
  const ka = key(a);
  const kb = key(b);
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
  return callerName(a) < callerName(b) ? -1 : callerName(a) > callerName(b) ? 1 : 0;
}

/**
 * Maps an object's exported function symbols to the entry points read from its
 * DWARF (docs/ENTRYPOINTS.md, "Public names"): each exported name becomes an
 * entry point with the prototype of the DWARF subprogram at its address; names
 * that share an address are aliases of the public one; an older version is
 * `name@VERSION`; an IFUNC symbol's address is its resolver's, so its prototype
 * comes only from a DWARF function of the same name, and otherwise, like every
 * exported function without DWARF, it is listed with no prototype. `dwarf` is
 * undefined for an object without debug information.
 */
export function publicEntryPoints(dwarf: EntryPointSet | undefined, exported: ExportedSymbol[], base: { elfFile: string } & Owner, opts: PublicNamesOptions = {}): EntryPointSet {
  const byAddr = new Map<bigint, EntryPoint[]>();
  const byName = new Map<string, EntryPoint>();
  // Prototypes from declarations (no DWARF definition, no address): found by name only.
  const declared = new Map<string, EntryPoint>();
  for (const ep of dwarf?.entries ?? []) {
    if (ep.prototypeFrom === 'declaration') {
      declared.set(ep.name, ep);
      continue;
    }
    if (ep.address !== undefined) byAddr.set(ep.address, [...(byAddr.get(ep.address) ?? []), ep]);
    byName.set(ep.name, ep);
  }
  // Two DWARF functions at one address (lround and llround where long is long long): the one named like the symbol.
  const atAddr = (addr: bigint, name: string): EntryPoint | undefined => {
    const l = byAddr.get(addr);
    return l?.find((e) => e.name.replace(/^_+/, '') === name) ?? l?.[0];
  };
  // An IFUNC's prototype: a DWARF function of its name, or else its implementations named as glibc
  // names them (__sin_fma, __sin_avx2, __strchr_sse2...), provided they all have one prototype.
  const ifuncPrototype = (primary: string, name: string): EntryPoint | undefined => {
    const same = byName.get(name) ?? byName.get(primary) ?? byName.get(`__${primary}`);
    if (same) return same;
    const decl = declared.get(name) ?? declared.get(primary);
    if (decl) return decl;
    const variant = new RegExp(`^__${primary.replace(/[^A-Za-z0-9_]/g, '')}_(${IFUNC_VARIANTS})$`);
    const impls = (dwarf?.entries ?? []).filter((e) => variant.test(e.name));
    if (impls.length === 0) return undefined;
    const proto = (e: EntryPoint): string => JSON.stringify({ ...e.plan.desc, name: '' });
    return impls.every((e) => proto(e) === proto(impls[0]!)) ? impls[0] : undefined;
  };
  const groups = new Map<bigint, ExportedSymbol[]>();
  const seen = new Set<string>();
  for (const s of exported) {
    const n = callerName(s);
    if (seen.has(n)) continue; // the same name twice in .dynsym: one entry point
    seen.add(n);
    const g = groups.get(s.value);
    if (g) g.push(s);
    else groups.set(s.value, [s]);
  }
  const entries: EntryPoint[] = [];
  const reached = new Set<bigint>();
  for (const [addr, syms] of groups) {
    syms.sort(primaryFirst);
    const primary = callerName(syms[0]!);
    for (const s of syms) {
      const ifunc = s.type === 'ifunc';
      // An IFUNC's address is its resolver (which returns a function pointer): never its prototype.
      const src = ifunc ? ifuncPrototype(syms[0]!.name, s.name) : (atAddr(addr, s.name) ?? declared.get(s.name) ?? declared.get(syms[0]!.name));
      if (src && !ifunc) reached.add(addr);
      const name = callerName(s);
      const info: PublicName = {
        ...(s.version !== undefined ? { version: s.version } : {}),
        ...(name !== primary ? { aliasOf: primary } : {}),
        ...(ifunc ? { ifunc: true } : {}),
      };
      entries.push(src ? rename(src, name, addr, info) : noPrototype(name, addr, base, info));
    }
  }
  if (opts.internal) {
    for (const ep of dwarf?.entries ?? []) {
      if (ep.address !== undefined && (reached.has(ep.address) || groups.has(ep.address))) continue;
      if (seen.has(ep.name) || ep.prototypeFrom === 'declaration') continue;
      entries.push({ ...ep, internal: true });
    }
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const owner: Owner = {};
  for (const k of ['host', 'user', 'program', 'config'] as const) if (base[k] !== undefined) owner[k] = base[k];
  return {
    elfFile: base.elfFile,
    ...owner,
    entries,
    types: dwarf?.types ?? [],
    enums: dwarf?.enums ?? [],
    typeOrigins: dwarf?.typeOrigins ?? new Map(),
    typeSources: dwarf?.typeSources ?? new Map(),
  };
}

/** The entry point `ep` under another name (its frames are planned again, since the plan carries the name). */
function rename(ep: EntryPoint, name: string, addr: bigint, info: PublicName): EntryPoint {
  const spec: EntrySpec = {
    name,
    elfFile: ep.elfFile,
    ...pickOwner(ep),
    address: addr,
    params: ep.params,
    returns: ep.returns,
    variadic: ep.variadic,
    origin: ep.origin,
    ...(ep.source !== undefined ? { source: ep.source } : {}),
    ...info,
    ...(ep.name !== name ? { dwarfName: ep.name } : {}),
    ...(ep.prototypeFrom !== undefined ? { prototypeFrom: ep.prototypeFrom } : {}),
  };
  return makeEntryPoint(spec, new Map(ep.types.map((t) => [t.name, t])), new Map(ep.enums.map((e) => [e.name, e])));
}

function noPrototype(name: string, addr: bigint, base: { elfFile: string } & Owner, info: PublicName): EntryPoint {
  return makeEntryPoint(
    { name, elfFile: base.elfFile, ...pickOwner(base), address: addr, params: [], returns: { kind: 'void' }, variadic: false, origin: { file: base.elfFile }, ...info, noPrototype: true },
    new Map(),
    new Map(),
  );
}

function pickOwner(o: Owner): Owner {
  const r: Owner = {};
  for (const k of ['host', 'user', 'program', 'config'] as const) if (o[k] !== undefined) r[k] = o[k];
  return r;
}
