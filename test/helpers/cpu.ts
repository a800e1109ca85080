/**
 * The recorded CPUs of test/fixtures/cpu (README there): real Intel and AMD
 * CPUs with and without AVX-512, as raw CPUID words and XSAVE layouts, so
 * that tests meet CPUs the machine running them does not have.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../../src/util/paths.js';
import type { CpuidKey, CpuidLeaves } from '../../src/cpu/features.js';
import type { CpuidFn, XsaveComponent } from '../../src/cpu/profile.js';

/** One recorded CPU, its words as numbers. */
export interface RecordedCpu {
  /** The fixture's file name. */
  file: string;
  cpu: string;
  vendor: string;
  modelName: string;
  source: string;
  xcr0: bigint;
  xsaveSize: number;
  components: XsaveComponent[];
  cpuid: CpuidLeaves;
}

const KEYS: readonly CpuidKey[] = ['0x0.0', '0x1.0', '0x7.0', '0x7.1', '0xd.1', '0x80000001.0'];

/** Every fixture of test/fixtures/cpu, in file name order; a malformed one throws naming the file and field. */
export function recordedCpus(): RecordedCpu[] {
  const dir = join(packageRoot(), 'test', 'fixtures', 'cpu');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const j = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>;
      const need = (k: string): unknown => {
        if (j[k] === undefined) throw new Error(`test/fixtures/cpu/${file}: no field "${k}"`);
        return j[k];
      };
      const raw = need('cpuid') as Record<string, string[]>;
      const cpuid = {} as Record<CpuidKey, number[]>;
      for (const k of KEYS) {
        const words = raw[k];
        if (!Array.isArray(words) || words.length !== 4 || !words.every((w) => /^0x[0-9a-f]{1,8}$/i.test(w))) {
          throw new Error(`test/fixtures/cpu/${file}: cpuid["${k}"] must be four hex words [eax, ebx, ecx, edx]`);
        }
        cpuid[k] = words.map((w) => Number.parseInt(w, 16) >>> 0);
      }
      return {
        file, cpu: need('cpu') as string, vendor: need('vendor') as string, modelName: need('modelName') as string,
        source: need('source') as string, xcr0: BigInt(need('xcr0') as string), xsaveSize: need('xsaveSize') as number,
        components: need('components') as XsaveComponent[], cpuid,
      };
    });
}

/**
 * A CPUID instruction that answers as the recorded CPU did: the recorded
 * leaves, leaf 0xD from the XSAVE layout (subleaf 0: XCR0 as the supported
 * components and the area size; subleaf i: the component's size and offset),
 * the brand string leaves from modelName, zero for everything else. For
 * src/cpu/profile.ts profileFromCpuid.
 */
export function cpuidOf(fx: RecordedCpu): CpuidFn {
  const brand = Buffer.alloc(48);
  brand.write(fx.modelName, 'latin1');
  return (leaf, sub) => {
    const key = `0x${leaf.toString(16)}.${sub}` as CpuidKey;
    if (leaf === 0xd && sub === 0) return [Number(fx.xcr0 & 0xffffffffn), fx.xsaveSize, fx.xsaveSize, Number(fx.xcr0 >> 32n)];
    if (leaf === 0xd && sub >= 2) {
      const c = fx.components.find((x) => x.index === sub);
      return c ? [c.size, c.offset, 0, 0] : [0, 0, 0, 0];
    }
    if (leaf === 0x80000000) return [0x80000004, 0, 0, 0];
    if (leaf >= 0x80000002 && leaf <= 0x80000004) {
      const o = (leaf - 0x80000002) * 16;
      return [0, 4, 8, 12].map((k) => brand.readUInt32LE(o + k));
    }
    if (KEYS.includes(key)) return fx.cpuid[key];
    if (leaf === 7 && sub === 0) return fx.cpuid['0x7.0'];
    return [0, 0, 0, 0];
  };
}
