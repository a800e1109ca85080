// The addon's non-codec function and its argument checks: peerCredentials on
// real Unix socket connections, and the errors a caller gets for bad input.
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RexError } from '../../src/util/errors.js';
import { loadAddon } from '../../src/util/native.js';

const addon = loadAddon();

/** The file descriptor under a net.Socket (Node keeps it on the internal handle). */
function fdOf(s: Socket): number {
  const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

describe('peerCredentials', () => {
  let dir: string;
  let server: Server;
  let accepted: Promise<Socket>;
  let client: Socket;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'rex-addon-'));
    const path = join(dir, 's.sock');
    accepted = new Promise((resolve) => {
      server = createServer(resolve);
    });
    await new Promise<void>((r) => server.listen(path, r));
    client = createConnection(path);
    await new Promise<void>((r) => client.on('connect', r));
  });

  afterAll(async () => {
    client.destroy();
    (await accepted).destroy();
    await new Promise((r) => server.close(r));
    rmSync(dir, { recursive: true, force: true });
  });

  it('names this process at the other end of an accepted local connection', async () => {
    const conn = await accepted;
    const cred = addon.peerCredentials(fdOf(conn));
    expect(cred).toEqual({ pid: process.pid, uid: process.getuid!(), gid: process.getgid!() });
    // and from the client side, the listening process (also this one)
    expect(addon.peerCredentials(fdOf(client)).pid).toBe(process.pid);
  });

  it('throws with errno for a descriptor that is not a socket', () => {
    const fd = openSync('/dev/null', 'r');
    try {
      let err: unknown;
      try {
        addon.peerCredentials(fd);
      } catch (e) {
        err = e;
      }
      expect((err as Error).message).toBe(`SO_PEERCRED on fd ${fd}: Socket operation on non-socket`);
      expect((err as { errno?: unknown }).errno).toBe(88); // ENOTSOCK on Linux
    } finally {
      closeSync(fd);
    }
    expect(() => addon.peerCredentials(987654)).toThrow(/SO_PEERCRED on fd 987654: Bad file descriptor/);
  });

  it('refuses arguments that are not descriptors', () => {
    expect(() => addon.peerCredentials(-1)).toThrow(RangeError);
    expect(() => addon.peerCredentials(1.5)).toThrow(/fd must be a file descriptor number, got 1.5/);
  });
});

describe('decodeFrame argument checks', () => {
  it('accepts a Uint8Array view at an offset', () => {
    const whole = Buffer.from('ff000000000020000000000001', 'hex');
    const view = new Uint8Array(whole.buffer, whole.byteOffset + 1, 12);
    expect(addon.decodeFrame(view)).toEqual({ frame: { type: 0x20, flags: 0, stream: 1, attrs: [] }, consumed: 12 });
  });

  it('refuses bad limits and non-buffers', () => {
    expect(() => addon.decodeFrame(Buffer.alloc(0), 0)).toThrow(/maxPayload must be an integer from 1 to 2\^32-1, got 0/);
    expect(() => addon.decodeFrame(Buffer.alloc(0), 2 ** 32)).toThrow(RangeError);
    expect(() => addon.decodeFrame('00' as unknown as Buffer)).toThrow(TypeError);
  });

  it('applies a lowered limit from the header alone', () => {
    const r = addon.decodeFrame(Buffer.from('000040010010000000000001', 'hex'), 16384);
    expect(r).toMatchObject({ error: 'TOO_BIG', offset: 0 });
  });
});

describe('loadAddon', () => {
  it('reports a missing binary with the path and what to run', () => {
    const saved = process.env.REX_ADDON;
    process.env.REX_ADDON = '/nonexistent/rex_addon.node';
    try {
      let err: unknown;
      try {
        loadAddon();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(Error);
      expect((err as RexError).code).toBe('REX_ERR_NATIVE_ADDON');
      expect((err as RexError).message).toContain('/nonexistent/rex_addon.node does not exist');
      expect((err as RexError).hint).toContain('scripts/build-native.mjs');
    } finally {
      if (saved === undefined) delete process.env.REX_ADDON;
      else process.env.REX_ADDON = saved;
    }
  });
});
