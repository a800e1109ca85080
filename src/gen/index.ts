/**
 * repdb as a library: from an ELF object (with DWARF) or from XML/SQL definitions
 * to validated entry points, SQL, typed TypeScript stubs and a C header.
 * src/cli/repdb.ts is a thin command line over these functions.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { readDebugInfo, readDebugInfoFromBuffer } from './dwarf/index.js';
import { readElf, elfSymbols } from './elf/index.js';
import { fromDebugInfo, type ModelDiagnostic } from './model/fromdebuginfo.js';
import { checkSymbols, type FunctionSymbol, type SymbolWarning } from './model/symbols.js';
import type { EntryPointSet, Owner } from './model/entrypoint.js';

export { fromDebugInfo } from './model/fromdebuginfo.js';
export { makeEntryPoint, locString, type EntryPoint, type EntryPointSet, type ParamDef, type Loc, type Owner } from './model/entrypoint.js';
export { checkSymbols } from './model/symbols.js';
export { parseTypeString, formatType } from './model/typestr.js';
export { writeEntryPointsXml } from './xml/write.js';
export { readEntryPointsXml } from './xml/read.js';
export { validateXmlText, DTD_PATH } from './xml/dtd.js';
export { writeEntryPointsSql, readEntryPointsDb, REXP_DDL } from './sql/index.js';
export { generateTs, generateCHeader, moduleBaseName } from './codegen/index.js';

/** An ELF object given by path, or by its bytes (stdin) with a display name. */
export type ElfInput = { path: string } | { bytes: Buffer; name: string };

/** Builds the entry points of an ELF object from its DWARF (repdb -g). */
export function entryPointsFromElf(elf: ElfInput, owner: Owner = {}, elfFile?: string): { set: EntryPointSet; diagnostics: ModelDiagnostic[] } {
  const info = 'path' in elf ? readDebugInfo(elf.path) : readDebugInfoFromBuffer(elf.bytes, elf.name);
  return fromDebugInfo(info, { ...owner, elfFile: elfFile ?? basename('path' in elf ? elf.path : elf.name) });
}

/** The defined function symbols of an ELF object (works on stripped objects through .dynsym). */
export function functionSymbols(elf: ElfInput): FunctionSymbol[] {
  if ('path' in elf) return elfSymbols(elf.path);
  return readElf(elf.bytes, elf.name).symbols().filter((s) => (s.type === 'func' || s.type === 'ifunc') && s.shndx !== 0 && s.name !== '');
}

/** Checks definitions made before stripping (or by hand) against an ELF object's symbols. */
export function checkAgainstElf(set: EntryPointSet, elf: ElfInput): SymbolWarning[] {
  return checkSymbols(set, functionSymbols(elf), 'path' in elf ? elf.path : elf.name);
}

/** Reads a whole file (for symmetry with stdin handling in the CLI). */
export function readText(path: string): string {
  return readFileSync(path, 'utf8');
}
