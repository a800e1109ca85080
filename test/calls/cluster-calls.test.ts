// Remote calls on a real local cluster (rexd processes, TLS between hosts,
// network namespaces when root): typed stubs and C rcall() on alpha call the
// test library on beta and get the local results; `*` placement; a crash, a
// deadline; a caller whose grant does not cover the program is refused and
// logged; a revoked grant refuses the next call.
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CallChannel } from '../../src/runtime/transport.js';
import { closeSharedChannel, rcall } from '../../src/runtime/index.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore, writeFileAtomic } from '../../src/keys/store.js';
import { queryLog } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { FIX, NATIVE, buildLibrary, callCluster, loadStubs, localResults, tempDir, writeXml } from './helpers.js';

type Stubs = Record<string, (...args: unknown[]) => Promise<unknown>>;
const run = promisify(execFile);

let dir: string;
let lib: string;
let xml: string;
let local: Record<string, unknown>;
let stubs: Stubs;
let cluster: LocalCluster;
let stop: () => Promise<void>;
let alpha: RexClient;

beforeAll(async () => {
  dir = tempDir();
  lib = buildLibrary(dir);
  xml = writeXml(dir, lib);
  local = localResults(dir, lib);
  stubs = (await loadStubs(dir, xml)) as Stubs;
  ({ cluster, alpha, stop } = await callCluster(3, `calltest=${lib}:${xml}`));
}, 120_000);

afterAll(async () => {
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

/** A stub transport through alpha's rexd that sends every call to `host`. */
function via(host: string): void {
  const channel = new CallChannel(alpha.conn);
  setTransport((t, input, o) => channel.transport()(t, input, { ...o, host }));
}

describe('calls routed between hosts', () => {
  it('typed stubs on alpha call the library on beta and get the local results', async () => {
    via('beta');
    expect(await stubs.neg32!(-2147483647)).toBe(local.neg32);
    expect(String(await stubs.inc64!(18446744073709551614n))).toBe(local.inc64);
    expect(String(await stubs.widths!(-100, 200, -30000, 60000, -2000000000, 4000000000, -5000000000000n, 6000000000000n, 7))).toBe(local.widths);
    expect(await stubs.vdot!({ x: 1, y: 2, z: 3 }, { x: 4, y: -5, z: 6 })).toBe(local.vdot);
    expect(String(await stubs.slen!('héllo'))).toBe(local.slen);
    expect(await stubs.mean!([1, 2, 4])).toBe(local.mean);
    // The RESULT names the host that ran it.
    const ep = (await alpha.entries('beta.calltest')).find((e) => e.name === 'neg32')!;
    expect(ep.callable).toBe(true);
    const r = await alpha.call('beta.calltest.neg32', Uint8Array.of(1, 0, 0, 0));
    expect(r.host).toBe('beta');
    expect(Buffer.from(r.output).readInt32LE(0)).toBe(-1);
  }, 60_000);

  it('stubs need no setup: without a transport they call through the local rexd, as raw rcall() does', async () => {
    const before = process.env.REX_SOCKET;
    process.env.REX_SOCKET = cluster.host('alpha').socket;
    setTransport(undefined);
    try {
      expect(await stubs.neg32!(-77)).toBe(77);
      expect(await stubs.vdot!({ x: 1, y: 2, z: 3 }, { x: 4, y: -5, z: 6 })).toBe(local.vdot);
      const out = await rcall('gamma.calltest.neg32', Uint8Array.of(3, 0, 0, 0));
      expect(Buffer.from(out).readInt32LE(0)).toBe(-3);
    } finally {
      closeSharedChannel();
      if (before === undefined) delete process.env.REX_SOCKET;
      else process.env.REX_SOCKET = before;
    }
  }, 30_000);

  it('many calls in flight on one connection come back to the right caller', async () => {
    via('gamma');
    const xs = Array.from({ length: 300 }, (_, i) => i - 150);
    const out = await Promise.all(xs.map((x) => stubs.neg32!(x)));
    expect(out).toEqual(xs.map((x) => 0 - x || 0));
  }, 60_000);

  it('C rcall() on alpha, routed to beta, returns the local values and the documented errors', async () => {
    const exe = join(dir, 'rcall_client');
    execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', `-I${join(NATIVE, 'include')}`, '-o', exe, join(FIX, 'rcall_client.c'), join(NATIVE, 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
    const { stdout } = await run(exe, ['beta.calltest'], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket, REX_CALL_TIMEOUT_MS: '10000' }, timeout: 60_000 });
    const out = new Map(stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf(' ')), l.slice(l.indexOf(' ') + 1)]));
    expect(out.get('neg32')).toBe(`4 ${local.neg32}`);
    expect(out.get('vscale')!.split(' ').map(Number)).toEqual([24, ...(local.vscale as number[])]);
    expect(out.get('short')).toMatch(/^error EINVAL: .*neg32: the input frame is 3 bytes/);
    expect(out.get('crash')).toMatch(/^error EOWNERDEAD: .*beta: crash: the function crashed its controller with SIGSEGV/);
    expect(out.get('nosuch')).toMatch(/^error ENOENT: .*has no entry point 'nosuch'/);
    expect(out.get('rjump')).toBe('ok');
  }, 90_000);

  it('a crash on the remote host is reported with the function and signal, and the next call works', async () => {
    await expect(alpha.call('beta.calltest.crash', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(/CRASHED: beta: crash: the function crashed its controller with SIGSEGV/);
    const r = await alpha.call('beta.calltest.neg32', Uint8Array.of(5, 0, 0, 0));
    expect(Buffer.from(r.output).readInt32LE(0)).toBe(-5);
  }, 30_000);

  it('a hanging function on the remote host fails at its deadline', async () => {
    await expect(alpha.call('gamma.calltest.hang', Uint8Array.of(1, 0, 0, 0), { timeoutMs: 500 })).rejects.toThrow(/TIMEOUT: gamma: hang: no answer within 500 ms/);
  }, 30_000);

  it('* picks a reachable host that offers the program; a program nobody offers is NO_ENTRY', async () => {
    const r = await alpha.call('*.calltest.neg32', Uint8Array.of(7, 0, 0, 0));
    expect(['alpha', 'beta', 'gamma']).toContain(r.host);
    expect(Buffer.from(r.output).readInt32LE(0)).toBe(-7);
    await expect(alpha.call('nosuchprog.f', new Uint8Array(0))).rejects.toThrow(/NO_ENTRY: .*no reachable host offers program 'nosuchprog'/);
  }, 30_000);

  it('* goes to the only host that offers a program', async () => {
    const g = cluster.host('gamma');
    cluster.kill('gamma');
    await cluster.waitExit('gamma');
    appendFileSync(g.rcFile, `programs : calltest=${lib}:${xml}, onlygamma=${lib}:${xml}\n`);
    await cluster.startHost(g);
    await cluster.waitAllReachable();
    for (let i = 0; i < 3; i++) {
      const r = await alpha.call('onlygamma.neg32', Uint8Array.of(9, 0, 0, 0));
      expect(r.host).toBe('gamma');
    }
  }, 60_000);
});

describe('authorization of calls', () => {
  it('a caller whose grant does not cover the program is refused, and rex log shows it', async () => {
    const beta = cluster.host('beta');
    const store = new KeyStore(beta.stateDir);
    const good = readFileSync(store.grantsFile, 'utf8');
    const alphaId = cluster.host('alpha').identity;
    writeFileAtomic(store.grantsFile, good.replace(new RegExp(`^grant ${alphaId.replace('.', '\\.')}\\b.*$`, 'm'), `grant ${alphaId} program=other`), 0o600);
    try {
      await expect(alpha.call('beta.calltest.neg32', Uint8Array.of(1, 0, 0, 0))).rejects.toThrow(/DENIED: beta: .*program calltest of .* is not granted on beta/);
      // The log row is written just after the answer is sent.
      const rows = await vi.waitFor(
        () => {
          const found = queryLog(join(beta.stateDir, 'rex-log.sqlite'), { outcome: 'denied' }).filter((r) => r.message_type === 'CALL');
          if (found.length === 0) throw new Error(`no denied CALL row in beta's log; newest: ${JSON.stringify(queryLog(join(beta.stateDir, 'rex-log.sqlite'), { limit: 5 }))}`);
          return found;
        },
        { timeout: 10_000, interval: 25 },
      );
      expect(rows[0]).toMatchObject({ target: 'beta.calltest.neg32', from_host: 'alpha' });
      const { stdout } = await run(process.execPath, [join(import.meta.dirname, '../../dist/bin/rex.js'), 'log', '--config', beta.rcFile, '--outcome', 'denied'], { encoding: 'utf8' });
      expect(stdout).toMatch(/CALL.*beta\.calltest\.neg32/);
    } finally {
      writeFileAtomic(store.grantsFile, good, 0o600);
    }
  }, 30_000);

  it('a revoked grant refuses the next call', async () => {
    const r = await alpha.call('beta.calltest.neg32', Uint8Array.of(2, 0, 0, 0));
    expect(r.host).toBe('beta');
    const beta = cluster.host('beta');
    const store = new KeyStore(beta.stateDir);
    const good = readFileSync(store.grantsFile, 'utf8');
    const alphaId = cluster.host('alpha').identity;
    writeFileAtomic(store.grantsFile, good.replace(new RegExp(`^grant ${alphaId.replace('.', '\\.')}\\b.*$\\n?`, 'm'), ''), 0o600);
    try {
      await expect(alpha.call('beta.calltest.neg32', Uint8Array.of(2, 0, 0, 0))).rejects.toThrow(/DENIED/);
    } finally {
      writeFileAtomic(store.grantsFile, good, 0o600);
    }
  }, 30_000);
});
