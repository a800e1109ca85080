// The executor's process start (src/exec/executor/child.ts over the addon's
// spawnProcess, posix_spawn): what a started program finds (descriptors,
// session, signals, cwd, environment), what its parent learns (exit code or
// signal, start errors with their code), and the argument checks.
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { startChild, type Child } from '../../src/exec/executor/child.js';
import { loadAddon } from '../../src/util/native.js';

const started: Child[] = [];
afterAll(() => {
  for (const c of started) c.kill('SIGKILL');
});

function start(file: string, args: string[], o: Partial<Parameters<typeof startChild>[2]> = {}): Child {
  const { child, native } = startChild(file, args, { cwd: '/', env: { PATH: '/usr/bin:/bin' }, stdio: ['pipe', 'pipe', 'pipe'], ...o });
  expect(native).toBe(true); // the addon is built by npm install: this is the path rexd takes
  started.push(child);
  return child;
}

/** Everything the child writes on fd 1 and how it ended. */
function outcome(c: Child): Promise<{ out: string; code: number | null; signal: NodeJS.Signals | null }> {
  let out = '';
  (c.stdio[1] as Socket).setEncoding('utf8').on('data', (d: string) => (out += d));
  const ended = new Promise<void>((r) => (c.stdio[1] as Socket).on('end', r));
  return new Promise((resolve) => c.once('exit', (code, signal) => void ended.then(() => resolve({ out, code, signal }))));
}

describe('starting a program with posix_spawn', () => {
  it('gives it only the asked descriptors, a session of its own, default signals, the cwd and the environment', async () => {
    const c = start('/bin/sh', ['-c', 'ls /proc/self/fd; ps -o sid= -p $$; grep -E "^Sig(Ign|Blk):" /proc/self/status; pwd; echo "$A"'], {
      cwd: '/tmp',
      env: { PATH: '/usr/bin:/bin', A: 'x y' },
      stdio: ['pipe', 'pipe', 'pipe', 'ignore'],
    });
    const r = await outcome(c);
    const lines = r.out.trim().split('\n');
    // 0-3 and the one ls opened for /proc/self/fd: nothing of this process leaks in.
    expect(lines.slice(0, 5)).toEqual(['0', '1', '2', '3', '4']);
    expect(Number(lines[5])).toBe(c.pid); // setsid: its own session (rexd ends a program with its whole group)
    // Node ignores SIGPIPE; the program starts with no signal blocked or ignored (glibc's internal 32 and 33 included).
    expect(lines.slice(6, 8)).toEqual(['SigBlk:\t0000000000000000', 'SigIgn:\t0000000000000000']);
    expect(lines.slice(8)).toEqual(['/tmp', 'x y']);
    expect([r.code, r.signal]).toEqual([0, null]);
  });

  it('relays both ways: stdin to EOF, then exit status; a descriptor marked ignore is /dev/null', async () => {
    const c = start('/bin/sh', ['-c', 'readlink /proc/self/fd/3; tr a-z A-Z; exit 7'], { stdio: ['pipe', 'pipe', 'pipe', 'ignore'] });
    const done = outcome(c);
    (c.stdio[0] as Socket).end('hello\n');
    expect(await done).toEqual({ out: '/dev/null\nHELLO\n', code: 7, signal: null });
  });

  it('closes the stdin of a program that has exited (as node does), so a job whose origin never sent EOF leaves no descriptor', async () => {
    const fds = (): number => readdirSync('/proc/self/fd').length;
    const before = fds();
    const c = start('/bin/true', []);
    (c.stdio[2] as Socket).resume();
    await outcome(c);
    expect((c.stdio[0] as Socket).destroyed).toBe(true);
    // No more than before: other tests' descriptors of this worker may close meanwhile, none of this job may stay.
    await vi.waitFor(() => expect(fds()).toBeLessThanOrEqual(before), { timeout: 5000 });
  });

  it('reports death by a signal by name, SIGABRT rather than its alias SIGIOT', async () => {
    const c = start('/bin/sh', ['-c', 'kill -ABRT $$']);
    expect(await outcome(c)).toMatchObject({ code: null, signal: 'SIGABRT' });
    const k = start('/bin/sleep', ['30']);
    const ended = outcome(k);
    expect(k.kill('SIGTERM')).toBe(true);
    expect(await ended).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(k.kill('SIGTERM')).toBe(false); // ended
  });

  it('throws a program that cannot start, with its code, and leaves no process', () => {
    const before = children();
    expect(() => startChild('/no/such/program', [], { cwd: '/', env: {}, stdio: ['pipe'] })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    const dir = mkdtempSync(join(tmpdir(), 'rex-child-'));
    const text = join(dir, 'not-executable');
    writeFileSync(text, 'echo hi\n', { mode: 0o644 });
    expect(() => startChild(text, [], { cwd: '/', env: {}, stdio: ['pipe'] })).toThrow(expect.objectContaining({ code: 'EACCES' }));
    rmSync(dir, { recursive: true });
    expect(() => startChild('/bin/true', [], { cwd: '/no/such/dir', env: {}, stdio: ['pipe'] })).toThrow(expect.objectContaining({ code: 'ENOENT' }));
    expect(children()).toEqual(before);
  });

  it('reaps every child: 200 short programs leave no zombie', async () => {
    const all = Array.from({ length: 200 }, () => outcome(start('/bin/true', [])));
    expect((await Promise.all(all)).every((r) => r.code === 0)).toBe(true);
    expect(children().filter((s) => s.state === 'Z')).toEqual([]);
  });

  it('checks its arguments before anything starts', () => {
    const addon = loadAddon();
    const exit = (): void => {};
    expect(() => addon.spawnProcess('true', ['true'], [], '/', ['pipe'], exit)).toThrow(/file must be an absolute path/);
    expect(() => addon.spawnProcess('/bin/true', [], [], '/', ['pipe'], exit)).toThrow(/argv needs at least argv\[0\]/);
    expect(() => addon.spawnProcess('/bin/true', ['a\0b'], [], '/', ['pipe'], exit)).toThrow(/argv must be an array of strings without NUL/);
    expect(() => addon.spawnProcess('/bin/true', ['true'], [1 as unknown as string], '/', ['pipe'], exit)).toThrow(/env must be/);
    expect(() => addon.spawnProcess('/bin/true', ['true'], [], '/', ['inherit' as 'pipe'], exit)).toThrow(/stdio must be/);
    expect(() => addon.spawnProcess('/bin/true', ['true'], [], '/', ['pipe'], undefined as unknown as typeof exit)).toThrow(/onExit must be a function/);
  });
});

/** This process's children, with their state letter. */
function children(): { pid: number; state: string }[] {
  const out: { pid: number; state: string }[] = [];
  const list = readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim();
  for (const p of list ? list.split(' ') : []) {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      out.push({ pid: Number(p), state: stat.replace(/^.*\) /s, '')[0]! });
    } catch {
      /* gone */
    }
  }
  return out;
}
