// Remote calls into a C library built here with -g: repdb -gx, marks, typed
// stubs, and calls through the call manager and the generic controller
// (native/callctl), compared with the same calls made locally in C.
import { copyFileSync, mkdirSync, readlinkSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallManager, loadProgram, managerTransport, type ProgramSpec } from '../../src/calls/index.js';
import { CallError } from '../../src/runtime/transport.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { encodeInput, planEntry } from '../../src/runtime/frames/index.js';
import { buildLibrary, loadStubs, localResults, memoryLog, tempDir, writeXml } from './helpers.js';
import { childrenOf } from '../helpers/procscan.js';

type Stubs = Record<string, (...args: unknown[]) => Promise<unknown>>;

let dir: string;
let lib: string;
let xml: string;
let spec: ProgramSpec;
let manager: CallManager;
let stubs: Stubs;
let local: Record<string, unknown>;
const log = memoryLog();

beforeAll(async () => {
  dir = tempDir();
  lib = buildLibrary(dir);
  xml = writeXml(dir, lib);
  spec = (await loadProgram({ name: 'calltest', object: lib, xml })).spec;
  manager = new CallManager({ programs: (n) => (n === 'calltest' ? spec : undefined), maxControllers: 3, log });
  setTransport(managerTransport(manager));
  stubs = await loadStubs(dir, xml);
  local = localResults(dir, lib);
}, 60_000);

afterAll(async () => {
  setTransport(undefined);
  await manager?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Live children of this process running the controller at `path` (from /proc, not from the manager's own count). */
function controllerProcesses(path: string): number {
  return childrenOf(process.pid).filter((c) => {
    try {
      return readlinkSync(`/proc/${c.pid}/exe`) === path;
    } catch {
      return false; // gone meanwhile
    }
  }).length;
}

function frameOf(name: string, args: Record<string, unknown>): Uint8Array {
  const ep = (spec as Extract<ProgramSpec, { kind: 'library' }>).definitions.entries.find((e) => e.name === name)!;
  return encodeInput(planEntry(ep.plan.desc), args);
}

describe('typed stubs through the call manager', () => {
  it('integers of every width give the local results', async () => {
    expect(await stubs.neg8!(-127)).toBe(local.neg8);
    expect(await stubs.inc8!(254)).toBe(local.inc8);
    expect(await stubs.neg16!(-32767)).toBe(local.neg16);
    expect(await stubs.inc16!(65534)).toBe(local.inc16);
    expect(await stubs.neg32!(-2147483647)).toBe(local.neg32);
    expect(await stubs.inc32!(4294967294)).toBe(local.inc32);
    expect(String(await stubs.neg64!(-9223372036854775807n))).toBe(local.neg64);
    expect(String(await stubs.inc64!(18446744073709551614n))).toBe(local.inc64);
    // nine arguments: three on the stack
    expect(String(await stubs.widths!(-100, 200, -30000, 60000, -2000000000, 4000000000, -5000000000000n, 6000000000000n, 7))).toBe(local.widths);
    expect(await stubs.is_even!(42)).toBe(local.is_even);
  });

  it('floats and doubles give the local results bit for bit', async () => {
    expect(await stubs.fmul!(1.1, 3.3)).toBe(local.fmul);
    expect(await stubs.dmix!(0.5, 1e300, -7, 2.5)).toBe(local.dmix);
  });

  it('structs by value: in memory, mixed integer/float, all-float, with an array member; a union', async () => {
    const v = (await stubs.vscale!({ x: 1.5, y: -2.25, z: 3 }, 2)) as { x: number; y: number; z: number };
    expect([v.x, v.y, v.z]).toEqual(local.vscale);
    const s = (await stubs.small_bump!({ a: -5, b: 300, c: 1.25 })) as { a: number; b: number; c: number };
    expect([s.a, s.b, s.c]).toEqual(local.small_bump);
    const p = (await stubs.pairf_swap!({ a: 0.1, b: 0.2 })) as { a: number; b: number };
    expect([p.a, p.b]).toEqual(local.pairf_swap);
    expect(await stubs.tag_sum!({ name: new Uint8Array([114, 101, 120, 0, 0, 1]), id: 1000 })).toBe(local.tag_sum);
    const u = new Uint8Array(8);
    new DataView(u.buffer).setFloat64(0, -0.125, true);
    expect(await stubs.union_d!(u)).toBe(local.union_d);
  });

  it('structs by pointer: in, out and inout', async () => {
    const n = ((await stubs.vnorm!({ x: 1, y: 2, z: 5 })) as { v: { x: number; y: number; z: number } }).v;
    expect([n.x, n.y, n.z]).toEqual(local.vnorm);
    const m = ((await stubs.vmake!(1.5)) as { out: { x: number; y: number; z: number } }).out;
    expect([m.x, m.y, m.z]).toEqual(local.vmake);
    expect(await stubs.vdot!({ x: 1, y: 2, z: 3 }, { x: 4, y: -5, z: 6 })).toBe(local.vdot);
  });

  it('strings in and out, arrays in and inout, a constant-size array', async () => {
    expect(String(await stubs.slen!('héllo'))).toBe(local.slen);
    const up = (await stubs.upper!('shout it', 8)) as { return: number; out: string };
    expect([up.return, up.out]).toEqual(local.upper);
    expect(((await stubs.reverse!([1, 2, 3, 4, 5])) as { xs: number[] }).xs).toEqual(local.reverse);
    expect(await stubs.mean!([1, 2, 4])).toBe(local.mean);
    expect(await stubs.sum4!([10, 20, 30, -5])).toBe(local.sum4);
  });

  // claim: calls.controller-pool
  it('10,000 calls in flight each get their own answer, from at most maxControllers (3) controller processes', async () => {
    const n = 10_000;
    // The cap, seen from the kernel: the controller processes this process runs, sampled during the flight.
    let most = 0;
    const sample = setInterval(() => (most = Math.max(most, controllerProcesses(manager.controllerPath))), 5);
    const results = await Promise.all(Array.from({ length: n }, (_, i) => stubs.neg32!(i))).finally(() => clearInterval(sample));
    most = Math.max(most, controllerProcesses(manager.controllerPath));
    expect(results.every((r, i) => r === -i)).toBe(true);
    expect(most).toBeGreaterThanOrEqual(1);
    expect(most).toBeLessThanOrEqual(3);
    const st = manager.stats()[Object.keys(manager.stats()).find((k) => k.endsWith('.calltest'))!]!;
    expect(st.busy + st.idle).toBeLessThanOrEqual(3);
  }, 120_000);
});

describe('refusals and validation before any code runs', () => {
  it('a variadic function is listed but refused, with the reason', async () => {
    const { entries } = await manager.entries('calltest');
    const sumv = entries.find((e) => e.name === 'sumv')!;
    expect(sumv.callable).toBe(false);
    expect(sumv.refusal).toMatch(/sumv is variadic/);
    expect(stubs.sumv).toBeUndefined();
    await expect(manager.call('calltest.sumv', new Uint8Array(4))).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: expect.stringMatching(/sumv: remote call refused: sumv is variadic/) });
  });

  it('a frame whose size does not match the definition is refused', async () => {
    await expect(manager.call('calltest.neg32', new Uint8Array(3))).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: expect.stringMatching(/neg32: the input frame is 3 bytes, but the entry point's definition says at least 4; nothing was called/) });
    await expect(manager.call('calltest.neg32', new Uint8Array(8))).rejects.toMatchObject({ proto: 'BAD_REQUEST' });
  });

  it('an out buffer smaller than its size-is parameter says is refused (no overflow)', async () => {
    const f = frameOf('upper', { in: 'abc', cap: 4 });
    const dv = new DataView(f.buffer, f.byteOffset, f.byteLength);
    dv.setUint32(8, 4000, true); // cap = 4000, but the out length word still says 4
    await expect(manager.call('calltest.upper', f)).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: expect.stringMatching(/upper: parameter 1: the frame gives a 4-byte buffer but the function will use 4000 bytes/) });
  });

  it('a string without its NUL is refused', async () => {
    const f = frameOf('slen', { s: 'abc' });
    f[f.length - 1] = 0x41;
    await expect(manager.call('calltest.slen', f)).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: expect.stringMatching(/slen: parameter 0: the string/) });
  });

  it('a data section running past the frame is refused', async () => {
    const f = frameOf('mean', { xs: [1, 2, 4] });
    await expect(manager.call('calltest.mean', f.subarray(0, f.length - 8))).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: expect.stringMatching(/runs past the end/) });
  });

  it('unknown functions and programs are NO_ENTRY with a hint', async () => {
    await expect(manager.call('calltest.neg31', new Uint8Array(4))).rejects.toMatchObject({ proto: 'NO_ENTRY', hint: expect.stringMatching(/^did you mean neg32\? \(rex entries calltest\)$/) });
    await expect(manager.call('nosuch.f', new Uint8Array(0))).rejects.toMatchObject({ proto: 'NO_ENTRY', message: expect.stringMatching(/no program 'nosuch'/) });
  });
});

describe('faults', () => {
  it('a crashing function kills only its controller; the caller learns the function and the signal; the next call works', async () => {
    const before = await stubs.get_pid!();
    const err = (await stubs.crash!(1).catch((e: unknown) => e)) as CallError;
    expect(err).toBeInstanceOf(CallError);
    expect(err.code).toBe('REX_ERR_CALL_CRASHED');
    expect(err.message).toMatch(/^crash: the function crashed its controller with SIGSEGV/);
    const aborted = (await stubs.die!(1).catch((e: unknown) => e)) as CallError;
    expect(aborted.message).toMatch(/^die: the function crashed its controller with SIGABRT/);
    expect(await stubs.neg32!(5)).toBe(-5);
    expect(typeof before).toBe('number');
    expect(log.entries.some((e) => e.obj.event === 'controller-died' && e.obj.function === 'crash')).toBe(true);
  });

  it('a hanging function times out at its deadline while other callers are served', async () => {
    let hangSettled = false;
    const hung = stubs.hang!(0, { timeoutMs: 3000 }).finally(() => {
      hangSettled = true;
    });
    const others = await Promise.all(Array.from({ length: 50 }, (_, i) => stubs.neg32!(i)));
    expect(others[49]).toBe(-49);
    expect(hangSettled).toBe(false);
    const err = (await hung.catch((e: unknown) => e)) as CallError;
    expect(err.code).toBe('REX_ERR_CALL_TIMEOUT');
    expect(err.message).toMatch(/^hang: no answer within 3000 ms; its controller \(pid \d+\) was killed/);
    expect(await stubs.neg32!(1)).toBe(-1);
  }, 20_000);

  it('a call can be cancelled while it runs', async () => {
    const ac = new AbortController();
    const p = stubs.nap!(10_000, { signal: ac.signal });
    setTimeout(() => ac.abort(), 200);
    await expect(p).rejects.toMatchObject({ code: 'REX_ERR_CALL_CANCELLED', message: expect.stringMatching(/^nap: the caller cancelled it/) });
    expect(await stubs.neg32!(2)).toBe(-2);
  }, 20_000);

  it('rjump (async) returns once the frame is accepted, even if the code never returns', async () => {
    const f = frameOf('hang', { x: 0 });
    const out = await manager.call('calltest.hang', f, { async: true, deadlineMs: 5000 });
    expect(out.length).toBe(0);
    expect(await stubs.neg32!(3)).toBe(-3);
  }, 20_000);
});

describe('authorization and stripped objects', () => {
  it('an unauthorized caller is refused and logged', async () => {
    const denyLog = memoryLog();
    const m = new CallManager({
      programs: () => spec,
      authorize: (who, program, fn) => (who.name === 'alpha.mallory' ? `no grant for ${who.name} on program ${program} (${fn})` : true),
      log: denyLog,
    });
    try {
      await expect(m.call('calltest.neg32', frameOf('neg32', { x: 1 }), { identity: { name: 'alpha.mallory', id: 'k1' } })).rejects.toMatchObject({
        proto: 'DENIED',
        message: 'calltest.neg32: no grant for alpha.mallory on program calltest (neg32)',
      });
      expect(denyLog.entries).toContainEqual(expect.objectContaining({ level: 'warn', obj: expect.objectContaining({ event: 'call-denied', caller: 'alpha.mallory', program: 'calltest', function: 'neg32' }) }));
      expect(m.stats()).toEqual({}); // no controller was started for the refused caller
      const ok = await m.call('calltest.neg32', frameOf('neg32', { x: 1 }), { identity: { name: 'alpha.alice' } });
      expect(new DataView(ok.buffer, ok.byteOffset).getInt32(0, true)).toBe(-1);
    } finally {
      await m.close();
    }
  });

  it('a stripped library is served from the XML written before stripping', async () => {
    const sdir = join(dir, 'stripped');
    mkdirSync(sdir);
    const stripped = join(sdir, 'libcalltest.so');
    copyFileSync(lib, stripped);
    execFileSync('strip', [stripped]);
    // Without definitions its exported functions are listed with no prototype, and refused by name
    const bare = (await loadProgram({ name: 'calltest', object: stripped })).spec as Extract<ProgramSpec, { kind: 'library' }>;
    expect(bare.definitions.entries.map((e) => e.name)).toContain('neg32');
    expect(bare.definitions.entries.filter((e) => !e.noPrototype)).toEqual([]);
    const mb = new CallManager({ programs: () => bare });
    try {
      await expect(mb.call('calltest.neg32', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(/neg32: remote call refused: no prototype: 'neg32' is exported/);
    } finally {
      await mb.close();
    }
    const s = (await loadProgram({ name: 'calltest', object: stripped, xml })).spec;
    const m = new CallManager({ programs: () => s });
    try {
      const out = await m.call('calltest.vdot', frameOf('vdot', { a: { x: 1, y: 2, z: 3 }, b: { x: 4, y: -5, z: 6 } }));
      expect(new DataView(out.buffer, out.byteOffset).getFloat64(0, true)).toBe(local.vdot);
    } finally {
      await m.close();
    }
  });
});
