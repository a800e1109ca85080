/**
 * Scale (issue 14, item 5): `repdb -gx` on the system's libc.so.6, with its debug
 * file found by build-id (libc6-dbg), completes, and what it writes validates against
 * rex.dtd when checked again here, independently of repdb's own check, and reads back.
 * The time limit is only a guard against a hang; the performance target (no worse
 * than 1.5x llvm-dwarfdump) lives in bench/repdb.mjs.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readElf } from '../../../src/gen/elf/index.js';
import { readEntryPointsXml, validateXmlText } from '../../../src/gen/index.js';
import { repdb, tempDir } from './helpers.js';

const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';
function libcDebugFile(): string | undefined {
  if (!existsSync(LIBC)) return undefined;
  const id = readElf(readFileSync(LIBC), LIBC).buildId();
  const p = id ? `/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug` : undefined;
  return p && existsSync(p) ? p : undefined;
}
const debugFile = libcDebugFile();
if (!debugFile) console.log(`skip: no installed debug info for ${LIBC} (apt-get install libc6-dbg; CI installs it) — repdb -gx on libc is not run`);

describe.skipIf(!debugFile)('repdb -gx on libc.so.6 with libc6-dbg', () => {
  it('completes, and the XML validates against rex.dtd and reads back', () => {
    const out = join(tempDir('repdb-libc-'), 'libc.xml');
    const r = repdb(['-gx', LIBC, '-o', out]);
    expect(r.stderr).toMatch(/repdb: wrote .*libc\.xml \(libc\.so\.6: \d+ entry points, \d+ callable\)/);
    expect(r.status).toBe(0);
    expect(statSync(out).size).toBeGreaterThan(1 << 20);
    const text = readFileSync(out, 'utf8');
    expect(() => validateXmlText(text, out)).not.toThrow();
    const set = readEntryPointsXml(text, out);
    const [, listed, callable] = /(\d+) entry points, (\d+) callable/.exec(r.stderr)!.map(Number);
    expect(set.entries.length).toBe(listed);
    expect(listed).toBeGreaterThan(2000);
    expect(callable).toBeGreaterThan(100);
    expect(set.entries.some((e) => e.name === 'qsort')).toBe(true);
  }, 600_000);
});
