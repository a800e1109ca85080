import { execFile, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { parseRexdArgs } from '../../src/cli/daemon-config.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';

const run = promisify(execFile);
const tmp = mkdtempSync(join(tmpdir(), 'rex-log-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** `rex log ARGS` in a directory and HOME with no rex.rc, so only what the test names decides. */
async function rexLog(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [distBin('rex'), 'log', ...args], { cwd: tmp, env: { PATH: process.env.PATH, HOME: tmp, USER: process.env.USER ?? 'root', ...env }, encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** The hosts that logged the rows `rex log --json` printed. */
function loggedBy(stdout: string): string[] {
  return [...new Set((JSON.parse(stdout) as { host: string }[]).map((r) => r.host))];
}

describe('rex log reads the log of the daemon $REX_SOCKET names', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2));
    await cluster.waitAllReachable();
    // Each host polls the other's LOAD, so both logs fill; wait until both have rows on disk.
    for (const h of ['alpha', 'beta']) {
      await vi.waitFor(
        async () => {
          const r = await rexLog(['--json', '-n', '1', '--database', join(cluster.host(h).socket, '../../rex-log.sqlite')]);
          if (!(r.code === 0 && r.stdout.includes(`"host": "${h}"`))) throw new Error(`${h}'s log has no row yet`);
        },
        { timeout: 20_000, interval: 100 },
      );
    }
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  it('$REX_SOCKET picks that daemon, --socket another, --config and --database win over both', async () => {
    const alpha = cluster.host('alpha');
    const beta = cluster.host('beta');
    const a = await rexLog(['--json', '-n', '5'], { REX_SOCKET: alpha.socket });
    expect(a.stderr).toBe('');
    expect(loggedBy(a.stdout)).toEqual(['alpha']);
    expect(loggedBy((await rexLog(['--json', '-n', '5'], { REX_SOCKET: beta.socket })).stdout)).toEqual(['beta']);
    expect(loggedBy((await rexLog(['--json', '-n', '5', '--socket', beta.socket], { REX_SOCKET: alpha.socket })).stdout)).toEqual(['beta']);
    expect(loggedBy((await rexLog(['--json', '-n', '5', '--config', beta.rcFile], { REX_SOCKET: alpha.socket })).stdout)).toEqual(['beta']);
    const db = join(tmp, 'copy-of-nothing.sqlite');
    const d = await rexLog(['--json', '--database', db], { REX_SOCKET: alpha.socket });
    expect(d.code).toBe(1); // the file named is the one read, even with a daemon at hand
    expect(d.stderr).toContain(db);
  });

  it('the text form shows the chosen daemon\'s rows', async () => {
    const r = await rexLog(['-n', '3', '--host', 'beta'], { REX_SOCKET: cluster.host('alpha').socket });
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME\s+HOST\s+KIND/);
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.slice(1).every((l) => /^\S+ \S+\s+alpha\s+/.test(l))).toBe(true);
  });
});

describe('rex log when $REX_SOCKET names no running rexd', () => {
  it('no pidfile beside the socket: one line naming where it looked, exit 1', async () => {
    const sock = join(tmp, 'none', 'run', 'rexd.sock');
    const r = await rexLog([], { REX_SOCKET: sock });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`no rexd pidfile beside the socket ${sock} (looked for ${join(tmp, 'none', 'run', 'rexd.pid')})`);
    expect(r.stderr).toMatch(/hint: .*--config.*--database/);
  });

  it('a pidfile naming a process that is not rexd, or one that is gone, is refused with its pid', async () => {
    const run1 = join(tmp, 'other', 'run');
    mkdirSync(run1, { recursive: true });
    const sleeper = spawn('sleep', ['30'], { stdio: 'ignore' });
    try {
      writeFileSync(join(run1, 'rexd.pid'), `${sleeper.pid}\n`);
      const r = await rexLog([], { REX_SOCKET: join(run1, 'rexd.sock') });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`pid ${sleeper.pid} in ${join(run1, 'rexd.pid')} is not rexd (its command line: sleep 30)`);
    } finally {
      sleeper.kill();
    }
    await new Promise((r) => sleeper.once('exit', r));
    const gone = await rexLog([], { REX_SOCKET: join(run1, 'rexd.sock') });
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`rexd pid ${sleeper.pid} (from ${join(run1, 'rexd.pid')}) is not running (a stale pidfile)`);
  });
});

describe('parseRexdArgs: rexd\'s --config and --set from its command line', () => {
  it('reads every form commander accepts', () => {
    expect(parseRexdArgs(['--foreground', '--config', '/a/rex.rc'])).toEqual({ config: '/a/rex.rc', sets: {} });
    expect(parseRexdArgs(['--config=/b.rc', '-s', 'log-level=debug', '--set=state-directory=/s=x'])).toEqual({ config: '/b.rc', sets: { 'log-level': 'debug', 'state-directory': '/s=x' } });
    expect(parseRexdArgs(['-fc', 'rel.rc', '-sport=1'])).toEqual({ config: 'rel.rc', sets: { port: '1' } });
    expect(parseRexdArgs(['-cX.rc', '-c', 'Y.rc'])).toEqual({ config: 'Y.rc', sets: {} }); // the last one wins, as in commander
  });

  it('ignores what it cannot use: a missing value, a --set without =, anything after --', () => {
    expect(parseRexdArgs(['--config'])).toEqual({ sets: {} });
    expect(parseRexdArgs(['--set', 'novalue', '-s'])).toEqual({ sets: {} });
    expect(parseRexdArgs(['--', '--config', 'x'])).toEqual({ sets: {} });
    expect(parseRexdArgs(['--configure', 'x', '--settle=y'])).toEqual({ sets: {} });
  });

  it('round-trips any config path and --set list written in any form (property)', () => {
    const value = fc.string({ minLength: 1, maxLength: 20 }).filter((s) => !s.startsWith('-') && !s.includes('\0'));
    const key = fc.stringMatching(/^[a-z][a-z-]{0,15}$/);
    fc.assert(
      fc.property(fc.option(value, { nil: undefined }), fc.uniqueArray(fc.tuple(key, value), { selector: ([k]) => k, maxLength: 5 }), fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 6, maxLength: 6 }), (config, sets, forms) => {
        const args: string[] = ['--foreground'];
        if (config !== undefined) args.push(...[['--config', config], [`--config=${config}`], [`-c${config}`]][forms[0]!]!);
        sets.forEach(([k, v], i) => args.push(...[['--set', `${k}=${v}`], [`--set=${k}=${v}`], ['-fs', `${k}=${v}`]][forms[(i % 5) + 1]!]!));
        const want = Object.fromEntries(sets.map(([k, v]) => [k.trim(), v.trim()]));
        expect(parseRexdArgs(args)).toEqual({ ...(config !== undefined ? { config } : {}), sets: want });
      }),
    );
  });

  it('never throws on arbitrary argument lists (fuzz)', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 12 }), { maxLength: 12 }), (args) => {
        const r = parseRexdArgs(args);
        expect(typeof r.sets).toBe('object');
      }),
    );
  });
});
