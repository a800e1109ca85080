// The restorer parses untrusted input: every truncation and every flipped
// byte must be refused (exit 3) with a message naming the field or part and
// its offset, and a refused image must never run. Crafted images that are
// consistent except for one field (meta_hash recomputed by image.ts) check
// that the field-level validation names exactly that field.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { H, REGION_SIZE, RUN_SIZE, XSTATE_BV, layout, program, regions, rehash, restorer, run, withXsaveStored } from './image.js';
import { runs } from '../helpers/property.js';

let dir: string;
let good: Buffer;
let metaEnd: number;
/** An image whose regions use both page maps (hello's small regions all take bitmaps). */
let mixed: Buffer;

beforeAll(() => {
  execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-corrupt-'));
  const image = join(dir, 'hello.img');
  const d = run(program('hello'), [image]);
  expect(d.status).toBe(0);
  good = readFileSync(image);
  metaEnd = layout(good).data;
  const m = run(program('heap_globals'), [join(dir, 'mixed.img')]);
  expect(m.status).toBe(0);
  mixed = readFileSync(join(dir, 'mixed.img'));
  expect(mixed.readUInt32LE(H.nruns)).toBeGreaterThan(0);
  expect(mixed.readUInt32LE(H.nwords)).toBeGreaterThan(0);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let seq = 0;
function withImage(img: Buffer, args: string[] = ['--check']) {
  const path = join(dir, `t${seq++}.img`);
  writeFileSync(path, img);
  const r = run(restorer, [...args, path]);
  rmSync(path);
  return r;
}

function flipped(at: number, mask = 0x01): Buffer {
  const b = Buffer.from(good);
  b[at]! ^= mask;
  return b;
}

describe('rex-restore --check', () => {
  it('accepts the untouched image', () => {
    const r = withImage(good);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/valid image of pid \d+ .*hello\): \d+ regions/);
  });

  it('refuses every truncation, naming the part and offset', () => {
    const cuts = [0, 1, 7, 8, 100, H.size - 1, H.size, H.size + 1, metaEnd - 1, metaEnd, metaEnd + 1, metaEnd + 4096,
      good.length - 17, good.length - 16, good.length - 1];
    for (const cut of cuts) {
      const r = withImage(good.subarray(0, cut));
      expect(r.status, `cut at ${cut}`).toBe(3);
      expect(r.stderr, `cut at ${cut}`).toMatch(/truncated image: (the header|the metadata|page data|trailer) needs \d+ bytes at offset \d+, only \d+ there/);
    }
  });

  it('refuses a flipped bit at every 5th byte of header and metadata', () => {
    for (let at = 0; at < metaEnd; at += 5) {
      const r = withImage(flipped(at, 1 << (at % 8)));
      expect(r.status, `flip at ${at}: ${r.stderr}`).toBe(3);
      expect(r.stderr, `flip at ${at}`).toMatch(/at offset \d+/);
    }
  }, 120_000);

  it('refuses any random byte change anywhere in the image (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: good.length - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const r = withImage(flipped(at, mask));
        return r.status === 3 && /corrupt image|not a REX image/.test(r.stderr) && /offset \d+/.test(r.stderr);
      }),
      { numRuns: runs(200) },
    );
  }, 120_000);
});

describe('a refused image never runs', () => {
  it('flips in header, metadata, page data and trailer: exit 3 and no output from the program', () => {
    const spots = [0, 30, H.metaHash, 500, metaEnd - 8, metaEnd + 10, metaEnd + 5000, good.length - 20, good.length - 1];
    for (const at of spots) {
      const r = withImage(flipped(at, 0x80), []);
      expect(r.status, `flip at ${at}: ${r.stderr}`).toBe(3);
      expect(r.stdout, `flip at ${at}`).toBe('');
      if (at >= metaEnd) expect(r.stderr).toContain('nothing of the image ran');
    }
  });

  it('a truncated page section: exit 3 and no output', () => {
    const r = withImage(good.subarray(0, metaEnd + 4096 + 100), []);
    expect(r.status).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('truncated image: page data needs');
  });
});

describe('field validation names the field (consistent images, one bad field)', () => {
  const l = () => layout(good);
  const cases: [string, (b: Buffer) => void, RegExp, number?][] = [
    ['version 3 (before the CPU profile)', (b) => b.writeUInt32LE(3, H.version), /header\.version at offset 8: unsupported image version \(this restorer reads 5/],
    ['version 4 (before the hash was XXH64)', (b) => b.writeUInt32LE(4, H.version), /header\.version at offset 8: unsupported image version \(this restorer reads 5/],
    ['version 6', (b) => b.writeUInt32LE(6, H.version), /header\.version at offset 8: unsupported image version/],
    ['magic', (b) => b.write('REXIMX', 0, 'latin1'), /not a REX image: header\.magic at offset 0/],
    ['region start misaligned', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(l().regions) + 1n, l().regions),
      /region\[0\]\.start at offset \d+: start and end must be page-aligned/],
    ['region in the restorer zone', (b) => { b.writeBigUInt64LE(0x70000000n, l().regions); b.writeBigUInt64LE(0x70001000n, l().regions + 8); },
      /region\[0\]\.start at offset \d+: overlaps the restorer's zone/],
    ['regions overlapping', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(l().regions + 8) + 4096n, l().regions + 8),
      /region\[1\]\.start at offset \d+: regions overlap or are not sorted/],
    ['region above user space', (b) => {
      const last = l().regions + (b.readUInt32LE(H.nregions) - 1) * REGION_SIZE;
      b.writeBigUInt64LE(0x800000000000n, last + 8);
    }, /outside user space/],
    ['data_pages', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(H.dataPages) + 1n, H.dataPages), /header\.data_pages at offset 56: does not equal the pages the runs and bitmaps list/],
    ['rip outside code', (b) => b.writeBigUInt64LE(0x1000n, H.rip), /header\.regs\.rip at offset 216: not inside an executable region/],
    ['rsp outside writable memory', (b) => b.writeBigUInt64LE(0n, H.rsp), /header\.regs\.rsp at offset 208: not inside a writable region/],
    ['cwd not absolute', (b) => b.writeUInt32LE(0, H.cwdLen), /header\.cwd_off at offset 3224/],
    ['meta_size', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(H.metaSize) + 64n, H.metaSize), /header\.meta_size at offset 48/],
    ['nruns', (b) => b.writeUInt32LE(b.readUInt32LE(H.nruns) + 100000000, H.nruns), /header\.nruns at offset 32: above the limit/],
    ['xsave_size', (b) => b.writeUInt32LE(100, H.xsaveSize), /header\.xsave_size at offset 44: must be 576\.\.16384/],
    ['xsave_len above xsave_size', (b) => b.writeUInt32LE(b.readUInt32LE(H.xsaveSize) + 64, H.xsaveLen), /header\.xsave_len at offset 3388: must be 576\.\.xsave_size/],
    ['xsave_len below the XSAVE header', (b) => b.writeUInt32LE(512, H.xsaveLen), /header\.xsave_len at offset 3388: must be 576\.\.xsave_size/],
    ['special overlapping a region', (b) => {
      b.writeBigUInt64LE(b.readBigUInt64LE(l().regions), H.special);
      b.writeBigUInt64LE(b.readBigUInt64LE(l().regions) + 4096n, H.special + 8);
    }, /header\.special\.start at offset 3288: overlaps a memory region/],
    // XRSTOR at the very end would fault on these: refused before anything is mapped.
    ['MXCSR reserved bits', (b) => b.writeUInt32LE(0x11f80, H.size + 24), /xsave\.mxcsr at offset 3576: reserved MXCSR bits set/],
    ['XSTATE_BV outside XCR0', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(H.size + 512) | (1n << 62n), H.size + 512),
      /xsave\.xstate_bv at offset 4064: state components outside the image's XCR0/],
    ['XSAVE area in compacted form', (b) => b.writeBigUInt64LE((1n << 63n) | 3n, H.size + 520),
      /xsave\.xcomp_bv at offset 4072: not a standard-form XSAVE header/],
    // A component this CPU does not enable (PKRU where it has none, else the first of the others missing), with
    // the layout entry and the area size to match: a valid image of another CPU. (A subset of this CPU's
    // components is taken, and other offsets are converted: xsave-convert.test.ts.)
    ['XSAVE features this CPU lacks', (b) => {
      const host = b.readBigUInt64LE(H.xcr0), size = b.readUInt32LE(H.xsaveSize);
      const extra = [9, 3, 4, 5, 6, 7, 10, 11, 12, 13, 14, 15].find((i) => !((host >> BigInt(i)) & 1n))!;
      b.writeBigUInt64LE(host | (1n << BigInt(extra)), H.xcr0);
      b.writeUInt16LE(size, H.xsaveComp + 4 * extra);
      b.writeUInt16LE(64, H.xsaveComp + 4 * extra + 2);
      b.writeUInt32LE(size + 64, H.xsaveSize);
    }, /this CPU's XSAVE features differ from the image's/, 4],
  ];
  for (const [name, edit, message, status] of cases) {
    it(name, () => {
      const b = Buffer.from(good);
      edit(b);
      const r = withImage(rehash(b));
      expect(r.stderr).toMatch(message);
      expect(r.status).toBe(status ?? 3);
      // The same image through a real restore: refused before anything runs.
      const real = withImage(b, []);
      expect(real.status).toBe(status ?? 3);
      expect(real.stdout).toBe('');
    });
  }

  it('names the exact byte offset of a bad region field', () => {
    const b = Buffer.from(good);
    const at = layout(good).regions + 2 * REGION_SIZE + 60; // region[2].prot
    b.writeUInt32LE(0x10, at);
    const r = withImage(rehash(b));
    expect(r.stderr).toContain(`region[2].prot at offset ${at}: unknown protection bits`);
    expect(r.status).toBe(3);
  });

  it('run past its region', () => {
    const b = Buffer.from(mixed);
    b.writeBigUInt64LE(1n << 30n, layout(b).runs + 8);
    const r = withImage(rehash(b));
    expect(r.stderr).toMatch(/run\[0\]\.npages at offset \d+: run extends past its region's end/);
    expect(r.status).toBe(3);
  });

  it('run table order is checked against the regions', () => {
    const b = Buffer.from(mixed);
    const runs = layout(b).runs;
    // Swap the first two runs' addresses: still page-aligned, but out of order or outside their region.
    const a0 = b.readBigUInt64LE(runs), a1 = b.readBigUInt64LE(runs + RUN_SIZE);
    b.writeBigUInt64LE(a1, runs);
    b.writeBigUInt64LE(a0, runs + RUN_SIZE);
    const r = withImage(rehash(b));
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/run\[[01]\]\.(addr|npages) at offset \d+/);
  });
});

describe('page bitmaps (image version 2): each inconsistency is named', () => {
  /** Byte offset of region i and the index of the first region listed by a bitmap with a partial last word. */
  const regionAt = (b: Buffer, i: number) => layout(b).regions + i * REGION_SIZE;
  const bitmapRegion = (b: Buffer): number => {
    const regs = regions(b);
    const i = regs.findIndex((r) => r.pageMap === 1 && ((r.end - r.start) / 4096n) % 64n !== 0n);
    expect(i).toBeGreaterThanOrEqual(0);
    return i;
  };
  /** A clear bit for a page inside some bitmap region (in a word with a set bit too): its word's byte offset and the bit. */
  const clearBit = (b: Buffer): { at: number; bit: bigint } => {
    for (const r of regions(b)) {
      if (r.pageMap !== 1) continue;
      const pages = Number((r.end - r.start) / 4096n);
      for (let k = 0; k < pages; k++) {
        const at = layout(b).words + (r.firstWord + Math.floor(k / 64)) * 8;
        const w = b.readBigUInt64LE(at);
        if (w !== 0n && !((w >> BigInt(k % 64)) & 1n)) return { at, bit: BigInt(k % 64) };
      }
    }
    throw new Error('no clear bit in any bitmap');
  };
  const cases: [string, (b: Buffer) => void, (b: Buffer) => RegExp][] = [
    ['a bit past the region\'s last page', (b) => {
      const r = regions(b)[bitmapRegion(b)]!;
      const last = layout(b).words + (r.firstWord + r.nwords - 1) * 8;
      b.writeBigUInt64LE(b.readBigUInt64LE(last) | (1n << 63n), last);
    }, (b) => {
      const r = regions(b)[bitmapRegion(b)]!;
      return new RegExp(`bitmap word\\[${r.firstWord + r.nwords - 1}\\]\\.bits at offset ${layout(b).words + (r.firstWord + r.nwords - 1) * 8}: bits set past the region's last page`);
    }],
    ['an unknown page map', (b) => b.writeUInt32LE(2, regionAt(b, bitmapRegion(b)) + 84),
      (b) => new RegExp(`region\\[${bitmapRegion(b)}\\]\\.page_map at offset ${regionAt(b, bitmapRegion(b)) + 84}: unknown page map`)],
    ['a bitmap of the wrong length', (b) => {
      const o = regionAt(b, bitmapRegion(b));
      b.writeUInt32LE(b.readUInt32LE(o + 92) + 1, o + 92);
    }, (b) => new RegExp(`region\\[${bitmapRegion(b)}\\]\\.nwords at offset ${regionAt(b, bitmapRegion(b)) + 92}: not one bit per page`)],
    ['a gap in the bitmap table', (b) => {
      const o = regionAt(b, bitmapRegion(b));
      b.writeUInt32LE(b.readUInt32LE(o + 88) + 1, o + 88);
    }, (b) => new RegExp(`region\\[${bitmapRegion(b)}\\]\\.first_word at offset ${regionAt(b, bitmapRegion(b)) + 88}: bitmaps must follow the region order`)],
    ['a region listed by runs with bitmap words', (b) => {
      b.writeUInt32LE(0, regionAt(b, bitmapRegion(b)) + 84);
    }, (b) => new RegExp(`region\\[${bitmapRegion(b)}\\]\\.nwords at offset ${regionAt(b, bitmapRegion(b)) + 92}: a region listed by runs has no bitmap words`)],
    ['a bit for a page the data does not hold', (b) => {
      const { at, bit } = clearBit(b);
      b.writeBigUInt64LE(b.readBigUInt64LE(at) | (1n << bit), at);
    }, () => /header\.data_pages at offset 56: does not equal the pages the runs and bitmaps list/],
    ['nwords above the limit', (b) => b.writeUInt32LE(8388609, H.nwords), () => /header\.nwords at offset 3384: above the limit/],
  ];
  for (const [name, edit, message] of cases) {
    it(name, () => {
      const b = Buffer.from(good);
      const want = message(b);
      edit(b);
      const r = withImage(rehash(b));
      expect(r.stderr).toMatch(want);
      expect(r.status).toBe(3);
      const real = withImage(b, []);
      expect(real.status).toBe(3);
      expect(real.stdout).toBe('');
    });
  }

  it('bits that are set somewhere else than the data was taken from are caught only by meta_hash', () => {
    // Consistent counts, wrong addresses: nothing but the hash can tell, which is why it covers the tables.
    const b = Buffer.from(good);
    const { at, bit } = clearBit(b);
    const w = b.readBigUInt64LE(at);
    expect(w).not.toBe(0n);
    b.writeBigUInt64LE((w ^ (w & -w)) | (1n << bit), at); // the lowest set bit moves to a clear one
    const r1 = withImage(b);
    expect(r1.status).toBe(3);
    expect(r1.stderr).toMatch(/header\.meta_hash at offset 64/);
  });
});

describe('the XSAVE area is stored up to the last component in use', () => {
  it('an image stores 576..xsave_size bytes of it, and a component in use past them is refused (exit 3)', () => {
    const len = good.readUInt32LE(H.xsaveLen), size = good.readUInt32LE(H.xsaveSize);
    expect(len).toBeGreaterThanOrEqual(576);
    expect(len).toBeLessThanOrEqual(size);
    const xcr0 = good.readBigUInt64LE(H.xcr0);
    // Every x86-64 CPU REX runs on enables AVX (component 2); a CPU without it would fail here, not skip.
    expect(xcr0 & 4n, `XCR0 0x${xcr0.toString(16)} has no AVX`).toBe(4n);
    // Built by hand, so the case exists on every CPU: the legacy area and the XSAVE header stored (576
    // bytes), AVX marked in use. Its bytes (wherever this CPU puts them) are then not in the image.
    const b = withXsaveStored(good, 576);
    b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) | 4n, XSTATE_BV);
    const r = withImage(rehash(b));
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/header\.xsave_len at offset 3388: XSAVE component 2 is in use \(bytes \d+\.\.\d+\) but only 576 bytes are stored/);
  });

  it('an image cut to 576 XSAVE bytes with nothing beyond them in use is still valid', () => {
    const b = withXsaveStored(good, 576);
    b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) & 3n, XSTATE_BV);
    const r = withImage(rehash(b));
    expect(r.stderr).toMatch(/: valid image of pid \d+/);
    expect(r.status).toBe(0);
  });

  it('fpu_regs, which holds YMM values across the dump, stores the AVX state and gets it back', () => {
    const image = join(dir, 'fpu.img');
    expect(run(program('fpu_regs'), [image]).status).toBe(0);
    const img = readFileSync(image);
    const avx = (img.readBigUInt64LE(H.xcr0) >> 2n) & 1n;
    if (avx) expect(img.readUInt32LE(H.xsaveLen)).toBeGreaterThanOrEqual(832);
    const r = run(restorer, [image]);
    expect(r.stdout).toContain('PASS fpu_regs');
  });
});
