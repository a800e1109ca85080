/**
 * Separate debug information, found the way gdb finds it: build-id under a
 * debug root, then .gnu_debuglink beside the file, in .debug/, and under the
 * debug root; plus a real system library with installed debug info.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readDebugInfo } from '../../../src/gen/dwarf/index.js';
import { readElf } from '../../../src/gen/elf/index.js';
import { isRexError, ErrorCodes } from '../../../src/util/errors.js';
import { buildFixture, oracleFunctions, ourFunctions, renderOurs, tempDir } from './helpers.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[]): void {
  execFileSync(cmd, args, { stdio: 'pipe' });
}

/** Builds lib, splits its debug info into `debug`, strips lib; returns the full (unstripped) copy too. */
function split(name: string, flags: string[] = ['-gdwarf-5', '-O2', '-Wl,--build-id']): { lib: string; debug: string; full: string } {
  const sub = join(dir, name);
  mkdirSync(sub, { recursive: true });
  const lib = buildFixture(sub, 'fixture.c', 'libfx.so', flags);
  const full = join(sub, 'full.so');
  copyFileSync(lib, full);
  const debug = join(sub, 'libfx.so.debug');
  run('objcopy', ['--only-keep-debug', '--compress-debug-sections=zlib', lib, debug]);
  run('strip', ['--strip-debug', '--strip-unneeded', lib]);
  run('objcopy', [`--add-gnu-debuglink=${debug}`, lib]);
  return { lib, debug, full };
}

describe('separate debug info', () => {
  it('finds the debug file via .gnu_debuglink in the same directory and verifies its CRC', () => {
    const { lib, debug, full } = split('samedir');
    expect(readElf(readFileSync(lib), lib).section('.debug_info')).toBeUndefined();
    const info = readDebugInfo(lib, { debugRoots: [join(dir, 'nowhere')] });
    expect(info.file).toBe(lib);
    expect(info.debugFile).toBe(debug);
    expect(ourFunctions(info)).toEqual(ourFunctions(readDebugInfo(full)));
    expect(ourFunctions(info)).toEqual(oracleFunctions(full));
  });

  it('finds it in the .debug/ subdirectory, then under a debug root (<root>/<dir>/name)', () => {
    const { lib, debug } = split('subdir', ['-gdwarf-4', '-O0', '-Wl,--build-id=none']);
    mkdirSync(join(dir, 'subdir', '.debug'));
    const moved = join(dir, 'subdir', '.debug', 'libfx.so.debug');
    copyFileSync(debug, moved);
    rmSync(debug);
    expect(readDebugInfo(lib, { debugRoots: [] }).debugFile).toBe(moved);

    const root = join(dir, 'root');
    const underRoot = join(root, dir, 'subdir', 'libfx.so.debug');
    mkdirSync(join(root, dir, 'subdir'), { recursive: true });
    copyFileSync(moved, underRoot);
    rmSync(moved);
    expect(readDebugInfo(lib, { debugRoots: [root] }).debugFile).toBe(underRoot);
  });

  it('finds it by build-id under <root>/.build-id/xx/rest.debug before the debuglink', () => {
    const { lib, debug } = split('buildid');
    const id = readElf(readFileSync(lib), lib).buildId()!;
    expect(id).toMatch(/^[0-9a-f]{40}$/);
    expect(execFileSync('readelf', ['-n', lib], { encoding: 'utf8' })).toContain(`Build ID: ${id}`);
    const root = join(dir, 'bid-root');
    mkdirSync(join(root, '.build-id', id.slice(0, 2)), { recursive: true });
    const p = join(root, '.build-id', id.slice(0, 2), `${id.slice(2)}.debug`);
    copyFileSync(debug, p);
    rmSync(debug);
    const info = readDebugInfo(lib, { debugRoots: [root] });
    expect(info.debugFile).toBe(p);
    expect(info.functions.map((f) => f.name)).toContain('fx_sum');
  });

  it('rejects a debuglink file whose CRC does not match, then says what to do', () => {
    const { lib, debug } = split('badcrc');
    const b = readFileSync(debug);
    b[b.length - 1] ^= 0xff; // still a valid ELF (last byte is in the section header table padding or a header field)
    writeFileSync(debug, b);
    let err: unknown;
    try {
      readDebugInfo(lib, { debugRoots: [] });
    } catch (e) {
      err = e;
    }
    expect(isRexError(err)).toBe(true);
    const re = err as { code: string; message: string; hint: string };
    expect(re.code).toBe(ErrorCodes.DWARF_MISSING);
    expect(re.message).toContain('.gnu_debuglink libfx.so.debug');
    expect(re.hint).toContain('-dbgsym');
  });

  it('reports DWARF_MISSING with a hint for a library without any debug info', () => {
    const lib = buildFixture(dir, 'fixture.c', 'libnodebug.so', ['-O2', '-Wl,--build-id=none']);
    expect(() => readDebugInfo(lib, { debugRoots: [] })).toThrow(/no DWARF debug information \(\.debug_info\).*no build-id note, no \.gnu_debuglink/);
  });
});

const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';
function libcDebugPresent(): boolean {
  if (!existsSync(LIBC)) return false;
  const id = readElf(readFileSync(LIBC), LIBC).buildId();
  return id !== undefined && existsSync(`/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug`);
}
const hasLibcDebug = libcDebugPresent();
if (!hasLibcDebug) console.log(`skip: no installed debug info for ${LIBC} (apt-get install libc6-dbg to run the system-library test)`);

describe.skipIf(!hasLibcDebug)('a real system library with installed debug info (libc6-dbg)', () => {
  let info: ReturnType<typeof readDebugInfo>;
  beforeAll(() => {
    info = readDebugInfo(LIBC);
  });

  it('reads it through the build-id, with compressed sections', () => {
    expect(info.debugFile).toMatch(/^\/usr\/lib\/debug\/\.build-id\/[0-9a-f]{2}\/[0-9a-f]+\.debug$/);
    expect(info.dwarfVersions.length).toBeGreaterThan(0);
    expect(info.functions.length).toBeGreaterThan(1000);
  });

  it('has the signatures of well-known functions', () => {
    const by = (n: string) => info.functions.find((f) => f.name === n);
    const f = by('qsort')!;
    expect(f.params.map((p) => p.name)).toEqual(['b', 'n', 's', 'cmp']);
    expect(by('__libc_malloc')!.params.length).toBe(1);
    expect(by('__printf')!.variadic).toBe(true);
  });

  it('agrees with readelf on every function it lists', () => {
    const oracle = oracleFunctions(info.debugFile);
    const ours = ourFunctions(info);
    let compared = 0;
    for (const [name, sig] of ours) {
      const o = oracle.get(name);
      expect(o, name).toBeDefined();
      // Where a name has several definitions (clones, versioned copies) we pick the ELF symbol's; compare arity only.
      if (o!.params.length === sig.params.length) {
        expect(sig, name).toEqual(o);
        compared++;
      }
    }
    expect(compared).toBeGreaterThan(ours.size * 0.95);
  }, 120_000);

  it('takes prototypes from declarations only for defined symbols readelf shows no DWARF definition of', () => {
    const oracle = oracleFunctions(info.debugFile);
    const declared = info.functions.filter((f) => f.declaration);
    expect(declared.length).toBeGreaterThan(0);
    // readelf shows assembly units' subprograms too (name and address, no signature): those the reader skips with a warning
    const assembly = new Set(info.diagnostics.flatMap((d) => /^function (\S+) is written in assembly/.exec(d.message)?.[1] ?? []));
    for (const f of declared) {
      expect(oracle.has(f.name) && !assembly.has(f.name), f.name).toBe(false);
      expect(f.address, f.name).toBeUndefined();
    }
    const strlen = declared.find((f) => f.name === 'strlen')!;
    expect([renderOurs(info, strlen.returnType), ...strlen.params.map((p) => renderOurs(info, p.type))]).toEqual([renderOurs(info, strlen.returnType), expect.stringMatching(/const/)]);
    expect(strlen.variadic).toBe(false);
  }, 120_000);

  it('lists assembly functions only as diagnostics, never with a guessed signature', () => {
    expect(info.functions.some((f) => info.types[f.returnType]!.kind === 'unsupported')).toBe(false);
    expect(info.diagnostics.some((d) => /is written in assembly/.test(d.message))).toBe(true);
  });
});
