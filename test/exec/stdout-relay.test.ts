// The stdout path across two hosts (docs/EXEC.md "Path of one program", docs/PROTOCOL.md 3.1): the executor's
// DATA crosses the origin rexd undecoded (its pass-through), and still every byte arrives once and in order,
// and a reader that stops crediting stops the program's writes within one window plus the buffers between.
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { DEFAULT_WINDOW, MAX_WINDOW } from '../../src/exec/protocol.js';
import { RemoteProcess } from '../../src/exec/origin/stub.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { alive } from '../helpers/proc.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const NATIVE = fileURLToPath(new URL('../../native', import.meta.url));

/** The pid of the process whose argv[0] is `argv0`, if there is one. */
function pidOf(argv0: string): number | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')[0] === argv0) return Number(d);
    } catch {
      /* gone meanwhile */
    }
  }
  return undefined;
}

/** Polls until `pid`'s count of written bytes has stayed put for 5 polls; returns it (undefined: unreadable). */
async function whenBlocked(pid: number): Promise<{ wrote: number | undefined; still: number }> {
  let last = written(pid);
  let still = 0;
  for (let i = 0; i < 200 && still < 5; i++) { await sleep(50); const now = written(pid); still = now !== undefined && now === last ? still + 1 : 0; last = now; } // prettier-ignore
  return { wrote: last, still };
}

/** Bytes the process has written so far (/proc/PID/io wchar), or undefined when it cannot be read. */
function written(pid: number): number | undefined {
  try {
    return Number(/^wchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1]);
  } catch {
    return undefined;
  }
}

describe('stdout from another host through the origin rexd', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let dir: string;
  let client: RexClient;

  beforeAll(async () => {
    ({ cluster, stop, dir } = await startCluster(2));
    await cluster.waitAllReachable();
    client = await RexClient.connect({ socket: cluster.host('alpha').socket });
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await stop?.();
  });

  it('48 MiB of stdout and a line of stderr arrive byte-exact and in order, credited late by the reader', async () => {
    const file = join(dir, 'stdout.bin');
    const data = randomBytes(48 << 20);
    writeFileSync(file, data, { mode: 0o644 });
    const out: Buffer[] = [];
    let err = '';
    const rp = await RemoteProcess.start(client.conn, { path: '/bin/sh', argv: ['sh', '-c', 'cat "$1"; echo end >&2', 'sh', file], host: 'beta', env: ['PATH=/usr/bin:/bin'] }, (fd, d, done) => {
      if (d && fd === 1) out.push(Buffer.from(d));
      if (d && fd === 2) err += d.toString();
      setImmediate(done); // credit after the event loop turns: the executor works from what it was given
    });
    rp.end();
    expect(rp.host).toBe('beta');
    expect(await rp.exited).toEqual({ code: 0, host: 'beta' });
    const got = Buffer.concat(out);
    expect(got.length).toBe(data.length);
    expect(createHash('sha256').update(got).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    expect(err).toBe('end\n');
  }, 120_000);

  it('a reader that stops crediting stops the program: one window reaches it, the writer blocks, nothing is lost', async () => {
    const total = 64 << 20;
    const held: (() => void)[] = [];
    let holding = true;
    let received = 0;
    const h = createHash('sha256');
    const rp = await RemoteProcess.start(client.conn, { path: '/usr/bin/head', argv: ['head', '-c', String(total), '/dev/zero'], host: 'beta', env: ['PATH=/usr/bin:/bin'] }, (_fd, d, done) => {
      if (d) {
        received += d.length;
        h.update(d);
      }
      if (holding) held.push(done);
      else done();
    });
    rp.end();
    // The executor sends exactly its credit, then nothing more until the reader gives some back.
    await vi.waitFor(() => expect(received).toBe(DEFAULT_WINDOW), { timeout: 30_000, interval: 20 });
    // The program (same machine: beta's pid is ours) stops writing: its count of written bytes stays put.
    const { wrote, still } = await whenBlocked(rp.pid);
    if (wrote !== undefined) {
      expect(still).toBe(5);
      expect(alive(rp.pid)).toBe(true);
      // In flight: the window the reader holds, and what the socket pair and the executor's one queued read hold.
      expect(wrote).toBeLessThan(DEFAULT_WINDOW + (8 << 20));
    }
    expect(received).toBe(DEFAULT_WINDOW);
    holding = false;
    for (const d of held.splice(0)) d();
    expect(await rp.exited).toEqual({ code: 0, host: 'beta' });
    expect(received).toBe(total);
    expect(h.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(total)).digest('hex'));
  }, 120_000);

  it('a window asked above MAX_WINDOW counts as MAX_WINDOW: a reader that never credits gets that much, and the writer blocks', async () => {
    const total = 64 << 20;
    const held: (() => void)[] = [];
    let holding = true;
    let received = 0;
    const rp = await RemoteProcess.start(client.conn, { path: '/usr/bin/head', argv: ['head', '-c', String(total), '/dev/zero'], host: 'beta', env: ['PATH=/usr/bin:/bin'], window: 2 ** 31 }, (_fd, d, done) => {
      if (d) received += d.length;
      if (holding) held.push(done);
      else done();
    });
    rp.end();
    await vi.waitFor(() => expect(received).toBe(MAX_WINDOW), { timeout: 30_000, interval: 20 });
    const { wrote, still } = await whenBlocked(rp.pid);
    if (wrote !== undefined) {
      expect(still).toBe(5);
      expect(wrote).toBeLessThan(MAX_WINDOW + (8 << 20));
    }
    expect(received).toBe(MAX_WINDOW);
    holding = false;
    for (const d of held.splice(0)) d();
    expect(await rp.exited).toEqual({ code: 0, host: 'beta' });
    expect(received).toBe(total);
  }, 120_000);

  it('through rexecve()\'s C stub: a stdout nobody reads stops the remote writer, and reading again gets every byte', async () => {
    execFileSync('make', ['-s', '-C', NATIVE, 'build/lib/librex.a'], { stdio: 'pipe' });
    const bin = join(dir, 'rexecve_demo');
    execFileSync('cc', ['-std=c11', '-Wall', '-Werror', '-I', join(NATIVE, 'include'), '-o', bin, join(NATIVE, 'test', 'rexecve_demo.c'), join(NATIVE, 'build', 'lib', 'librex.a'), '-lm']);
    const total = 64 << 20;
    const argv0 = `rex-stalled-writer-${process.pid}`;
    const stub = spawn(bin, ['beta', '/usr/bin/head', argv0, '-c', String(total), '/dev/zero'], { env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket }, stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((r) => stub.on('close', (code) => r(code)));
    try {
      stub.stdout.pause(); // nobody reads: the pipe fills, the stub blocks writing it and stops crediting
      let pid: number | undefined;
      await vi.waitFor(() => expect((pid = pidOf(argv0))).toBeDefined(), { timeout: 30_000, interval: 20 });
      const { wrote, still } = await whenBlocked(pid!);
      if (wrote !== undefined) {
        expect(still).toBe(5);
        expect(alive(pid!)).toBe(true);
        // In flight: the stub's window (4 MiB, native/src/rexec.c), the pipe and this side's read-ahead, the socket pair's buffers.
        expect(wrote).toBeLessThan((4 << 20) + (8 << 20));
      }
      const h = createHash('sha256');
      let n = 0;
      stub.stdout.on('data', (d: Buffer) => {
        n += d.length;
        h.update(d);
      });
      stub.stdout.resume();
      expect(await exited).toBe(0);
      expect(n).toBe(total);
      expect(h.digest('hex')).toBe(createHash('sha256').update(Buffer.alloc(total)).digest('hex'));
    } finally {
      stub.kill('SIGKILL');
    }
  }, 120_000);
});
