// The daemon controls on real rexd processes (issue 16): SIGHUP reloads rex.rc
// without a restart (a program added on beta is called from alpha at once,
// while the sessions opened before the HUP stay up and work), a rex.rc with
// errors is refused whole with its file:line in the log, a removed program is
// no longer offered, and the controllers a reload retires finish their calls
// before they stop; `rexd --status` and `rexd --stop` on the running rexd of a
// configuration, and when none runs.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { readPid } from '../../src/daemon/paths.js';
import type { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { CallManager, loadProgram } from '../../src/calls/index.js';
import { buildLibrary, memoryLog, tempDir, writeXml } from '../calls/helpers.js';
import { startCluster } from '../helpers/cluster.js';
import { processAlive } from '../../src/util/proc.js';

const run = promisify(execFile);

let dir: string;
let lib: string;
let xml: string;
let cluster: LocalCluster;
let stop: () => Promise<void>;
let alpha: RexClient | undefined;
let beta: RexClient | undefined;
let baseRc: string;

beforeAll(async () => {
  dir = tempDir('rex-reload-');
  lib = buildLibrary(dir);
  xml = writeXml(dir, lib);
  ({ cluster, stop } = await startCluster(2));
  await cluster.waitAllReachable();
  baseRc = readFileSync(cluster.host('beta').rcFile, 'utf8');
}, 120_000);

afterAll(async () => {
  alpha?.close();
  beta?.close();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

/** A command's exit status and output, whether it failed or not. */
async function cmd(bin: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [distBin(bin), ...args], { encoding: 'utf8', timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

/** beta's rexd as its pidfile names it, as `kill -HUP $(cat rexd.pid)` would find it. */
function betaPid(): number {
  const pid = readPid(join(dirname(cluster.host('beta').socket), 'rexd.pid'));
  if (pid === undefined) throw new Error('beta has no pidfile');
  return pid;
}

/** Lines of beta's log whose `event` is one of `names`, in the order logged. */
function events(...names: string[]): Record<string, unknown>[] {
  return readFileSync(cluster.host('beta').logFile, 'utf8')
    .split('\n')
    .filter((l) => names.some((n) => l.includes(`"event":"${n}"`)))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Sends SIGHUP to beta and resolves with the log line of its outcome (reloaded or refused). */
async function hup(): Promise<Record<string, unknown>> {
  const seen = events('reloaded', 'reload-refused').length;
  process.kill(betaPid(), 'SIGHUP');
  return vi.waitFor(
    () => {
      const all = events('reloaded', 'reload-refused');
      if (all.length <= seen) throw new Error(`beta logged no reload within 30 s:\n${readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').slice(-10).join('\n')}`);
      return all.at(-1)!;
    },
    { timeout: 30_000, interval: 50 },
  );
}

const neg32 = (c: RexClient, x: number) => c.call('beta.calltest.neg32', Uint8Array.from(Buffer.from(Int32Array.of(x).buffer)));
const rexCall = (...args: string[]) => cmd('rex', ['call', ...args, '--socket', cluster.host('alpha').socket]);

describe('rexd reload (SIGHUP)', () => {
  it('offers a program added to rex.rc without a restart, while sessions opened before stay up', async () => {
    alpha = await cluster.client('alpha');
    beta = await cluster.client('beta');
    const pid = betaPid();
    await expect(neg32(alpha, 1)).rejects.toThrow(/calltest/);
    const tmp = join(dir, 'beta-tmp');
    mkdirSync(tmp);
    writeFileSync(cluster.host('beta').rcFile, `${baseRc}programs : calltest=${lib}:${xml}\nrex-temp-directory : ${tmp}\n`);
    const done = await hup();
    expect(done.event).toBe('reloaded');
    expect(done.applied).toEqual(['programs']);
    expect(done.added).toEqual(['calltest']);
    // A key that cannot change under a running daemon is named, and the rest still applied.
    expect(done.needsRestart).toEqual(['tempDirectory']);
    expect(events('reload-needs-restart').map((e) => e.key)).toEqual(['tempDirectory']);

    // `rex call` from alpha reaches the new program on beta: same rexd, no restart.
    const r = await rexCall('beta.calltest.neg32', '-5');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('5\n');
    expect(betaPid()).toBe(pid);
    // The client sessions opened before the HUP are the same connections and still work, as does the peer link.
    const out = await neg32(alpha, 7);
    expect(out.host).toBe('beta');
    expect(Buffer.from(out.output).readInt32LE(0)).toBe(-7);
    expect((await beta.ping()).host).toBe('beta');
    expect((await beta.hosts()).find((h) => h.name === 'alpha')?.reachable).toBe(true);
  }, 90_000);

  it('refuses a rex.rc with errors whole: file:line in the log, the old configuration kept', async () => {
    // Both at once: the program removed (valid) and an unknown key (an error) on the last line.
    const rc = `${baseRc}no-such-key : 1\n`;
    writeFileSync(cluster.host('beta').rcFile, rc);
    const line = rc.split('\n').length - 1;
    const done = await hup();
    expect(done.event).toBe('reload-refused');
    expect((done.diagnostics as string[]).join('\n')).toContain(`${cluster.host('beta').rcFile}:${line}: error: key "no-such-key"`);
    // Never half applied: the program is still offered.
    expect((await rexCall('beta.calltest.neg32', '3')).stdout).toBe('-3\n');
    expect(alpha!.conn.isOpen && beta!.conn.isOpen).toBe(true);
  }, 60_000);

  it('no longer offers a program removed from rex.rc', async () => {
    writeFileSync(cluster.host('beta').rcFile, baseRc);
    const done = await hup();
    expect(done.event).toBe('reloaded');
    expect(done.removed).toEqual(['calltest']);
    const r = await rexCall('beta.calltest.neg32', '3');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/no program 'calltest'/);
    expect((await beta!.ping()).host).toBe('beta');
  }, 60_000);
});

describe('controllers retired by a reload', () => {
  it('finish the call they run, then stop; the next call starts a controller of the reloaded program', async () => {
    const log = memoryLog();
    const { spec } = await loadProgram({ name: 'calltest', object: lib, xml });
    const manager = new CallManager({ programs: (n) => (n === 'calltest' ? spec : undefined), log });
    const pids = () => log.entries.filter((e) => e.obj.event === 'controller-start').map((e) => Number(e.obj.pid));
    const int = (x: number) => Uint8Array.from(Buffer.from(Int32Array.of(x).buffer));
    try {
      const running = manager.call('calltest.nap', int(1500));
      await vi.waitFor(() => expect(pids().length).toBeGreaterThan(0), { timeout: 10_000, interval: 20 });
      const [first] = pids();
      expect(manager.retire()).toEqual(['calltest']);
      expect(manager.stats()).toEqual({});
      // The retired controller is still at work: its call ends normally, then the controller is stopped.
      expect(processAlive(first!)).toBe(true);
      expect(Buffer.from(await running).readInt32LE(0)).toBe(1500);
      await vi.waitFor(() => expect(processAlive(first!)).toBe(false), { timeout: 10_000, interval: 20 });
      // A new call reads the program again and runs on a new controller.
      expect(Buffer.from(await manager.call('calltest.neg32', int(4))).readInt32LE(0)).toBe(-4);
      expect(pids()).toHaveLength(2);
      expect(pids()[1]).not.toBe(first);
    } finally {
      await manager.close();
    }
  }, 60_000);
});

describe('rexd --status and --stop', () => {
  it('reports a running rexd, stops it, then reports it stopped (LSB exit statuses)', async () => {
    const rc = cluster.host('beta').rcFile;
    const pid = betaPid();
    const up = await cmd('rexd', ['--status', '--config', rc]);
    expect(up.code).toBe(0);
    expect(up.stdout).toContain(`host beta is running (pid ${pid})`);
    expect(up.stdout).toContain(`socket: ${cluster.host('beta').socket}`);
    expect(up.stdout).toContain(`listen: ${cluster.host('beta').address}:${cluster.host('beta').port}`);
    expect(up.stdout).toMatch(/peers: alpha \((un)?reachable\)/);
    const upJson = await cmd('rexd', ['--status', '--json', '--config', rc]);
    expect(upJson.code).toBe(0);
    expect(JSON.parse(upJson.stdout)).toMatchObject({
      host: 'beta', running: true, pid, socket: cluster.host('beta').socket, listen: `${cluster.host('beta').address}:${cluster.host('beta').port}`,
      peers: [{ name: 'alpha', reachable: expect.any(Boolean) }], jobs: expect.any(Number), load: expect.any(Number),
    });

    const stopped = await cmd('rexd', ['--stop', '--config', rc]);
    expect(stopped).toMatchObject({ code: 0, stdout: `rexd: host beta stopped (pid ${pid})\n` });
    expect(processAlive(pid)).toBe(false);

    const down = await cmd('rexd', ['--status', '--config', rc]);
    expect(down.code).toBe(3);
    expect(down.stdout).toContain('host beta is not running');
    const downJson = await cmd('rexd', ['--status', '--json', '--config', rc]);
    expect(downJson.code).toBe(3);
    expect(JSON.parse(downJson.stdout)).toMatchObject({ host: 'beta', running: false });

    const again = await cmd('rexd', ['--stop', '--config', rc]);
    expect(again.code).toBe(7);
    expect(again.stdout).toContain('rexd: not running');
  }, 60_000);
});
