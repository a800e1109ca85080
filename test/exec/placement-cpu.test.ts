// Placement of rfork images by CPU (docs/PLACEMENT.md, "CPU compatibility"):
// a host is a candidate only when it has every feature the image may use and
// every XSAVE component its state uses; a host without a profile never is.
// Random profiles are built from raw CPUID words, as peers send them.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { cannotRunMessage, cpuCandidates, cpuShortfall } from '../../src/placement/index.js';
import { FEATURES } from '../../src/cpu/features.js';
import { GLIBC_STATE_SAVE_MASK, type CpuNeeds, type CpuProfile } from '../../src/cpu/profile.js';
import { profileFromWire, WIRE_LEAVES } from '../../src/cpu/wire.js';
import { runs } from '../helpers/property.js';

const word = fc.integer({ min: 0, max: 0xffffffff });
/** XSAVE components a random CPU may enable beyond x87/SSE: AVX, AVX-512 (5, 6, 7), PKRU, AMX (17, 18). */
const COMPONENTS: [number, number][] = [
  [2, 256],
  [5, 64],
  [6, 512],
  [7, 1024],
  [9, 8],
  [17, 64],
  [18, 8192],
];

/** A random CPU as a peer would advertise it: random feature words, a random XCR0 with a consistent standard-form layout. */
const profileArb: fc.Arbitrary<CpuProfile> = fc
  .record({ words: fc.array(word, { minLength: 20, maxLength: 20 }), comps: fc.subarray(COMPONENTS), name: fc.constantFrom('Intel(R) Xeon(R)', 'AMD EPYC 7B13', '') })
  .map(({ words, comps, name }) => {
    const leaves = Buffer.alloc(WIRE_LEAVES.length * 16);
    leaves.write('Genu', 4, 'latin1');
    leaves.write('ntel', 8, 'latin1');
    leaves.write('ineI', 12, 'latin1');
    words.forEach((w, i) => leaves.writeUInt32LE(w, 16 + i * 4));
    let off = 576;
    const components = comps.map(([index, size]) => {
      const c = { index, offset: off, size };
      off += size;
      return c;
    });
    const xcr0 = comps.reduce((x, [i]) => x | (1n << BigInt(i)), 3n);
    return profileFromWire({ leaves, xcr0, xsaveSize: off, components, modelName: name }, 'random');
  });

/** What an image may need: some features and components of some CPU. */
const needsArb: fc.Arbitrary<CpuNeeds> = fc.record({
  features: fc.subarray(FEATURES.map((f) => f.name)),
  xcr0: fc.subarray(COMPONENTS.map(([i]) => i)).map((l) => l.reduce((x, i) => x | (1n << BigInt(i)), 3n)),
});

describe('CPU-compatible candidates', () => {
  it('property: a host is a candidate iff it has every needed feature and component and no glibc-saved component more; the order is kept; the others say exactly why', () => {
    fc.assert(
      fc.property(fc.array(fc.option(profileArb, { nil: undefined }), { minLength: 1, maxLength: 6 }), needsArb, (profiles, needs) => {
        const cands = profiles.map((cpu, i) => ({ name: `h${i}`, ...(cpu ? { cpu } : {}) }));
        const { fit, unfit } = cpuCandidates(cands, needs);
        const can = (p: CpuProfile | undefined) =>
          p !== undefined && needs.features.every((f) => p.features.includes(f)) && (needs.xcr0 & p.xcr0) === needs.xcr0 && (p.xcr0 & ~needs.xcr0 & GLIBC_STATE_SAVE_MASK) === 0n;
        expect(fit.map((c) => c.name)).toEqual(cands.filter((c) => can(c.cpu)).map((c) => c.name));
        expect(unfit.map((u) => u.name)).toEqual(cands.filter((c) => !can(c.cpu)).map((c) => c.name));
        for (const u of unfit) {
          const p = profiles[Number(u.name.slice(1))];
          if (!p) {
            expect(u.missing).toEqual([expect.stringMatching(/CPU profile is unknown/)]);
            continue;
          }
          const lacking = needs.features.filter((f) => !p.features.includes(f));
          expect(u.missing.filter((m) => !m.includes('XSAVE component')).sort()).toEqual(lacking.map((f) => `no ${f}`).sort());
          const comps = COMPONENTS.map(([i]) => i).filter((i) => (needs.xcr0 >> BigInt(i)) & 1n && !((p.xcr0 >> BigInt(i)) & 1n));
          expect(u.missing.filter((m) => m.startsWith('no XSAVE component')).map((m) => Number(/component (\d+)/.exec(m)![1]))).toEqual(comps);
          // Components glibc saves that the host enables beyond the image's: its save buffers would overflow.
          const extra = COMPONENTS.map(([i]) => i).filter((i) => (p.xcr0 >> BigInt(i)) & 1n && !((needs.xcr0 >> BigInt(i)) & 1n) && (GLIBC_STATE_SAVE_MASK >> BigInt(i)) & 1n);
          expect(u.missing.filter((m) => m.includes("beyond the origin's")).map((m) => Number(/component (\d+)/.exec(m)![1]))).toEqual(extra);
          expect(u.missing.length).toBeGreaterThan(0);
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it('a profile is always a candidate for its own features and XCR0 (the origin for its own image)', () => {
    fc.assert(
      fc.property(profileArb, (p) => {
        expect(cpuShortfall({ features: p.features, xcr0: p.xcr0 }, { cpu: p })).toEqual([]);
      }),
      { numRuns: runs(200) },
    );
  });

  it('the refusal names the host and each missing item: "beta cannot run this image: no AVX512F (used by the origin)"', () => {
    expect(cannotRunMessage('beta', ['no AVX512F'])).toBe('beta cannot run this image: no AVX512F (used by the origin)');
    expect(cannotRunMessage('beta', ['no AVX2', 'no XSAVE component 7 (AVX-512 ZMM16-31)'])).toBe('beta cannot run this image: no AVX2, no XSAVE component 7 (AVX-512 ZMM16-31) (used by the origin)');
    expect(cannotRunMessage('gamma', cpuShortfall({ features: ['SSE2'], xcr0: 3n }, {}))).toBe('gamma cannot run this image: its CPU profile is unknown (its rexd advertises none; upgrade it)');
  });
});
