import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exec, spawn, type SpawnError } from '../../src/runtime/index.js';
import { startCluster } from '../helpers/cluster.js';

describe('spawn() and exec() in the runtime (node:child_process shape)', () => {
  let stop: () => Promise<void>;
  let socket: string;

  beforeAll(async () => {
    const c = await startCluster(2);
    stop = c.stop;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  it('pipes stdin to stdout and emits spawn, exit, close in that order', async () => {
    const child = spawn('tr', ['a-z', 'A-Z'], { socket, host: 'beta' });
    const events: string[] = [];
    let out = '';
    child.on('spawn', () => events.push(`spawn ${child.host}`));
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stdin.write('hello ');
    child.stdin.end('remote world');
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
      child.on('exit', () => events.push('exit'));
      child.on('close', (c: number | null, s: string | null) => resolve([c, s]));
    });
    expect(events).toEqual(['spawn beta', 'exit']);
    expect(out).toBe('HELLO REMOTE WORLD');
    expect([code, signal, child.exitCode]).toEqual([0, null, 0]);
  });

  it('kill() delivers the signal and the child reports it as signalCode', async () => {
    const child = spawn('sleep', ['30'], { socket, host: 'beta' });
    await new Promise((r) => child.once('spawn', r));
    expect(child.kill('SIGTERM')).toBe(true);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c: number | null, s: string | null) => resolve([c, s])));
    expect([code, signal, child.signalCode]).toEqual([null, 'SIGTERM', 'SIGTERM']);
  });

  it('a missing program is an error event with code ENOENT, as node gives', async () => {
    const child = spawn('/no/such/program', [], { socket, host: 'beta' });
    const err = await new Promise<SpawnError>((resolve) => child.on('error', resolve));
    expect(err.code).toBe('ENOENT');
    expect(err.message).toMatch(/^spawn \/no\/such\/program ENOENT: .*no such program on beta/);
  });

  it('exec() buffers output and reports a failing command with its code', async () => {
    const r = await new Promise<{ err: (Error & { code?: number | string }) | null; out: string; errOut: string }>((resolve) =>
      exec('echo $((40 + 2)); echo oops >&2; exit 3', { socket }, (err, out, errOut) => resolve({ err, out, errOut })),
    );
    expect(r.out).toBe('42\n');
    expect(r.errOut).toBe('oops\n');
    expect(r.err?.code).toBe(3);
    const ok = await new Promise<string>((resolve, reject) => exec('echo fine', { socket, host: 'beta' }, (err, out) => (err ? reject(err) : resolve(out))));
    expect(ok).toBe('fine\n');
  });

  it('a consumer that reads slowly loses nothing (credit stops the producer instead)', async () => {
    const child = spawn('head', ['-c', String(20 << 20), '/dev/zero'], { socket, host: 'beta' });
    child.stdin.end();
    child.stdout.pause();
    await new Promise((r) => setTimeout(r, 300)); // sleep-ok: time for an executor without credit to overrun; the check is that nothing was lost
    const h = createHash('sha256');
    let n = 0;
    child.stdout.on('data', (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    child.stdout.resume();
    await new Promise((r) => child.on('close', r));
    expect(n).toBe(20 << 20);
    expect(h.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(20 << 20)).digest('hex'));
  });
  it('pty: true gives the program a terminal of the asked size; resize() reaches it as SIGWINCH with the new size', async () => {
    const child = spawn('sh', ['-c', 'tty; stty size; [ -t 0 ] && echo stdin-is-a-tty; echo to-stderr >&2; trap "stty size; exit 4" WINCH; echo ready; while :; do sleep 0.05; done'], {
      socket,
      host: 'beta',
      env: { PATH: '/usr/bin:/bin' },
      pty: true,
      rows: 33,
      cols: 99,
    });
    let out = '';
    let err = '';
    let resized: boolean | undefined;
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (resized === undefined && out.includes('ready')) resized = child.resize(40, 120);
    });
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c: number | null, s: string | null) => resolve([c, s])));
    expect([code, signal, resized]).toEqual([4, null, true]);
    // One terminal: stderr comes through stdout, with the line discipline's \r\n.
    expect(out).toMatch(/^\/dev\/pts\/\d+\r\n33 99\r\nstdin-is-a-tty\r\nto-stderr\r\nready\r\n40 120\r\n$/);
    expect(err).toBe('');
    expect(child.resize(50, 50)).toBe(false); // ended: nothing to resize
  });

  it('a resize() before the program started is applied once it runs; without pty there is no terminal and resize() is false', async () => {
    const child = spawn('sh', ['-c', 'read x; stty size'], { socket, host: 'beta', pty: true });
    expect(child.resize(12, 34)).toBe(true); // not started yet: held until 'spawn'
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.once('spawn', () => child.stdin.write('go\n'));
    await new Promise((r) => child.on('close', r));
    // The terminal echoes the line typed, then stty reports the size set before the program ran.
    expect(out).toBe('go\r\n12 34\r\n');

    const plain = spawn('sh', ['-c', '[ -t 0 ] || [ -t 1 ] || echo no-tty'], { socket, host: 'beta' });
    let plainOut = '';
    plain.stdout.on('data', (d: Buffer) => (plainOut += d.toString()));
    plain.stdin.end();
    expect(plain.resize(10, 10)).toBe(false);
    await new Promise((r) => plain.on('close', r));
    expect(plainOut).toBe('no-tty\n');
  });

  it('refuses what a remote program cannot have, at the call: stdio beyond fd 2, an IPC channel, uid and gid (EXEC.md, The child_process API)', () => {
    expect(() => spawn('true', [], { socket, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] })).toThrow(/stdio\[3\] "pipe": a remote program has only fds 0, 1 and 2 relayed/);
    expect(() => spawn('true', [], { socket, stdio: ['pipe', 'pipe', 'pipe', 'ipc'] })).toThrow(/stdio\[3\]/);
    expect(() => spawn('true', [], { socket, stdio: ['ipc', 'pipe', 'pipe'] })).toThrow(/stdio 'ipc': a remote program has no IPC channel/);
    expect(() => spawn('true', [], { socket, uid: 0 })).toThrow(/uid and gid cannot be set/);
  });

  it('writes into a stream that has no fd (node refuses one), and kill() of a signal EXEC does not relay is false', async () => {
    const sink = new PassThrough();
    const child = spawn('sh', ['-c', 'echo into-the-stream; exec sleep 30'], { socket, host: 'beta', stdio: ['ignore', sink, 'ignore'] });
    const first = await new Promise<string>((resolve) => sink.once('data', (d: Buffer) => resolve(d.toString())));
    expect(first).toBe('into-the-stream\n');
    expect(child.stdout).toBeNull();
    expect(child.kill('SIGSEGV')).toBe(false);
    expect(child.kill()).toBe(true);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('close', (c: number | null, s: string | null) => resolve([c, s])));
    expect([code, signal]).toEqual([null, 'SIGTERM']);
  });

  it('rejects a terminal size that is not an integer from 1 to 65535, naming the option', () => {
    expect(() => spawn('true', [], { socket, pty: true, rows: 0 })).toThrow(/spawn\(\): rows 0: expected an integer from 1 to 65535/);
    expect(() => spawn('true', [], { socket, pty: true, cols: 2.5 })).toThrow(/cols 2.5/);
  });

  it('resize() of a child that could not start is false', async () => {
    const child = spawn('/no/such/program', [], { socket, host: 'beta', pty: true });
    await new Promise((r) => child.on('error', r));
    expect(child.resize(30, 100)).toBe(false);
    const live = spawn('sleep', ['30'], { socket, host: 'beta', pty: true });
    expect(() => live.resize(0, 10)).toThrow(/spawn\(\): rows 0/);
    await new Promise((r) => live.once('spawn', r));
    live.kill('SIGKILL');
    await new Promise((r) => live.on('close', r));
  });
});
