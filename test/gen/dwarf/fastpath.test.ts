/**
 * The reader's fast paths (issue 14, scale) must decide exactly what the checked
 * paths decide: abbreviation tables parsed in one pass equal the checked parse,
 * DIEs skipped by precomputed attribute sizes end where decoding them ends, and
 * 64-bit DWARF (whose offsets the fast skip leaves to the checked reader) reads
 * the same as 32-bit DWARF. Run on the gcc fixtures (DWARF 4/5, -O0/-O2, 64-bit)
 * and, when libc6-dbg is installed, on libc's debug file.
 */
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { readDebugInfo } from '../../../src/gen/dwarf/index.js';
import { DieReader, readAbbrevs, readAbbrevsChecked, readUnits, type Sections, type Unit } from '../../../src/gen/dwarf/units.js';
import { readElf } from '../../../src/gen/elf/index.js';
import { buildFixture, tempDir } from './helpers.js';

const dir = tempDir('repdb-fastpath-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function sections(path: string): Sections {
  const elf = readElf(readFileSync(path), path);
  const sec = (n: string): Buffer => {
    const s = elf.section(n);
    return s ? elf.data(s) : Buffer.alloc(0);
  };
  return {
    file: path, info: sec('.debug_info'), abbrev: sec('.debug_abbrev'), str: sec('.debug_str'), lineStr: sec('.debug_line_str'),
    strOffsets: sec('.debug_str_offsets'), addr: sec('.debug_addr'), line: sec('.debug_line'), hasTypesSection: false,
  };
}

/** Walks every DIE of every unit: the skip must end where the decode ends. Returns the number of DIEs compared. */
function compareSkipWithRead(s: Sections, units: Unit[]): number {
  const r = new DieReader(s, units);
  const mismatches: string[] = [];
  let n = 0;
  for (const u of units) {
    let pos = u.firstDie;
    while (pos < u.end) {
      const ab = r.skipAttrs(u, pos);
      const end = r.skipEnd;
      const die = r.read(u, pos);
      // One expect at the end: libc has over a million DIEs.
      if ((ab === null) !== (die === null) || (die && (die.attrEnd !== end || die.tag !== ab!.tag))) {
        mismatches.push(`DIE at 0x${pos.toString(16)}: skip ends at 0x${end.toString(16)}, decode at 0x${(die?.attrEnd ?? -1).toString(16)}`);
      }
      pos = end;
      n++;
    }
  }
  expect(mismatches.slice(0, 5)).toEqual([]);
  return n;
}

function checkFile(path: string): number {
  const s = sections(path);
  const units = readUnits(s);
  expect(units.length).toBeGreaterThan(0);
  for (const off of new Set(units.map((u) => u.abbrevOffset))) expect(readAbbrevs(s, off)).toEqual(readAbbrevsChecked(s, off));
  return compareSkipWithRead(s, units);
}

describe('fast paths agree with the checked reader', () => {
  for (const flags of [['-gdwarf-4', '-O0'], ['-gdwarf-4', '-O2'], ['-gdwarf-5', '-O0'], ['-gdwarf-5', '-O2'], ['-gdwarf-5', '-gdwarf64', '-O2']]) {
    it(`fixture built with ${flags.join(' ')}`, () => {
      const lib = buildFixture(dir, 'fixture.c', `libfp${flags.join('')}.so`, flags);
      expect(checkFile(lib)).toBeGreaterThan(100);
    });
  }

  it('64-bit DWARF reads the same functions and types as 32-bit DWARF', () => {
    const strip = (path: string): string =>
      JSON.stringify(readDebugInfo(path), (k, v: unknown) => (k === 'die' || k === 'file' || k === 'debugFile' ? undefined : typeof v === 'bigint' ? String(v) : v));
    const d32 = strip(buildFixture(dir, 'fixture.c', 'libfp32.so', ['-gdwarf-5', '-O0']));
    const d64 = strip(buildFixture(dir, 'fixture.c', 'libfp64.so', ['-gdwarf-5', '-gdwarf64', '-O0']));
    expect(d32.length).toBeGreaterThan(1000);
    expect(d64).toBe(d32);
  });

  const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';
  const id = existsSync(LIBC) ? readElf(readFileSync(LIBC), LIBC).buildId() : undefined;
  const debug = id ? `/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug` : '';
  if (!existsSync(debug)) console.log(`skip: no installed debug info for ${LIBC} (apt-get install libc6-dbg): the fast paths are checked on the fixtures only`);
  it.skipIf(!existsSync(debug))("libc's debug file (libc6-dbg): every abbreviation table and every DIE", () => {
    expect(checkFile(debug)).toBeGreaterThan(500_000);
  }, 600_000);
});
