// `rex call` and `rex entries` against a protocol stand-in for rexd that
// answers with CallManager.handle (as rexd will): arguments are encoded from
// the definition ENTRIES carries, results decoded and printed.
import { execFile } from 'node:child_process';
import { chmodSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallManager, loadProgram, type ProgramSpec } from '../../src/calls/index.js';
import { ROOT, buildLibrary, tempDir, writeXml, standInDaemon } from './helpers.js';

const run = promisify(execFile);
const REX = join(ROOT, 'dist/bin/rex.js');
let dir: string;
let spec: ProgramSpec;
let manager: CallManager;
let server: Server;
let socket: string;

beforeAll(async () => {
  dir = tempDir();
  const lib = buildLibrary(dir);
  spec = (await loadProgram({ name: 'calltest', object: lib, xml: writeXml(dir, lib) })).spec;
  manager = new CallManager({ host: 'alpha', programs: (n) => (n === 'calltest' ? spec : undefined) });
  socket = join(dir, 'rexd.sock');
  server = await standInDaemon(manager, socket);
}, 60_000);

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await manager?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function rex(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [REX, ...args, '--socket', socket], { encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

describe('rex call', () => {
  it('encodes scalars, structs and strings from the definition and prints the result', async () => {
    // A lone return value prints alone; out-parameters print by name.
    expect((await rex('call', 'calltest.neg64', '-9223372036854775807')).stdout).toBe('9223372036854775807\n');
    expect((await rex('call', 'calltest.upper', 'shout it', '8')).stdout).toBe('return = 7\nout = "SHOUT I"\n');
    expect(JSON.parse((await rex('call', 'alpha.calltest.vscale', '{"x":1.5,"y":-2.25,"z":3}', '2', '--json')).stdout)).toEqual({ return: { x: 3, y: -4.5, z: 6 } });
    expect(JSON.parse((await rex('call', 'calltest.upper', 'shout it', '8', '--json')).stdout)).toEqual({ return: 7, out: { text: 'SHOUT I', bytes: '53484f55542049' + '00' } });
    expect(JSON.parse((await rex('call', 'calltest.reverse', '[1,2,3]', '--json')).stdout)).toEqual({ xs: [3, 2, 1] });
    // A char[6] member given as text (NUL-padded) or as the bytes --json prints.
    expect((await rex('call', 'calltest.tag_sum', '{"name":"rex","id":1000}')).stdout).toBe(`${1000 + 114 + 101 + 120}\n`);
    expect((await rex('call', 'calltest.tag_sum', '{"name":{"bytes":"726578000001"},"id":1000}')).stdout).toBe(`${1000 + 114 + 101 + 120 + 1}\n`);
    expect((await rex('call', 'calltest.tag_sum', '{"name":"toolong","id":1}')).stderr).toContain('t.name: "toolong" is 7 bytes, more than the 6 of char[6]');
  });

  it('sends a raw frame with --hex', async () => {
    expect((await rex('call', 'calltest.neg32', '--hex', '05000000')).stdout).toBe('fbffffff\n');
  });

  it('says what is wrong: argument count, bad integer, refused and unknown entry points', async () => {
    const n = await rex('call', 'calltest.neg32');
    expect(n.code).toBe(2);
    expect(n.stderr).toContain('neg32 takes 1 argument (x), got 0');
    expect((await rex('call', 'calltest.neg32', 'seven')).stderr).toContain("argument x: expected an integer (int32), got 'seven'");
    const v = await rex('call', 'calltest.sumv', '1');
    expect(v.code).toBe(1);
    expect(v.stderr).toMatch(/sumv: remote call refused: sumv is variadic/);
    expect((await rex('call', 'calltest.nosuch')).stderr).toContain("no entry point 'nosuch'");
    const crash = await rex('call', 'calltest.crash', '1');
    expect(crash.stderr).toMatch(/crash: the function crashed its controller with SIGSEGV/);
  });
});

describe('the native rex front end against a rexd that does not serve CALL_CLI', () => {
  it('hands the call to the Node CLI (UNSUPPORTED: nothing was called), which makes it with ENTRIES_GET and CALL', async () => {
    // $REX_NODE: a node that leaves a mark, then runs the real one with the same arguments.
    const mark = join(dir, 'delegated');
    const node = join(dir, 'node-marking');
    writeFileSync(node, `#!/bin/sh\necho "$@" > '${mark}'\nexec '${process.execPath}' "$@"\n`);
    chmodSync(node, 0o755);
    const r = await run(join(ROOT, 'native', 'build', 'bin', 'rex'), ['call', 'calltest.neg32', '5', '--socket', socket], { encoding: 'utf8', env: { ...process.env, REX_NODE: node } });
    expect([r.stdout, r.stderr]).toEqual(['-5\n', '']);
    const [cli, ...rest] = readFileSync(mark, 'utf8').trim().split(' ');
    expect([realpathSync(cli!), ...rest]).toEqual([realpathSync(REX), 'call', 'calltest.neg32', '5', '--socket', socket]);
  });
});

describe('rex entries', () => {
  it('lists callable and refused entry points with signatures', async () => {
    const r = await rex('entries', 'calltest');
    expect(r.stdout).toContain('+ int32 upper(char* in [in string], char* out [out size-is=cap string], uint32 cap)');
    expect(r.stdout).toMatch(/- int32 sumv\(int32 n, \.\.\.\)\n {4}refused: sumv: remote call refused: sumv is variadic/);
    const j = JSON.parse((await rex('entries', 'calltest', '--json')).stdout) as { name: string; definition?: { name: string } }[];
    expect(j.find((e) => e.name === 'neg32')!.definition!.name).toBe('neg32');
  });
});
