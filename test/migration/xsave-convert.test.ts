// The restorer converts an XSAVE area between CPU layouts (native/src/xsave.h,
// docs/IMAGE.md section 3.1): the same components at other offsets (Intel vs
// AMD) are moved, a host whose XCR0 is a superset takes the image with the
// other components in their initial state, and only a component the host
// lacks, or has at another size, is refused.
//
// 1. Property tests of the converter itself (through native/build/test/rex_xsave_conv,
//    the converter the restorer compiles in) for every ordered pair of layouts:
//    every recorded CPU in test/fixtures/cpu/*.json (whatever files exist),
//    Intel's standard-form offsets, an AVX-only CPU, this host's own (CPUID)
//    and a CPU that puts this host's components in reverse order.
// 2. Real restores on this host of real images rewritten to another CPU's
//    layout (the stored bytes moved with it): the restored program sees its
//    registers.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hostCpuProfile } from '../../src/cpu/profile.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { packageRoot } from '../../src/util/paths.js';
import { runs } from '../helpers/property.js';
import { H, XSTATE_BV, nativeBuild, program, rehash, restorer, run, withCpuLayout, withXsaveLayout, type CpuLayout } from './image.js';

const conv = join(nativeBuild, 'test', 'rex_xsave_conv');

/** Components 2..15 only: images carry no others (AMX tiles are refused at dump time). */
const userComponents = (cs: CpuLayout['components']) => cs.filter((c) => c.index >= 2 && c.index < 16).sort((a, b) => a.index - b.index);

const fixtures = join(packageRoot(), 'test', 'fixtures', 'cpu');
const recorded: CpuLayout[] = readdirSync(fixtures)
  .filter((f) => f.endsWith('.json'))
  .map((f) => {
    const j = JSON.parse(readFileSync(join(fixtures, f), 'utf8')) as { cpu: string; xcr0: string; xsaveSize: number; components: CpuLayout['components'] };
    return { cpu: `${f}: ${j.cpu}`, xcr0: BigInt(j.xcr0) & 0xffffn, xsaveSize: j.xsaveSize, components: userComponents(j.components) };
  });

// Intel's standard-form offsets, as Intel CPUs enumerate them in CPUID leaf 0xD
// (Intel SDM Vol. 1, sections 13.4.3 and 13.5: offset in EBX, size in EAX of
// subleaf i; Skylake-SP and later report AVX 576, MPX 960 and 1024, AVX-512
// 1088, 1152 and 1664, PKRU 2688, area 2696 for XCR0 0x2ff).
const intelComponents = [
  { index: 2, offset: 576, size: 256 },
  { index: 3, offset: 960, size: 64 },
  { index: 4, offset: 1024, size: 64 },
  { index: 5, offset: 1088, size: 64 },
  { index: 6, offset: 1152, size: 512 },
  { index: 7, offset: 1664, size: 1024 },
  { index: 9, offset: 2688, size: 8 },
];
const synthetic: CpuLayout[] = [
  { cpu: 'Intel, AVX-512, MPX and PKRU (Intel SDM offsets)', xcr0: 0x2ffn, xsaveSize: 2696, components: intelComponents },
  { cpu: 'Intel, AVX-512 and PKRU, MPX off (Intel SDM offsets)', xcr0: 0x2e7n, xsaveSize: 2696, components: intelComponents.filter((c) => c.index !== 3 && c.index !== 4) },
  { cpu: 'AVX only (AVX2 CPUs of either vendor)', xcr0: 0x7n, xsaveSize: 832, components: [intelComponents[0]!] },
];

/** A CPU that lays out the components of `l` in reverse order from 640 (64-byte aligned): a layout no one has, different from `l`'s. */
function reversed(l: CpuLayout): CpuLayout {
  let at = 640;
  const components = [...l.components].reverse().map((c) => {
    const r = { ...c, offset: at };
    at = (at + c.size + 63) & ~63;
    return r;
  });
  return { cpu: `${l.cpu}, reversed`, xcr0: l.xcr0, xsaveSize: at, components: components.sort((a, b) => a.index - b.index) };
}

const host = hostCpuProfile();
const here: CpuLayout = { cpu: 'this host (CPUID)', xcr0: host.xcr0 & 0xffffn, xsaveSize: host.xsaveSize, components: userComponents(host.components) };
const layouts: CpuLayout[] = [...recorded, ...synthetic, here, reversed(here)];

// ------------------------------------------------------------ the converter

interface Case { from: CpuLayout; to: CpuLayout; src: Buffer; dstSize: number }
interface Result { r: number; bad: number; out?: Buffer }

function encodeLayout(l: CpuLayout): Buffer {
  const b = Buffer.alloc(76);
  b.writeBigUInt64LE(l.xcr0, 0);
  b.writeUInt32LE(l.xsaveSize, 8);
  for (const c of l.components) {
    b.writeUInt16LE(c.offset, 12 + 4 * c.index);
    b.writeUInt16LE(c.size, 14 + 4 * c.index);
  }
  return b;
}

/** Runs the cases through rex_xsave_conv in one process. */
function convert(cases: Case[]): Result[] {
  const input = Buffer.concat(cases.flatMap((c) => {
    const n = Buffer.alloc(8);
    n.writeUInt32LE(c.src.length, 0);
    n.writeUInt32LE(c.dstSize, 4);
    return [encodeLayout(c.from), encodeLayout(c.to), n, c.src];
  }));
  const p = spawnSync(conv, [], { input, maxBuffer: 1 << 26 });
  expect(p.status, p.stderr.toString()).toBe(0);
  const out: Result[] = [];
  let o = 0;
  for (const c of cases) {
    const r = p.stdout.readInt32LE(o);
    const bad = p.stdout.readUInt32LE(o + 4);
    o += 8;
    if (r >= 0) {
      out.push({ r, bad, out: p.stdout.subarray(o, o + c.dstSize) });
      o += c.dstSize;
    } else out.push({ r, bad });
  }
  expect(o).toBe(p.stdout.length);
  return out;
}

const bit = (m: bigint, i: number) => ((m >> BigInt(i)) & 1n) === 1n;
const comp = (l: CpuLayout, i: number) => l.components.find((c) => c.index === i)!;

/** Bytes of `l`'s area up to the end of its last component 2..15 (what the restorer fills for XRSTOR; AMX's 8 KiB are never part of it). */
const extent = (l: CpuLayout) => Math.max(576, ...l.components.map((c) => c.offset + c.size));

/** The standard-form area of `l` with this state: legacy area, XSTATE_BV, components in use; everything else zero. */
function expected(l: CpuLayout, legacy: Buffer, bv: bigint, state: Map<number, Buffer>): Buffer {
  const b = Buffer.alloc(extent(l));
  legacy.copy(b, 0);
  b.writeBigUInt64LE(bv, 512);
  for (const [i, bytes] of state) bytes.copy(b, comp(l, i).offset);
  return b;
}

/** A random stored area of `from`: random bytes everywhere (also where components are not in use), a clean header. */
const areaOf = (from: CpuLayout) =>
  fc
    .record({
      inUse: fc.subarray(from.components.map((c) => c.index)),
      x87sse: fc.integer({ min: 0, max: 3 }),
      seed: fc.uint8Array({ minLength: extent(from) + 256, maxLength: extent(from) + 256 }),
      extra: fc.integer({ min: 0, max: 256 }),
    })
    .map(({ inUse, x87sse, seed, extra }) => {
      const bv = inUse.reduce((m, i) => m | (1n << BigInt(i)), BigInt(x87sse));
      const end = Math.max(576, ...inUse.map((i) => comp(from, i).offset + comp(from, i).size));
      const src = Buffer.from(seed.subarray(0, end + extra)); // stored up to the last in use, or more
      src.fill(0, 512, 576);
      src.writeBigUInt64LE(bv, 512);
      return { bv, inUse, src };
    });

const pairs = layouts.flatMap((a) => layouts.map((b) => [a.cpu, b.cpu, a, b] as const));

describe('the XSAVE converter between every pair of layouts', () => {
  beforeAll(() => {
    execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'xsave-conv'], { stdio: 'pipe' });
  });

  it('knows at least the recorded CPUs, Intel and this host', () => {
    expect(recorded.length).toBeGreaterThanOrEqual(1);
    expect(layouts.length).toBe(recorded.length + synthetic.length + 2);
    for (const l of layouts) expect(l.components.length, l.cpu).toBeGreaterThanOrEqual(1);
  });

  it.each(pairs)('%s -> %s: round trip byte for byte, other components zero, a missing or resized component refused', (_a, _b, a, b) => {
    fc.assert(
      fc.property(fc.array(areaOf(a), { minLength: 1, maxLength: 8 }), (areas) => {
        const there = convert(areas.map((x) => ({ from: a, to: b, src: x.src, dstSize: extent(b) })));
        const back: Case[] = [];
        const want: Buffer[] = [];
        areas.forEach((x, k) => {
          const got = there[k]!;
          // The first component in use (ascending) that the target lacks, or has at another size (PKRU is 64 bytes
          // on the recorded Zen 2, 8 elsewhere), is refused.
          const first = [...x.inUse].sort((p, q) => p - q).find((i) => !bit(b.xcr0, i) || comp(a, i).size !== comp(b, i).size);
          if (first !== undefined) {
            const missing = !bit(b.xcr0, first);
            expect(got.r, `${x.inUse} in use, ${first} ${missing ? 'missing' : 'resized'} on ${b.cpu}`).toBe(missing ? -1 : -2); // REX_XSAVE_MISSING, REX_XSAVE_RESIZED
            expect(got.bad).toBe(first);
            return;
          }
          const state = new Map(x.inUse.map((i) => [i, x.src.subarray(comp(a, i).offset, comp(a, i).offset + comp(a, i).size)]));
          const same = x.inUse.every((i) => comp(a, i).offset === comp(b, i).offset);
          expect(got.r).toBe(same ? 0 : 1); // SAME or MOVED
          expect(got.out!.equals(expected(b, x.src.subarray(0, 512), x.bv, state))).toBe(true);
          back.push({ from: b, to: a, src: got.out!, dstSize: extent(a) });
          want.push(expected(a, x.src.subarray(0, 512), x.bv, state));
        });
        const home = convert(back);
        home.forEach((h, k) => {
          expect(h.r).toBeGreaterThanOrEqual(0);
          // Every component in use as it was, the legacy area and XSTATE_BV as they were, all else zero.
          expect(h.out!.equals(want[k]!)).toBe(true);
        });
      }),
      // No shrinking: each step is a process; the first counterexample names the layouts and the cases.
      { numRuns: runs(4), endOnFailure: true },
    );
  });

  it.each(layouts.map((l) => [l.cpu, l] as const))('%s: a component in use at another size on the target is refused', (_n, a) => {
    const cases: Case[] = a.components.map((c) => {
      const src = Buffer.alloc(extent(a));
      src.writeBigUInt64LE(3n | (1n << BigInt(c.index)), 512);
      const to: CpuLayout = { ...a, components: a.components.map((d) => (d.index === c.index ? { ...d, size: d.size + 64 } : d)), xsaveSize: a.xsaveSize + 64 };
      return { from: a, to, src, dstSize: extent(to) };
    });
    const got = convert(cases);
    got.forEach((g, k) => {
      expect(g.r).toBe(-2); // REX_XSAVE_RESIZED
      expect(g.bad).toBe(a.components[k]!.index);
    });
  });
});

// ------------------------------------------------------------ real restores

let dir: string;
let fpu: Buffer;
let hello: Buffer;

describe('real images restored here from another CPU layout', () => {
  beforeAll(() => {
    execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
    dir = mkdtempSync(join(tmpdir(), 'rex-xconv-'));
    for (const name of ['fpu_regs', 'hello']) {
      const r = run(program(name), [join(dir, `${name}.img`)]);
      expect(r.stdout + r.stderr).toMatch(new RegExp(`^DUMPED ${name}`, 'm'));
    }
    fpu = readFileSync(join(dir, 'fpu_regs.img'));
    hello = readFileSync(join(dir, 'hello.img'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  let seq = 0;
  function restore(img: Buffer, env: NodeJS.ProcessEnv = {}) {
    const path = join(dir, `r${seq++}.img`);
    writeFileSync(path, img);
    const r = spawnSync(restorer, [path], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
    rmSync(path);
    return r;
  }

  it('fpu_regs dumped here, its area laid out as a CPU with the components in reverse order: converted, YMM0-15, MXCSR and x87 kept', () => {
    const info = readImageInfo(fpu);
    const own: CpuLayout = { cpu: 'dumper', xcr0: info.xcr0, xsaveSize: info.xsaveSize, components: info.xsaveComponents };
    const other = reversed(own);
    const img = withXsaveLayout(fpu, other);
    expect(readImageInfo(img).xsaveComponents).toEqual(other.components);
    expect(readImageInfo(img).xsaveComponents).not.toEqual(own.components);
    const r = restore(img, { REX_RESTORE_TIMING: '1' });
    expect(r.stdout + r.stderr).toContain('PASS fpu_regs');
    expect(r.stdout).not.toContain('FAIL');
    expect(r.stderr).toMatch(/rex-restore: timing: xsave converted \d+ ns/);
    expect(r.status).toBe(0);
  });

  it('the same image relabelled without moving its bytes restores wrong YMM values: the restorer reads the layout from the image', () => {
    const info = readImageInfo(fpu);
    const other = reversed({ cpu: 'dumper', xcr0: info.xcr0, xsaveSize: info.xsaveSize, components: info.xsaveComponents });
    const bv = fpu.readBigUInt64LE(XSTATE_BV);
    const inUse = other.components.map((c) => c.index).filter((i) => bit(bv, i));
    expect(inUse).toContain(2); // fpu_regs holds values in the YMM upper halves
    const r = restore(withCpuLayout(fpu, other, inUse));
    expect(r.stdout).toMatch(/FAIL fpu_regs: ymm\d+ byte/);
    expect(r.status).not.toBe(0);
  });

  it('the image as dumped takes the fast path (copied, not converted)', () => {
    const r = restore(fpu, { REX_RESTORE_TIMING: '1' });
    expect(r.stdout).toContain('PASS fpu_regs');
    expect(r.stderr).toMatch(/rex-restore: timing: xsave copied \d+ ns/);
    expect(r.status).toBe(0);
  });

  it('no timing line without REX_RESTORE_TIMING=1', () => {
    const r = restore(fpu, { REX_RESTORE_TIMING: '' });
    expect(r.stdout).toContain('PASS fpu_regs');
    expect(r.stderr).not.toContain('timing');
  });

  it('an image from a CPU with fewer of the components glibc saves (XCR0 0x3, no AVX) is refused here: its save buffers were sized without them', () => {
    const sse: CpuLayout = { cpu: 'SSE only', xcr0: 0x3n, xsaveSize: 576, components: [] };
    const img = withCpuLayout(hello, sse, []);
    expect(readImageInfo(img).xcr0).toBe(0x3n);
    const r = restore(img);
    expect(r.stderr).toMatch(/this CPU enables XSAVE component 2 \(AVX[^)]*\), which the image's CPU did not \(XCR0 0x\w+ here, 0x3 in the image\): the process's glibc saves it into stack buffers sized for the image's CPU/);
    expect(r.stdout).not.toContain('PASS hello');
    expect(r.status).toBe(4);
  });

  it('an image from a CPU without PKRU restores here: more components outside glibc\'s save mask are fine', () => {
    const host = readImageInfo(hello);
    if (!host.xsaveComponents.some((c) => c.index === 9)) console.log('this CPU has no PKRU: the image is taken as it is');
    const noPkru: CpuLayout = { cpu: 'no PKRU', xcr0: host.xcr0 & ~0x200n, xsaveSize: Math.max(576, ...host.xsaveComponents.filter((c) => c.index !== 9).map((c) => c.offset + c.size)), components: host.xsaveComponents.filter((c) => c.index !== 9) };
    const img = withCpuLayout(hello, noPkru, []);
    expect(readImageInfo(img).xcr0 & 0x200n).toBe(0n);
    const r = restore(img);
    expect(r.stdout).toContain('PASS hello');
    expect(r.status).toBe(0);
  });

  it('fpu_regs from a CPU with AVX and nothing above it restores on this host (same or superset XCR0)', () => {
    const info = readImageInfo(fpu);
    const avx = info.xsaveComponents.find((c) => c.index === 2)!;
    // Components above AVX in use here (zmm16-31 after glibc's AVX-512 string functions) are not in such an image.
    const b = Buffer.from(fpu);
    b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) & 0x7n, XSTATE_BV);
    const img = withXsaveLayout(rehash(b), { cpu: 'AVX only', xcr0: 0x7n, xsaveSize: 832, components: [avx] });
    expect(readImageInfo(img).xcr0).toBe(0x7n);
    const r = restore(img);
    expect(r.stdout).toContain('PASS fpu_regs');
    expect(r.status).toBe(0);
  });

  it('an image from a CPU with AMX enabled but not in use restores on a host without it (components 16 and above are never carried)', () => {
    const b = Buffer.from(hello);
    b.writeBigUInt64LE(b.readBigUInt64LE(H.xcr0) | (3n << 17n), H.xcr0);
    const r = restore(rehash(b));
    expect(r.stdout).toContain('PASS hello');
    expect(r.status).toBe(0);
  });

  it('an image from a CPU with a component this host lacks is refused, naming it', () => {
    const extra = [3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15].find((i) => !bit(host.xcr0, i))!;
    const info = readImageInfo(hello);
    const more: CpuLayout = {
      cpu: 'more', xcr0: info.xcr0 | (1n << BigInt(extra)), xsaveSize: info.xsaveSize + 64,
      components: [...info.xsaveComponents, { index: extra, offset: info.xsaveSize, size: 64 }],
    };
    // Not even in use: the program may still run instructions this host does not have.
    const r = restore(withCpuLayout(hello, more, []));
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`this CPU's XSAVE features differ from the image's`);
    expect(r.stderr).toMatch(new RegExp(`this CPU lacks component ${extra}\\b`));
    expect(r.stdout).not.toContain('PASS');
  });
});
