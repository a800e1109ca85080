// C callers and C servers: rcall()/rjump() from a C program through a
// protocol v1 stand-in for rexd (src/protocol's Connection, answering with
// CallManager.handle, as rexd will), and a C program that serves its own
// functions with rex_register_entry() + rex_serve().
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { rmSync } from 'node:fs';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CallManager, loadProgram, type ProgramSpec } from '../../src/calls/index.js';
import { FIX, NATIVE, buildLibrary, localResults, tempDir, writeXml, standInDaemon } from './helpers.js';

let dir: string;
let spec: ProgramSpec;
let served: string;
let manager: CallManager;
let server: Server;
let socket: string;
let local: Record<string, unknown>;
const run = promisify(execFile);

function buildC(src: string, out: string): string {
  const exe = join(dir, out);
  execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', `-I${join(NATIVE, 'include')}`, '-o', exe, join(FIX, src), join(NATIVE, 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
  return exe;
}

beforeAll(async () => {
  dir = tempDir();
  const lib = buildLibrary(dir);
  spec = (await loadProgram({ name: 'calltest', object: lib, xml: writeXml(dir, lib) })).spec;
  served = buildC('served.c', 'served');
  local = localResults(dir, lib);
  manager = new CallManager({
    host: 'alpha',
    programs: (n) => (n === 'calltest' ? spec : n === 'served' ? { kind: 'program', name: 'served', exec: served } : undefined),
  });
  socket = join(dir, 'rexd.sock');
  server = await standInDaemon(manager, socket);
}, 60_000);

afterAll(async () => {
  await new Promise((r) => server?.close(r));
  await manager?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the C caller (asynchronously: the stand-in daemon runs in this process's event loop). */
async function runClient(program: string): Promise<Map<string, string>> {
  const exe = buildC('rcall_client.c', 'rcall_client');
  const { stdout } = await run(exe, [program], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: socket, REX_CALL_TIMEOUT_MS: '5000' }, timeout: 60_000 });
  return new Map(stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));
}

describe('rcall() and rjump() from C', () => {
  it('return the same values as local calls, and the documented errno for each failure', async () => {
    const out = await runClient('calltest');
    expect(out.get('neg32')).toBe(`4 ${local.neg32}`);
    const v = local.vscale as number[];
    expect(out.get('vscale')!.split(' ').map(Number)).toEqual([24, ...v]);
    expect(out.get('short')).toMatch(/^error EINVAL: .*neg32: the input frame is 3 bytes/);
    expect(out.get('small')).toMatch(/^error EMSGSIZE: .*vscale: the output frame is 24 bytes, larger than the 8-byte buffer/);
    expect(out.get('crash')).toMatch(/^error EOWNERDEAD: .*crash: the function crashed its controller with SIGSEGV/);
    expect(out.get('nosuch')).toMatch(/^error ENOENT: .*has no entry point 'nosuch'/);
    expect(out.get('rjump')).toBe('ok');
  }, 60_000);
});

describe('a C program serving its own functions (rex_serve)', () => {
  it('lists and serves its registered entry points with exact frame sizes', async () => {
    const { entries } = await manager.entries('served');
    expect(entries.map((e) => [e.name, e.inputSize, e.outputSize])).toEqual([['add', 8, 4], ['crash', 4, 4]]);
    const input = new Uint8Array(8);
    new DataView(input.buffer).setInt32(0, 40, true);
    new DataView(input.buffer).setInt32(4, 2, true);
    const out = await manager.call('served.add', input);
    expect(new DataView(out.buffer, out.byteOffset).getInt32(0, true)).toBe(42);
    await expect(manager.call('served.add', new Uint8Array(9))).rejects.toMatchObject({ proto: 'BAD_REQUEST', message: 'add: the input frame is 9 bytes, but the entry point\'s definition says 8; nothing was called' });
    await expect(manager.call('served.nope', input)).rejects.toMatchObject({ proto: 'NO_ENTRY' });
    await expect(manager.call('served.crash', new Uint8Array(4))).rejects.toMatchObject({ proto: 'CRASHED', message: expect.stringMatching(/^crash: the function crashed its controller with SIGILL/) });
    const again = await manager.call('served.add', input);
    expect(new DataView(again.buffer, again.byteOffset).getInt32(0, true)).toBe(42);
  }, 30_000);

  it('rcall() from C reaches a self-serving program too', async () => {
    const out = await runClient('served');
    expect(out.get('neg32')).toMatch(/^error ENOENT: .*served has no entry point 'neg32'/);
    expect(out.get('crash')).toMatch(/^error EOWNERDEAD: .*crash: the function crashed its controller with SIGILL/);
  }, 60_000);

  it('rex_serve() without rexd fails with EBADF and says why', () => {
    const env = { ...process.env };
    delete env.REX_CALL_FD;
    const r = spawnSync(served, [], { encoding: 'utf8', env });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/rex_serve: Bad file descriptor: rex_serve: this program was not started by rexd as a call controller/);
  });
});
