// Public names (docs/ENTRYPOINTS.md, "Public names"): repdb -gx lists a
// library's exported functions by the names callers use, from .dynsym with
// its symbol versions, with the prototypes of the DWARF subprograms at their
// addresses. The fixture (test/fixtures/names) has a weak alias, an old and a
// default version of one symbol (version script), an IFUNC and a hidden
// function; readelf is the oracle for what is exported.
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openDatabase } from '../../../src/util/sqlite.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEntryPointsXml, validateXmlText, checkAgainstElf } from '../../../src/gen/index.js';
import { exportedFunctions, readElf } from '../../../src/gen/elf/index.js';
import { ROOT, repdb, tempDir } from './helpers.js';

const NAMES = join(ROOT, 'test/fixtures/names');
const dir = tempDir('repdb-names-');
let lib: string;
let stripped: string;
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Builds the fixture library (with DWARF) and a stripped copy. */
export function buildNames(out: string): { lib: string; stripped: string } {
  const l = join(out, 'libnames.so');
  execFileSync('cc', ['-g', '-O1', '-shared', '-fPIC', `-Wl,--version-script=${join(NAMES, 'names.map')}`, '-o', l, join(NAMES, 'names.c')], { stdio: 'pipe' });
  const s = join(out, 'libnames-stripped.so');
  execFileSync('strip', ['-o', s, l], { stdio: 'pipe' });
  return { lib: l, stripped: s };
}

beforeAll(() => {
  ({ lib, stripped } = buildNames(dir));
});

/** Exported functions as readelf prints them: the callable name (NAME for NAME@@V or unversioned, NAME@V for an old version) and the type. */
function readelfExports(path: string): { name: string; type: string; bind: string; value: bigint }[] {
  const out = execFileSync('readelf', ['--dyn-syms', '-W', path], { encoding: 'utf8' });
  const rows: { name: string; type: string; bind: string; value: bigint }[] = [];
  for (const line of out.split('\n')) {
    const m = /^\s*\d+:\s+([0-9a-f]+)\s+\d+\s+(FUNC|IFUNC)\s+(GLOBAL|WEAK)\s+(DEFAULT|PROTECTED)\s+(\d+)\s+(\S+)/.exec(line);
    if (!m) continue;
    const sym = m[6]!.replace(/\s*\(\d+\)$/, '');
    const name = sym.includes('@@') ? sym.slice(0, sym.indexOf('@@')) : sym;
    rows.push({ name, type: m[2]!, bind: m[3]!, value: BigInt(`0x${m[1]}`) });
  }
  return rows.sort((a, b) => (a.name < b.name ? -1 : 1));
}

function entries(xml: string): Map<string, Record<string, string>> {
  const m = new Map<string, Record<string, string>>();
  for (const e of xml.matchAll(/<entry-point ([^>]*)>/g)) {
    const a: Record<string, string> = {};
    for (const p of e[1]!.matchAll(/([\w-]+)="([^"]*)"/g)) a[p[1]!] = p[2]!;
    m.set(a.name!, a);
  }
  return m;
}

describe('the ELF reader: .dynsym with .gnu.version and .gnu.version_d', () => {
  it('gives each exported function its version and whether it is the default, as readelf does', () => {
    const syms = exportedFunctions(readElf(readFileSync(lib), lib));
    const mine = syms.map((s) => ({ name: s.version !== undefined && s.versionHidden ? `${s.name}@${s.version}` : s.name, type: s.type === 'ifunc' ? 'IFUNC' : 'FUNC', bind: s.binding.toUpperCase(), value: s.value })).sort((a, b) => (a.name < b.name ? -1 : 1));
    expect(mine).toEqual(readelfExports(lib));
    expect(mine.map((s) => s.name)).toEqual(['bump', 'bump2', 'scale', 'scale@NAMES_1.0', 'twice', 'twice_alias', 'use_secret']);
    const scale = syms.filter((s) => s.name === 'scale').map((s) => [s.version, s.versionHidden === true]);
    expect(scale.sort()).toEqual([['NAMES_1.0', true], ['NAMES_2.0', false]]);
    // the hidden function is in .symtab only (the linker made it local), never in .dynsym
    const secret = readElf(readFileSync(lib), lib).symbols().filter((s) => s.name === 'secret');
    expect(secret.map((s) => [s.table, s.binding])).toEqual([['.symtab', 'local']]);
  });

  it('reads libc.so.6 the same as readelf (versions of the real thing)', () => {
    const path = '/lib/x86_64-linux-gnu/libc.so.6';
    const mine = exportedFunctions(readElf(readFileSync(path), path))
      .map((s) => ({ name: s.version !== undefined && s.versionHidden ? `${s.name}@${s.version}` : s.name, type: s.type === 'ifunc' ? 'IFUNC' : 'FUNC', bind: s.binding.toUpperCase(), value: s.value }))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    expect(mine).toEqual(readelfExports(path));
    expect(mine.length).toBeGreaterThan(2000);
  });

  it('a version index that no version section defines is an error naming the entry', () => {
    const buf = Buffer.from(readFileSync(lib));
    const elf = readElf(buf, 'bad.so');
    const vs = elf.sections.find((s) => s.name === '.gnu.version')!;
    const dyn = elf.sections.find((s) => s.name === '.dynsym')!;
    const syms = readElf(buf, 'x').symbols().filter((s) => s.table === '.dynsym');
    const k = syms.findIndex((s) => s.name === 'twice');
    buf.writeUInt16LE(0x77, vs.offset + k * 2);
    expect(dyn.size / 24).toBe(syms.length);
    expect(() => exportedFunctions(readElf(buf, 'bad.so'))).toThrow(new RegExp(`bad.so: section .gnu.version entry ${k}: version index 119 of symbol 'twice' is not defined`));
  });
});

describe('the ELF reader: malformed version sections', () => {
  it('a version definition or requirement chain that leaves its section is an error naming section and offset', () => {
    const elf = readElf(readFileSync(lib), lib);
    const vd = elf.sections.find((s) => s.name === '.gnu.version_d')!;
    const bad = Buffer.from(readFileSync(lib));
    bad.writeUInt32LE(0x100000, vd.offset + 16); // vd_next of the first Elf64_Verdef
    expect(() => exportedFunctions(readElf(bad, 'vd.so'))).toThrow(/vd.so: section .gnu.version_d offset 0x100000: Elf64_Verdef runs past the end of the section/);
    // libm needs versions of libc: it has a .gnu.version_r
    const libm = '/lib/x86_64-linux-gnu/libm.so.6';
    const vr = readElf(readFileSync(libm), libm).sections.find((s) => s.name === '.gnu.version_r')!;
    const badr = Buffer.from(readFileSync(libm));
    badr.writeUInt32LE(0x100000, vr.offset + 8); // vn_aux
    expect(() => exportedFunctions(readElf(badr, 'vr.so'))).toThrow(/vr.so: section .gnu.version_r offset 0x100000: Elf64_Vernaux runs past the end of the section/);
  });
});

describe('repdb -gx: public names', () => {
  it('lists exactly the exported functions (readelf --dyn-syms), by the names callers use', () => {
    const r = repdb(['-gx', lib]);
    expect(r.status).toBe(0);
    const e = entries(r.stdout);
    expect([...e.keys()].sort()).toEqual(readelfExports(lib).map((s) => s.name));
    // aliases share the prototype of the public name
    expect(e.get('twice')).toMatchObject({ version: 'NAMES_1.0', source: 'names.c:6' });
    expect(e.get('twice')!['alias-of']).toBeUndefined();
    expect(e.get('twice_alias')).toMatchObject({ 'alias-of': 'twice', 'dwarf-name': 'twice', source: 'names.c:6' });
    // the default version is the plain name; the old one is NAME@VERSION; each has its own DWARF function
    expect(e.get('scale')).toMatchObject({ version: 'NAMES_2.0', 'dwarf-name': 'new_scale' });
    expect(e.get('scale@NAMES_1.0')).toMatchObject({ version: 'NAMES_1.0', 'dwarf-name': 'old_scale' });
    // the IFUNC is marked; its address is the resolver's, so DWARF gives no prototype for it
    expect(e.get('bump')).toMatchObject({ ifunc: 'yes', prototype: 'no' });
    // ... unless its implementations are in DWARF under glibc's names (__bump2_c, __bump2_sse2) with one prototype
    expect(e.get('bump2')).toMatchObject({ ifunc: 'yes', 'dwarf-name': '__bump2_c' });
    expect(e.get('bump2')!.prototype).toBeUndefined();
    expect(e.has('secret')).toBe(false);
    expect(e.has('old_scale')).toBe(false);
    const set = readEntryPointsXml(r.stdout, 'x.xml');
    const byName = new Map(set.entries.map((x) => [x.name, x]));
    expect(byName.get('twice_alias')!.plan.desc).toEqual({ ...byName.get('twice')!.plan.desc, name: 'twice_alias' });
    expect(byName.get('bump')!.refusals[0]!.message).toContain("no prototype: 'bump' is exported");
    expect(byName.get('scale@NAMES_1.0')!.refusals).toEqual([]);
    // the document is valid against rex.dtd, and its names check against the object's symbols
    expect(() => validateXmlText(r.stdout, 'x.xml')).not.toThrow();
    expect(checkAgainstElf(set, { path: stripped })).toEqual([]);
  });

  it('SQL (-d) keeps the public-name attributes: read back from the database, the XML is the same', () => {
    const db = join(dir, 'names.db');
    const conn = openDatabase(db);
    conn.exec(repdb(['-gd', '-q', lib]).stdout);
    conn.close();
    const back = repdb(['-x', '--db', db, lib]);
    expect(back.stderr).toBe('');
    const strip = (t: string): string => t.replace(/<!--.*-->\n/g, '');
    expect(strip(back.stdout)).toBe(strip(repdb(['-gx', '-q', lib]).stdout));
  });

  it('--internal adds the hidden function, marked internal', () => {
    const r = repdb(['-gx', '--internal', lib]);
    expect(r.status).toBe(0);
    const e = entries(r.stdout);
    expect([...e.keys()].sort()).toEqual([...readelfExports(lib).map((s) => s.name), '__bump2_c', '__bump2_sse2', 'secret'].sort());
    expect(e.get('secret')).toMatchObject({ internal: 'yes', source: 'names.c:37' });
    expect(repdb(['--internal', '-x', lib]).stderr).toContain('--internal lists what DWARF knows, so it needs -g');
  });

  it('a stripped copy lists the same names with no prototype, and a hand-written prototype makes one callable', () => {
    const r = repdb(['-gx', stripped]);
    expect(r.status).toBe(0);
    expect(r.stderr).toContain('its 7 exported functions are listed with no prototype');
    const e = entries(r.stdout);
    expect([...e.keys()].sort()).toEqual(readelfExports(stripped).map((s) => s.name));
    for (const a of e.values()) expect(a.prototype).toBe('no');
    expect(e.get('twice_alias')!['alias-of']).toBe('twice');
    // give scale@NAMES_1.0 its prototype by hand: callable, and checked against the stripped object
    const edited = r.stdout.replace(/<entry-point name="scale@NAMES_1.0"([^>]*) prototype="no">\n\s*<\/entry-point>/, '<entry-point name="scale@NAMES_1.0"$1><returns type="int32"/><param name="x" type="int32"/></entry-point>');
    expect(edited).not.toBe(r.stdout);
    const xml = join(dir, 'stripped.xml');
    writeFileSync(xml, edited);
    const ok = repdb(['--xml', xml, stripped]);
    expect(ok.stdout).toBe('ok: libnames-stripped.so: 7 entry points, 1 callable, symbols checked\n');
    writeFileSync(xml, edited.replace(/name="scale@NAMES_1\.0"( address="[^"]*") version="NAMES_1\.0"/, 'name="scale@NAMES_9.0"$1 version="NAMES_9.0"'));
    expect(repdb(['--xml', xml, stripped]).stderr).toMatch(/stripped.xml:\d+: error: entry point 'scale@NAMES_9.0' is not a defined function in .*libnames-stripped.so[\s\S]*did you mean 'scale@NAMES_1.0'/);
  });

  it('a name and its version attribute must agree, and a prototype="no" entry may not have parameters', () => {
    const doc = (ep: string): string => `<?xml version="1.0"?>\n<rex-entry-points elf-file="l.so">\n${ep}\n</rex-entry-points>\n`;
    expect(() => readEntryPointsXml(doc('<entry-point name="f@V1" version="V2"/>'), 'v.xml')).toThrow(/v.xml:3: error: entry point 'f@V1' names version V1 but version="V2"|entry point 'f@V1' names version V1 but version="V2"/);
    expect(() => readEntryPointsXml(doc('<entry-point name="f" prototype="no"><param name="x" type="int32"/></entry-point>'), 'p.xml')).toThrow(/says prototype="no" but has <returns>\/<param> elements/);
    expect(() => readEntryPointsXml(doc('<entry-point name="f@"/>'), 'n.xml')).toThrow(/entry point name 'f@' is not a C identifier \(or NAME@VERSION\)/);
  });
});
