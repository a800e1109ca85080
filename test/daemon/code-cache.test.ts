// rexd's code cache (issue 15; src/cli/launch.cts, scripts/code-cache.mjs): the build writes a V8 code cache beside
// rexd's bundle, and rexd's launcher compiles the bundle with it. A cache is code: the launcher runs one only if it
// was made from this very bundle (its SHA-256, since V8 checks the source's length only) and only the bundle's owner
// wrote it and can write it; it never writes one itself unless the build asks (REX_CODE_CACHE_OUT), and never over
// a file that is there. Each case runs a copy of the launcher, the bundle and the cache in a directory of its own.
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { tempDir } from '../calls/helpers.js';

const bin = dirname(distBin('rexd'));
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A copy of rexd (launcher, bundle, cache) with a package.json, as an installation has them. */
function copy(): string {
  const d = tempDir('rex-code-cache-');
  dirs.push(d);
  for (const f of ['rexd.cjs', 'rexd-main.cjs', 'rexd-main.cjs.cache']) copyFileSync(join(bin, f), join(d, f));
  writeFileSync(join(d, 'package.json'), readFileSync(join(packageRoot(), 'package.json')));
  return d;
}

/** `rexd --version` from copy `d`: what the launcher says of the cache, and rexd's own output. */
function version(d: string, env: NodeJS.ProcessEnv = {}): { state: string; stdout: string; status: number | null } {
  const r = spawnSync(process.execPath, [join(d, 'rexd.cjs'), '--version'], { encoding: 'utf8', env: { ...process.env, REX_CODE_CACHE_REPORT: '1', ...env } });
  return { state: /rex code cache: (\w+)/.exec(r.stderr)?.[1] ?? `none (stderr: ${r.stderr})`, stdout: r.stdout, status: r.status };
}

const VERSION = `${JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version}\n`;

describe("rexd's code cache", () => {
  // claim: start.code-cache
  it('is written by the build for this Node, and rexd starts with it', () => {
    expect(existsSync(join(bin, 'rexd-main.cjs.cache'))).toBe(true);
    expect(version(copy())).toEqual({ state: 'used', stdout: VERSION, status: 0 });
  });

  // claim: start.code-cache
  it('runs code that imports an ES-only package (libxml2-wasm, for an XML rex.rc) through its launcher', () => {
    // Node 20 loses the import() callback of code from a code cache: the bundle imports such packages through the launcher.
    const rc = join(packageRoot(), 'test', 'fixtures', 'config', 'bad', 'invalid.xml');
    const r = spawnSync(process.execPath, [distBin('rexd'), '--status', '--config', rc], { encoding: 'utf8', env: { ...process.env, REX_CODE_CACHE_REPORT: '1' } });
    expect(r.stderr).toContain('rex code cache: used');
    expect(r.stderr).toContain(`${rc}:7: error: key "sevrers": does not match schema/rex.dtd: unknown element <sevrers>; did you mean <servers>?`);
    expect(r.status).toBe(1);
  });

  // claim: start.code-cache-checked
  it('is not used for a bundle it was not made from, even of the same length (V8 would take it), and rexd still runs', () => {
    const d = copy();
    const f = join(d, 'rexd-main.cjs');
    const text = readFileSync(f, 'utf8');
    // One byte of a comment changed: the same length, another bundle.
    expect(text.startsWith('///')).toBe(true);
    writeFileSync(f, text.replace(/^\/\/\//, ' //'));
    expect(readFileSync(f).length).toBe(Buffer.byteLength(text));
    expect(version(d)).toEqual({ state: 'stale', stdout: VERSION, status: 0 });
  });

  // claim: start.code-cache-checked
  it('is not used when another user could have written it (group- or world-writable), and rexd still runs', () => {
    const d = copy();
    chmodSync(join(d, 'rexd-main.cjs.cache'), 0o666);
    expect(version(d)).toEqual({ state: 'unsafe', stdout: VERSION, status: 0 });
  });

  // claim: start.code-cache-checked
  it('falls back to compiling when V8 refuses the data (another Node, a damaged file), and rexd still runs', () => {
    const d = copy();
    const c = join(d, 'rexd-main.cjs.cache');
    const data = readFileSync(c);
    // The bundle's hash kept, V8's data damaged.
    data.fill(0x5a, 32 + 16, 32 + 64);
    writeFileSync(c, data);
    expect(version(d)).toEqual({ state: 'rejected', stdout: VERSION, status: 0 });
    rmSync(c);
    expect(version(d)).toEqual({ state: 'absent', stdout: VERSION, status: 0 });
  });

  // claim: start.code-cache-checked
  it('is never written by rexd at run time, and the build never writes it over a file that is there', () => {
    const d = copy();
    const before = readdirSync(d).sort();
    expect(version(d).status).toBe(0);
    expect(readdirSync(d).sort()).toEqual(before);
    // The build's training run writes where REX_CODE_CACHE_OUT says, creating the file; a file already there stays.
    const out = join(d, 'planted');
    writeFileSync(out, 'not a cache');
    const r = version(d, { REX_CODE_CACHE_OUT: out });
    expect(r.state).toBe('writing');
    expect(r.status).not.toBe(0);
    expect(readFileSync(out, 'utf8')).toBe('not a cache');
    const fresh = join(d, 'fresh');
    expect(version(d, { REX_CODE_CACHE_OUT: fresh })).toEqual({ state: 'writing', stdout: VERSION, status: 0 });
    expect(readFileSync(fresh).subarray(0, 32)).toEqual(readFileSync(join(bin, 'rexd-main.cjs.cache')).subarray(0, 32));
  });
});
