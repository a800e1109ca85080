// Page bitmaps (image version 2, docs/IMAGE.md section 3.3): scattered memory
// is listed with one bit per page where that is smaller than the runs, the
// restored process finds every page where it was (native/test/migration/
// scattered.c checks each page's content and that untouched pages are zero),
// and the metadata of 256 MiB touched every tenth page stays under 16 KiB plus the XSAVE area the image stores.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { layout, program, regions, restorer, run } from './image.js';

let dir: string;
beforeAll(() => {
  execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-bitmap-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('scattered memory', () => {
  it('every tenth page, every other read-only page, pages behind PROT_NONE: bitmaps; a dense block: one run; all restored', () => {
    const image = join(dir, 'scattered.img');
    const d = run(program('scattered'), [image, '16']);
    expect(d.stdout).toMatch(/^DUMPED scattered/);
    const info = readImageInfo(image);
    // The four regions have distinct sizes (scattered.c): find them by page count.
    const bySize = (pages: number) => info.regions.find((r) => (r.end - r.start) / 4096 === pages)!;
    const tenth = bySize(16 * 256), other = bySize(1000), hidden = bySize(777), dense = bySize(400), fives = bySize(4000);
    expect(tenth).toMatchObject({ pageMap: 'bitmap', pages: 410 });
    expect(other).toMatchObject({ pageMap: 'bitmap', pages: 500, prot: 1 });
    expect(hidden).toMatchObject({ pageMap: 'bitmap', prot: 0 });
    expect(dense).toMatchObject({ pageMap: 'runs', pages: 300 });
    expect(fives).toMatchObject({ pageMap: 'bitmap', pages: 544, prot: 7 });
    const r = run(restorer, [image]);
    expect(r.stdout, r.stderr).toContain('PASS scattered');
    expect(r.status).toBe(0);
  });

  it('each region takes the smaller listing, runs on a tie (every region of several images)', () => {
    let compared = 0;
    for (const [name, extra] of [['scattered', ['16']], ['heap_globals', []], ['sparse1g', []], ['hello', []]] as const) {
      const image = join(dir, `${name}-choice.img`);
      expect(run(program(name), [image, ...extra]).status).toBe(0);
      const img = readFileSync(image);
      const l = layout(img);
      for (const r of regions(img)) {
        const pages = Number((r.end - r.start) / 4096n);
        const bitmapBytes = Math.ceil(pages / 64) * 8;
        let runCount = r.nruns;
        if (r.pageMap === 1) {
          // Count the runs the bitmap stands for: set bits whose predecessor is clear.
          runCount = 0;
          const bit = (k: number) => (img.readBigUInt64LE(l.words + (r.firstWord + Math.floor(k / 64)) * 8) >> BigInt(k % 64)) & 1n;
          for (let k = 0; k < pages; k++) if (bit(k) && (k === 0 || !bit(k - 1))) runCount++;
          expect(bitmapBytes, `${name} ${r.name}`).toBeLessThan(runCount * 16);
        } else {
          expect(runCount * 16, `${name} ${r.name}`).toBeLessThanOrEqual(bitmapBytes);
        }
        compared++;
      }
      rmSync(image);
    }
    expect(compared).toBeGreaterThan(60);
  });

  it('256 MiB touched every tenth page: one bitmap, restored page by page', () => {
    const image = join(dir, 'scattered256.img');
    const d = run(program('scattered'), [image, '256']);
    expect(d.stdout).toMatch(/^DUMPED scattered/);
    const info = readImageInfo(image);
    expect(info.regions.find((r) => r.end - r.start === 256 * 1048576)).toMatchObject({ pageMap: 'bitmap', pages: 6554 });
    const r = run(restorer, [image], { timeout: 120_000 });
    expect(r.stdout, r.stderr).toContain('PASS scattered');
    rmSync(image);
  }, 120_000);

  it('the benchmark\'s subject: 256 MiB touched every tenth page adds its 8 KiB bitmap to the metadata, not 104 KiB of runs', () => {
    const meta = (mib: number, percent: number) => {
      const image = join(dir, `bench-${mib}.img`);
      const d = run(program('bench_rfork'), [image, String(mib), String(percent)]);
      expect(d.stdout).toMatch(/^DUMPED bench_rfork/);
      const info = readImageInfo(image);
      rmSync(image);
      // Every carried page is a private page; the rest is metadata.
      expect(info.imageBytes - info.dataPages * 4096).toBe(info.metadataBytes);
      return info;
    };
    const small = meta(0, 0), big = meta(256, 10);
    expect(big.dataPages - small.dataPages).toBeGreaterThan(6500); // 6554 touched, give or take the program's own pages
    // One more region (128 bytes) and one bit per page (8192 bytes), each table padded to 64 bytes.
    expect(big.metadataBytes - small.metadataBytes).toBeLessThanOrEqual(8192 + 128 + 64);
    // The bound holds on every CPU (docs/IMAGE.md): 16 KiB of metadata plus the XSAVE area the image stores
    // (xsave_len, from its header), whatever the CPU's layout and the components in use.
    expect(big.metadataBytes).toBeLessThanOrEqual(16 * 1024 + big.xsaveLen);
    expect(big.imageBytes).toBeLessThanOrEqual(big.dataPages * 4096 + 16 * 1024 + big.xsaveLen);
  }, 60_000);
});
