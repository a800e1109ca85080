// The TypeScript image reader (src/rfork/image.ts) against the C dumper and
// the restorer: it reads what rex_dump_self writes, agrees with
// `rex-restore --check` on every count, refuses what the restorer refuses
// naming the same field and offset, and throws nothing but RexError on
// mutated or truncated images.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, RexError, isRexError } from '../../src/util/errors.js';
import { packageRoot } from '../../src/util/paths.js';
import { IMAGE_HEADER_SIZE, imageMetadataLength, readImageInfo, type ImageInfo } from '../../src/rfork/image.js';
import { FD_KINDS } from '../../src/rfork/image-layout.generated.js';
import { H, REGION_SIZE, XSTATE_BV, cpuOffset, fds, layout, program, regions, rehash, restorer, run, withXsaveStored } from './image.js';
import { runs } from '../helpers/property.js';

let dir: string;
const images = new Map<string, string>();

beforeAll(() => {
  execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-reader-'));
  for (const name of ['hello', 'heap_globals', 'file_maps', 'fds_listed', 'sparse1g', 'guard']) {
    const image = join(dir, `${name}.img`);
    const r = run(program(name), [image]);
    expect(r.status, `${name}: ${r.stdout}${r.stderr}`).toBe(0);
    images.set(name, image);
  }
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let seq = 0;
function check(img: Buffer) {
  const path = join(dir, `c${seq++}.img`);
  writeFileSync(path, img);
  const r = run(restorer, ['--check', path]);
  rmSync(path);
  return r;
}

/** The RexError readImageInfo throws for img (fails the test when it returns). */
function refusal(img: Uint8Array, opts = {}): RexError {
  try {
    readImageInfo(img, opts);
  } catch (e) {
    expect(isRexError(e), String(e)).toBe(true);
    return e as RexError;
  }
  throw new Error('readImageInfo accepted the image');
}

describe('reads what the dumper writes', () => {
  it('agrees with rex-restore --check on every count, from a path and from bytes', () => {
    for (const [name, image] of images) {
      const info = readImageInfo(image);
      const m = /valid image of pid (\d+) \((.*)\): (\d+) regions, (\d+) runs, (\d+) bitmap words, (\d+) pages, (\d+) fds, (\d+) bytes/
        .exec(check(readFileSync(image)).stderr);
      expect(m, name).not.toBeNull();
      const [pid, exe, nregions, nruns, nwords, pages, nfds, bytes] = m!.slice(1);
      expect(info.pid, name).toBe(Number(pid));
      expect(info.exe, name).toBe(exe);
      expect(info.regions.length, name).toBe(Number(nregions));
      expect(info.nruns, name).toBe(Number(nruns));
      expect(info.nwords, name).toBe(Number(nwords));
      expect(info.dataPages, name).toBe(Number(pages));
      expect(info.regions.reduce((n, r) => n + r.pages, 0), name).toBe(Number(pages));
      expect(info.fds.length, name).toBe(Number(nfds));
      expect(info.imageBytes, name).toBe(Number(bytes));
      expect(info.imageBytes, name).toBe(statSync(image).size);
      expect(info.metadataBytes, name).toBe(info.imageBytes - info.dataPages * 4096);
      expect(readImageInfo(readFileSync(image), { name })).toEqual({ ...info });
    }
  });

  it('lists the mapped files with the identity the restorer compares, the program and libc among them', () => {
    const info = readImageInfo(images.get('hello')!);
    const paths = info.files.map((f) => f.path);
    expect(paths).toContain(program('hello'));
    expect(paths.some((p) => /libc\.so/.test(p))).toBe(true);
    for (const f of info.files) {
      const st = statSync(f.path, { bigint: true });
      expect(f).toMatchObject({ size: Number(st.size), dev: st.dev, ino: st.ino, mtimeNs: st.mtimeNs, shared: false });
      expect(f.regions.every((i) => info.regions[i]!.path === f.path)).toBe(true);
    }
    expect(info.cwd).toBe(process.cwd());
    expect(info.comm).toBe('hello');
    expect(info.special.map((s) => s.kind)).toContain('vdso');
    expect(info.regions.some((r) => r.kind === 'stack' && r.name === '[stack]')).toBe(true);
  });

  it('marks a file that is mapped shared (it cannot be replaced by a copy)', () => {
    const info = readImageInfo(images.get('file_maps')!);
    const data = info.files.find((f) => f.path === `${images.get('file_maps')}.data`)!;
    expect(data.shared).toBe(true);
    expect(info.regions.filter((r) => r.path === data.path).map((r) => r.kind).sort()).toEqual(['file', 'file-shared']);
  });

  it('lists the descriptors as the test reader does', () => {
    const image = images.get('fds_listed')!;
    const info = readImageInfo(image);
    const other = fds(readFileSync(image));
    expect(info.fds.map((f) => [f.fd, f.path, f.flFlags, f.image])).toEqual(other.map((f) => [f.fd, f.path, f.flFlags, (f.flags & 1) === 1]));
    expect(info.fds.filter((f) => f.image).map((f) => f.path)).toEqual([image]);
    expect(info.fds.some((f) => f.kind === 'pipe' && f.pos === null)).toBe(true);
    expect(info.fds.some((f) => f.kind === 'socket')).toBe(true);
  });

  it('gives the page map of each region as the test reader sees it, both kinds in use', () => {
    for (const name of ['heap_globals', 'sparse1g']) {
      const image = images.get(name)!;
      const info = readImageInfo(image);
      const raw = regions(readFileSync(image));
      expect(info.regions.map((r) => r.pageMap)).toEqual(raw.map((r) => (r.pageMap === 0 ? 'runs' : 'bitmap')));
    }
    const kinds = new Set([...images.values()].flatMap((i) => readImageInfo(i).regions.filter((r) => r.pages).map((r) => r.pageMap)));
    expect(kinds).toEqual(new Set(['runs', 'bitmap']));
  });

  it('reads a stream prefix: imageMetadataLength from the header, then the metadata alone', () => {
    const img = readFileSync(images.get('heap_globals')!);
    const n = imageMetadataLength(img.subarray(0, IMAGE_HEADER_SIZE));
    expect(n).toBe(layout(img).data);
    const info = readImageInfo(img.subarray(0, n), { metadataOnly: true });
    expect(info.metadataEnd).toBe(n);
    expect(info.imageBytes).toBe(img.length);
  });
});

describe('refuses bad images, naming field and offset', () => {
  it('truncations: the part, the bytes it needs and the offset', () => {
    const img = readFileSync(images.get('hello')!);
    const end = layout(img).data;
    const cases: [number, RegExp][] = [
      [0, /truncated image: the header needs 3552 bytes at offset 0, only 0 there/],
      [100, /truncated image: the header needs 3552 bytes at offset 0, only 100 there/],
      [end - 1, new RegExp(`truncated image: the metadata needs ${end - 3552} bytes at offset 3552, only ${end - 3553} there`)],
      [end + 4096, /truncated image: page data needs \d+ bytes at offset \d+, only 4096 there/],
      [img.length - 1, new RegExp(`truncated image: trailer needs 16 bytes at offset ${img.length - 16}, only 15 there`)],
    ];
    for (const [cut, message] of cases) {
      const e = refusal(img.subarray(0, cut));
      expect(e.code, `cut ${cut}`).toBe(ErrorCodes.IMAGE_TRUNCATED);
      expect(e.message, `cut ${cut}`).toMatch(message);
      expect(check(img.subarray(0, cut)).status, `cut ${cut}`).toBe(3);
    }
    // The same through a path, with the path as the place.
    const path = join(dir, 'cut.img');
    writeFileSync(path, img.subarray(0, end - 1));
    expect(() => readImageInfo(path)).toThrow(expect.objectContaining({ where: path, code: ErrorCodes.IMAGE_TRUNCATED }));
  });

  it('bytes after the trailer and a wrong trailer magic', () => {
    const img = readFileSync(images.get('hello')!);
    expect(refusal(Buffer.concat([img, Buffer.alloc(3)])).message).toMatch(new RegExp(`trailer at offset ${img.length - 16}: 3 bytes follow the trailer`));
    const b = Buffer.from(img);
    b[b.length - 10] ^= 1;
    expect(refusal(b).message).toMatch(new RegExp(`trailer\\.magic at offset ${img.length - 16}`));
  });

  it('names the same field and offset as the restorer for consistent images with one bad field', () => {
    const img = readFileSync(images.get('heap_globals')!);
    const l = layout(img);
    const firstBitmap = regions(img).findIndex((r) => r.pageMap === 1);
    const edits: [string, (b: Buffer) => void][] = [
      ['magic', (b) => b.write('REXIMX', 0, 'latin1')],
      ['version 1', (b) => b.writeUInt32LE(1, H.version)],
      ['nregions', (b) => b.writeUInt32LE(0, H.nregions)],
      ['nwords', (b) => b.writeUInt32LE(9 << 20, H.nwords)],
      ['xsave_size', (b) => b.writeUInt32LE(100, H.xsaveSize)],
      ['meta_size', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(H.metaSize) + 64n, H.metaSize)],
      ['meta_hash', (b) => { b[l.regions + 3] ^= 4; }],
      ['region misaligned', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(l.regions) + 1n, l.regions)],
      ['region prot', (b) => b.writeUInt32LE(0x10, l.regions + 2 * REGION_SIZE + 60)],
      ['region kind', (b) => b.writeUInt32LE(9, l.regions + 64)],
      ['region name', (b) => b.writeUInt32LE(1 << 30, l.regions + 68)],
      ['regions overlapping', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(l.regions + 8) + 4096n, l.regions + 8)],
      ['run past its region', (b) => b.writeBigUInt64LE(1n << 30n, l.runs + 8)],
      ['page map', (b) => b.writeUInt32LE(7, l.regions + firstBitmap * REGION_SIZE + 84)],
      ['bitmap length', (b) => b.writeUInt32LE(b.readUInt32LE(l.regions + firstBitmap * REGION_SIZE + 92) + 1, l.regions + firstBitmap * REGION_SIZE + 92)],
      ['data_pages', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(H.dataPages) + 1n, H.dataPages)],
      ['rip', (b) => b.writeBigUInt64LE(0x1000n, H.rip)],
      ['rsp', (b) => b.writeBigUInt64LE(0n, H.rsp)],
      ['cwd', (b) => b.writeUInt32LE(0, H.cwdLen)],
      ['special', (b) => {
        b.writeBigUInt64LE(b.readBigUInt64LE(l.regions), H.special);
        b.writeBigUInt64LE(b.readBigUInt64LE(l.regions) + 4096n, H.special + 8);
      }],
      ['fd path', (b) => b.writeUInt32LE(1 << 30, l.fds + 40)],
      ['umask', (b) => b.writeUInt32LE(0o7777, 2924)],
      ['mxcsr', (b) => b.writeUInt32LE(0x11f80, IMAGE_HEADER_SIZE + 24)],
      ['xstate_bv', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(IMAGE_HEADER_SIZE + 512) | (1n << 62n), IMAGE_HEADER_SIZE + 512)],
      ['xsave header', (b) => b.writeUInt8(1, IMAGE_HEADER_SIZE + 560)],
      ['cpu highest leaf', (b) => b.writeUInt32LE(0xc, cpuOffset('leaf0', 0))],
      ['cpu vendor', (b) => b.writeUInt8(0, cpuOffset('leaf0', 3) + 3)],
      ['cpu signature', (b) => b.writeUInt32LE(0x80000000, cpuOffset('leaf1_eax'))],
      ['cpu has', (b) => b.writeUInt32LE(0, cpuOffset('has', 0))],
      ['cpu in_use outside the table', (b) => b.writeUInt32LE(1, cpuOffset('in_use', 8))],
      ['cpu in_use outside has', (b) => b.writeUInt32LE(0, cpuOffset('has', 2))],
      ['cpu reserved', (b) => b.writeUInt32LE(7, cpuOffset('reserved'))],
    ];
    for (const [what, edit] of edits) {
      const b = Buffer.from(img);
      edit(b);
      if (what !== 'meta_hash') rehash(b);
      const c = check(b);
      expect(c.status, `${what}: ${c.stderr}`).toBe(3);
      const e = refusal(b);
      const fromC = /(?:corrupt image|not a REX image): (\S+) at offset (\d+)/.exec(c.stderr);
      const fromTs = /(?:corrupt image|not a REX image): (\S+) at offset (\d+)/.exec(e.message);
      expect(fromTs?.slice(1), `${what}: ${e.message} / ${c.stderr}`).toEqual(fromC?.slice(1));
      expect(e.code).toBe(ErrorCodes.IMAGE_MALFORMED);
      // checkHash: false (the origin reading its own client's image) skips meta_hash only: every bound still holds.
      if (what !== 'meta_hash') expect(refusal(b, { checkHash: false }).message).toBe(e.message);
    }
    const stale = Buffer.from(img);
    stale.writeBigUInt64LE(stale.readBigUInt64LE(H.metaHash) ^ 1n, H.metaHash);
    expect(refusal(stale).message).toMatch(/header\.meta_hash at offset 64/);
    expect(readImageInfo(stale, { checkHash: false }).regions.length).toBe(regions(img).length);
  });

  it('refuses an XSAVE component in use beyond the bytes stored, as the restorer does', () => {
    const img = readFileSync(images.get('hello')!);
    const xcr0 = img.readBigUInt64LE(H.xcr0);
    expect(xcr0 & 4n, `XCR0 0x${xcr0.toString(16)} has no AVX`).toBe(4n);
    // Built by hand on any CPU: only the legacy area and the XSAVE header stored, AVX (component 2,
    // bytes 576..832 of the standard form) marked in use.
    const b = withXsaveStored(img, 576);
    b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) | 4n, XSTATE_BV);
    rehash(b);
    expect(check(b).stderr).toMatch(/corrupt image: header\.xsave_len at offset 3388: XSAVE component 2 is in use \(bytes \d+\.\.\d+\) but only 576 bytes/);
    expect(refusal(b).message).toMatch(/corrupt image: header\.xsave_len at offset 3388: XSAVE component 2 is in use \(bytes 576\.\.832\) but only 576 bytes/);
    // The same image with AVX not in use is read.
    const ok = withXsaveStored(img, 576);
    ok.writeBigUInt64LE(ok.readBigUInt64LE(XSTATE_BV) & 3n, XSTATE_BV);
    expect(readImageInfo(rehash(ok)).regions.length).toBe(regions(img).length);
  });

  it('checks the fd table the stub relies on (the restorer does not read it)', () => {
    const img = readFileSync(images.get('fds_listed')!);
    const l = layout(img);
    const cases: [string, (b: Buffer) => void, RegExp][] = [
      ['negative fd', (b) => b.writeInt32LE(-1, l.fds), new RegExp(`fd\\[0\\]\\.fd at offset ${l.fds}: descriptor number negative`)],
      ['repeated fd', (b) => b.writeInt32LE(b.readInt32LE(l.fds), l.fds + 56), new RegExp(`fd\\[1\\]\\.fd at offset ${l.fds + 56}: .*repeated`)],
      ['fd kind', (b) => b.writeUInt32LE(FD_KINDS.length, l.fds + 48), new RegExp(`fd\\[0\\]\\.kind at offset ${l.fds + 48}: unknown kind`)],
      ['fd flags', (b) => b.writeUInt32LE(6, l.fds + 52), new RegExp(`fd\\[0\\]\\.flags at offset ${l.fds + 52}: unknown flag bits`)],
    ];
    for (const [what, edit, message] of cases) {
      const b = Buffer.from(img);
      edit(b);
      expect(refusal(rehash(b)).message, what).toMatch(message);
    }
  });
});

describe('mutated and truncated images (property)', () => {
  /** rehash from the test reader trusts the counts; on a mutated header it may itself throw: then keep the bytes. */
  const tryRehash = (b: Buffer): Buffer => {
    try {
      return rehash(b);
    } catch {
      return b;
    }
  };

  it('readImageInfo returns or throws RexError, never anything else; the restorer\'s refusals are its refusals', () => {
    const sources = ['hello', 'heap_globals', 'sparse1g'].map((n) => readFileSync(images.get(n)!));
    let refused = 0, accepted = 0;
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: sources.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        fc.oneof(fc.constant(-1), fc.nat()),
        (which, flips, fix, cutAt) => {
          const src = sources[which]!;
          const metaEnd = layout(src).data;
          let b: Buffer = Buffer.from(src);
          // Most flips land in the header and metadata, where the validation is.
          for (const [at, mask] of flips) b[at % (at % 3 === 0 ? b.length : metaEnd)]! ^= mask;
          if (fix) b = tryRehash(b);
          if (cutAt >= 0) b = b.subarray(0, cutAt % b.length);
          let info: ImageInfo | undefined;
          try {
            info = readImageInfo(b);
          } catch (e) {
            if (!(e instanceof RexError)) throw e;
            refused++;
            return true;
          }
          accepted++;
          expect(info.imageBytes).toBe(b.length);
          return true;
        },
      ),
      { numRuns: runs(400) },
    );
    expect(refused).toBeGreaterThan(0);
  });

  it('any change to header.cpu: the restorer refuses it as corrupt exactly when the reader does, naming the same field', () => {
    const src = readFileSync(images.get('hello')!);
    fc.assert(
      fc.property(fc.integer({ min: cpuOffset('leaf0'), max: cpuOffset('reserved') + 3 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const b = Buffer.from(src);
        b[at]! ^= mask;
        rehash(b);
        const c = check(b);
        let msg = '';
        try {
          readImageInfo(b);
        } catch (e) {
          if (!(e instanceof RexError)) throw e;
          msg = e.message;
        }
        expect(c.status === 3, `flip ${mask} at ${at}: restorer says ${c.stderr}, reader ${msg}`).toBe(msg !== '');
        const where = (t: string) => /corrupt image: (\S+) at offset (\d+)/.exec(t)?.slice(1);
        if (msg) expect(where(msg)).toEqual(where(c.stderr));
        return true;
      }),
      { numRuns: runs(80) },
    );
  }, 60_000);

  it('every image the restorer refuses as corrupt, the reader refuses too (rehashed metadata mutations)', () => {
    const src = readFileSync(images.get('hello')!);
    const metaEnd = layout(src).data;
    fc.assert(
      fc.property(fc.integer({ min: 8, max: metaEnd - 1 }), fc.integer({ min: 1, max: 255 }), (at, mask) => {
        const b = Buffer.from(src);
        b[at]! ^= mask;
        const fixed = tryRehash(b);
        const c = check(fixed);
        let threw = false;
        try {
          readImageInfo(fixed);
        } catch (e) {
          if (!(e instanceof RexError)) throw e;
          threw = true;
        }
        if (c.status === 3) expect(threw, `flip ${mask} at ${at}: restorer says ${c.stderr}`).toBe(true);
        return true;
      }),
      { numRuns: runs(150) },
    );
  }, 60_000);
});
