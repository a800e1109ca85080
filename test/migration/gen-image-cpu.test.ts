// One description (schema/image-cpu.json) generates the C and TypeScript
// views of the image header's CPU part and of the feature table: the
// committed views must be exactly what the generator writes now, so neither
// can drift from the description or from the other.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { FEATURE_TABLE, IMAGE_CPU, IMAGE_HEADER_BYTES } from '../../src/cpu/features.generated.js';
import { FEATURES } from '../../src/cpu/features.js';
import { IMAGE_HEADER_SIZE } from '../../src/rfork/image.js';

const root = packageRoot();
const out = mkdtempSync(join(tmpdir(), 'rex-gen-cpu-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('schema/image-cpu.json generates both views', () => {
  it('running the generator gives exactly the committed files', () => {
    execFileSync(process.execPath, [join(root, 'scripts', 'gen-image-cpu.mjs'), '--out', out], { stdio: 'pipe' });
    for (const rel of ['native/src/image_cpu.h', 'src/cpu/features.generated.ts']) {
      expect(readFileSync(join(out, rel), 'utf8'), `${rel} differs from what scripts/gen-image-cpu.mjs writes: run it and commit`).toBe(
        readFileSync(join(root, rel), 'utf8'));
    }
  });

  it('the C view has the same table, in the same order, as the TypeScript one and the description', () => {
    const desc = JSON.parse(readFileSync(join(root, 'schema', 'image-cpu.json'), 'utf8')) as { features: { name: string; bit: number }[] };
    const h = readFileSync(join(root, 'native', 'src', 'image_cpu.h'), 'utf8');
    const cNames = [...h.matchAll(/^ {4}\{"([A-Z0-9_]+)", (\d+)u, (\d+)u, ([01])u, 0u\},$/gm)].map((m) => m[1]);
    expect(cNames).toEqual(desc.features.map((f) => f.name));
    expect(FEATURE_TABLE.map((f) => f.name)).toEqual(cNames);
    expect(FEATURES.map((f) => f.name)).toEqual(cNames);
    expect(h).toContain(`#define REX_IMG_HEADER_SIZE ${IMAGE_HEADER_BYTES}u`);
    expect(h).toContain(`#define REX_IMG_OFF_CPU ${IMAGE_CPU.headerOffset}u`);
    expect(IMAGE_HEADER_SIZE).toBe(IMAGE_HEADER_BYTES);
  });
});
