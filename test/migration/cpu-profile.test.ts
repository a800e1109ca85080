// The CPU profile in the image (docs/IMAGE.md section 2.4): the dumper records
// its CPU and the features in use (less those GLIBC_TUNABLES turned off), the
// reader and the restorer refuse a damaged record naming the field, the
// restorer refuses a host that lacks a feature in use, and the feature code
// and the reader are exercised with every recorded CPU (test/fixtures/cpu),
// whatever CPU runs the tests.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FEATURES, featureNames, levelOf, tunablesDisabled, xstateFor, type CpuidKey, type CpuidLeaves } from '../../src/cpu/features.js';
import { CPU_REGISTERS } from '../../src/cpu/features.generated.js';
import { GLIBC_STATE_SAVE_MASK, hostCpuProfile, missingFor, profileFromCpuid } from '../../src/cpu/profile.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { isRexError } from '../../src/util/errors.js';
import { cpuidOf, recordedCpus, type RecordedCpu } from '../helpers/cpu.js';
import { runs } from '../helpers/property.js';
import { XSTATE_BV, cpuOffset, program, rehash, restorer, withCpuLayout, withCpuProfile } from './image.js';

const cpus = recordedCpus();
let dir: string;
let hello: Buffer;

/** Runs the `hello` fidelity program with `env` added to a GLIBC_TUNABLES-free environment; returns its image. */
function dump(name: string, env: Record<string, string> = {}): Buffer {
  const image = join(dir, `${name}.img`);
  const base = { ...process.env };
  delete base.GLIBC_TUNABLES;
  const r = spawnSync(program('hello'), [image], { encoding: 'utf8', env: { ...base, ...env }, timeout: 60_000 });
  expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  return readFileSync(image);
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'rex-cpuprof-'));
  hello = dump('hello');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let seq = 0;
function check(img: Buffer) {
  const path = join(dir, `c${seq++}.img`);
  writeFileSync(path, img);
  const r = spawnSync(restorer, ['--check', path], { encoding: 'utf8', timeout: 60_000 });
  rmSync(path);
  return r;
}

/** The reader's outcome: 'ok', or the message of its RexError. */
function readerOutcome(img: Buffer): string {
  try {
    readImageInfo(img);
    return 'ok';
  } catch (e) {
    if (!isRexError(e)) throw e;
    return e.message;
  }
}

/** An image of `fx`: its XSAVE layout (components `comps` in use) and its CPU profile (features `inUse` in use). */
function imageOf(fx: RecordedCpu, comps: number[] = [], inUse?: readonly string[]): Buffer {
  return withCpuProfile(withCpuLayout(hello, fx, comps), fx.cpuid, inUse);
}

const leavesArb: fc.Arbitrary<CpuidLeaves> = fc
  .array(fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 4, maxLength: 4 }), { minLength: 6, maxLength: 6 })
  .map(([a, b, c, d, e, g]) => ({ '0x0.0': a!, '0x1.0': b!, '0x7.0': c!, '0x7.1': d!, '0xd.1': e!, '0x80000001.0': g! }));
const REG = { eax: 0, ebx: 1, ecx: 2, edx: 3 } as const;

describe('the recorded CPUs', () => {
  it('there are CPUs of both vendors with and without AVX-512, each with its source', () => {
    const kinds = new Set(cpus.map((c) => `${c.vendor} ${featureNames(c.cpuid).includes('AVX512F')}`));
    for (const k of ['GenuineIntel true', 'GenuineIntel false', 'AuthenticAMD true', 'AuthenticAMD false']) expect(kinds).toContain(k);
    for (const c of cpus) expect(c.source, c.file).toMatch(/InstLatx64\/InstLatx64 \S+_CPUID\.txt at [0-9a-f]{40}|shared\/data\/cpu\//);
  });

  it.each(cpus.map((c) => [c.file, c] as const))('%s: profileFromCpuid gives its vendor, model, layout and level', (_f, fx) => {
    const p = profileFromCpuid(cpuidOf(fx), fx.xcr0);
    expect(p.vendor).toBe(fx.vendor);
    expect(p.modelName).toBe(fx.modelName);
    expect(p.xsaveSize).toBe(fx.xsaveSize);
    expect(p.components).toEqual(fx.components);
    expect(p.features).toEqual(featureNames(fx.cpuid));
    expect(p.level).toBe(fx.file.includes('avx512') ? 4 : 3);
  });
});

describe('feature functions (properties, every recorded CPU)', () => {
  it('featureNames reports exactly the table\'s bits that are set, in table order', () => {
    fc.assert(fc.property(leavesArb, (leaves) => {
      const names = featureNames(leaves);
      expect(names).toEqual(FEATURES.filter((f) => ((leaves[f.leaf][REG[f.reg]]! >>> f.bit) & 1) === 1).map((f) => f.name));
      // Bits outside the table change nothing: keep only the table's bits and ask again.
      const masked = Object.fromEntries(Object.keys(leaves).map((k) => [k, [0, 0, 0, 0]])) as unknown as Record<CpuidKey, number[]>;
      for (const f of FEATURES) masked[f.leaf][REG[f.reg]] = (masked[f.leaf][REG[f.reg]]! | (leaves[f.leaf][REG[f.reg]]! & (1 << f.bit))) >>> 0;
      expect(featureNames(masked)).toEqual(names);
    }), { numRuns: runs(200) });
  });

  it('levelOf never falls when features or XCR0 components are added, and needs the state the vector ISA needs', () => {
    const names = FEATURES.map((f) => f.name);
    fc.assert(fc.property(fc.subarray(names), fc.subarray(names), fc.bigInt({ min: 0n, max: 0x2ffn }), fc.constantFrom(...cpus),
      (a, b, xcr0, fx) => {
        const base = levelOf(a, xcr0);
        expect(levelOf([...a, ...b], xcr0)).toBeGreaterThanOrEqual(base);
        expect(levelOf(a, xcr0 | 0xe6n)).toBeGreaterThanOrEqual(base);
        if ((xcr0 & 0x6n) !== 0x6n) expect(base).toBeLessThanOrEqual(2);
        const recorded = featureNames(fx.cpuid);
        expect(levelOf(recorded, fx.xcr0)).toBe(recorded.includes('AVX512F') ? 4 : 3);
      }), { numRuns: runs(200) });
  });

  it('tunablesDisabled: exactly the -NAMEs glibc 2.36 honours, in table order, whatever else the variable holds', () => {
    const names = FEATURES.map((f) => f.name);
    const noise = fc.constantFrom('+Prefer_No_VZEROUPPER', '-AVX2_Usable', '-avx2', '-NOSUCH', 'AVX2', '-', '');
    fc.assert(fc.property(fc.subarray(names), fc.array(noise, { maxLength: 3 }), fc.boolean(), (off, extra, other) => {
      const items = fc.sample(fc.shuffledSubarray([...off.map((n) => `-${n}`), ...extra], { minLength: off.length + extra.length }), 1)[0]!;
      const value = `glibc.cpu.hwcaps=${items.join(',')}`;
      const t = other ? `glibc.malloc.check=0:${value}:glibc.cpu.x86_rep_movsb_threshold=2048` : value;
      const want = FEATURES.filter((f) => f.glibcOff && off.includes(f.name)).map((f) => f.name);
      expect(tunablesDisabled(t)).toEqual(want);
      expect(tunablesDisabled(`glibc.cpu.hwcaps_x=${items.join(',')}`)).toEqual([]);
    }), { numRuns: runs(200) });
    expect(tunablesDisabled(undefined)).toEqual([]);
    expect(tunablesDisabled('glibc.cpu.hwcaps=-AVX2_Usable,-AVX_Usable')).toEqual([]);
    expect(tunablesDisabled('glibc.cpu.hwcaps=-AVX2,-AVX,-SHA')).toEqual(['AVX', 'AVX2']);
  });

  it('missingFor: one phrase per feature in use or component a recorded host lacks, and per glibc-saved component it has more; none for the CPU itself', () => {
    fc.assert(fc.property(fc.constantFrom(...cpus), fc.constantFrom(...cpus), fc.nat(), (from, to, pick) => {
      const have = featureNames(from.cpuid);
      const used = have.filter((_, i) => (pick >> (i % 30)) & 1);
      const xcr0 = from.xcr0 & 0xffffn; // what an image of `from` needs (ImageInfo.cpuNeeds)
      const host = { features: featureNames(to.cpuid), xcr0: to.xcr0 };
      const miss = missingFor({ features: used, xcr0 }, host);
      const lackF = used.filter((n) => !host.features.includes(n));
      const lackX = [...Array(64).keys()].filter((i) => i >= 2 && (xcr0 >> BigInt(i)) & 1n && !((to.xcr0 >> BigInt(i)) & 1n));
      const moreX = [...Array(64).keys()].filter((i) => (GLIBC_STATE_SAVE_MASK >> BigInt(i)) & 1n && (to.xcr0 >> BigInt(i)) & 1n && !((xcr0 >> BigInt(i)) & 1n));
      expect(miss.length).toBe(lackF.length + lackX.length + moreX.length);
      for (const n of lackF) expect(miss).toContain(`no ${n}`);
      for (const i of lackX) expect(miss.some((m) => m.startsWith(`no XSAVE component ${i}`))).toBe(true);
      for (const i of moreX) expect(miss.some((m) => m.startsWith(`XSAVE component ${i}`) && m.includes("beyond the origin's"))).toBe(true);
      expect(missingFor({ features: used, xcr0 }, { features: have, xcr0: from.xcr0 })).toEqual([]);
    }), { numRuns: runs(200) });
  });
});

describe('the reader with every recorded CPU (never this host\'s)', () => {
  it.each(cpus.map((c) => [c.file, c] as const))('%s: any features and components in use are read back as written', (_f, fx) => {
    const have = featureNames(fx.cpuid);
    const indexes = fx.components.map((c) => c.index);
    fc.assert(fc.property(fc.subarray(have), fc.subarray(indexes), (inUse, comps) => {
      const info = readImageInfo(imageOf(fx, comps, inUse));
      expect(info.cpu.vendor).toBe(fx.vendor);
      expect(info.cpu.features).toEqual(have);
      expect(info.cpu.inUse).toEqual(have.filter((n) => inUse.includes(n)));
      expect(info.cpu.leaves['0x7.0'].slice(1)).toEqual(fx.cpuid['0x7.0'].slice(1));
      expect(info.cpuNeeds.features).toEqual(info.cpu.inUse);
      // Whatever is in use, the restoring CPU must enable every component 0..15 of the image's XCR0.
      expect(info.cpuNeeds.xcr0).toBe(fx.xcr0 & 0xffffn);
      expect(info.xsaveComponents).toEqual(fx.components);
    }), { numRuns: runs(25) });
  });

  it('the same outcome for the same damage, whichever recorded CPU dumped the image', () => {
    const edit = (b: Buffer, off: number, v: (old: number) => number) => b.writeUInt32LE(v(b.readUInt32LE(off)) >>> 0, off);
    const damage: [string, (b: Buffer, fx: RecordedCpu) => void][] = [
      ['none', () => {}],
      ['highest leaf 0xc', (b) => b.writeUInt32LE(0xc, cpuOffset('leaf0', 0))],
      ['vendor with a NUL', (b) => edit(b, cpuOffset('leaf0', 2), (v) => v & 0xffffff00)],
      ['family 0', (b) => edit(b, cpuOffset('leaf1_eax'), (v) => v & ~0xf00)],
      ['no XSAVE', (b) => edit(b, cpuOffset('has', 0), (v) => v & ~(1 << 26))],
      ['in use, not the origin\'s', (b) => edit(b, cpuOffset('has', 1), (v) => v & ~(1 << 15))], // CMOV: every x86-64 CPU has it
      ['in use, not a feature', (b) => edit(b, cpuOffset('in_use', 8), (v) => v | 1)],
      ['reserved', (b) => b.writeUInt32LE(1, cpuOffset('reserved'))],
      ['XSTATE_BV outside XCR0', (b) => b.writeBigUInt64LE(b.readBigUInt64LE(XSTATE_BV) | (1n << 62n), XSTATE_BV)],
    ];
    const outcomes = cpus.map((fx) => damage.map(([, change]) => {
      const b = imageOf(fx, fx.components.map((c) => c.index));
      change(b, fx);
      const m = /^corrupt image: (\S+) at offset (\d+)/.exec(readerOutcome(rehash(b)));
      return m ? `${m[1]}@${m[2]}` : readerOutcome(b);
    }));
    for (const [k, o] of outcomes.entries()) expect(o, cpus[k]!.file).toEqual(outcomes[0]);
    expect(outcomes[0]).toEqual(['ok', `header.cpu.leaf0[0]@${cpuOffset('leaf0', 0)}`, `header.cpu.leaf0[2]@${cpuOffset('leaf0', 2)}`,
      `header.cpu.leaf1_eax@${cpuOffset('leaf1_eax')}`, `header.cpu.has[0]@${cpuOffset('has', 0)}`, `header.cpu.in_use[1]@${cpuOffset('in_use', 1)}`,
      `header.cpu.in_use[8]@${cpuOffset('in_use', 8)}`, `header.cpu.reserved@${cpuOffset('reserved')}`, `xsave.xstate_bv@${XSTATE_BV}`]);
  });
});

describe('a damaged header.cpu is refused by the reader and the restorer alike, naming the field', () => {
  const at = (f: Parameters<typeof cpuOffset>[0], i = 0) => cpuOffset(f, i);
  const set = (off: number, v: (old: number) => number) => (b: Buffer) => b.writeUInt32LE(v(b.readUInt32LE(off)) >>> 0, off);
  const cases: [string, (b: Buffer) => void, string, number][] = [
    ['highest leaf below 0xd', set(at('leaf0', 0), () => 0xc), 'header.cpu.leaf0[0]', at('leaf0', 0)],
    ['vendor not printable', set(at('leaf0', 1), (v) => v ^ 0x80), 'header.cpu.leaf0[1]', at('leaf0', 1)],
    ['vendor with a control character', set(at('leaf0', 3), (v) => (v & ~0xff) | 0x0a), 'header.cpu.leaf0[3]', at('leaf0', 3)],
    ['leaf 1 EAX reserved bits', set(at('leaf1_eax'), (v) => v | 0x10000000), 'header.cpu.leaf1_eax', at('leaf1_eax')],
    ['leaf 1 EAX family 0', set(at('leaf1_eax'), (v) => v & ~0xf00), 'header.cpu.leaf1_eax', at('leaf1_eax')],
    ['has without OSXSAVE', set(at('has', 0), (v) => v & ~(1 << 27)), 'header.cpu.has[0]', at('has', 0)],
    ['in_use with a bit outside the table', set(at('in_use', 0), (v) => v | (1 << 31)), 'header.cpu.in_use[0]', at('in_use', 0)],
    ['in_use beyond has', set(at('has', 2), () => 0), 'header.cpu.in_use[2]', at('in_use', 2)],
    ['reserved not zero', set(at('reserved'), () => 0x100), 'header.cpu.reserved', at('reserved')],
  ];
  it.each(cases)('%s', (_what, edit, field, off) => {
    const b = Buffer.from(hello);
    edit(b);
    rehash(b);
    const want = new RegExp(`corrupt image: ${field.replace(/[.[\]]/g, '\\$&')} at offset ${off}: .*\\(value 0x[0-9a-f]+\\)`);
    expect(readerOutcome(b)).toMatch(want);
    const r = check(b);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(want);
  });
});

describe('real dumps on this host', () => {
  it('record this host\'s CPU, every feature of the table it has in use', () => {
    const host = hostCpuProfile();
    const info = readImageInfo(hello);
    expect(info.cpu.vendor).toBe(host.vendor);
    expect([info.cpu.family, info.cpu.model, info.cpu.stepping]).toEqual([host.family, host.model, host.stepping]);
    expect(info.cpu.features).toEqual(host.features);
    expect(info.cpu.inUse).toEqual(host.features);
    for (const r of CPU_REGISTERS) expect(info.cpu.leaves[r.key][REG[r.reg]], r.key).toBe(host.leaves[r.key][REG[r.reg]]);
    expect(missingFor(info.cpuNeeds, host)).toEqual([]);
    expect(check(hello).status).toBe(0);
  });

  // glibc's own view: ld.so --list-diagnostics prints the features it made active after GLIBC_TUNABLES.
  const glibcActiveAvx2 = (tunables: string): boolean => {
    const r = spawnSync('ld.so', ['--list-diagnostics'], { encoding: 'utf8', env: { ...process.env, GLIBC_TUNABLES: tunables } });
    expect(r.status, r.stderr).toBe(0);
    const m = /x86\.cpu_features\.features\[0x1\]\.active\[0x1\]=0x([0-9a-f]+)/.exec(r.stdout);
    expect(m, 'ld.so --list-diagnostics names leaf 7 EBX').not.toBeNull();
    return ((Number.parseInt(m![1]!, 16) >>> 5) & 1) === 1;
  };

  it.each([
    ['glibc.cpu.hwcaps=-AVX2,-AVX', ['AVX', 'AVX2']],
    ['glibc.malloc.check=0:glibc.cpu.hwcaps=-AVX512F,-AVX2,-NOSUCH', ['AVX2', 'AVX512F']],
    ['glibc.cpu.hwcaps=-AVX2_Usable,-AVX_Usable', []],
  ] as const)('GLIBC_TUNABLES=%s: the features glibc turned off are recorded as not in use, and only those', (tunables, off) => {
    const host = hostCpuProfile();
    const info = readImageInfo(dump(`tun${seq++}`, { GLIBC_TUNABLES: tunables }));
    expect(info.cpu.features).toEqual(host.features);
    expect(info.cpu.inUse).toEqual(host.features.filter((n) => !(off as readonly string[]).includes(n)));
    // The record agrees with glibc on AVX2, whatever this CPU is.
    expect(info.cpu.inUse.includes('AVX2')).toBe(glibcActiveAvx2(tunables));
    expect(check(readFileSync(join(dir, `tun${seq - 1}.img`))).status).toBe(0);
  });

  it('the restorer refuses an image whose features in use include ones this host lacks: one line naming them, exit 4', () => {
    const host = hostCpuProfile();
    const lacking = FEATURES.filter((f) => !host.features.includes(f.name)).slice(0, 2);
    expect(lacking.length).toBe(2); // no CPU has every feature of the table (Xeon Phi's AVX512ER/PF and AMD's old XOP/FMA4 exclude each other)
    const b = Buffer.from(hello);
    for (const f of lacking) {
      const i = CPU_REGISTERS.findIndex((r) => r.key === f.leaf && r.reg === f.reg);
      for (const field of ['has', 'in_use'] as const) b.writeUInt32LE((b.readUInt32LE(cpuOffset(field, i)) | (1 << f.bit)) >>> 0, cpuOffset(field, i));
    }
    rehash(b);
    const info = readImageInfo(b);
    expect(info.cpu.inUse).toEqual(expect.arrayContaining(lacking.map((f) => f.name)));
    expect(missingFor(info.cpuNeeds, host)).toEqual(lacking.map((f) => `no ${f.name}`));
    const r = check(b);
    expect(r.status).toBe(4);
    const names = lacking.map((f) => f.name).join(', ');
    expect(r.stderr).toBe(`rex-restore: this host's CPU lacks ${names} (the process may use them: its origin CPU has them); restore on a host that has them\n`);
  });

  it('a feature the origin has but GLIBC_TUNABLES turned off does not stop the restore on a host without it', () => {
    const host = hostCpuProfile();
    const f = FEATURES.find((x) => x.glibcOff && !host.features.includes(x.name))!;
    expect(f).toBeDefined();
    const i = CPU_REGISTERS.findIndex((r) => r.key === f.leaf && r.reg === f.reg);
    const b = Buffer.from(hello);
    b.writeUInt32LE((b.readUInt32LE(cpuOffset('has', i)) | (1 << f.bit)) >>> 0, cpuOffset('has', i));
    rehash(b);
    expect(readImageInfo(b).cpu.features).toContain(f.name);
    expect(readImageInfo(b).cpu.inUse).not.toContain(f.name);
    expect(check(b).status).toBe(0);
  });
});
