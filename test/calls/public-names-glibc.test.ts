// Calls into the real libm by public name on another host: beta offers
// Debian's libm.so.6 with definitions repdb -gx wrote from libc6-dbg's debug
// information (a few entry points of it, so the list fits one ENTRIES answer
// whatever the paging does), and `rex call` on alpha calls cbrt, pow at its
// default version and pow@GLIBC_2.2.5 (the old one), ldexp, lround, and sin
// (an IFUNC, resolved by beta's loader). Without libc6-dbg the test says so
// and is skipped (CI installs it: test/allowed-skips.txt allows no skip).
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { readElf } from '../../src/gen/elf/index.js';
import { startCluster } from '../helpers/cluster.js';
import { REPDB, ROOT, tempDir } from './helpers.js';

const run = promisify(execFile);
const REX = join(ROOT, 'dist/bin/rex.js');
const LIBM = '/lib/x86_64-linux-gnu/libm.so.6';
const WANTED = ['cbrt', 'pow', 'pow@GLIBC_2.2.5', 'ldexp', 'lround', 'sin', 'powf64'];

function haveDebugInfo(): boolean {
  if (!existsSync(LIBM)) return false;
  const id = readElf(readFileSync(LIBM), LIBM).buildId();
  return id !== undefined && existsSync(`/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug`);
}
const haveDbg = haveDebugInfo();
if (!haveDbg) console.warn(`public-names-glibc (calls): SKIPPED: no debug information for ${LIBM} under /usr/lib/debug/.build-id (install libc6-dbg)`);

let dir: string;
let cluster: LocalCluster;
let stop: (() => Promise<void>) | undefined;

beforeAll(async () => {
  if (!haveDbg) return;
  dir = tempDir('rex-libm-');
  const xml = execFileSync(process.execPath, [REPDB, '-gx', '-q', LIBM], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const blocks = [...xml.matchAll(/  <entry-point name="([^"]+)"[\s\S]*?<\/entry-point>\n/g)].filter((m) => WANTED.includes(m[1]!));
  expect(blocks.map((m) => m[1]).sort()).toEqual([...WANTED].sort());
  const head = xml.slice(0, xml.indexOf('<rex-entry-points'));
  const root = /<rex-entry-points[^>]*>\n/.exec(xml)![0];
  const subset = join(dir, 'libm.xml');
  writeFileSync(subset, `${head}${root}${blocks.map((m) => m[0]).join('')}</rex-entry-points>\n`);
  ({ cluster, stop } = await startCluster(2, { rc: [`programs : m=${LIBM}:${subset}`] }));
  await cluster.waitAllReachable();
}, 120_000);

afterAll(async () => {
  await stop?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** The value of a C expression computed with the local libm (the same file beta loads). */
function local(expr: string): number {
  const c = join(dir, 'oracle.c');
  writeFileSync(c, `#include <math.h>\n#include <stdio.h>\nint main(void) { volatile double r = ${expr}; printf("%.17g\\n", r); return 0; }\n`);
  execFileSync('cc', ['-O0', '-fno-builtin', '-o', join(dir, 'oracle'), c, '-lm'], { stdio: 'pipe' });
  return Number(execFileSync(join(dir, 'oracle'), { encoding: 'utf8' }));
}

async function call(target: string, ...args: string[]): Promise<unknown> {
  const r = await run(process.execPath, [REX, 'call', target, ...args, '--json', '--socket', cluster.host('alpha').socket], { encoding: 'utf8' });
  expect(r.stderr).toBe('');
  return (JSON.parse(r.stdout) as { return: unknown }).return;
}

describe.skipIf(!haveDbg)('rex call into libm.so.6 by public name, on another host', () => {
  it('cbrt, pow (default version) and its alias powf64, ldexp, lround', async () => {
    // glibc's cbrt is not correctly rounded (cbrt(27) is 3.0000000000000004): the local libm is the oracle
    expect(await call('beta.m.cbrt', '27')).toBe(local('cbrt(27)'));
    expect(await call('beta.m.cbrt', '8')).toBe(local('cbrt(8)'));
    expect(await call('beta.m.pow', '2', '10')).toBe(1024);
    expect(await call('beta.m.powf64', '2', '10')).toBe(1024);
    expect(await call('beta.m.ldexp', '0.75', '4')).toBe(12);
    expect(String(await call('beta.m.lround', '2.5'))).toBe('3');
  });

  it('pow@GLIBC_2.2.5, the old version, by dlvsym', async () => {
    expect(await call('beta.m.pow@GLIBC_2.2.5', '2', '10')).toBe(1024);
  });

  it('sin, an IFUNC resolved by beta\'s loader', async () => {
    expect(await call('beta.m.sin', '0')).toBe(0);
    expect(await call('beta.m.sin', '1')).toBe(local('sin(1)'));
  });
});
