import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster } from '../helpers/cluster.js';
import { haveScript, terminalResizeScript, underScript } from '../helpers/script.js';

const NATIVE = join(import.meta.dirname, '..', '..', 'native');

/** Runs the driver and resolves with what its parent's wait() sees. */
function drive(bin: string, socket: string, args: string[], opts: { input?: string; env?: Record<string, string>; onStdout?: (s: string, kill: (s: NodeJS.Signals) => void) => void } = {}) {
  return new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(bin, args, { env: { ...process.env, REX_SOCKET: socket, ...opts.env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(stdout, (s) => child.kill(s));
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.on('error', () => {}); // a program that fails at once closes its stdin first
    child.stdin.end(opts.input ?? '');
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

describe('rexecve() in librex: the calling process becomes the stub', () => {
  let stop: () => Promise<void>;
  let socket: string;
  let bin: string;

  beforeAll(async () => {
    execFileSync('make', ['-s', '-C', NATIVE, 'build/lib/librex.a'], { stdio: 'pipe' });
    const dir = join(NATIVE, 'build', 'test');
    mkdirSync(dir, { recursive: true });
    bin = join(dir, 'rexecve_demo');
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', '-I', join(NATIVE, 'include'), '-o', bin, join(NATIVE, 'test', 'rexecve_demo.c'), join(NATIVE, 'build', 'lib', 'librex.a'), '-lm']);
    const c = await startCluster(2);
    stop = c.stop;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
  }, 90_000);
  afterAll(async () => {
    await stop?.();
  });

  it('relays stdin to EOF and stdout, and the parent sees the remote exit code', async () => {
    const r = await drive(bin, socket, ['beta', '/bin/sh', 'sh', '-c', 'tr a-z A-Z; echo done >&2; exit 42'], { input: 'from the origin' });
    expect(r).toEqual({ code: 42, signal: null, stdout: 'FROM THE ORIGIN', stderr: 'done\n' });
  });

  it('dies of the remote program\'s signal, and forwards signals sent to the stub', async () => {
    expect(await drive(bin, socket, ['beta', '/bin/sh', 'sh', '-c', 'kill -TERM $$'])).toMatchObject({ code: null, signal: 'SIGTERM' });
    expect(await drive(bin, socket, ['beta', '/bin/sh', 'sh', '-c', 'kill -SEGV $$'])).toMatchObject({ code: null, signal: 'SIGSEGV' });
    const r = await drive(bin, socket, ['beta', '/bin/sh', 'sh', '-c', 'trap "echo got USR1" USR1; echo ready; while :; do sleep 0.05; done'], {
      onStdout: (s, kill) => {
        if (s === 'ready\n') kill('SIGUSR1');
        if (s === 'ready\ngot USR1\n') kill('SIGINT');
      },
    });
    expect(r).toMatchObject({ stdout: 'ready\ngot USR1\n', signal: 'SIGINT' });
  });

  it('REX_HOST chooses the host, and without it the program is placed', async () => {
    expect((await drive(bin, socket, ['-', '/bin/sh', 'sh', '-c', 'echo $PWD'], { env: { REX_HOST: 'beta' } })).code).toBe(0);
    expect((await drive(bin, socket, ['-', '/bin/true'])).code).toBe(0);
  });

  it.skipIf(!haveScript)('with a terminal on stdin (script(1)) the program gets a pseudo-terminal of its size, follows a resize, and the terminal is restored', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'rex-rexecve-tty-'));
    try {
      const ready = join(dir, 'ready');
      const test = join(dir, 'tty.sh');
      writeFileSync(
        test,
        [
          ...terminalResizeScript(`REX_SOCKET=${socket} ${bin} beta /bin/sh`, ready),
          `REX_PTY=0 REX_SOCKET=${socket} ${bin} beta /bin/sh sh -c 'tty || echo no terminal' </dev/tty`,
        ].join('\n') + '\n',
      );
      const r = await underScript(`sh ${test}`);
      expect(existsSync(ready)).toBe(true);
      // The remote terminal's \r\n passes through untouched: the stub's raw mode has output processing off too.
      expect(r.stdout).toMatch(/\/dev\/pts\/\d+\r\n33 99\r\n40 120\r\nstatus 4\r\nicanon\r\nnot a tty\r\nno terminal\r\n$/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('fails like execve before anything started: -1 with ENOENT, EACCES, EHOSTUNREACH, and the process goes on', async () => {
    expect((await drive(bin, socket, ['beta', '/no/such/program'])).stdout).toMatch(/^rexecve failed: ENOENT: rexecve: .*no such program on beta\n$/);
    const noExec = join(NATIVE, 'build', 'test', 'not-executable.txt');
    writeFileSync(noExec, 'echo hi\n', { mode: 0o644 });
    expect((await drive(bin, socket, ['beta', noExec])).stdout).toMatch(/^rexecve failed: EACCES: .*permission denied/);
    expect((await drive(bin, socket, ['omega', '/bin/true'])).stdout).toMatch(/^rexecve failed: EHOSTUNREACH: .*no host "omega"/);
    const noDaemon = await drive(bin, '/nonexistent/rexd.sock', ['beta', '/bin/true']);
    expect(noDaemon).toMatchObject({ code: 99 });
    expect(noDaemon.stdout).toMatch(/^rexecve failed: EHOSTUNREACH: rexecve: connect \/nonexistent\/rexd\.sock/);
  });
});
