// Public names against the real thing: Debian's libm.so.6 and libc.so.6 with
// their debug information from libc6-dbg (under /usr/lib/debug/.build-id,
// found by build-id). repdb -gx lists the names users call (cbrt, not __cbrt;
// pow at its default version and pow@GLIBC_2.2.5), with the prototypes of the
// DWARF functions at their addresses; readelf --dyn-syms is the oracle for
// what is exported. Without libc6-dbg the tests say so and are skipped (CI
// installs it, and allows no skip: test/allowed-skips.txt).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readElf } from '../../../src/gen/elf/index.js';
import { readEntryPointsXml, validateXmlText, type EntryPoint } from '../../../src/gen/index.js';
import { formatType } from '../../../src/gen/model/typestr.js';
import { repdb } from './helpers.js';

const LIBM = '/lib/x86_64-linux-gnu/libm.so.6';
const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';

function debugFileOf(path: string): string | undefined {
  if (!existsSync(path)) return undefined;
  const id = readElf(readFileSync(path), path).buildId();
  if (!id) return undefined;
  const f = `/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug`;
  return existsSync(f) ? f : undefined;
}

const haveDbg = debugFileOf(LIBM) !== undefined && debugFileOf(LIBC) !== undefined;
if (!haveDbg) {
  console.warn(`public-names-glibc: SKIPPED: no debug information for ${LIBM} / ${LIBC} under /usr/lib/debug/.build-id (install libc6-dbg: apt-get install libc6-dbg)`);
}

function exportedNames(path: string): string[] {
  const out = execFileSync('readelf', ['--dyn-syms', '-W', path], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const names = new Set<string>();
  for (const line of out.split('\n')) {
    const m = /^\s*\d+:\s+[0-9a-f]+\s+\d+\s+(?:FUNC|IFUNC)\s+(?:GLOBAL|WEAK)\s+(?:DEFAULT|PROTECTED)\s+\d+\s+(\S+)/.exec(line);
    if (!m) continue;
    const sym = m[1]!.replace(/\s*\(\d+\)$/, '');
    names.add(sym.includes('@@') ? sym.slice(0, sym.indexOf('@@')) : sym);
  }
  return [...names].sort();
}

function sig(ep: EntryPoint): string {
  return `${formatType(ep.returns)} ${ep.name}(${ep.params.map((p) => formatType(p.type)).join(', ')})`;
}

function listing(path: string): { text: string; byName: Map<string, EntryPoint> } {
  const r = repdb(['-gx', '-q', path]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const set = readEntryPointsXml(r.stdout, `${path}.xml`);
  return { text: r.stdout, byName: new Map(set.entries.map((e) => [e.name, e])) };
}

describe.skipIf(!haveDbg)('repdb -gx on glibc with libc6-dbg', () => {
  it('libm.so.6: the public names readelf shows, with prototypes from DWARF', () => {
    const { text, byName } = listing(LIBM);
    expect(() => validateXmlText(text, 'libm.xml')).not.toThrow();
    expect([...byName.keys()].sort()).toEqual(exportedNames(LIBM));
    expect(byName.has('__cbrt')).toBe(false);
    expect(sig(byName.get('cbrt')!)).toBe('double cbrt(double)');
    expect(byName.get('cbrt')!.dwarfName).toBe('__cbrt');
    // pow: the default version is the plain name, the old one NAME@VERSION (SVID error handling)
    expect(sig(byName.get('pow')!)).toBe('double pow(double, double)');
    expect(byName.get('pow')!.version).toBe('GLIBC_2.29');
    expect(sig(byName.get('pow@GLIBC_2.2.5')!)).toBe('double pow@GLIBC_2.2.5(double, double)');
    expect(byName.get('pow@GLIBC_2.2.5')!.address).not.toBe(byName.get('pow')!.address);
    expect(sig(byName.get('ldexp')!)).toBe('double ldexp(double, int32)');
    expect(sig(byName.get('frexp')!)).toBe('double frexp(double, int32*)');
    // int *eptr: a pointer to a non-const scalar with no other clue is an output of one element, marked as guessed
    const eptr = byName.get('frexp')!.params[1]!;
    expect([eptr.name, eptr.direction, eptr.directionInferred, eptr.sizeIs, eptr.string]).toEqual(['eptr', 'out', true, undefined, undefined]);
    expect(byName.get('frexp')!.refusals).toEqual([]);
    expect(text).toMatch(/<param name="eptr" type="int32\*" direction="out" direction-inferred="yes"\/>/);
    for (const [f, p] of [['modf', 'iptr'], ['remquo', 'quo'], ['lgamma_r', 'signgamp']] as const) {
      const q = byName.get(f)!.params.find((x) => x.name === p)!;
      expect([f, q.direction, q.directionInferred]).toEqual([f, 'out', true]);
      expect(byName.get(f)!.refusals).toEqual([]);
    }
    expect(byName.get('sincos')!.params.slice(1).map((p) => p.direction)).toEqual(['out', 'out']);
    // the value parameters are left alone
    expect(byName.get('frexp')!.params[0]!.direction).toBeUndefined();
    expect(byName.get('frexp')!.params[0]!.directionInferred).toBeUndefined();
    expect(sig(byName.get('lround')!)).toBe('int64 lround(double)');
    for (const n of ['cbrt', 'pow', 'pow@GLIBC_2.2.5', 'ldexp', 'lround']) expect(byName.get(n)!.refusals).toEqual([]);
    // aliases name their public entry point
    expect(byName.get('powf64')!.aliasOf).toBe('pow');
    // fmax is listed; this glibc builds it from assembly (sysdeps/x86_64/fpu/s_fmax.S), so it has
    // DWARF only where a C version is built: with no DWARF function it must say "no prototype"
    const fmax = byName.get('fmax')!;
    expect(fmax.noPrototype ? fmax.refusals[0]!.message : sig(fmax)).toMatch(/^(no prototype: 'fmax' is exported|double fmax\(double, double\))/);
    // an IFUNC (sin: FMA/AVX2/SSE2 variants) is marked, and resolved only on the callee host
    expect(byName.get('sin')!.ifunc).toBe(true);
    // its prototype comes from its C implementations (__sin_fma, __sin_avx...), which agree
    expect(sig(byName.get('sin')!)).toBe('double sin(double)');
    expect(byName.get('sin')!.dwarfName).toMatch(/^__sin_(fma|avx|sse2)/);
  });

  it('libc.so.6: strlen (an IFUNC) and strtol', () => {
    const { text, byName } = listing(LIBC);
    expect(() => validateXmlText(text, 'libc.xml')).not.toThrow();
    expect([...byName.keys()].sort()).toEqual(exportedNames(LIBC));
    const strlen = byName.get('strlen')!;
    expect(strlen.ifunc).toBe(true);
    // its implementations are assembly (__strlen_avx2, __strlen_sse2...), with no DWARF definition; the
    // units that call it declare it (string.h, DW_AT_declaration), and those declarations agree
    expect(strlen.noPrototype).toBeUndefined();
    expect(strlen.prototypeFrom).toBe('declaration');
    expect(sig(strlen)).toBe('uint64 strlen(char*)');
    expect([strlen.params[0]!.direction, strlen.params[0]!.string, strlen.params[0]!.directionInferred]).toEqual(['in', true, true]);
    expect(strlen.refusals).toEqual([]);
    expect(text).toMatch(/<entry-point name="strlen"[^>]* prototype-from="declaration"/);
    // strtol: nptr (const char *) is an input string; endptr (char **, named like an end pointer) points into it
    const strtol = byName.get('strtol')!;
    expect(sig(strtol)).toBe('int64 strtol(char*, char**, int32)');
    expect(strtol.prototypeFrom).toBeUndefined();
    expect(strtol.params.map((p) => [p.name, p.direction, p.string, p.into, p.directionInferred])).toEqual([
      ['nptr', 'in', true, undefined, true],
      ['endptr', 'out', undefined, 'nptr', true],
      ['base', undefined, undefined, undefined, undefined],
    ]);
    expect(strtol.refusals).toEqual([]);
    // strsep's char **stringp is a cursor, not an end pointer: it stays bare
    expect(byName.get('strsep')!.refusals.some((r) => /stringp/.test(r.where))).toBe(true);
    expect(byName.has('__strtol')).toBe(false);
  });
});
