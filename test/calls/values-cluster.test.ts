// Values as users read them, end to end on a real local cluster: a library
// built here (a struct with `char tag[3]`, an enum parameter and return, a
// `char *` in and out, an out-pointer) offered by every host, called on beta
// from alpha through the shell (`rex call`), a generated TypeScript stub
// (repdb --ts) and C rcall() with the frame structs of repdb --c-header.
import { execFile, execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallChannel } from '../../src/runtime/transport.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import type { RexClient } from '../../src/runtime/client.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { NATIVE, ROOT, callCluster, markXml, repdb, tempDir, type CallCluster } from './helpers.js';

const run = promisify(execFile);

const LIBRARY = `#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
enum mood { CALM = 1, ANGRY = 2, SLEEPY = 7 };
struct badge { char tag[3]; uint8_t raw[3]; enum mood mood; int32_t id; };
/* tag: the first two characters of name and a NUL; raw: the same bytes, as bytes. */
struct badge make_badge(const char *name, enum mood m, int32_t id) {
  struct badge b;
  memset(&b, 0, sizeof b);
  strncpy(b.tag, name, 2);
  memcpy(b.raw, b.tag, 3);
  b.mood = m;
  b.id = id;
  return b;
}
/* SLEEPY has no successor among the constants: 42. */
enum mood next_mood(enum mood m) { return m == CALM ? ANGRY : m == ANGRY ? SLEEPY : (enum mood)42; }
int32_t describe(struct badge b, char *out, uint32_t cap) { return snprintf(out, cap, "%s/%d/%d", b.tag, (int)b.mood, b.id); }
double split(double x, int32_t *exp) { return frexp(x, exp); }
`;

const MARKS: Record<string, Record<string, string>> = {
  make_badge: { name: 'direction="in" string="yes"' },
  describe: { out: 'direction="out" size-is="cap" string="yes"' },
  split: { exp: 'direction="out"' },
};

/** A C caller on alpha: frames built with repdb's header, sent with rcall() to beta. Prints one line per call. */
const C_CALLER = `#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <rex.h>
#include "libbadges.rex.h"
#define AT8(n) (((n) + 7u) & ~7u)
static unsigned char in[512], out[512];
static int fail(const char *what, long rc) {
  if (rc >= 0) return 0;
  printf("%s error %s\\n", what, rex_last_error());
  return 1;
}
int main(void) {
  /* make_badge("ab", CALM, 7): the string travels in the data section after the fixed part. */
  struct rex_make_badge_in *mb = (void *)in;
  mb->name = 3; mb->m = CALM; mb->id = 7;
  memcpy(in + AT8(REX_MAKE_BADGE_IN_SIZE), "ab", 3);
  long rc = rcall("beta.badges.make_badge", in, AT8(REX_MAKE_BADGE_IN_SIZE) + 3, out, sizeof out);
  if (!fail("make_badge", rc)) {
    struct rex_make_badge_out *r = (void *)out;
    printf("make_badge %ld %s %02x%02x%02x %d %d\\n", rc, r->rex_return.tag, r->rex_return.raw[0], r->rex_return.raw[1], r->rex_return.raw[2], (int)r->rex_return.mood, r->rex_return.id);
  }
  /* next_mood: the enum travels as its integer; the header's constants name it. */
  struct rex_next_mood_in nm = { ANGRY };
  struct rex_next_mood_out nr;
  rc = rcall("beta.badges.next_mood", &nm, sizeof nm, &nr, sizeof nr);
  if (!fail("next_mood", rc)) printf("next_mood %s\\n", nr.rex_return == SLEEPY ? "SLEEPY" : "other");
  nm.m = SLEEPY;
  rc = rcall("beta.badges.next_mood", &nm, sizeof nm, &nr, sizeof nr);
  if (!fail("next_mood2", rc)) printf("next_mood2 %u\\n", nr.rex_return);
  /* describe(badge, out[32]): the out buffer has a length word and comes back in the output's data section. */
  memset(in, 0, sizeof in);
  struct rex_describe_in *d = (void *)in;
  memcpy(d->b.tag, "xy", 3); d->b.mood = ANGRY; d->b.id = 5; d->out = 32; d->cap = 32;
  rc = rcall("beta.badges.describe", in, REX_DESCRIBE_IN_SIZE, out, sizeof out);
  if (!fail("describe", rc)) printf("describe %d %s\\n", ((struct rex_describe_out *)out)->rex_return, (char *)out + AT8(REX_DESCRIBE_OUT_SIZE));
  /* split(8, &exp): the out-pointer's int comes back in the output's data section. */
  struct rex_split_in s = { .x = 8, .exp = sizeof(int32_t) };
  rc = rcall("beta.badges.split", &s, sizeof s, out, sizeof out);
  if (!fail("split", rc)) {
    int32_t e;
    memcpy(&e, out + AT8(REX_SPLIT_OUT_SIZE), sizeof e);
    printf("split %g %d\\n", ((struct rex_split_out *)out)->rex_return, e);
  }
  return 0;
}
`;

let dir: string;
let cluster: LocalCluster;
let stop: () => Promise<void>;
let alpha: RexClient;
let rex: CallCluster['rex'];
let xml: string;


beforeAll(async () => {
  dir = tempDir('rex-values-');
  writeFileSync(join(dir, 'badges.c'), LIBRARY);
  const lib = join(dir, 'libbadges.so');
  execFileSync('cc', ['-g', '-O1', '-shared', '-fPIC', '-Wall', '-o', lib, join(dir, 'badges.c'), '-lm'], { stdio: 'pipe' });
  xml = join(dir, 'libbadges.xml');
  writeFileSync(xml, markXml(repdb(['-gx', '--program', 'badges', lib]), MARKS));
  repdb([xml]); // checks the marks
  ({ cluster, alpha, rex, stop } = await callCluster(2, `badges=${lib}:${xml}`));
}, 120_000);

afterAll(async () => {
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});


describe('values as users read them, called on beta from alpha', () => {
  it('through the shell: rex call prints text, enum names and out-pointers by name; --json keeps the bytes and numbers', async () => {
    expect(await rex('call', 'beta.badges.make_badge', 'ab', 'CALM', '7')).toBe('{"tag": "ab", "raw": "616200", "mood": "CALM", "id": 7}\n');
    expect(JSON.parse(await rex('call', 'beta.badges.make_badge', 'ab', '2', '7', '--json'))).toEqual({
      return: { tag: { text: 'ab', bytes: '616200' }, raw: '616200', mood: { name: 'ANGRY', value: 2 }, id: 7 },
    });
    expect(await rex('call', 'beta.badges.next_mood', 'ANGRY')).toBe('SLEEPY\n');
    expect(await rex('call', 'beta.badges.next_mood', 'SLEEPY')).toBe('42\n');
    expect(JSON.parse(await rex('call', 'beta.badges.next_mood', 'SLEEPY', '--json'))).toEqual({ return: { name: null, value: 42 } });
    expect(await rex('call', 'beta.badges.describe', '{"tag":"xy","raw":"000000","mood":"ANGRY","id":5}', '12')).toBe('return = 6\nout = "xy/2/5"\n');
    expect(JSON.parse(await rex('call', 'beta.badges.describe', '{"tag":"xy","raw":"000000","mood":"ANGRY","id":5}', '8', '--json'))).toEqual({
      return: 6, out: { text: 'xy/2/5', bytes: Buffer.from('xy/2/5\0\0').toString('hex') },
    });
    expect(await rex('call', 'beta.badges.split', '8')).toBe('return = 0.5\nexp = 4\n');
    expect(JSON.parse(await rex('call', 'beta.badges.split', '8', '--json'))).toEqual({ return: 0.5, exp: 4 });
  }, 60_000);

  it('through a generated TypeScript stub: strings, enum names (numbers when unnamed), out-pointers by name', async () => {
    const file = join(dir, 'libbadges.rex.ts');
    repdb(['--ts', xml, '-o', file]);
    const ts = readFileSync(file, 'utf8');
    expect(ts).toContain("export type mood = keyof typeof mood;");
    expect(ts).toMatch(/export async function next_mood\(m: mood \| number, \$opts\?: rex\.CallOptions\): Promise<mood \| number>/);
    expect(ts).toMatch(/ {2}tag: string;/);
    writeFileSync(file, ts.replace("'@rex-cluster/rex/runtime/codegen-v1'", `'${join(ROOT, 'src/runtime/codegen-v1.js')}'`));
    const stubs = (await import(file)) as Record<string, (...args: unknown[]) => Promise<unknown>> & { mood: Record<string, number> };
    const channel = new CallChannel(alpha.conn);
    setTransport((t, input, o) => channel.transport()(t, input, { ...o, host: 'beta' }));
    const b = (await stubs.make_badge!('ab', 'CALM', 7)) as { raw: Uint8Array };
    expect(b).toMatchObject({ tag: 'ab', mood: 'CALM', id: 7 });
    expect(b.raw).toBeInstanceOf(Uint8Array); // uint8_t[3] stays bytes
    expect([...b.raw]).toEqual([0x61, 0x62, 0]);
    expect(await stubs.make_badge!('q', stubs.mood.SLEEPY, 1)).toMatchObject({ tag: 'q', mood: 'SLEEPY' });
    expect(await stubs.next_mood!('ANGRY')).toBe('SLEEPY');
    expect(await stubs.next_mood!('SLEEPY')).toBe(42);
    expect(await stubs.describe!({ tag: 'xy', raw: new Uint8Array(3), mood: 'ANGRY', id: 5 }, 16)).toEqual({ return: 6, out: 'xy/2/5' });
    expect(await stubs.split!(8)).toEqual({ return: 0.5, exp: 4 });
  }, 60_000);

  it('through C rcall() with the frame structs and enum constants of repdb --c-header', async () => {
    writeFileSync(join(dir, 'libbadges.rex.h'), repdb(['--c-header', xml]));
    writeFileSync(join(dir, 'caller.c'), C_CALLER);
    const exe = join(dir, 'caller');
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', `-I${join(NATIVE, 'include')}`, `-I${dir}`, '-o', exe, join(dir, 'caller.c'), join(NATIVE, 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
    const { stdout } = await run(exe, [], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket, REX_CALL_TIMEOUT_MS: '10000' }, timeout: 60_000 });
    expect(stdout.trim().split('\n')).toEqual([
      'make_badge 16 ab 616200 1 7',
      'next_mood SLEEPY',
      'next_mood2 42',
      'describe 6 xy/2/5',
      'split 0.5 4',
    ]);
  }, 60_000);
});
