/**
 * repdb as a library: from an ELF object (with DWARF) or from XML/SQL definitions
 * to validated entry points, SQL, typed TypeScript stubs and a C header.
 * src/cli/repdb.ts is a thin command line over these functions.
 */
import { readFileSync } from 'node:fs';
import { RexError } from '../util/errors.js';
import { basename } from 'node:path';
import { readDebugInfo, readDebugInfoFromBuffer } from './dwarf/index.js';
import { readElf, elfSymbols, exportedFunctions, callableName, type ElfFile } from './elf/index.js';
import { fromDebugInfo, type ModelDiagnostic } from './model/fromdebuginfo.js';
import { checkSymbols, publicEntryPoints, type FunctionSymbol, type PublicNamesOptions, type SymbolWarning } from './model/symbols.js';
import { ErrorCodes, isRexError } from '../util/errors.js';
import type { EntryPointSet, Owner } from './model/entrypoint.js';

export { fromDebugInfo } from './model/fromdebuginfo.js';
export { makeEntryPoint, locString, type EntryPoint, type EntryPointSet, type ParamDef, type Loc, type Owner } from './model/entrypoint.js';
export { checkSymbols, publicEntryPoints, callerName } from './model/symbols.js';
export { parseTypeString, formatType } from './model/typestr.js';
export { writeEntryPointsXml } from './xml/write.js';
export { readEntryPointsXml } from './xml/read.js';
export { validateXmlText, DTD_PATH } from './xml/dtd.js';
export { writeEntryPointsSql, readEntryPointsDb, REXP_DDL, REXP_SCHEMA } from './sql/index.js';
export { writeEntryPointsTo, readEntryPointsFrom } from './sql/store.js';
export { generateTs, generateCHeader, moduleBaseName } from './codegen/index.js';

/** An ELF object given by path, or by its bytes (stdin) with a display name. */
export type ElfInput = { path: string } | { bytes: Buffer; name: string };

/**
 * Builds the entry points of an ELF object (repdb -g): its exported functions by
 * their public names (.dynsym with symbol versions), with the prototypes of the
 * DWARF subprograms at their addresses (docs/ENTRYPOINTS.md, "Public names").
 * An object without debug information lists its exported functions with no
 * prototype (and a warning). `internal` adds the functions only DWARF knows.
 */
export function entryPointsFromElf(elf: ElfInput, owner: Owner = {}, elfFile?: string, opts: PublicNamesOptions = {}): { set: EntryPointSet; diagnostics: ModelDiagnostic[] } {
  const display = 'path' in elf ? elf.path : elf.name;
  const recorded = elfFile ?? basename(display);
  let file: ElfFile;
  try {
    file = readElf('path' in elf ? readFileSync(elf.path) : elf.bytes, display);
  } catch (e) {
    if (isRexError(e)) throw e;
    throw new RexError(ErrorCodes.ELF_MALFORMED, `${display}: cannot read: ${(e as Error).message}`, { where: display, cause: e, hint: 'check the path to the library' });
  }
  const exported = exportedFunctions(file);
  let dwarf: { set: EntryPointSet; diagnostics: ModelDiagnostic[] } | undefined;
  const diagnostics: ModelDiagnostic[] = [];
  try {
    const info = 'path' in elf ? readDebugInfo(elf.path) : readDebugInfoFromBuffer(elf.bytes, elf.name);
    dwarf = fromDebugInfo(info, { ...owner, elfFile: recorded });
    diagnostics.push(...dwarf.diagnostics);
  } catch (e) {
    // Without DWARF the exported functions are still listed, with no prototype; with nothing exported there is nothing to list.
    if (!isRexError(e) || e.code !== ErrorCodes.DWARF_MISSING || exported.length === 0) throw e;
    diagnostics.push({ where: display, message: `${e.message}; its ${exported.length} exported functions are listed with no prototype (give them one in the XML, docs/ENTRYPOINTS.md)` });
  }
  return { set: publicEntryPoints(dwarf?.set, exported, { ...owner, elfFile: recorded }, opts), diagnostics };
}

/** The defined function symbols of an ELF object (works on stripped objects through .dynsym). */
export function functionSymbols(elf: ElfInput): FunctionSymbol[] {
  const syms = 'path' in elf ? elfSymbols(elf.path) : readElf(elf.bytes, elf.name).symbols().filter((s) => (s.type === 'func' || s.type === 'ifunc') && s.shndx !== 0 && s.name !== '');
  // A versioned .dynsym symbol is also found by the name callers use for it (`pow@GLIBC_2.2.5`).
  return syms.flatMap((s) => (s.table === '.dynsym' && callableName(s) !== s.name ? [{ name: callableName(s), value: s.value }] : [s]));
}

/** Checks definitions made before stripping (or by hand) against an ELF object's symbols. */
export function checkAgainstElf(set: EntryPointSet, elf: ElfInput): SymbolWarning[] {
  return checkSymbols(set, functionSymbols(elf), 'path' in elf ? elf.path : elf.name);
}

/** Reads a whole file (for symmetry with stdin handling in the CLI). */
export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
