/**
 * Checks entry points against an ELF object's symbol table, so that definitions
 * written before `strip` (or by hand) are known to still name real functions.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';
import { locString, type EntryPointSet } from './entrypoint.js';

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

function distance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0]!;
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = d[j]!;
      d[j] = Math.min(d[j]! + 1, d[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = tmp;
    }
  }
  return d[b.length]!;
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
    const near = [...byName.keys()].map((n) => [n, distance(n, ep.name)] as const).filter(([, d]) => d <= 2).sort((a, b) => a[1] - b[1])[0];
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
