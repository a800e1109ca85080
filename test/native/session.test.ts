// rex-session (native/session/rex-session.c, docs/man/rex-session.8.md): the root rexd's launcher
// of a user's session controller. As root, with two real users made for the test: the launched
// program's own /proc/self/status, limits, environment and descriptors say it runs as the user
// with the user's groups only, the limits asked for, a clean environment, only the kept
// descriptors, and no way back to root. The flag parser is also run on random argv (--dry-run,
// the ASan+UBSan build), which needs no root.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, readFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAddon } from '../../src/util/native.js';
import { packageRoot } from '../../src/util/paths.js';
import { PROPERTY_SCALE, runs } from '../helpers/property.js';
import { createTestGroup, createTestUser, isRoot, notRootReason, removeTestGroup, removeTestUser, type TestUser } from '../helpers/users.js';

const native = join(packageRoot(), 'native');
const launcher = join(native, 'build', 'bin', 'rex-session');
if (!isRoot) console.warn(`test/native/session.test.ts: ${notRootReason}; only the flag parser is tested`);

/** What the launched program reports about itself (node, reading its own /proc files). */
interface Probe {
  status: Record<string, string>;
  env: string[];
  cwd: string;
  setuid0: string;
  setgid0: string;
  setgroups0: string;
}
const PROBE = `
const fs = require('fs');
const status = Object.fromEntries(fs.readFileSync('/proc/self/status', 'utf8').trim().split('\\n').map((l) => l.split(/:\\s*/)));
const env = fs.readFileSync('/proc/self/environ', 'utf8').split('\\0').filter(Boolean).sort();
const attempt = (f) => { try { f(); return 'succeeded'; } catch (e) { return e.code; } };
console.log(JSON.stringify({ status, env, cwd: process.cwd(),
  setuid0: attempt(() => process.setuid(0)), setgid0: attempt(() => process.setgid(0)), setgroups0: attempt(() => process.setgroups([0])) }));
`;

function session(args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(launcher, args, { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function probe(args: string[], env: NodeJS.ProcessEnv = {}): Probe {
  const r = session([...args, '--', process.execPath, '-e', PROBE], env);
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Probe;
}

describe.skipIf(!isRoot)('rex-session as root, for real users', () => {
  let a: TestUser;
  let b: TestUser;
  let homeless: TestUser;
  let staff: number;

  beforeAll(() => {
    // The probe is node itself: each user must be able to execute it.
    expect(process.execPath.startsWith('/root/'), `node at ${process.execPath} is not executable by other users`).toBe(false);
    staff = createTestGroup('rextest-sess-g').gid;
    a = createTestUser('rextest-sess-a', { groups: ['rextest-sess-g'] });
    b = createTestUser('rextest-sess-b');
    homeless = createTestUser('rextest-sess-c', { home: '/nonexistent/rextest-sess-c', createHome: false });
  });
  afterAll(() => {
    for (const u of ['rextest-sess-a', 'rextest-sess-b', 'rextest-sess-c']) removeTestUser(u);
    removeTestGroup('rextest-sess-g');
  });

  it("runs the program with the user's uid, gid and groups only, no capabilities, in the home directory", () => {
    for (const [u, groups] of [[a, [a.gid, staff].sort((x, y) => x - y)], [b, [b.gid]]] as const) {
      const p = probe(['--user', u.name]);
      expect(p.status.Uid).toBe(`${u.uid}\t${u.uid}\t${u.uid}\t${u.uid}`);
      expect(p.status.Gid).toBe(`${u.gid}\t${u.gid}\t${u.gid}\t${u.gid}`);
      expect(p.status.Groups!.trim().split(/\s+/).map(Number).sort((x, y) => x - y)).toEqual(groups);
      expect(u.groups).toEqual(groups);
      for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb']) expect(p.status[cap], cap).toBe('0000000000000000');
      expect(p.cwd).toBe(u.home);
    }
  });

  it('leaves no way back to root: setuid(0), setgid(0) and setgroups([0]) fail with EPERM', () => {
    const p = probe(['--user', a.name]);
    expect([p.setuid0, p.setgid0, p.setgroups0]).toEqual(['EPERM', 'EPERM', 'EPERM']);
  });

  it('applies the limits asked for, hard limits above the current ones included', () => {
    // The limits of cat, which inherits them unchanged (node would raise its own soft nofile limit).
    const r = session(['--user', a.name, '--rlimit', 'nofile=123:456', '--rlimit=core=0', '--rlimit', 'RLIMIT_STACK=8388608:unlimited', '--rlimit', 'nproc=4000', '--', '/bin/cat', '/proc/self/limits']);
    expect(r.status, r.stderr).toBe(0);
    const limits = Object.fromEntries(r.stdout.split('\n').slice(1).flatMap((l) => {
      const m = /^(.*?)\s{2,}(\S+)\s+(\S+)/.exec(l);
      return m ? [[m[1]!, [m[2], m[3]]]] : [];
    }));
    expect(limits['Max open files']).toEqual(['123', '456']);
    expect(limits['Max core file size']).toEqual(['0', '0']);
    expect(limits['Max stack size']).toEqual(['8388608', 'unlimited']);
    expect(limits['Max processes']).toEqual(['4000', '4000']);
  });

  it('gives a clean environment: the identity, a safe PATH and only the --env names', () => {
    const p = probe(['--user', b.name, '--env', 'REXTEST_KEEP', '--env', 'REXTEST_SET=given', '--env', 'REXTEST_ABSENT', '--env', 'PATH=/opt/x:/usr/bin'], {
      REXTEST_KEEP: 'kept', REXTEST_SECRET: 'must not pass', LD_PRELOAD: '/nonexistent.so',
    });
    expect(p.env).toEqual([`HOME=${b.home}`, `LOGNAME=${b.name}`, 'PATH=/opt/x:/usr/bin', 'REXTEST_KEEP=kept', 'REXTEST_SET=given', 'SHELL=/bin/sh', `USER=${b.name}`]);
    expect(probe(['--user', b.name]).env).toContain('PATH=/usr/local/bin:/usr/bin:/bin');
  });

  it('closes every descriptor above 2 but the kept ones, which stay usable', async () => {
    const addon = loadAddon();
    const [mine, theirs] = addon.socketPair(false);
    const extra = [addon.socketPair(false), addon.socketPair(false)];
    // The child gets fd 3 and 5 (to be closed) and 4 (kept), all without close-on-exec.
    const child = spawn(launcher, ['--user', a.name, '--keep-fd', '4', '--', '/bin/sh', '-c', 'ls /proc/$$/fd; echo through-4 >&4'], {
      stdio: ['ignore', 'pipe', 'pipe', extra[0]![1], theirs, extra[1]![1]],
    });
    closeSync(theirs);
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const s = new Socket({ fd: mine, readable: true, writable: false });
    let via = '';
    s.on('data', (d: Buffer) => (via += d.toString()));
    const ended = new Promise((r) => s.on('end', r));
    expect(await new Promise((r) => child.on('exit', r)), err).toBe(0);
    await ended;
    expect(out.trim().split(/\s+/).map(Number).sort((x, y) => x - y)).toEqual([0, 1, 2, 4]);
    expect(via).toBe('through-4\n');
    for (const [x, y] of extra) closeAll([x, y]);
    s.destroy();
  });

  it('starts in / when the home directory is missing', () => {
    expect(probe(['--user', homeless.name]).cwd).toBe('/');
  });

  it('refuses root without --allow-root, and runs it as root with it', () => {
    const r = session(['--user', 'root', '--', '/bin/true']);
    expect(r.status).toBe(125);
    expect(r.stderr).toBe("rex-session: user 'root': has uid 0: refusing to start a session as root without --allow-root\n");
    const p = probe(['--user', 'root', '--allow-root']);
    expect(p.status.Uid).toBe('0\t0\t0\t0');
    expect(p.env).toContain('PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  });

  it('names the user and the step when it fails: unknown user, a kept descriptor that is not open, a bad limit, the program', () => {
    expect(session(['--user', 'rextest-nobody-here', '--', '/bin/true'])).toEqual({ status: 125, stdout: '', stderr: "rex-session: user 'rextest-nobody-here': no such user in the password database\n" });
    const notOpen = session(['--user', a.name, '--keep-fd', '77', '--', '/bin/true']);
    expect([notOpen.status, notOpen.stderr]).toEqual([125, `rex-session: user '${a.name}': --keep-fd 77: Bad file descriptor\n`]);
    const tooHigh = session(['--user', a.name, '--rlimit', 'nofile=99999999:99999999', '--', '/bin/true']);
    expect([tooHigh.status, tooHigh.stderr]).toEqual([125, `rex-session: user '${a.name}': setrlimit nofile: Operation not permitted\n`]);
    expect(session(['--user', a.name, '--', '/nonexistent/prog'])).toEqual({ status: 127, stdout: '', stderr: `rex-session: user '${a.name}': execute /nonexistent/prog: No such file or directory\n` });
    expect(session(['--user', a.name, '--', '/etc/hostname']).status).toBe(126);
  });
});

function closeAll(fds: number[]): void {
  for (const fd of fds) closeSync(fd);
}

describe('the flag parser (--dry-run, ASan+UBSan build)', () => {
  const asan = join(native, 'build', 'asan', 'bin', 'rex-session');
  beforeAll(() => {
    execFileSync('make', ['-C', native, '--no-print-directory', 'build/asan/bin/rex-session'], { stdio: 'pipe' });
  }, 120_000);
  const run = (args: string[]): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } => {
    const r = spawnSync(asan, args, { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', REXTEST_X: 'x' } });
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  };

  // A well-formed command line for the user running the test, in any order and either option form.
  const me = execFileSync('id', ['-un'], { encoding: 'utf8' }).trim();
  const LIMITS = ['as', 'core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'];
  const value = fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 63n }), fc.constant('unlimited' as const));
  const rlimit = fc.tuple(fc.constantFrom(...LIMITS), value, value).map(([n, x, y]) => {
    const big = (v: bigint | 'unlimited'): bigint => (v === 'unlimited' ? 2n ** 64n : v);
    const [soft, hard] = big(x) <= big(y) ? [x, y] : [y, x];
    return { name: n, soft: String(soft), hard: String(hard) };
  });
  const envName = fc.stringMatching(/^REXTEST_[A-Z0-9_]{1,8}$/);
  const valid = fc.record({
    rlimits: fc.uniqueArray(rlimit, { selector: (r) => r.name, maxLength: 5 }),
    env: fc.uniqueArray(fc.tuple(envName, fc.option(fc.string({ unit: 'grapheme-ascii', maxLength: 10 }).filter((s) => !s.includes('\0')))), { selector: (e) => e[0], maxLength: 4 }),
    keep: fc.array(fc.integer({ min: 0, max: 100000 }), { maxLength: 4 }),
    args: fc.array(fc.string({ maxLength: 8 }).filter((s) => !s.includes('\0')), { maxLength: 3 }),
    joined: fc.array(fc.boolean(), { minLength: 16, maxLength: 16 }),
    order: fc.array(fc.nat(), { minLength: 16, maxLength: 16 }),
  });

  it('accepts every well-formed command line and plans exactly what it says', () => {
    fc.assert(
      fc.property(valid, (v) => {
        let j = 0;
        const opt = (name: string, val: string): string[] => (v.joined[j++ % 16] ? [`${name}=${val}`] : [name, val]);
        const groups: string[][] = [
          opt('--user', me),
          ...v.rlimits.map((r) => opt('--rlimit', `${r.name}=${r.soft}:${r.hard}`)),
          ...v.env.map(([n, val]) => opt('--env', val === null ? n : `${n}=${val}`)),
          ...v.keep.map((k) => opt('--keep-fd', String(k))),
          ['--dry-run'],
        ];
        const shuffled = groups.map((g, i) => [v.order[i % 16]!, i, g] as const).sort((x, y) => x[0] - y[0] || x[1] - y[1]).map((x) => x[2]);
        const r = run([...shuffled.flat(), ...(me === 'root' ? ['--allow-root'] : []), '--', '/bin/prog', ...v.args]);
        expect(r.signal, r.stderr).toBeNull();
        expect(r.status, r.stderr).toBe(0);
        const lines = r.stdout.replace(/\n$/, '').split('\n');
        expect(lines.filter((l) => l.startsWith('rlimit ')).sort()).toEqual(v.rlimits.map((x) => `rlimit ${x.name} ${x.soft} ${x.hard}`).sort());
        expect(lines.filter((l) => l.startsWith('keep-fd ')).map((l) => Number(l.slice(8))).sort((x, y) => x - y)).toEqual([...v.keep].sort((x, y) => x - y));
        const env = lines.filter((l) => l.startsWith('env REXTEST_')).map((l) => l.slice(4)).sort();
        expect(env).toEqual(v.env.filter(([n, val]) => val !== null || n === 'REXTEST_X').map(([n, val]) => `${n}=${val ?? 'x'}`).sort());
        expect(lines.filter((l) => /^(program|arg) /.test(l))).toEqual(['program /bin/prog', ...v.args.map((x) => `arg ${x}`)]);
      }),
      { numRuns: runs(150) },
    );
    // Each case runs the ASan build once: the time grows with the long mode's count.
  }, 30_000 * PROPERTY_SCALE);

  it('on random argv it either plans (status 0) or refuses with one message and the usage (status 125); it never crashes', () => {
    const token = fc.oneof(
      fc.constantFrom('--user', '--rlimit', '--env', '--keep-fd', '--allow-root', '--dry-run', '--', '--user=', '--rlimit=', '--env=', '--keep-fd=', '-', '--help=', me, 'root', '/bin/x'),
      fc.constantFrom('nofile=1:2', 'nofile=2:1', 'cpu=unlimited', 'stack=1:unlimited', 'nofile=-1', 'nofile=18446744073709551616', 'bogus=1', 'HOME=/x', 'PATH', 'A=B', '1A', '-3', '3', '2147483648', '+4'),
      fc.string({ maxLength: 12 }).filter((s) => !s.includes('\0')),
    );
    fc.assert(
      fc.property(fc.array(token, { maxLength: 12 }), (argv) => {
        const r = run(['--dry-run', ...argv]);
        expect(r.signal, `${JSON.stringify(argv)}: ${r.stderr}`).toBeNull();
        expect([0, 125], `${JSON.stringify(argv)}: ${r.stderr}`).toContain(r.status);
        if (r.status === 125) {
          expect(r.stderr).toMatch(/^rex-session: [^\n]+\n/);
          expect(r.stderr).not.toMatch(/AddressSanitizer|runtime error/);
          expect(r.stdout).toBe('');
        } else {
          expect(r.stderr).toBe('');
          expect(r.stdout).toMatch(/^(user \S+ uid \d+ gid \d+|usage: rex-session )/);
        }
      }),
      { numRuns: runs(300) },
    );
  }, 30_000 * PROPERTY_SCALE);
});
