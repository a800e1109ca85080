/**
 * What both sides of rfork rely on (docs/RFORK.md section 5, docs/PROTOCOL.md
 * 4.10): the descriptors an image may proxy, the inline image's encoding, and
 * the credit per relayed descriptor.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { ProtocolError } from '../protocol/frame.js';
import { IMAGE_INLINE_MAX } from '../protocol/messages.js';
import { DEFAULT_WINDOW } from '../exec/protocol.js';

/**
 * rfork's credit per relayed descriptor (STARTED fdWindow): each descriptor the
 * child reads has a window of its own, so one the stub reads ahead and the
 * child leaves unread (a file, a busy socket) cannot take the credit another
 * one (the pipe it waits on) needs. DEFAULT_WINDOW each, less when there are
 * many, so that what this rexd may hold for one child stays near 16 MiB
 * (64 KiB each at least: 64 MiB for the 1024 descriptors allowed).
 */
export function fdWindow(inputs: number): number {
  return Math.max(64 << 10, Math.min(DEFAULT_WINDOW, Math.floor((16 << 20) / Math.max(1, inputs))));
}


/** Most descriptors an rfork image may ask to proxy (each is a socket pair here). */
export const MAX_PROXIED_FDS = 1024;

/** RFORK `fds` of an image (big-endian u32 each): validated, 0-2 always included, ascending. */
export function imageFds(raw: Uint8Array | undefined): number[] {
  const fds = new Set([0, 1, 2]);
  if (raw) {
    if (raw.byteLength % 4 !== 0) throw new ProtocolError('BAD_REQUEST', `RFORK fds: ${raw.byteLength} bytes is not a list of 4-byte descriptor numbers`, { fatal: false });
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < raw.byteLength; i += 4) {
      const fd = v.getUint32(i);
      if (fd >= 65536) throw new ProtocolError('BAD_REQUEST', `RFORK fds: descriptor ${fd} (entry ${i / 4}) is above 65535`, { fatal: false });
      if (i > 0 && fd <= v.getUint32(i - 4)) throw new ProtocolError('BAD_REQUEST', `RFORK fds: entry ${i / 4} (${fd}) is not above the one before: the list must ascend without repeats`, { fatal: false });
      fds.add(fd);
    }
  }
  if (fds.size > MAX_PROXIED_FDS) throw new ProtocolError('BAD_REQUEST', `RFORK fds: ${fds.size} descriptors, more than the ${MAX_PROXIED_FDS} one process may proxy`, { fatal: false });
  return [...fds].sort((a, b) => a - b);
}

/**
 * The image an RFORK carries inline: `imageData` itself, or, with `imageSize`,
 * its raw DEFLATE inflated to exactly that many bytes (at most 768 KiB: the
 * output is bounded before inflating, so a small stream cannot expand into
 * more). Anything else is BAD_REQUEST naming the field; the restorer then
 * validates the image itself (docs/IMAGE.md).
 */
export function inlineImage(data: Uint8Array, size: number | undefined): Buffer {
  if (size === undefined) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (size < 1 || size > IMAGE_INLINE_MAX) throw new ProtocolError('BAD_REQUEST', `RFORK imageSize ${size}: an inline image is 1 to ${IMAGE_INLINE_MAX} bytes`, { fatal: false });
  let image: Buffer;
  try {
    image = inflateRawSync(data, { maxOutputLength: size });
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `it inflates to more than imageSize ${size} bytes` : (e as Error).message;
    throw new ProtocolError('BAD_REQUEST', `RFORK imageData (${data.byteLength} bytes of raw DEFLATE): ${why}`, { fatal: false });
  }
  if (image.length !== size) throw new ProtocolError('BAD_REQUEST', `RFORK imageData inflates to ${image.length} bytes, not imageSize ${size}: a truncated or damaged image`, { fatal: false });
  return image;
}

/**
 * An inline image as it goes in the RFORK: raw DEFLATE (RFC 1951) at level 1
 * with `imageSize` its inflated length, when that is smaller. An image is
 * mostly pages with a few live bytes each (the seed's example: 136 KiB that
 * deflate to 16 KiB in about 0.7 ms, and inflate in 0.25 ms), so what crosses
 * the link shrinks several times; on loopback that costs a little latency, on
 * a 1 Gb/s link it saves about what it costs.
 */
export function inlineImageFields(image: Buffer): { imageData: Buffer; imageSize?: number } {
  const packed = deflateRawSync(image, { level: 1, memLevel: 9 });
  return packed.length < image.length ? { imageData: packed, imageSize: image.length } : { imageData: image };
}

