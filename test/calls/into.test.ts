// An out `char **` marked into= (strtol's endptr) through the generic call
// controller (native/callctl/rex_callctl.c), with DEFINE bodies computed from
// hand-written XML as rexd computes them: the pointer the function stores comes
// back as an offset into the named string, -1 when it points anywhere else, and a
// DEFINE whose `into` is inconsistent is refused before anything is called.
// Runs everywhere: libc's strtol and a fixture library (test/fixtures/into).
import { execFileSync } from 'node:child_process';
import { realpathSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/calls/controller.js';
import { defineBody, type DefineBody } from '../../src/calls/define.js';
import { readEntryPointsXml } from '../../src/gen/index.js';
import { decodeOutput, encodeInput } from '../../src/runtime/frames/index.js';
import type { EntryPoint } from '../../src/gen/model/entrypoint.js';
import { runs } from '../helpers/property.js';
import { NATIVE, ROOT, tempDir } from './helpers.js';

const CTL = join(NATIVE, 'build', 'bin', 'rex_callctl');
const doc = (body: string) => `<?xml version="1.0"?>\n<rex-entry-points elf-file="x.so">\n${body}\n</rex-entry-points>\n`;
const proto = (name: string, last: string) =>
  `<entry-point name="${name}"><returns type="int64"/><param name="s" type="char*" direction="in" string="yes"/><param name="endptr" type="char**" direction="out" into="s"/><param name="${last}" type="int32"/></entry-point>`;

function entry(xml: string, name: string): EntryPoint {
  return readEntryPointsXml(doc(xml), 'into.xml').entries.find((e) => e.name === name)!;
}
function body(ep: EntryPoint): DefineBody {
  const d = defineBody(ep.plan);
  if (!('body' in d)) throw new Error(d.problem);
  return d.body;
}

let dir: string;
let libc: Controller;
let fixture: Controller;
const strtol = entry(proto('strtol', 'base'), 'strtol');
const where = entry(proto('into_where', 'how'), 'into_where');

async function call(c: Controller, ep: EntryPoint, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const m = await c.request({ type: 'CALL', target: ep.name, input: encodeInput(ep.plan, args) });
  if (m.type !== 'RESULT') throw new Error(`answered ${m.type}`);
  return decodeOutput(ep.plan, m.output!) as Record<string, unknown>;
}

beforeAll(async () => {
  dir = tempDir('rex-into-');
  const so = join(dir, 'libinto.so');
  execFileSync('cc', ['-O1', '-shared', '-fPIC', '-Wall', '-o', so, join(ROOT, 'test/fixtures/into/into.c')], { stdio: 'pipe' });
  const libcPath = realpathSync(execFileSync('cc', ['-print-file-name=libc.so.6'], { encoding: 'utf8' }).trim());
  libc = new Controller('t.libc', { kind: 'library', controllerPath: CTL, object: libcPath });
  fixture = new Controller('t.into', { kind: 'library', controllerPath: CTL, object: so });
  await libc.request({ type: 'DEFINE', ...body(strtol) });
  await fixture.request({ type: 'DEFINE', ...body(where) });
});

afterAll(async () => {
  libc?.kill('test over');
  fixture?.kill('test over');
  rmSync(dir, { recursive: true, force: true });
});

describe('an out char ** into a string, through the call controller', () => {
  it('strtol: the number, and where parsing stopped as an offset into nptr', async () => {
    expect(await call(libc, strtol, { s: '42xyz', base: 10 })).toEqual({ return: 42n, endptr: 2 });
    expect(await call(libc, strtol, { s: '  -0x1fz', base: 0 })).toEqual({ return: -31n, endptr: 7 });
    expect(await call(libc, strtol, { s: 'xyz', base: 10 })).toEqual({ return: 0n, endptr: 0 });
  });

  it('strtol on any digits-then-text string stops at the first non-digit (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.stringMatching(/^[0-9]{0,12}$/), fc.stringMatching(/^[a-z ]{0,20}$/), async (digits, rest) => {
        const r = await call(libc, strtol, { s: digits + rest, base: 10 });
        expect(r).toEqual({ return: digits ? BigInt(digits) : 0n, endptr: digits ? digits.length : 0 });
      }),
      { numRuns: runs(50) },
    );
  });

  it('a pointer to NULL, another object or past the buffer is -1; the buffer end is its length', async () => {
    const at = async (how: number) => (await call(fixture, where, { s: 'abc', how })).endptr;
    expect([await at(0), await at(1), await at(2), await at(3), await at(4), await at(5)]).toEqual([1, 4, -1, -1, -1, -1]);
  });

  it('a DEFINE whose into is not an in/inout byte buffer, or sits on anything but one out pointer, is refused', async () => {
    const good = body(where);
    const bad: [string, DefineBody][] = [
      ['into names a value parameter', { ...good, params: good.params!.map((p, i) => (i === 1 ? { ...p, into: 3 } : p)) }],
      ['into names itself', { ...good, params: good.params!.map((p, i) => (i === 1 ? { ...p, into: 2 } : p)) }],
      ['into past the parameters', { ...good, params: good.params!.map((p, i) => (i === 1 ? { ...p, into: 99 } : p)) }],
      ['into on the in string', { ...good, params: good.params!.map((p, i) => (i === 0 ? { ...p, into: 2 } : p)) }],
      ['into on a 4-byte element', { ...good, params: good.params!.map((p, i) => (i === 1 ? { ...p, elemSize: 4 } : p)) }],
    ];
    for (const [what, b] of bad) {
      await expect(fixture.request({ type: 'DEFINE', ...b, name: `into_where` }), what).rejects.toThrow(/into names parameter|inconsistent buffer definition/);
    }
    // the controller is still serving the good definition
    expect((await call(fixture, where, { s: 'xy', how: 0 })).endptr).toBe(1);
  });
});
