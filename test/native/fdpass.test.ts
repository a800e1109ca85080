// Descriptor passing through the addon (src/util/native.ts; docs/ARCHITECTURE.md, "Privilege
// separation primitives"): what the root monitor and the session controllers use to hand
// connections over. Real processes and sockets; every refusal is checked to leave no descriptor
// open (/proc/self/fd counted before and after).
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync } from 'node:fs';
import { createConnection, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { FdChannel } from '../../src/daemon/fdchannel.js';
import { FDPASS_MAX_HEADER, loadAddon } from '../../src/util/native.js';

const addon = loadAddon();
const dir = mkdtempSync(join(tmpdir(), 'rex-fdpass-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const openFds = (): string[] => readdirSync('/proc/self/fd').sort((a, b) => Number(a) - Number(b));
/** n descriptors on /dev/null, to pass. */
const nulls = (n: number): number[] => Array.from({ length: n }, () => openSync('/dev/null', 'r'));
const closeAll = (fds: readonly number[]): void => fds.forEach((fd) => closeSync(fd));
/** Whether fd has close-on-exec set (the flags line of /proc/self/fdinfo, octal). */
const cloexec = (fd: number): boolean => (parseInt(/^flags:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]!, 8) & 0o2000000) !== 0;
/** Runs fn and returns the error it throws. */
function thrown(fn: () => unknown): Error & { code?: string } {
  try {
    fn();
  } catch (e) {
    return e as Error & { code?: string };
  }
  throw new Error('expected a throw');
}

/** Reads a whole net.Socket until it ends. */
const readAll = (s: Socket): Promise<string> =>
  new Promise((resolve, reject) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => (text += d));
    s.on('end', () => resolve(text));
    s.on('error', reject);
  });

describe('socketPair', () => {
  it('gives a stream pair that new net.Socket({ fd }) wraps at both ends', async () => {
    const [a, b] = addon.socketPair(false);
    const sa = new Socket({ fd: a, readable: true, writable: true });
    const sb = new Socket({ fd: b, readable: true, writable: true });
    const got = readAll(sb);
    sa.end('across the pair');
    expect(await got).toBe('across the pair');
    sa.destroy();
    sb.destroy();
  });

  it('gives close-on-exec descriptors', () => {
    const pair = addon.socketPair(true);
    for (const fd of pair) expect(cloexec(fd)).toBe(true);
    closeAll(pair);
  });
});

describe('sendFds / recvFds between two processes', () => {
  it('passes a stream socket and a pipe to a child, which uses both and passes one back', async () => {
    const before = openFds();
    const [ctl, childEnd] = addon.socketPair(true);
    const child = spawn(process.execPath, [join(packageRoot(), 'test', 'fixtures', 'fdpass', 'child.mjs')], {
      stdio: ['ignore', 'pipe', 'pipe', childEnd],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    closeSync(childEnd);

    const [mine, theirs] = addon.socketPair(false);
    execFileSync('mkfifo', [join(dir, 'fifo')]);
    const pipeRead = openSync(join(dir, 'fifo'), constants.O_RDONLY | constants.O_NONBLOCK);
    const pipeWrite = openSync(join(dir, 'fifo'), constants.O_WRONLY);
    expect(addon.sendFds(ctl, [theirs, pipeWrite], Buffer.from(JSON.stringify({ note: 'parent' })))).toBe(true);
    closeAll([theirs, pipeWrite]); // the child holds its own references now

    const s = new Socket({ fd: mine, readable: true, writable: true });
    s.setEncoding('utf8');
    const line = await new Promise<string>((r) => s.once('data', (d: string) => r(d)));
    expect(line).toBe(`hello parent from ${child.pid}, the sender is ${process.pid}\n`);

    // The child answers on the control socket with a descriptor it made.
    const back = new Promise<{ header: Buffer; fds: number[] }>((resolve, reject) => {
      const w = addon.watchFd(ctl, { readable: true }, (err) => {
        if (err) return reject(new Error(err));
        const m = addon.recvFds(ctl, 1);
        if (m === 'again') return;
        w.close();
        if (m === 'eof') return reject(new Error(`child closed first: ${stderr}`));
        resolve(m);
      });
    });
    s.write('ping\n');
    const msg = await back;
    expect(JSON.parse(msg.header.toString())).toEqual({ echo: 'ping' });
    expect(msg.fds).toHaveLength(1);
    expect(cloexec(msg.fds[0]!)).toBe(true); // MSG_CMSG_CLOEXEC
    expect(await readAll(new Socket({ fd: msg.fds[0]!, readable: true, writable: false }))).toBe('echo: ping\n');
    expect(await exited, stderr).toBe(0);

    const buf = Buffer.alloc(200);
    const n = readSync(pipeRead, buf);
    expect(buf.subarray(0, n).toString()).toBe(`through the pipe from ${child.pid}\n`);
    closeSync(pipeRead);
    // The child closed its end: the next read is the end of the channel.
    await vi.waitFor(() => expect(addon.recvFds(ctl, 1)).toBe('eof'));
    closeSync(ctl);
    s.destroy();
    await vi.waitFor(() => expect(openFds()).toEqual(before));
  });
});

describe('refused messages leave no descriptor open', () => {
  it('returns again when nothing is queued, eof when the peer has closed', () => {
    const [a, b] = addon.socketPair(true);
    expect(addon.recvFds(a, 4)).toBe('again');
    closeSync(b);
    expect(addon.recvFds(a, 4)).toBe('eof');
    closeSync(a);
  });

  it('a header longer than maxHeader is EMSGSIZE, its descriptors closed, and the next message still reads', () => {
    const [a, b] = addon.socketPair(true);
    const before = openFds();
    const passed = nulls(2);
    addon.sendFds(a, passed, Buffer.alloc(100, 1));
    addon.sendFds(a, [passed[0]!], Buffer.from('next'));
    closeAll(passed);
    const e = thrown(() => addon.recvFds(b, 2, 16));
    expect(e.code).toBe('EMSGSIZE');
    expect(e.message).toContain('closed the 2 descriptors received');
    const next = addon.recvFds(b, 2, 16);
    if (typeof next === 'string') throw new Error(next);
    expect(next.header.toString()).toBe('next');
    closeAll(next.fds);
    expect(openFds()).toEqual(before);
    closeAll([a, b]);
  });

  it('more descriptors than maxFds is ETOOMANYREFS, all of them closed', () => {
    const [a, b] = addon.socketPair(true);
    const before = openFds();
    for (const [sent, max] of [[3, 2], [1, 0], [5, 4]] as const) {
      const passed = nulls(sent);
      addon.sendFds(a, passed, Buffer.from('x'));
      closeAll(passed);
      const e = thrown(() => addon.recvFds(b, max));
      expect(e.code).toBe('ETOOMANYREFS');
      expect(openFds()).toEqual(before);
    }
    closeAll([a, b]);
  });

  it('control data the kernel truncates (MSG_CTRUNC) is ETOOMANYREFS, and what was installed is closed', () => {
    const [a, b] = addon.socketPair(true);
    const before = openFds();
    const passed = nulls(200);
    addon.sendFds(a, passed, Buffer.from('many'));
    closeAll(passed);
    const e = thrown(() => addon.recvFds(b, 2));
    expect(e.code).toBe('ETOOMANYREFS');
    expect(e.message).toContain('MSG_CTRUNC');
    expect(openFds()).toEqual(before);
    closeAll([a, b]);
  });

  it('a message with descriptors and no header (which sendFds never sends; a C program does) is EBADMSG, its descriptor closed', async () => {
    const exe = join(dir, 'empty-with-fd');
    execFileSync('cc', ['-std=c11', '-Wall', '-Wextra', '-Werror', '-o', exe, join(packageRoot(), 'test', 'fixtures', 'fdpass', 'empty-with-fd.c')]);
    const [a, b] = addon.socketPair(true);
    const before = openFds();
    const child = spawn(exe, [], { stdio: ['ignore', 'ignore', 'inherit', b] });
    expect(await new Promise((r) => child.on('exit', r))).toBe(0);
    const e = thrown(() => addon.recvFds(a, 4));
    expect(e.code).toBe('EBADMSG');
    expect(e.message).toContain('closed the 1 descriptors received');
    expect(openFds()).toEqual(before);
    closeAll([a, b]);
  });

  it('a descriptor that is not open cannot be sent, and nothing arrives', () => {
    const [a, b] = addon.socketPair(true);
    const [fd] = nulls(1);
    closeSync(fd!);
    expect(thrown(() => addon.sendFds(a, [fd!], Buffer.from('x'))).code).toBe('EBADF');
    expect(addon.recvFds(b, 1)).toBe('again');
    closeAll([a, b]);
  });

  it('refuses a stream socket (messages need SOCK_SEQPACKET) and bad arguments', () => {
    const [a, b] = addon.socketPair(false);
    const before = openFds();
    expect(thrown(() => addon.sendFds(a, nulls(0), Buffer.from('x'))).code).toBe('EPROTOTYPE');
    expect(thrown(() => addon.recvFds(b, 1)).code).toBe('EPROTOTYPE');
    expect(openFds()).toEqual(before);
    closeAll([a, b]);
    expect(() => addon.sendFds(0, [], Buffer.alloc(0))).toThrow(RangeError);
    expect(() => addon.sendFds(0, [], Buffer.alloc(FDPASS_MAX_HEADER + 1))).toThrow(RangeError);
    expect(() => addon.sendFds(0, [-1], Buffer.from('x'))).toThrow(RangeError);
    expect(() => addon.recvFds(0, 254)).toThrow(RangeError);
    expect(() => addon.recvFds(0, 1, 0)).toThrow(RangeError);
  });

  it('a full socket buffer makes sendFds return false, and writability is reported', async () => {
    const [a, b] = addon.socketPair(true);
    let sent = 0;
    while (addon.sendFds(a, [], Buffer.alloc(4096))) sent++;
    expect(sent).toBeGreaterThan(0);
    const writable = new Promise<number>((resolve) => {
      const w = addon.watchFd(a, { writable: true }, (_err, ev) => {
        w.close();
        resolve(ev);
      });
    });
    for (let m = addon.recvFds(b, 0); m !== 'again'; m = addon.recvFds(b, 0)) expect(m).not.toBe('eof');
    expect((await writable) & 2).toBe(2);
    closeAll([a, b]);
  });
});

describe('listenUnix / acceptUnix', () => {
  it('accepts a local connection with its peer credentials, as a descriptor net.Socket can wrap', async () => {
    const path = join(dir, 'l.sock');
    const lfd = addon.listenUnix(path);
    expect(addon.acceptUnix(lfd)).toBeNull();
    const client = createConnection(path);
    const accepted = await new Promise<{ fd: number; pid: number; uid: number; gid: number }>((resolve) => {
      const w = addon.watchFd(lfd, { readable: true }, () => {
        const c = addon.acceptUnix(lfd);
        if (!c) return;
        w.close();
        resolve(c);
      });
    });
    expect({ pid: accepted.pid, uid: accepted.uid, gid: accepted.gid }).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    const server = new Socket({ fd: accepted.fd, readable: true, writable: true });
    const got = readAll(client);
    server.end('served');
    expect(await got).toBe('served');
    closeSync(lfd);
    // Both closed before the next test counts descriptors.
    await Promise.all([server, client].map((x) => new Promise<void>((r) => {
      if (x.closed) return r();
      x.once('close', () => r());
      x.destroy();
    })));
  });
});

describe('FdChannel (src/daemon/fdchannel.ts)', () => {
  it('delivers many messages with descriptors in order, queueing sends while the socket is full, and leaks nothing', async () => {
    const before = openFds();
    const [a, b] = addon.socketPair(true);
    const got: string[] = [];
    let closedWith: Error | undefined | 'open' = 'open';
    const rx = new FdChannel(b, {
      maxFds: 2,
      onMessage: (header, fds) => {
        got.push(`${header.toString()}:${fds.length}`);
        closeAll(fds);
      },
      onClose: (err) => (closedWith = err),
    });
    const tx = new FdChannel(a, { onMessage: () => {} });
    const [passed] = nulls(1);
    const n = 2000; // far more than a socket buffer holds, so sends wait for writability
    const sends = Array.from({ length: n }, (_, i) => tx.send(Buffer.from(`m${i}`.padEnd(200, '.')), i % 3 === 0 ? [passed!, passed!] : [passed!]));
    await Promise.all(sends);
    closeSync(passed!);
    await vi.waitFor(() => expect(got).toHaveLength(n));
    expect(got).toEqual(Array.from({ length: n }, (_, i) => `${`m${i}`.padEnd(200, '.')}:${i % 3 === 0 ? 2 : 1}`));
    tx.close();
    await vi.waitFor(() => expect(closedWith).toBeUndefined());
    await expect(tx.send(Buffer.from('late'))).rejects.toThrow(/closed/);
    expect(openFds()).toEqual(before);
  });

  it('ends the channel with the error when the peer sends a message it refuses', async () => {
    const before = openFds();
    const [a, b] = addon.socketPair(true);
    const ended = new Promise<Error | undefined>((resolve) => new FdChannel(b, { maxFds: 1, onMessage: () => {}, onClose: resolve }));
    const passed = nulls(3);
    addon.sendFds(a, passed, Buffer.from('three'));
    closeAll(passed);
    const err = (await ended) as Error & { code?: string };
    expect(err.code).toBe('ETOOMANYREFS');
    closeSync(a);
    expect(openFds()).toEqual(before);
  });
});
