// The "Done when" from a shell, on a real 2-host cluster: beta offers the
// WHOLE of Debian's libm.so.6 and libc.so.6 by their debug information (libc6-dbg,
// found by build-id), with no hand-written XML: rexd builds the entry points from
// DWARF, with the pointer directions it infers (frexp's `int *eptr` is an out,
// strlen's `const char *` an in string) and the prototypes it takes from
// declarations (strlen is an IFUNC whose implementations are assembly). The
// lists go over the wire in pages. Without libc6-dbg the test says so and is
// skipped (CI installs it: test/allowed-skips.txt allows no skip).
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { readElf } from '../../src/gen/elf/index.js';
import { startCluster } from '../helpers/cluster.js';
import { ROOT } from './helpers.js';

const run = promisify(execFile);
const REX = join(ROOT, 'dist/cli/rex.js');
const LIBM = '/lib/x86_64-linux-gnu/libm.so.6';
const LIBC = '/lib/x86_64-linux-gnu/libc.so.6';

function haveDebugInfo(path: string): boolean {
  if (!existsSync(path)) return false;
  const id = readElf(readFileSync(path), path).buildId();
  return id !== undefined && existsSync(`/usr/lib/debug/.build-id/${id.slice(0, 2)}/${id.slice(2)}.debug`);
}
const haveDbg = haveDebugInfo(LIBM) && haveDebugInfo(LIBC);
if (!haveDbg) console.warn(`glibc-debuginfo (calls): SKIPPED: no debug information for ${LIBM} / ${LIBC} under /usr/lib/debug/.build-id (install libc6-dbg)`);

let cluster: LocalCluster;
let stop: (() => Promise<void>) | undefined;

beforeAll(async () => {
  if (!haveDbg) return;
  // rexd reads a program's definitions on first use, on its event loop: libc's DWARF takes seconds on a loaded
  // machine, longer than the helper's 1s peer timeout, so this cluster allows the peers more time.
  ({ cluster, stop } = await startCluster(2, { rc: [`programs : m=${LIBM}, c=${LIBC}`], peerTimeout: '30s' }));
  await cluster.waitAllReachable();
}, 120_000);

afterAll(async () => {
  await stop?.();
});

/** `rex ARGS` on alpha, as a shell user types it; its stdout. */
async function rex(...args: string[]): Promise<string> {
  const r = await run(process.execPath, [REX, ...args], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket }, maxBuffer: 1 << 26 });
  expect(r.stderr).toBe('');
  return r.stdout;
}

describe.skipIf(!haveDbg)('the whole of libm and libc by their debug info, called from a shell on another host', () => {
  it('rex call beta.m.cbrt 27 prints 3, beta.m.pow 2 10 prints 1024', async () => {
    expect(await rex('call', 'beta.m.cbrt', '27')).toBe('3\n');
    expect(await rex('call', 'beta.m.pow', '2', '10')).toBe('1024\n');
  }, 120_000);

  it('rex call beta.m.frexp 8 gives the mantissa, and the exponent through the inferred out-pointer', async () => {
    expect(await rex('call', 'beta.m.frexp', '8')).toBe('return = 0.5\neptr = 4\n');
    expect(await rex('call', 'beta.m.frexp', '-3')).toBe('return = -0.75\neptr = 2\n');
  }, 120_000);

  it('rex call beta.c.strlen hello prints 5 (prototype from string.h\'s declarations)', async () => {
    expect(await rex('call', 'beta.c.strlen', 'hello')).toBe('5\n');
    expect(await rex('call', 'beta.c.strlen', '')).toBe('0\n');
  }, 120_000);

  it('rex entries beta.c --match \'strl*\' lists strlen with its prototype', async () => {
    const out = await rex('entries', 'beta.c', '--match', 'strl*');
    expect(out).toMatch(/^\+ uint64 strlen\(char\* arg0 \[in string\]\)$/m);
    expect(out).not.toMatch(/strtol/);
  }, 120_000);

  it('strtol is listed but refused: endptr (char **) has no inferred direction', async () => {
    await expect(run(process.execPath, [REX, 'call', 'beta.c.strtol', '42', '0', '10'], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket } })).rejects.toMatchObject({
      stderr: expect.stringMatching(/endptr/),
    });
  }, 120_000);
});
