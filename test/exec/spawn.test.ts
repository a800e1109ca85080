import { createHash } from 'node:crypto';
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
    await new Promise((r) => setTimeout(r, 300)); // the executor must stop after one window, not buffer 20 MiB
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
});
