import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readElf } from '../../src/gen/elf/index.js';
import { NEVER_SENT, neededLibraries, readDynamic, systemLibraryDirs } from '../../src/exec/executor/libraries.js';
import { isRexError } from '../../src/util/errors.js';
import { libraryDir } from '../../src/exec/executor/transfer.js';
import type { Connection } from '../../src/protocol/connection.js';
import type { MessageOf } from '../../src/protocol/messages.js';
import { runs } from '../helpers/property.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** ldd's answer (the loader itself, run on this host) as the oracle: NAME -> path, without glibc's own libraries. */
function ldd(program: string, env: NodeJS.ProcessEnv = {}): Map<string, string> {
  const out = execFileSync('ldd', [program], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', ...env } });
  const m = new Map<string, string>();
  for (const line of out.split('\n')) {
    const x = /^\s*(\S+) => (\/\S+) \(/.exec(line);
    if (x && !NEVER_SENT.has(x[1]!)) m.set(x[1]!, x[2]!);
  }
  return m;
}

describe('neededLibraries: the libraries a program needs, found as ld.so finds them, without running it', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rex-needed-'));
  const cc = (...args: string[]) => execFileSync('cc', args, { cwd: dir });

  beforeAll(() => {
    for (const d of ['p', 'q', 'bin', 'bin/lib']) mkdirSync(join(dir, d), { recursive: true });
    // Two different libA.so.1, in p and q, so that the search order decides which one is found.
    for (const d of ['p', 'q']) {
      writeFileSync(join(dir, `a-${d}.c`), `const char *a_where(void) { return "${d}"; }\n`);
      cc('-shared', '-fPIC', '-Wl,-soname,libA.so.1', '-o', join(d, 'libA.so.1'), `a-${d}.c`);
    }
    // libB needs libA, which it finds through its own RUNPATH $ORIGIN/../p (transitive needs, $ORIGIN of a library).
    writeFileSync(join(dir, 'b.c'), 'const char *a_where(void); const char *b_where(void) { return a_where(); }\n');
    cc('-shared', '-fPIC', '-Wl,-soname,libB.so.2', '-o', 'bin/lib/libB.so.2', 'b.c', 'p/libA.so.1', '-Wl,-rpath,$ORIGIN/../../p', '-Wl,--enable-new-dtags');
    writeFileSync(join(dir, 'main.c'), '#include <stdio.h>\nconst char *a_where(void);\nint main(void) { puts(a_where()); return 0; }\n');
    writeFileSync(join(dir, 'mainb.c'), '#include <stdio.h>\nconst char *b_where(void);\nint main(void) { puts(b_where()); return 0; }\n');
    cc('-o', 'bin/runpath', 'main.c', 'p/libA.so.1', `-Wl,-rpath,${join(dir, 'p')}`, '-Wl,--enable-new-dtags');
    cc('-o', 'bin/rpath', 'main.c', 'p/libA.so.1', `-Wl,-rpath,${join(dir, 'p')}`, '-Wl,--disable-new-dtags');
    cc('-o', 'bin/origin', 'mainb.c', 'bin/lib/libB.so.2', '-Wl,-rpath,$ORIGIN/lib', '-Wl,--enable-new-dtags');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const names = (libs: { name: string; path: string }[]) => new Map(libs.map((l) => [l.name, l.path]));

  it('DT_RUNPATH comes after LD_LIBRARY_PATH; DT_RPATH before it (as ldd says)', () => {
    const q = join(dir, 'q');
    const runpath = join(dir, 'bin/runpath');
    const rpath = join(dir, 'bin/rpath');
    expect(names(neededLibraries(runpath, q))).toEqual(new Map([['libA.so.1', join(q, 'libA.so.1')]]));
    expect(names(neededLibraries(runpath, q))).toEqual(ldd(runpath, { LD_LIBRARY_PATH: q }));
    expect(names(neededLibraries(rpath, q))).toEqual(new Map([['libA.so.1', join(dir, 'p', 'libA.so.1')]]));
    expect(names(neededLibraries(rpath, q))).toEqual(ldd(rpath, { LD_LIBRARY_PATH: q }));
    expect(names(neededLibraries(runpath, undefined))).toEqual(ldd(runpath));
  });

  it('follows $ORIGIN and the needs of libraries, breadth first, with the content hash of each', () => {
    const prog = join(dir, 'bin/origin');
    const libs = neededLibraries(prog, undefined);
    expect(libs.map((l) => [l.name, l.path])).toEqual([
      ['libB.so.2', join(dir, 'bin/lib/libB.so.2')],
      ['libA.so.1', join(dir, 'bin/lib/../../p/libA.so.1')],
    ]);
    for (const l of libs) {
      expect(l.sha256).toBe(sha(readFileSync(l.path)));
      expect(l.size).toBe(readFileSync(l.path).length);
    }
    expect([...names(libs).keys()].sort()).toEqual([...ldd(prog).keys()].sort());
  });

  // claim: exec.libraries-ldd
  it('agrees with ldd on programs of this host, and never lists glibc\'s own libraries', () => {
    for (const p of ['/usr/bin/python3', '/usr/bin/gdb', '/usr/bin/ssh', '/usr/bin/curl', process.execPath]) {
      if (!existsSync(p)) continue;
      const libs = neededLibraries(p, undefined);
      const ours = new Map(libs.map((l) => [l.name, l.path]));
      const theirs = ldd(p);
      expect([...ours.keys()].sort(), p).toEqual([...theirs.keys()].sort());
      // ldd prints the path as found in the search directory; compare the files, not the spelling.
      for (const [n, path] of ours) expect(sha(readFileSync(path)), `${p}: ${n}`).toBe(sha(readFileSync(theirs.get(n)!)));
      for (const l of libs) expect(NEVER_SENT.has(l.name)).toBe(false);
    }
  });

  it('a static program, a script and a missing file need nothing', () => {
    writeFileSync(join(dir, 'script.sh'), '#!/bin/sh\necho hi\n');
    expect(neededLibraries(join(dir, 'script.sh'), undefined)).toEqual([]);
    expect(neededLibraries(join(dir, 'nope'), undefined)).toEqual([]);
    // -nostdlib: a static program that needs no libc.a, so the case exists on every host.
    writeFileSync(join(dir, 'static.c'), 'void _start(void) { for (;;) __asm__ volatile ("mov $60, %eax; xor %edi, %edi; syscall"); }\n');
    cc('-static', '-nostdlib', '-o', 'static', 'static.c');
    expect(neededLibraries(join(dir, 'static'), undefined)).toEqual([]);
  });

  it('systemLibraryDirs reads ld.so.conf with include globs, then the built-in directories', () => {
    const conf = join(dir, 'ld.so.conf');
    mkdirSync(join(dir, 'conf.d'));
    writeFileSync(conf, '# comment\n/opt/first\ninclude conf.d/*.conf\n');
    writeFileSync(join(dir, 'conf.d', 'b.conf'), '/opt/b # trailing comment\n');
    writeFileSync(join(dir, 'conf.d', 'a.conf'), '/opt/a\nrelative/ignored\n');
    writeFileSync(join(dir, 'conf.d', 'skip.txt'), '/opt/never\n');
    const dirs = systemLibraryDirs(conf);
    expect(dirs.slice(0, 3)).toEqual(['/opt/first', '/opt/a', '/opt/b']);
    expect(dirs).not.toContain('/opt/never');
    expect(dirs).toContain('/usr/lib/x86_64-linux-gnu');
  });
});

describe('readDynamic on damaged input', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rex-dyn-'));
  let lib: Buffer;
  let dynOff: number;
  let dynstr: { offset: number; size: number };

  beforeAll(() => {
    writeFileSync(join(dir, 'x.c'), 'int x(void) { return 1; }\n');
    execFileSync('cc', ['-shared', '-fPIC', '-Wl,-soname,libx.so.1', '-o', join(dir, 'libx.so'), join(dir, 'x.c'), '-Wl,--no-as-needed', '-lm']);
    lib = readFileSync(join(dir, 'libx.so'));
    const elf = readElf(lib, 'libx.so');
    const dyn = elf.sections.find((s) => s.type === 6)!;
    dynOff = dyn.offset;
    const str = elf.sections[dyn.link]!;
    dynstr = { offset: str.offset, size: str.size };
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Index of the first dynamic entry with this tag. */
  const entry = (buf: Buffer, tag: bigint): number => {
    for (let i = 0; ; i++) {
      const t = buf.readBigInt64LE(dynOff + i * 16);
      if (t === tag) return i;
      if (t === 0n) throw new Error(`no tag ${tag}`);
    }
  };

  it('reads DT_NEEDED and DT_SONAME of a good library', () => {
    expect(readDynamic(lib, 'libx.so')).toMatchObject({ needed: expect.arrayContaining(['libm.so.6', 'libc.so.6']), soname: 'libx.so.1' });
  });

  it('a string offset past the string table names the entry and its file offset', () => {
    const bad = Buffer.from(lib);
    const i = entry(bad, 1n);
    bad.writeBigUInt64LE(BigInt(dynstr.size + 5), dynOff + i * 16 + 8);
    expect(() => readDynamic(bad, 'libx.so')).toThrow(
      new RegExp(`^libx\\.so: \\.dynamic entry ${i} at offset 0x${(dynOff + i * 16).toString(16)}: string offset 0x${(dynstr.size + 5).toString(16)} is past the end of its string table`),
    );
  });

  it('a string without its NUL is refused, not read past its table', () => {
    const bad = Buffer.from(lib);
    const i = entry(bad, 14n);
    const start = Number(bad.readBigUInt64LE(dynOff + i * 16 + 8));
    bad.fill(0x41, dynstr.offset + start, dynstr.offset + dynstr.size);
    expect(() => readDynamic(bad, 'libx.so')).toThrow(/\.dynamic entry \d+ at offset 0x[0-9a-f]+: string at 0x[0-9a-f]+ is not NUL-terminated/);
  });

  it('fuzz: any damage gives a result or a RexError, never another exception', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 16 }), fc.boolean(), (edits, inDynamic) => {
        const buf = Buffer.from(lib);
        for (const [pos, v] of edits) {
          // Half of the runs aim at the dynamic section and its strings, where this parser's own reads are.
          const at = inDynamic ? dynOff + (pos % 256) : pos % buf.length;
          if (at < buf.length) buf[at] = v;
        }
        try {
          const d = readDynamic(buf, 'fuzz.so');
          expect(Array.isArray(d.needed)).toBe(true);
        } catch (e) {
          if (!isRexError(e)) throw e;
        }
      }),
      { numRuns: runs(400) },
    );
  });
});

describe('libraryDir refuses EXEC libs entries that would escape or clash in the per-run directory', () => {
  const temp = mkdtempSync(join(tmpdir(), 'rex-libdir-'));
  afterAll(() => rmSync(temp, { recursive: true, force: true }));
  const ctx = { hostName: 'beta', stateDirectory: temp, log: { info: () => {}, warn: () => {} } };
  // Never reached: each request is refused before anything is fetched.
  const conn = {} as Connection;
  const exec = (libs: { name: string; path: string; sha256: Uint8Array }[]) => ({ type: 'EXEC', stream: 1, path: '/bin/x', libs }) as MessageOf<'EXEC'>;
  const h = Buffer.alloc(32, 1);

  it.each([
    [[{ name: '../../evil.so', path: '/x', sha256: h }], /EXEC libs entry 0 \("\.\.\/\.\.\/evil\.so"\): needs a file name/],
    [[{ name: '..', path: '/x', sha256: h }], /EXEC libs entry 0 \("\.\."\)/],
    [[{ name: '', path: '/x', sha256: h }], /EXEC libs entry 0 \(""\)/],
    [[{ name: 'liba.so', path: '/x', sha256: Buffer.alloc(31) }], /EXEC libs entry 0 \("liba\.so"\).*32-byte sha256/],
  ])('entry %#', async (libs, message) => {
    await expect(libraryDir(exec(libs), conn, ctx)).rejects.toThrow(message);
    expect(existsSync(join(temp, 'exec-run'))).toBe(false);
  });

  it('a name given twice is refused at its second entry', async () => {
    // The first entry is present "here" (same path, same hash), so only the repeat is judged.
    const self = join(temp, 'lib.so');
    writeFileSync(self, 'x');
    const hx = Buffer.from(sha(readFileSync(self)), 'hex');
    await expect(libraryDir(exec([{ name: 'lib.so', path: self, sha256: hx }, { name: 'lib.so', path: self, sha256: hx }]), conn, ctx)).rejects.toThrow(/EXEC libs entry 1 \("lib\.so"\)/);
  });
});
