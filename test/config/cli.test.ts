import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FIXTURES } from './helpers.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const REX = join(ROOT, 'dist/bin/rex.js');

/** True when a compiled file is missing or older than any source it may depend on. */
function stale(): boolean {
  if (!existsSync(REX)) return true;
  const built = statSync(join(ROOT, 'dist/config/index.js'), { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const sources = [join(ROOT, 'src/config'), join(ROOT, 'src/cli'), join(ROOT, 'src/cli/commands'), join(ROOT, 'src/util')];
  return sources.some((d) => readdirSync(d).some((f) => f.endsWith('.ts') && statSync(join(d, f)).mtimeMs > Math.min(built, statSync(REX).mtimeMs)));
}

let tmp: string;
beforeAll(() => {
  if (stale()) {
    // Other areas may have type errors mid-work; tsc still emits, so only the output matters here.
    try {
      execFileSync('npx', ['tsc', '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'pipe' });
    } catch {
      /* checked below */
    }
  }
  expect(existsSync(REX)).toBe(true);
  tmp = mkdtempSync(join(tmpdir(), 'rex-config-cli-'));
}, 180_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function rex(args: string[], env: NodeJS.ProcessEnv = {}, cwd = tmp) {
  const r = spawnSync(process.execPath, [REX, ...args], {
    cwd,
    encoding: 'utf8',
    env: { PATH: process.env.PATH, USER: 'tester', HOME: tmp, REX_ROOT: join(tmp, 'root'), ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('rex config check', () => {
  it('prints FILE: ok and a summary for a good file', () => {
    const f = join(FIXTURES, 'good/full.rc');
    const r = rex(['config', 'check', f]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${f}: ok\nhost-name alpha, listen 127.0.0.1:7801, 4 servers, 5 client entries, 1 file read\n`);
  });

  it('prints every error as file:line: error: ... and exits 1', () => {
    const f = join(FIXTURES, 'bad/multi.rc');
    const r = rex(['config', 'check', f]);
    expect(r.status).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toEqual([
      `${f}:1: error: key "servers": entry "alpha": port 0 is out of range; expected a port number 1-65535`,
      `${f}:2: error: key "log-levle": unknown key; did you mean "log-level"?`,
      `${f}:3: error: key "load-interval": "0ms" is out of range; expected a duration between 10ms and 1h`,
      '3 errors',
      '',
    ]);
  });

  it('checks XML files against the DTD', () => {
    const f = join(FIXTURES, 'bad/invalid.xml');
    const r = rex(['config', 'check', f]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`${f}:7: error: key "sevrers": does not match schema/rex.dtd: unknown element <sevrers>; did you mean <servers>?`);
  });

  it('reports a missing file', () => {
    const r = rex(['config', 'check', 'nope.rc']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^nope\.rc: error: configuration file not found\n {2}hint: /);
  });

  it('without FILE checks the active configuration, or the defaults when there is none', () => {
    let r = rex(['config', 'check']);
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('(no configuration file: built-in defaults): ok');
    writeFileSync(join(tmp, 'rex.rc'), 'servers : a, b\n');
    r = rex(['config', 'check']);
    expect(r.stdout.split('\n')[0]).toBe(`${join(tmp, 'rex.rc')}: ok`);
    r = rex(['config', 'check'], { REX_CONFIG: join(FIXTURES, 'good/seed.rc') });
    expect(r.stdout.split('\n')[0]).toBe(`${join(FIXTURES, 'good/seed.rc')}: ok`);
    rmSync(join(tmp, 'rex.rc'));
  });
});

describe('rex config show', () => {
  it('prints each effective value with the file:line it came from', () => {
    const f = join(FIXTURES, 'good/main.rc');
    const r = rex(['config', 'show', '-c', f], { REX_ROOT: join(FIXTURES, 'sys') });
    expect(r.status).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^host-name +: beta +/\\* ${join(FIXTURES, 'good/parts/cluster.xml')}:4 \\*/$`)));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^load-interval +: 250ms +/\\* ${f}:6 \\*/$`)));
    expect(lines).toContainEqual(expect.stringMatching(/^rex-auto-transfer +: on +\/\* \(default\) \*\/$/));
    expect(lines).toContainEqual(expect.stringMatching(/^listen +: 127\.0\.0\.1:7802 +\/\* \(default, from servers entry "beta" at .*cluster\.rc:1\) \*\/$/));
  });

  it('prints JSON with --json', () => {
    const f = join(FIXTURES, 'good/full.xml');
    const r = rex(['config', 'show', '--json', '--config', f]);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.config.hostName).toBe('alpha');
    expect(out.config.tempDirectory).toBe('/tmp/.rex_alpha_tester/x');
    expect(out.sources.servers).toEqual({ file: f, line: 6 });
    expect(out.files).toEqual([f]);
  });

  it('fails with the errors when the configuration is bad', () => {
    const f = join(FIXTURES, 'bad/unknown-key.rc');
    const r = rex(['config', 'show', '-c', f]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(`${f}:3: error: key "sever": unknown key; did you mean "servers"?\n1 error\n`);
  });

  it('still takes --file, the deprecated name of -c, hidden from --help; two different files are a usage error', () => {
    const f = join(FIXTURES, 'good/full.xml');
    const r = rex(['config', 'show', '--json', '--file', f]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout).files).toEqual([f]);
    expect(rex(['config', 'show', '--help']).stdout).not.toContain('--file');
    const two = rex(['config', 'show', '--file', f, '-c', join(FIXTURES, 'good/seed.rc')]);
    expect(two.status).toBe(2);
    expect(two.stderr).toContain('two files given');
  });
});

describe('rex config check -c and --json', () => {
  it('-c FILE is the same as the FILE argument', () => {
    const f = join(FIXTURES, 'good/seed.rc');
    expect(rex(['config', 'check', '-c', f]).stdout).toBe(rex(['config', 'check', f]).stdout);
    expect(rex(['config', 'check', '-c', f]).status).toBe(0);
  });

  it('--json prints the summary as JSON, and the errors as data with exit status 1', () => {
    const f = join(FIXTURES, 'good/full.rc');
    const ok = rex(['config', 'check', '--json', '-c', f]);
    expect(ok.status).toBe(0);
    expect(JSON.parse(ok.stdout)).toEqual({ ok: true, file: f, files: [f], hostName: 'alpha', listen: '127.0.0.1:7801', servers: 4, clients: 5 });
    const bad = join(FIXTURES, 'bad/unknown-key.rc');
    const r = rex(['config', 'check', '--json', bad]);
    expect(r.status).toBe(1);
    expect(JSON.parse(r.stdout)).toEqual({ ok: false, errors: [expect.objectContaining({ file: bad, line: 3, key: 'sever', message: expect.stringContaining('unknown key') })] });
    expect(r.stderr).toContain(`${bad}:3: error: key "sever"`);
  });
});
