// The RFORK request (docs/PROTOCOL.md 4.10, docs/RFORK.md 5) checked at
// the daemons: an image must be the client's own descriptor, the `fds` list
// is validated before anything starts, and an image the restorer refuses is
// the request's error, with nothing left running.
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { H, program, rehash } from '../migration/image.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deflateRawSync } from 'node:zlib';
import { imageFds, inlineImage, inlineImageFields, MAX_PROXIED_FDS } from '../../src/rfork/protocol.js';
import { IMAGE_INLINE_MAX } from '../../src/protocol/messages.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { runs } from '../helpers/property.js';

function be32(list: number[]): Uint8Array {
  const b = Buffer.alloc(list.length * 4);
  list.forEach((v, i) => b.writeUInt32BE(v, i * 4));
  return b;
}

describe('an inline image (RFORK imageData, imageSize)', () => {
  const refusal = (data: Uint8Array, size: number | undefined): string => {
    try {
      inlineImage(data, size);
    } catch (e) {
      expect(e).toBeInstanceOf(ProtocolError);
      expect((e as ProtocolError).proto).toBe('BAD_REQUEST');
      return (e as Error).message;
    }
    throw new Error('accepted');
  };

  it('deflates an image that shrinks and gives back the same bytes; one that would not shrink goes as it is', () => {
    const image = Buffer.alloc(64 * 1024);
    for (let i = 0; i < image.length; i += 97) image[i] = i & 0xff; // sparse live bytes, as in an image's pages
    const f = inlineImageFields(image);
    expect(f.imageSize).toBe(image.length);
    expect(f.imageData.length).toBeLessThan(image.length / 4);
    expect(inlineImage(f.imageData, f.imageSize).equals(image)).toBe(true);
    const noise = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24));
    const raw = inlineImageFields(deflateRawSync(noise));
    expect(raw.imageSize).toBeUndefined();
    expect(inlineImage(raw.imageData, undefined).equals(deflateRawSync(noise))).toBe(true);
  });

  it('refuses a stream that inflates past imageSize, falls short, is damaged or is not DEFLATE, and a size out of range', () => {
    const packed = deflateRawSync(Buffer.alloc(10_000, 7));
    expect(refusal(packed, 9_999)).toMatch(/RFORK imageData \(\d+ bytes of raw DEFLATE\): it inflates to more than imageSize 9999 bytes/);
    expect(refusal(packed, 10_001)).toMatch(/inflates to 10000 bytes, not imageSize 10001/);
    expect(refusal(packed.subarray(0, packed.length - 2), 10_000)).toMatch(/RFORK imageData .*unexpected end of file/);
    expect(refusal(Buffer.from('not deflate at all'), 18)).toMatch(/RFORK imageData \(18 bytes of raw DEFLATE\)/);
    expect(refusal(packed, 0)).toMatch(/RFORK imageSize 0: an inline image is 1 to 786432 bytes/);
    expect(refusal(packed, IMAGE_INLINE_MAX + 1)).toMatch(/RFORK imageSize 786433/);
    // A stream of 1 KiB that would expand to 64 MiB stops at imageSize.
    const bomb = deflateRawSync(Buffer.alloc(64 << 20), { level: 9 });
    expect(bomb.length).toBeLessThan(128 * 1024);
    expect(refusal(bomb, IMAGE_INLINE_MAX)).toMatch(/inflates to more than imageSize 786432/);
  });

  it('property: any bytes and size give exactly imageSize bytes, or BAD_REQUEST; nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.oneof(fc.constant('exact' as const), fc.integer({ min: -1, max: IMAGE_INLINE_MAX + 2 })), fc.boolean(), (raw, want, pack) => {
        const data = pack ? deflateRawSync(raw) : raw;
        const size = want === 'exact' ? raw.length : want;
        try {
          expect(inlineImage(data, size).length).toBe(size);
          if (pack) expect(size).toBe(raw.length);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
          expect((e as ProtocolError).proto).toBe('BAD_REQUEST');
        }
      }),
      { numRuns: runs(2000) },
    );
  });
});

describe('RFORK fds (imageFds)', () => {
  it('reads an ascending list and always includes 0-2', () => {
    expect(imageFds(undefined)).toEqual([0, 1, 2]);
    expect(imageFds(be32([0, 1, 2, 5, 9]))).toEqual([0, 1, 2, 5, 9]);
    expect(imageFds(be32([7]))).toEqual([0, 1, 2, 7]);
  });

  it('refuses a ragged length, a repeat, a descent and a number above 65535, naming the entry', () => {
    const msg = (raw: Uint8Array) => {
      try {
        imageFds(raw);
      } catch (e) {
        expect(e).toBeInstanceOf(ProtocolError);
        expect((e as ProtocolError).proto).toBe('BAD_REQUEST');
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(msg(new Uint8Array(5))).toMatch(/RFORK fds: 5 bytes is not a list of 4-byte/);
    expect(msg(be32([3, 3]))).toMatch(/entry 1 \(3\) is not above the one before/);
    expect(msg(be32([4, 3]))).toMatch(/entry 1 \(3\)/);
    expect(msg(be32([70000]))).toMatch(/descriptor 70000 \(entry 0\) is above 65535/);
    expect(msg(be32(Array.from({ length: MAX_PROXIED_FDS + 1 }, (_, i) => i)))).toMatch(/more than the 1024/);
  });

  it('property: any bytes give an ascending list with 0-2, or BAD_REQUEST; nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (raw) => {
        try {
          const fds = imageFds(raw);
          expect(fds.slice(0, 3)).toEqual([0, 1, 2]);
          for (let i = 1; i < fds.length; i++) expect(fds[i]!).toBeGreaterThan(fds[i - 1]!);
        } catch (e) {
          expect(e).toBeInstanceOf(ProtocolError);
          expect((e as ProtocolError).proto).toBe('BAD_REQUEST');
        }
      }),
      { numRuns: runs(2000) },
    );
  });
});

describe('RFORK at rexd', () => {
  let stop: () => Promise<void>;
  let socket: string;
  let dir: string;
  beforeAll(async () => {
    const c = await startCluster(2);
    stop = c.stop;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
    dir = mkdtempSync(join(tmpdir(), 'rex-image-exec-'));
  }, 90_000);
  afterAll(async () => {
    await stop?.();
    rmSync(dir, { recursive: true, force: true });
  });

  async function execError(req: Record<string, unknown>): Promise<ProtocolError> {
    const client = await RexClient.connect({ socket });
    try {
      await client.conn.request({ type: 'RFORK', ...req } as never, 20_000);
    } catch (e) {
      return e as ProtocolError;
    } finally {
      client.close();
    }
    throw new Error('RFORK was accepted');
  }

  it("refuses an image that is not the client's own descriptor", async () => {
    const e = await execError({ path: '/etc/passwd', host: 'beta' });
    expect(e.message).toMatch(/RFORK image \/etc\/passwd: an image must be the client's own descriptor, \/proc\/\d+\/fd\/N/);
    const other = await execError({ path: '/proc/1/fd/0', host: 'alpha' });
    expect(other.message).toMatch(/client's own descriptor/);
  }, 30_000);

  it("an image the executor's restorer refuses for its host (exit 4) is INCOMPATIBLE, carrying the restorer's line (ENOEXEC in librex)", async () => {
    // A real image whose vDSO is recorded a page smaller than this kernel's: valid everywhere, for no host.
    const path = join(dir, 'hello.img');
    const made = spawnSync(program('hello'), [path], { encoding: 'utf8' });
    expect(made.status, made.stderr).toBe(0);
    const img = readFileSync(path);
    const slots = [0, 1, 2].map((i) => H.special + i * 24).filter((o) => img.readBigUInt64LE(o + 8) - img.readBigUInt64LE(o) > 4096n);
    expect(slots.length).toBeGreaterThan(0);
    img.writeBigUInt64LE(img.readBigUInt64LE(slots[0]! + 8) - 4096n, slots[0]! + 8);
    writeFileSync(path, rehash(img));
    const fd = openSync(path, 'r');
    try {
      const e = await execError({ path: `/proc/${process.pid}/fd/${fd}`, host: 'beta' });
      expect(e.proto).toBe('INCOMPATIBLE');
      expect(e.message).toMatch(/restore failed on beta \(rex-restore exit 4\): .*differs from the image's .*restore on a host with the same kernel/);
    } finally {
      closeSync(fd);
    }
  }, 60_000);

  it('a bad image: refused by the restorer here (exit 3, the field), and by the origin before it leaves for a peer', async () => {
    const junk = join(dir, 'junk.img');
    writeFileSync(junk, Buffer.alloc(8192, 0x41));
    const fd = openSync(junk, 'r');
    try {
      const here = await execError({ path: `/proc/${process.pid}/fd/${fd}`, host: 'alpha' });
      expect(here.message).toMatch(/restore failed on alpha \(rex-restore exit 3\): .*magic/);
      const peer = await execError({ path: `/proc/${process.pid}/fd/${fd}`, host: 'beta' });
      expect(peer.message).toMatch(/RFORK image: not a REX image: header\.magic at offset 0/);
    } finally {
      closeSync(fd);
    }
  }, 60_000);

  it('refuses imageData from a local client: only a rexd sends an image inline', async () => {
    const e = await execError({ path: `/proc/${process.pid}/fd/0`, host: 'beta', imageData: new Uint8Array(16) });
    expect(e.message).toMatch(/RFORK imageData comes from a peer only/);
    const sized = await execError({ path: `/proc/${process.pid}/fd/0`, host: 'beta', imageSize: 16 });
    expect(sized.message).toMatch(/RFORK imageData comes from a peer only/);
  }, 30_000);

  it('refuses a bad fds list before anything starts', async () => {
    const junk = join(dir, 'junk2.img');
    writeFileSync(junk, 'x');
    const fd = openSync(junk, 'r');
    try {
      const e = await execError({ path: `/proc/${process.pid}/fd/${fd}`, host: 'alpha', fds: new Uint8Array(3) });
      expect(e.message).toMatch(/RFORK fds: 3 bytes/);
    } finally {
      closeSync(fd);
    }
  }, 30_000);
});
