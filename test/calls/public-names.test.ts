// Calls by public name on a real local cluster (docs/ENTRYPOINTS.md, "Public
// names"): beta offers the fixture library (test/fixtures/names) with the
// definitions repdb -gx wrote, plus a hand-written prototype for its IFUNC;
// `rex call` on alpha calls it on beta by public name, by weak alias, by an
// old symbol version (NAME@VERSION, old behaviour) and by the default one (new
// behaviour), and the IFUNC as beta's loader resolved it.
import { execFile, execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { startCluster } from '../helpers/cluster.js';
import { formatTarget, parseTarget } from '../../src/calls/index.js';
import { CallChannel } from '../../src/runtime/transport.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { REPDB, ROOT, loadStubs, tempDir } from './helpers.js';

const run = promisify(execFile);
const REX = join(ROOT, 'dist/bin/rex.js');
const NAMES = join(ROOT, 'test/fixtures/names');

let dir: string;
let cluster: LocalCluster;
let stop: () => Promise<void>;
let stubs: Record<string, (...args: unknown[]) => Promise<unknown>>;

beforeAll(async () => {
  dir = tempDir('rex-names-');
  const lib = join(dir, 'libnames.so');
  execFileSync('cc', ['-g', '-O1', '-shared', '-fPIC', `-Wl,--version-script=${join(NAMES, 'names.map')}`, '-o', lib, join(NAMES, 'names.c')], { stdio: 'pipe' });
  const xml = execFileSync(process.execPath, [REPDB, '-gx', '-q', '--program', 'names', lib], { encoding: 'utf8' });
  // The IFUNC has no DWARF prototype (its address is the resolver's): give it one by hand.
  const withBump = xml.replace(/(<entry-point name="bump"[^>]*) prototype="no">\n\s*<\/entry-point>/, '$1><returns type="int32"/><param name="x" type="int32"/></entry-point>');
  expect(withBump).not.toBe(xml);
  writeFileSync(join(dir, 'names.xml'), withBump);
  stubs = await loadStubs(dir, join(dir, 'names.xml'));
  ({ cluster, stop } = await startCluster(2, { rc: [`programs : names=${lib}:${join(dir, 'names.xml')}`] }));
  await cluster.waitAllReachable();
}, 120_000);

afterAll(async () => {
  setTransport(undefined);
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

async function rex(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [REX, ...args, '--socket', cluster.host('alpha').socket], { encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

async function call(target: string, ...args: string[]): Promise<unknown> {
  const r = await rex('call', target, ...args, '--json');
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return (JSON.parse(r.stdout) as { return: unknown }).return;
}

describe('rex call by public name, on another host', () => {
  it('the public name and its weak alias call the same function', async () => {
    expect(await call('beta.names.twice', '21')).toBe(42);
    expect(await call('beta.names.twice_alias', '21')).toBe(42);
  });

  it('the default version is the plain name (new behaviour); NAME@VERSION reaches the old one', async () => {
    expect(await call('beta.names.scale', '3')).toBe(300);
    expect(await call('beta.names.scale@NAMES_1.0', '3')).toBe(30);
  });

  it('the IFUNC runs the implementation beta\'s loader picked (SSE2: x + 2)', async () => {
    expect(await call('beta.names.bump', '1')).toBe(3);
    // bump2's prototype came from DWARF (its implementations' names); the loader picks __bump2_sse2
    expect(await call('beta.names.bump2', '1')).toBe(21);
  });

  it('a hidden function is not offered, and an unknown version is refused by name', async () => {
    const s = await rex('call', 'beta.names.secret', '1');
    expect(s.code).not.toBe(0);
    expect(s.stderr).toContain("no entry point 'secret'");
    const v = await rex('call', 'beta.names.scale@NAMES_7.0', '1');
    expect(v.code).not.toBe(0);
    expect(v.stderr).toContain("no entry point 'scale@NAMES_7.0'");
  });

  it('rex entries lists the public names with their versions', async () => {
    const r = await rex('entries', 'beta.names');
    expect(r.code).toBe(0);
    for (const n of ['twice(', 'twice_alias(', 'scale(', 'scale@NAMES_1.0(', 'bump(', 'bump2(', 'use_secret(']) expect(r.stdout).toContain(n);
    expect(r.stdout).toMatch(/^\+ int32 scale@NAMES_1.0\(int32 x\)$/m);
    expect(r.stdout).not.toMatch(/ secret\(/);
  });

  it('C rcall() calls them too, NAME@VERSION included', async () => {
    const exe = join(dir, 'rcall_names');
    execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', `-I${join(ROOT, 'native', 'include')}`, '-o', exe, join(NAMES, 'rcall_names.c'), join(ROOT, 'native', 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
    const { stdout } = await run(exe, ['beta.names'], { encoding: 'utf8', env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket, REX_CALL_TIMEOUT_MS: '10000' }, timeout: 60_000 });
    expect(stdout).toBe('twice 42\ntwice_alias 42\nscale 300\nscale@NAMES_1.0 30\nbump2 21\n');
  });

  it('generated TypeScript stubs call them too: NAME@VERSION under its escaped name (scale_NAMES_1_0)', async () => {
    const alpha = await cluster.client('alpha');
    const channel = new CallChannel(alpha.conn);
    setTransport((t, input, o) => channel.transport()(t, input, { ...o, host: 'beta' }));
    try {
      expect(await stubs.scale_NAMES_1_0!(3)).toBe(30);
      expect(await stubs.scale!(3)).toBe(300);
      expect(await stubs.twice_alias!(4)).toBe(8);
      expect(await stubs.bump!(1)).toBe(3);
    } finally {
      setTransport(undefined);
      alpha.close();
    }
  });
});

describe('call targets with FUNCTION@VERSION', () => {
  it('the version may contain dots; the host may too', () => {
    expect(parseTarget('beta.m.pow@GLIBC_2.2.5')).toEqual({ host: 'beta', program: 'm', function: 'pow@GLIBC_2.2.5' });
    expect(parseTarget('h.example.org.alice.m.pow@GLIBC_2.2.5')).toEqual({ host: 'h.example.org', user: 'alice', program: 'm', function: 'pow@GLIBC_2.2.5' });
    expect(formatTarget(parseTarget('beta.m.pow@GLIBC_2.2.5'))).toBe('beta.m.pow@GLIBC_2.2.5');
  });

  it('a bad version or a version without a function is refused by name', () => {
    expect(() => parseTarget('beta.m.pow@')).toThrow(/target 'beta.m.pow@': version '' is not a symbol version/);
    expect(() => parseTarget('beta.m.pow@GLIBC 2')).toThrow(/version 'GLIBC 2' is not a symbol version/);
    expect(() => parseTarget('beta.m.@V1')).toThrow(/has an empty part/);
  });
});
