// The XSAVE layout travels with the image (docs/IMAGE.md, xsave_comp): CPUs
// put the same state components at different offsets (AMD's AVX-512 sits
// lower than Intel's), so no reader may assume a table. Images are built by
// hand with the layouts of CPUs recorded in test/fixtures/cpu/, and with this
// host's own; the TypeScript reader must take every one from the image, and
// the restorer must read it there, convert it to its own CPU's layout, and
// refuse, naming it, only a component its CPU lacks or has at another size.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readImageInfo } from '../../src/rfork/image.js';
import { isRexError } from '../../src/util/errors.js';
import { runs } from '../helpers/property.js';
import { recordedCpus } from '../helpers/cpu.js';
import { H, XSTATE_BV, program, rehash, restorer, run, withCpuLayout, withXsaveStored, type CpuLayout } from './image.js';

const cpus: CpuLayout[] = recordedCpus().map((c) => ({ cpu: c.cpu, xcr0: c.xcr0, xsaveSize: c.xsaveSize, components: c.components }));

let dir: string;
let hello: Buffer;
/** This host's own layout, as the dumper recorded it in a real image. */
let here: CpuLayout;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rex-xsave-'));
  const image = join(dir, 'hello.img');
  const r = run(program('hello'), [image]);
  expect(r.status, r.stderr).toBe(0);
  hello = readFileSync(image);
  const info = readImageInfo(hello);
  here = { cpu: 'this host', xcr0: info.xcr0, xsaveSize: info.xsaveSize, components: info.xsaveComponents };
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let seq = 0;
function check(img: Buffer) {
  const path = join(dir, `x${seq++}.img`);
  writeFileSync(path, img);
  const r = run(restorer, ['--check', path]);
  rmSync(path);
  return r;
}

function readerError(img: Buffer): string | undefined {
  try {
    readImageInfo(img);
    return undefined;
  } catch (e) {
    if (!isRexError(e)) throw e;
    return e.message;
  }
}

describe('the dumper records its CPU layout', () => {
  it('an entry for exactly the components XCR0 enables, each where CPUID leaf 0xD says', () => {
    expect(here.components.length).toBeGreaterThanOrEqual(1); // AVX at least, on every x86-64 CPU REX runs on
    for (const c of here.components) {
      expect((here.xcr0 >> BigInt(c.index)) & 1n).toBe(1n);
      expect(c.offset).toBeGreaterThanOrEqual(576);
      expect(c.offset + c.size).toBeLessThanOrEqual(here.xsaveSize);
    }
    // The C restorer takes this host's own image as it is.
    expect(check(hello).status).toBe(0);
  });
});

describe.each(cpus.map((c) => [c.cpu, c] as const))('the layout of %s', (_name, cpu) => {
  it('is read from the image with every component in use, and the restorer refuses it only where this CPU lacks a component', () => {
    const all = cpu.components.map((c) => c.index);
    const img = withCpuLayout(hello, cpu, all);
    const info = readImageInfo(img);
    expect(info.xsaveComponents).toEqual(cpu.components);
    expect(info.xsaveLen).toBe(Math.max(...cpu.components.map((c) => c.offset + c.size)));
    const r = check(img);
    // Other offsets are converted (xsave-convert.test.ts); a component this CPU does not enable is not.
    const lacking = cpu.components.map((c) => c.index).filter((i) => !((here.xcr0 >> BigInt(i)) & 1n));
    if (lacking.length === 0) expect(r.status, r.stderr).toBe(0);
    else {
      expect(r.status).toBe(4); // a host refusal, not a corrupt image: the image is valid
      expect(r.stderr).toContain("this CPU's XSAVE features differ from the image's");
      expect(r.stderr).toMatch(new RegExp(`this CPU lacks components? ${lacking.join('[^,;]*, ')}\\b`));
    }
  });

  it('property: any components in use and any stored length; the reader accepts exactly when each in use is stored', () => {
    const indexes = cpu.components.map((c) => c.index);
    fc.assert(
      fc.property(fc.subarray(indexes), fc.integer({ min: 576, max: cpu.xsaveSize }), (inUse, len) => {
        const img = withCpuLayout(hello, cpu, inUse);
        // Store `len` bytes instead of what the in-use set needs.
        const cut = withXsaveStored(img, len);
        const fits = inUse.every((i) => {
          const c = cpu.components.find((x) => x.index === i)!;
          return c.offset + c.size <= len;
        });
        const err = readerError(cut);
        if (fits) expect(err).toBeUndefined();
        else expect(err).toMatch(/header\.xsave_len at offset 3388: XSAVE component \d+ is in use \(bytes \d+\.\.\d+\) but only \d+ bytes are stored/);
      }),
      { numRuns: runs(60) },
    );
  });

  it('a bad layout entry is refused by the reader and the restorer alike, naming the entry and its offset', () => {
    const all = cpu.components.map((c) => c.index);
    const first = cpu.components[0]!;
    const unused = [...Array(16).keys()].find((i) => i >= 2 && !((cpu.xcr0 >> BigInt(i)) & 1n))!;
    const at = (i: number) => H.xsaveComp + 4 * i;
    const cases: [string, (b: Buffer) => void, number][] = [
      ['entry for a component XCR0 does not enable', (b) => b.writeUInt16LE(600, at(unused)), unused],
      ['entry for the legacy area', (b) => b.writeUInt16LE(8, at(1) + 2), 1],
      ['component inside the legacy area', (b) => b.writeUInt16LE(512, at(first.index)), first.index],
      ['component of size 0', (b) => b.writeUInt16LE(0, at(first.index) + 2), first.index],
      ['component past xsave_size', (b) => b.writeUInt16LE(cpu.xsaveSize, at(first.index)), first.index],
    ];
    if (cpu.components.length > 1) {
      const second = cpu.components[1]!;
      cases.push(['two components overlapping', (b) => b.writeUInt16LE(first.offset, at(second.index)), second.index]);
    }
    for (const [what, edit, index] of cases) {
      const b = Buffer.from(withCpuLayout(hello, cpu, all));
      edit(b);
      rehash(b);
      const want = new RegExp(`corrupt image: header\\.xsave_comp\\[${index}\\] at offset ${at(index)}: `);
      expect(readerError(b), what).toMatch(want);
      const r = check(b);
      expect(r.status, what).toBe(3);
      expect(r.stderr, what).toMatch(want);
    }
  });
});

describe('this host in the image, another CPU in its place', () => {
  it('the same XCR0 with a component elsewhere is accepted: the restorer converts the area to the layout of this CPU', () => {
    const moved: CpuLayout = { ...here, components: here.components.map((c, k) => (k === here.components.length - 1 ? { ...c, offset: c.offset - 64 } : c)) };
    // Keep the table valid: the moved component must not overlap the one before it.
    const prev = moved.components.at(-2);
    const last = moved.components.at(-1)!;
    const valid = last.offset >= 576 && (!prev || prev.offset + prev.size <= last.offset);
    const layout = valid ? moved : { ...here, components: here.components.map((c, k) => (k === here.components.length - 1 ? { ...c, offset: c.offset + 64 } : c)), xsaveSize: here.xsaveSize + 64 };
    const img = withCpuLayout(hello, layout, [last.index]);
    expect(readImageInfo(img).xsaveComponents.at(-1)!.offset).not.toBe(here.components.at(-1)!.offset);
    const r = check(img);
    expect(r.stderr).toMatch(/: valid image of pid \d+/);
    expect(r.status).toBe(0);
  });

  it('the same component at another size is refused, naming it and both sizes', () => {
    const c = here.components.at(-1)!;
    const bigger: CpuLayout = { ...here, xsaveSize: here.xsaveSize + 64, components: here.components.map((d) => (d.index === c.index ? { ...d, size: d.size + 64 } : d)) };
    const r = check(withCpuLayout(hello, bigger, []));
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`this CPU's XSAVE component ${c.index} (`);
    expect(r.stderr).toContain(`) is ${c.size} bytes, the image's CPU's ${c.size + 64} bytes`);
  });

  it('components 16 and above (AMX tiles) in use are refused', () => {
    const b = Buffer.from(hello);
    b.writeBigUInt64LE(b.readBigUInt64LE(H.xcr0) | (1n << 17n), H.xcr0);
    b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) | (1n << 17n), XSTATE_BV);
    rehash(b);
    expect(readerError(b)).toMatch(/xsave\.xstate_bv at offset 4064: components 16 and above in use/);
    const r = check(b);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/xsave\.xstate_bv at offset 4064: components 16 and above in use/);
  });
});
