/**
 * Issue 12, item 3: the executable cache was a local privilege escalation.
 * It lived in a predictable /tmp/.rex_HOST_USER that rexd used even when
 * another user had made it, and a file found under a sha256 name was run
 * without a check. Now the cache (and the run and image directories) is in
 * rexd's private state directory, checked at start, and every hit is opened
 * with O_NOFOLLOW and verified (docs/EXEC.md, "Where files live" and "The
 * cache"). Each planted entry below is also put where the old code looked
 * (<rex-temp-directory>/cache), so that each test fails on it.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { loadConfig, parseRc } from '../../src/config/index.js';
import { localName } from '../../src/keys/identity.js';
import { KeyStore } from '../../src/keys/store.js';
import { Incoming } from '../../src/exec/executor/transfer.js';
import { queryLog } from '../../src/log/txlog.js';
import { spawn } from '../../src/runtime/index.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { ownTempDirectories } from '../exec/transfer-helper.js';

const run = promisify(execFile);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const ROOT = process.getuid?.() === 0;

/** A second Unix user (created when root): the "other local user" of the attacks. */
function otherUser(): { uid: number; gid: number } | undefined {
  if (!ROOT) return undefined;
  const name = 'rex-cache-test';
  if (spawnSync('id', ['-u', name]).status !== 0) {
    const r = spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name], { encoding: 'utf8' });
    if (r.status !== 0 && !/already exists/.test(r.stderr)) throw new Error(`useradd ${name}: ${r.stderr}`);
  }
  return { uid: Number(execFileSync('id', ['-u', name], { encoding: 'utf8' })), gid: Number(execFileSync('id', ['-g', name], { encoding: 'utf8' })) };
}
const OTHER = otherUser();
if (!OTHER) console.log('test/security/cache.test.ts: not root, so no second Unix user: the tests needing one are skipped');

describe('the default temp directory and the cache are private, not in /tmp', () => {
  it('rex-temp-directory defaults to <state-directory>/tmp', () => {
    const { config } = parseRc('host-name: alpha\n', 'x.rc', { user: 'tester', home: '/home/tester', systemHostName: 'alpha' });
    expect(config.tempDirectory).toBe('/home/tester/.rex/tmp');
    expect(config.tempDirectory.startsWith('/tmp/')).toBe(false);
  });
});

describe('a planted cache entry is never executed', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  const hidden = mkdtempSync(join(tmpdir(), 'rex-sec-cache-origin-'));
  const marker = join(hidden, 'PLANTED-RAN');
  let newCache: string;
  let oldCache: string;
  let n = 0;

  beforeAll(async () => {
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: [temps.rc] }).finally(() => delete process.env.REX_EXEC_TEST_HIDE));
    await cluster.waitAllReachable();
    newCache = join(cluster.host('beta').stateDir, 'cache');
    // Where the old code kept it: <rex-temp-directory>/cache.
    oldCache = join((await loadConfig({ file: cluster.host('beta').rcFile })).config.tempDirectory, 'cache');
    mkdirSync(oldCache, { recursive: true });
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    temps.remove();
    rmSync(hidden, { recursive: true, force: true });
  });

  /** A program only the origin has (a script: it also runs through its verified descriptor), and its hash. */
  const realProgram = (): { path: string; hex: string; text: string } => {
    const path = join(hidden, `real-${++n}`);
    const text = `#!/bin/sh\necho "the real program ${n} with $# args"\n`;
    writeFileSync(path, text, { mode: 0o755 });
    return { path, hex: sha(text), text };
  };
  const planted = `#!/bin/sh\necho PLANTED\ntouch ${marker}\n`;
  /** Puts a file under `hex` in the cache, new place and old. */
  const plant = (hex: string, make: (p: string) => void): void => {
    for (const d of [newCache, oldCache]) {
      mkdirSync(d, { recursive: true, mode: 0o700 });
      make(join(d, hex));
    }
  };
  const rexRun = (...args: string[]) =>
    run(process.execPath, [distBin('rex'), 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', ...args]).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  const logLines = (hex: string): { msg: string; why?: string; sha256?: string }[] =>
    readFileSync(cluster.host('beta').logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes(hex))
      .map((l) => JSON.parse(l) as { msg: string; why?: string; sha256?: string });
  const refusals = (hex: string) => logLines(hex).filter((l) => l.msg.startsWith('EXEC: cache entry failed verification'));
  const transfers = (hex: string) => logLines(hex).filter((l) => l.msg === 'EXEC: program transferred from the origin');
  const txRows = (hex: string) => queryLog(join(cluster.host('beta').stateDir, 'rex-log.sqlite'), { outcome: 'denied', kind: 'transaction' }).filter((r) => r.target === join(newCache, hex));

  it('a file with other content under the sha256 name is removed and logged, and the real program is fetched and runs', async () => {
    const real = realProgram();
    plant(real.hex, (p) => writeFileSync(p, planted, { mode: 0o700 }));
    const r = await rexRun(real.path, 'x');
    expect(r).toEqual({ code: 0, stdout: `the real program ${n} with 1 args\n`, stderr: '' });
    expect(existsSync(marker)).toBe(false);
    expect(refusals(real.hex)).toEqual([expect.objectContaining({ sha256: real.hex, why: `its content has sha256 ${sha(planted)}` })]);
    await expect.poll(() => txRows(real.hex)).toEqual([expect.objectContaining({ outcome: 'denied', message_type: 'EXEC', reason: expect.stringMatching(/cache entry failed verification \(its content has sha256 [0-9a-f]{64}\); removed, fetched again/) })]);
    expect(transfers(real.hex)).toHaveLength(1);
    expect(readFileSync(join(newCache, real.hex), 'utf8')).toBe(real.text);
    // The fetched copy is recorded at insertion: the next run uses it as it is, nothing refused, nothing sent.
    expect(await rexRun(real.path)).toEqual({ code: 0, stdout: `the real program ${n} with 0 args\n`, stderr: '' });
    expect(refusals(real.hex)).toHaveLength(1);
    expect(transfers(real.hex)).toHaveLength(1);
    // With a terminal the pty helper starts it, through the same verified descriptor.
    const child = spawn(real.path, ['a', 'b'], { socket: cluster.host('alpha').socket, host: 'beta', pty: true });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise((r) => child.on('close', r));
    expect({ code, out }).toEqual({ code: 0, out: `the real program ${n} with 2 args\r\n` });
    expect(transfers(real.hex)).toHaveLength(1);
    // Each verified descriptor was held while its program ran, and closed when it ended.
    const started = readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').find((l) => l.includes('"msg":"rexd started"'));
    const pid = (JSON.parse(started!) as { pid: number }).pid;
    expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain('rexd');
    const cacheFds = () => readdirSync(`/proc/${pid}/fd`).filter((fd) => {
      try {
        return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith(newCache);
      } catch {
        return false; // closed meanwhile
      }
    });
    await vi.waitFor(() => expect(cacheFds()).toEqual([]));
  });

  it('a symbolic link under the sha256 name is not followed: it is removed and logged, and the real program is fetched', async () => {
    const real = realProgram();
    const target = join(hidden, `evil-${n}`);
    writeFileSync(target, planted, { mode: 0o755 });
    plant(real.hex, (p) => symlinkSync(target, p));
    const r = await rexRun(real.path);
    expect(r).toEqual({ code: 0, stdout: `the real program ${n} with 0 args\n`, stderr: '' });
    expect(existsSync(marker)).toBe(false);
    expect(refusals(real.hex)).toEqual([expect.objectContaining({ why: 'it is a symbolic link' })]);
    await expect.poll(() => txRows(real.hex)).toHaveLength(1); // the log writes in batches, 100 ms apart
    expect(transfers(real.hex)).toHaveLength(1);
    expect(lstatSync(join(newCache, real.hex)).isFile()).toBe(true); // the link was replaced by the fetched copy
    expect(readFileSync(target, 'utf8')).toBe(planted); // and what it pointed at was left alone
  });

  it('a copy of the right program whose size and times differ from the insertion record is re-hashed, accepted, and recorded anew', async () => {
    const real = realProgram();
    expect((await rexRun(real.path)).stdout).toBe(`the real program ${n} with 0 args\n`);
    expect(transfers(real.hex)).toHaveLength(1);
    // Same content, another inode (as a restore from backup would leave it): the record does not match, the hash does.
    rmSync(join(newCache, real.hex));
    writeFileSync(join(newCache, real.hex), real.text, { mode: 0o500 });
    expect((await rexRun(real.path)).stdout).toBe(`the real program ${n} with 0 args\n`);
    expect(logLines(real.hex).filter((l) => l.msg.startsWith('EXEC: cache entry had no matching insertion record'))).toHaveLength(1);
    expect(refusals(real.hex)).toEqual([]);
    expect(transfers(real.hex)).toHaveLength(1);
  });

  it.skipIf(!OTHER)('a file with the right content but put there by another user is removed and logged, and the program is fetched again', async () => {
    const real = realProgram();
    plant(real.hex, (p) => {
      writeFileSync(p, real.text, { mode: 0o755 });
      chownSync(p, OTHER!.uid, OTHER!.gid);
    });
    const r = await rexRun(real.path);
    expect(r).toEqual({ code: 0, stdout: `the real program ${n} with 0 args\n`, stderr: '' });
    expect(refusals(real.hex)).toEqual([expect.objectContaining({ why: `it belongs to uid ${OTHER!.uid}, not to rexd's uid ${process.getuid!()}` })]);
    await expect.poll(() => txRows(real.hex)).toHaveLength(1); // the log writes in batches, 100 ms apart
    expect(transfers(real.hex)).toHaveLength(1);
    expect(lstatSync(join(newCache, real.hex)).uid).toBe(process.getuid!());
  });
});

describe('a copy written by rex-auto-transfer: command', () => {
  const root = mkdtempSync(join(tmpdir(), 'rex-sec-cache-copied-'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('a symbolic link put at the destination is not followed: the copy is refused and nothing is left', () => {
    const body = 'the program\n';
    const inc = new Incoming(root, sha(body));
    const target = join(root, 'target');
    writeFileSync(target, body);
    rmSync(inc.path);
    symlinkSync(target, inc.path);
    expect(() => inc.finishCopied()).toThrow(/ELOOP/);
    expect(readdirSync(join(root, 'cache'))).toEqual([]);
  });

  it.skipIf(!OTHER)('a copy that another user owns is copied into a file of rexd own before it is published', () => {
    const body = `#!/bin/sh\necho copied ${Date.now()}\n`;
    const inc = new Incoming(root, sha(body));
    rmSync(inc.path);
    writeFileSync(inc.path, body, { mode: 0o666 });
    chownSync(inc.path, OTHER!.uid, OTHER!.gid);
    const final = inc.finishCopied();
    const st = lstatSync(final);
    expect({ uid: st.uid, mode: st.mode & 0o7777, body: readFileSync(final, 'utf8') }).toEqual({ uid: process.getuid!(), mode: 0o500, body });
    expect(readdirSync(join(root, 'cache')).sort()).toEqual([sha(body), `${sha(body)}.stat`]);
  });
});

describe('rexd refuses to start on a cache or temp directory others could write', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'rex-sec-cache-start-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  let seq = 0;
  /** A rex.rc and key for a single host whose rexd would start (the old code starts on all of these). */
  async function host(extra: string[] = []): Promise<{ rc: string; state: string; dir: string }> {
    const dir = join(tmp, `h${++seq}`);
    mkdirSync(dir, { recursive: true });
    const port = await new Promise<number>((r) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => r(p));
      });
    });
    const state = join(dir, 'state');
    const rc = join(dir, 'rex.rc');
    writeFileSync(rc, [`host-name : cache${seq}`, `servers : cache${seq}@127.0.0.1:${port}`, `state-directory : ${state}`, ...extra, ''].join('\n'));
    await new KeyStore(state).create(localName(`cache${seq}`));
    return { rc, state, dir };
  }
  /** Runs rexd in the foreground; it must exit by itself (the old code kept serving and was killed by the timeout). */
  async function refused(rc: string): Promise<{ code: number | null; stderr: string }> {
    return run(process.execPath, [distBin('rexd'), '--foreground', '--config', rc], { timeout: 15_000 }).then(
      (r) => ({ code: 0, stderr: r.stderr }),
      (e: { code: number | null; killed?: boolean; stderr: string }) => ({ code: e.killed ? null : e.code, stderr: e.stderr }),
    );
  }

  it('a world-writable cache directory: refused, naming it and the fix', async () => {
    const h = await host();
    const cache = join(h.state, 'cache');
    mkdirSync(cache, { recursive: true });
    chmodSync(cache, 0o777);
    const r = await refused(h.rc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`program cache ${cache} is writable by its group and others (mode 0777); rexd will not execute or map files from it`);
    expect(r.stderr).toContain(`chmod 700 ${cache}`);
  });

  it('a symbolic link as the cache directory is not followed: refused', async () => {
    const h = await host();
    const elsewhere = join(h.dir, 'elsewhere');
    mkdirSync(elsewhere, { mode: 0o700 });
    mkdirSync(h.state, { recursive: true, mode: 0o700 });
    symlinkSync(elsewhere, join(h.state, 'cache'));
    const r = await refused(h.rc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`program cache ${join(h.state, 'cache')} is a symbolic link (rexd does not follow links there)`);
  });

  it.skipIf(!OTHER)('a cache directory owned by another user: refused, naming it and the fix', async () => {
    const h = await host();
    const cache = join(h.state, 'cache');
    mkdirSync(cache, { recursive: true, mode: 0o700 });
    chownSync(cache, OTHER!.uid, OTHER!.gid);
    const r = await refused(h.rc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`program cache ${cache} belongs to uid ${OTHER!.uid}, not to rexd's uid ${process.getuid!()}`);
    expect(r.stderr).toContain(`rm -rf ${cache}`);
  });

  it.skipIf(!OTHER)('a rex-temp-directory made beforehand by another user, world-writable (the old /tmp/.rex_HOST_USER attack): refused', async () => {
    const temp = join(tmp, `.rex_cache${seq + 1}_victim`);
    mkdirSync(temp, { mode: 0o777 });
    chmodSync(temp, 0o777);
    chownSync(temp, OTHER!.uid, OTHER!.gid);
    const h = await host([`rex-temp-directory : ${temp}`]);
    const r = await refused(h.rc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`rex-temp-directory ${temp} belongs to uid ${OTHER!.uid}`);
  });

  it('a configured rex-temp-directory inside a directory others can write (not sticky): refused, naming that parent', async () => {
    const open = join(tmp, `open${seq}`);
    mkdirSync(open);
    chmodSync(open, 0o777);
    const h = await host([`rex-temp-directory : ${open}/rex`]);
    const r = await refused(h.rc);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`rex-temp-directory ${open}/rex is inside ${open}, which group or others can write (mode 0777) and is not sticky`);
  });

  it('a private state directory and temp directory start fine, with the cache 0700 in the state directory', async () => {
    const h = await host();
    const child = execFile(process.execPath, [distBin('rexd'), '--foreground', '--config', h.rc]);
    const exited = new Promise((r) => child.once('exit', r));
    try {
      await expect.poll(() => existsSync(join(h.state, 'run', 'rexd.sock')), { timeout: 15_000 }).toBe(true);
      for (const d of ['cache', 'exec-run', 'exec-images', 'tmp']) {
        const st = lstatSync(join(h.state, d));
        expect(st.isDirectory(), d).toBe(true);
        expect(st.mode & 0o777, d).toBe(0o700);
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});
