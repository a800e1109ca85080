// Calls into the system's own libm and libc by their public names, on beta
// from alpha of a real local cluster: through the shell (`rex call`), a
// generated TypeScript stub (repdb --ts) and C rcall() with repdb's header.
// The definitions are the C prototypes written as entry-point XML (as for a
// stripped library, docs/REPDB.md), so these run without a debug package;
// the values are those of the same functions called here.
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallChannel } from '../../src/runtime/transport.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import type { RexClient } from '../../src/runtime/client.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { NATIVE, ROOT, callCluster, repdb, tempDir, type CallCluster } from './helpers.js';

const run = promisify(execFile);

/** The C compiler's own libm/libc (the ones a program linked here would load). */
function systemLibrary(name: string): string {
  const p = execFileSync('cc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
  if (!existsSync(p)) throw new Error(`cc -print-file-name=${name} gave ${p}, which does not exist: this test needs the C library the compiler links against`);
  return realpathSync(p);
}

const doc = (elf: string, program: string, body: string[]) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE rex-entry-points SYSTEM "rex.dtd">\n<rex-entry-points version="1" elf-file="${elf}" program="${program}">\n${body.map((l) => `  ${l}`).join('\n')}\n</rex-entry-points>\n`;

/** libm's prototypes (math.h); frexp's int *exp is an out-pointer. */
const M_XML = doc('libm.so.6', 'm', [
  '<entry-point name="cbrt"><returns type="double"/><param name="x" type="double"/></entry-point>',
  '<entry-point name="pow"><returns type="double"/><param name="x" type="double"/><param name="y" type="double"/></entry-point>',
  '<entry-point name="ldexp"><returns type="double"/><param name="x" type="double"/><param name="exp" type="int32"/></entry-point>',
  '<entry-point name="frexp"><returns type="double"/><param name="x" type="double"/><param name="exp" type="int32*" direction="out"/></entry-point>',
  '<entry-point name="lround"><returns type="int64"/><param name="x" type="double"/></entry-point>',
  '<entry-point name="fmax"><returns type="double"/><param name="x" type="double"/><param name="y" type="double"/></entry-point>',
]);

/** libc's string functions (string.h, stdlib.h): strings in. */
const C_XML = doc('libc.so.6', 'c', [
  '<entry-point name="strlen"><returns type="uint64"/><param name="s" type="char*" direction="in" string="yes"/></entry-point>',
  '<entry-point name="atoi"><returns type="int32"/><param name="nptr" type="char*" direction="in" string="yes"/></entry-point>',
]);

const C_CALLER = `#include <stdio.h>
#include <string.h>
#include <rex.h>
#include "libm.rex.h"
#include "libc.rex.h"
#define AT8(n) (((n) + 7u) & ~7u)
static unsigned char in[256], out[256];
static int ok(const char *what, long rc) {
  if (rc < 0) printf("%s error %s\\n", what, rex_last_error());
  return rc >= 0;
}
int main(void) {
  struct rex_cbrt_in c = { 27 };
  struct rex_cbrt_out cr;
  if (ok("cbrt", rcall("beta.m.cbrt", &c, sizeof c, &cr, sizeof cr))) printf("cbrt %.17g\\n", cr.rex_return);
  struct rex_pow_in p = { 2, 10 };
  struct rex_pow_out pr;
  if (ok("pow", rcall("beta.m.pow", &p, sizeof p, &pr, sizeof pr))) printf("pow %.17g\\n", pr.rex_return);
  struct rex_ldexp_in l = { 0.75, 4 };
  struct rex_ldexp_out lr;
  if (ok("ldexp", rcall("beta.m.ldexp", &l, sizeof l, &lr, sizeof lr))) printf("ldexp %.17g\\n", lr.rex_return);
  /* frexp: the out-pointer's int comes back in the output frame's data section. */
  struct rex_frexp_in f = { .x = 8, .exp = sizeof(int32_t) };
  if (ok("frexp", rcall("beta.m.frexp", &f, sizeof f, out, sizeof out))) {
    int32_t e;
    memcpy(&e, out + AT8(REX_FREXP_OUT_SIZE), sizeof e);
    printf("frexp %.17g %d\\n", ((struct rex_frexp_out *)out)->rex_return, e);
  }
  struct rex_lround_in r = { 2.5 };
  struct rex_lround_out rr;
  if (ok("lround", rcall("beta.m.lround", &r, sizeof r, &rr, sizeof rr))) printf("lround %lld\\n", (long long)rr.rex_return);
  struct rex_fmax_in m = { -1, 2.5 };
  struct rex_fmax_out mr;
  if (ok("fmax", rcall("beta.m.fmax", &m, sizeof m, &mr, sizeof mr))) printf("fmax %.17g\\n", mr.rex_return);
  /* strlen("hello"): the string travels in the input frame's data section, with its NUL. */
  struct rex_strlen_in *s = (void *)in;
  s->s = 6;
  memcpy(in + AT8(REX_STRLEN_IN_SIZE), "hello", 6);
  struct rex_strlen_out sr;
  if (ok("strlen", rcall("beta.c.strlen", in, AT8(REX_STRLEN_IN_SIZE) + 6, &sr, sizeof sr))) printf("strlen %llu\\n", (unsigned long long)sr.rex_return);
  return 0;
}
`;

/** The same calls made here, directly, printed the same way (what the remote ones must give). */
const LOCAL = `#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
  volatile double a = 27, b = 2, c = 10, d = 0.75, e = 8, g = 2.5, h = -1;
  int ex;
  printf("cbrt %.17g\\n", cbrt(a));
  printf("pow %.17g\\n", pow(b, c));
  printf("ldexp %.17g\\n", ldexp(d, 4));
  double m = frexp(e, &ex);
  printf("frexp %.17g %d\\n", m, ex);
  printf("lround %lld\\n", (long long)lround(g));
  printf("fmax %.17g\\n", fmax(h, g));
  volatile const char *s = "hello";
  printf("strlen %llu\\n", (unsigned long long)strlen((const char *)s));
  return 0;
}
`;

let dir: string;
let local: string[];
let cluster: LocalCluster;
let stop: () => Promise<void>;
let alpha: RexClient;
let rex: CallCluster['rex'];
let mXml: string;
let cXml: string;

beforeAll(async () => {
  dir = tempDir('rex-libm-');
  mXml = join(dir, 'libm.xml');
  cXml = join(dir, 'libc.xml');
  writeFileSync(mXml, M_XML);
  writeFileSync(cXml, C_XML);
  repdb([mXml]);
  repdb([cXml]);
  writeFileSync(join(dir, 'local.c'), LOCAL);
  execFileSync('cc', ['-O0', '-Wall', '-o', join(dir, 'local'), join(dir, 'local.c'), '-lm'], { stdio: 'pipe' });
  local = execFileSync(join(dir, 'local'), { encoding: 'utf8' }).trim().split('\n');
  ({ cluster, alpha, rex, stop } = await callCluster(2, `m=${systemLibrary('libm.so.6')}:${mXml}, c=${systemLibrary('libc.so.6')}:${cXml}`));
}, 120_000);

afterAll(async () => {
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});


/** The local result of `fn` (the numbers after its name). */
const here = (fn: string): number[] => local.find((l) => l.startsWith(`${fn} `))!.split(' ').slice(1).map(Number);

describe('libm and libc on beta, called from alpha by public name', () => {
  it('through the shell', async () => {
    // glibc's cbrt(27) is 3.0000000000000004: rex call prints the digits a double guarantees (3); --json the exact value.
    expect(await rex('call', 'beta.m.cbrt', '27')).toBe('3\n');
    expect(JSON.parse(await rex('call', 'beta.m.cbrt', '27', '--json'))).toEqual({ return: here('cbrt')[0] });
    expect(await rex('call', 'beta.m.pow', '2', '10')).toBe('1024\n');
    expect(await rex('call', 'beta.m.ldexp', '0.75', '4')).toBe('12\n');
    expect(await rex('call', 'beta.m.frexp', '8')).toBe('return = 0.5\nexp = 4\n');
    expect(JSON.parse(await rex('call', 'beta.m.frexp', '8', '--json'))).toEqual({ return: 0.5, exp: 4 });
    expect(await rex('call', 'beta.m.lround', '2.5')).toBe('3\n');
    expect(JSON.parse(await rex('call', 'beta.m.lround', '-2.5', '--json'))).toEqual({ return: '-3' });
    expect(await rex('call', 'beta.m.fmax', '-1', '2.5')).toBe('2.5\n');
    expect(await rex('call', 'beta.c.strlen', 'hello')).toBe('5\n');
    expect(await rex('call', 'beta.c.atoi', '42xyz')).toBe('42\n');
  }, 60_000);

  it('through generated TypeScript stubs', async () => {
    const load = async (xml: string, base: string) => {
      const file = join(dir, `${base}.rex.ts`);
      repdb(['--ts', xml, '-o', file]);
      writeFileSync(file, readFileSync(file, 'utf8').replace("'@rex-cluster/rex/runtime/codegen-v1'", `'${join(ROOT, 'src/runtime/codegen-v1.js')}'`));
      return (await import(file)) as Record<string, (...args: unknown[]) => Promise<unknown>>;
    };
    const m = await load(mXml, 'libm');
    const c = await load(cXml, 'libc');
    const channel = new CallChannel(alpha.conn);
    setTransport((t, input, o) => channel.transport()(t, input, { ...o, host: 'beta' }));
    expect(await m.cbrt!(27)).toBe(here('cbrt')[0]);
    expect(await m.pow!(2, 10)).toBe(1024);
    expect(await m.ldexp!(0.75, 4)).toBe(12);
    expect(await m.frexp!(8)).toEqual({ return: 0.5, exp: 4 });
    expect(await m.lround!(2.5)).toBe(3n);
    expect(await m.fmax!(-1, 2.5)).toBe(2.5);
    expect(await c.strlen!('hello')).toBe(5n);
    expect([here('pow'), here('frexp'), here('lround'), here('strlen')]).toEqual([[1024], [0.5, 4], [3], [5]]);
    expect(await c.atoi!('-42xyz')).toBe(-42);
  }, 60_000);

  it('through C rcall() with the frame structs of repdb --c-header', async () => {
    writeFileSync(join(dir, 'libm.rex.h'), repdb(['--c-header', mXml]));
    writeFileSync(join(dir, 'libc.rex.h'), repdb(['--c-header', cXml]));
    writeFileSync(join(dir, 'caller.c'), C_CALLER);
    const exe = join(dir, 'caller');
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', `-I${join(NATIVE, 'include')}`, `-I${dir}`, '-o', exe, join(dir, 'caller.c'), join(NATIVE, 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
    const { stdout } = await run(exe, [], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket, REX_CALL_TIMEOUT_MS: '10000' }, timeout: 60_000 });
    // Bit for bit the local results (printed with %.17g on both sides).
    expect(stdout.trim().split('\n')).toEqual(local);
    expect(local).toContain('frexp 0.5 4');
  }, 60_000);
});
