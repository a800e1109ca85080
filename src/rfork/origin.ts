/**
 * rfork's origin side (docs/RFORK.md section 5): a local client's RFORK (its
 * image in its own memfd) checked, placed only where the image can run (its
 * CPU needs), and sent to the chosen host inline or by hash with the files it
 * maps offered for FETCH. Placement, the relay and FETCH serving are EXEC's
 * (ExecService.route in src/exec/executor/service.ts); this says what differs.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Connection, Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import { IMAGE_INLINE_MAX, type MessageOf } from '../protocol/messages.js';
import { fileSha256, TRANSFER_MAX } from '../exec/protocol.js';
import type { Offer } from '../exec/origin/transfer.js';
import type { ExecutorContext } from '../exec/executor/executor.js';
import { MAX_LIBRARIES, type NeededLibrary } from '../exec/executor/libraries.js';
import { imageRefused } from '../exec/executor/limit.js';
import { libsField, NotStarted, type ExecCaller, type ExecService } from '../exec/executor/service.js';
import { cannotRunMessage, cpuShortfall } from '../placement/index.js';
import type { CpuNeeds } from '../cpu/profile.js';
import type { PeerLink } from '../daemon/peers.js';
import { readImageInfo } from './image.js';
import { restoreHere } from './executor.js';
import { inlineImageFields } from './protocol.js';

/** Serves one RFORK on `conn` with `exec`'s placement and relay; resolves with the EXIT answer. */
export async function serveRfork(exec: ExecService, m: MessageOf<'RFORK'>, caller: ExecCaller, conn: Connection): Promise<Reply> {
  const ctx = exec.ctx;
  if (caller.limit) throw imageRefused(caller.limit);
  m = checkImage(m, caller);
  // RFORK files is the origin rexd's to set (from the files the image maps), never a local client's.
  if (caller.local && m.files) m = { ...m, files: [] };
  const image = m;
  return exec.route(
    {
      m: image,
      here: (onStarted) => restoreHere(image, conn, ctx, onStarted),
      outgoing: async () => {
        const { fields, offer } = await imageRequest(image.path, ctx);
        return { fields: { ...fields, ...(offer.libs.length > 0 ? { files: libsField(offer) } : {}) }, offer };
      },
      // An rfork image goes only where its CPU state and the features its code may have chosen exist (docs/PLACEMENT.md).
      needs: () => imageNeeds(image),
      checkNamed: (host, peer) => checkNamedHost(image, host, peer, ctx),
    },
    caller,
    conn,
  );
}

/** What a local client's rfork image needs of the CPU (its metadata only is read). */
function imageNeeds(m: MessageOf<'RFORK'>): CpuNeeds {
  try {
    return readImageInfo(m.path, { metadataOnly: true, name: 'rfork image', checkHash: false }).cpuNeeds;
  } catch (e) {
    throw new ProtocolError('BAD_REQUEST', `RFORK image: ${(e as Error).message}`, { fatal: false });
  }
}

/**
 * A peer named for an rfork image (--host, REX_HOST, rfork_on) must be able
 * to run it: refused before the image is sent, naming what it lacks. A peer
 * not reached yet is reached first; one that cannot be is left to the relay
 * (UNREACHABLE).
 */
async function checkNamedHost(m: MessageOf<'RFORK'>, host: string, peer: PeerLink, ctx: ExecutorContext): Promise<void> {
  if (!peer.state.figure && !peer.connection) await peer.connectNow();
  if (!peer.state.reachable || !peer.state.figure) return;
  const missing = cpuShortfall(imageNeeds(m), { ...(peer.state.cpu ? { cpu: peer.state.cpu } : {}) });
  if (missing.length === 0) return;
  const msg = cannotRunMessage(host, missing);
  ctx.log.warn({ image: m.path, host, missing }, `RFORK: ${msg}`);
  throw new ProtocolError('INCOMPATIBLE', msg, { fatal: false });
}

/**
 * What an origin offers for an rfork image: the image itself, and each file
 * it maps privately (program, libraries), named in RFORK `files` with its
 * sha256 so that the executor maps its own identical copy or fetches one
 * (docs/RFORK.md section 5). Files mapped shared are left to the restorer's
 * strict identity check: a copy could not share writes with the origin.
 */
function imageOffer(path: string, data: Buffer | string, sha256: Uint8Array | undefined, ctx: ExecutorContext): Offer {
  const files = new Map<string, string>(sha256 ? [[Buffer.from(sha256).toString('hex'), path]] : []);
  const libs: NeededLibrary[] = [];
  let info;
  try {
    info = readImageInfo(data, { metadataOnly: true, name: 'rfork image', checkHash: false });
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `RFORK image: ${(e as Error).message}`, { fatal: false }));
  }
  for (const f of info.files) {
    if (f.shared || f.path.includes('=') || libs.length >= MAX_LIBRARIES) continue;
    let hex: string;
    try {
      hex = fileSha256(f.path);
    } catch (e) {
      ctx.log.warn({ file: f.path, err: (e as Error).message }, 'RFORK: a file the rfork image maps cannot be read here; the executor must have it');
      continue;
    }
    files.set(hex, f.path);
    libs.push({ name: basename(f.path), path: f.path, sha256: hex, size: f.size });
  }
  return { files, libs, ...(sha256 ? { hashed: new Set([Buffer.from(sha256).toString('hex')]) } : {}) };
}

/**
 * An rfork image (RFORK, docs/RFORK.md section 5): from a local client
 * it must be that client's own memfd, /proc/PID/fd/N with PID its SO_PEERCRED
 * pid (rexd reads nothing else on its behalf). From a peer it must carry the
 * sha256 the executor fetches it by.
 */
function checkImage(m: MessageOf<'RFORK'>, caller: ExecCaller): MessageOf<'RFORK'> {
  if (!caller.local) {
    if (!m.imageData && (!m.sha256 || m.sha256.byteLength !== 32)) throw new ProtocolError('BAD_REQUEST', 'RFORK from a peer with neither its bytes (imageData) nor its sha256', { fatal: false });
    if (m.imageSize !== undefined && !m.imageData) throw new ProtocolError('BAD_REQUEST', 'RFORK imageSize without imageData: it is the inflated length of an inline image', { fatal: false });
    return m;
  }
  if (m.imageData || m.imageSize !== undefined) throw new ProtocolError('BAD_REQUEST', 'RFORK imageData comes from a peer only: a local client names its image descriptor', { fatal: false });
  const own = /^\/proc\/(\d+)\/fd\/(\d+)$/.exec(m.path);
  if (!own || caller.pid === undefined || Number(own[1]) !== caller.pid) {
    throw new ProtocolError('DENIED', `RFORK image ${m.path}: an image must be the client's own descriptor, /proc/${caller.pid ?? 'PID'}/fd/N`, { fatal: false });
  }
  return m;
}

/**
 * How a local client's image leaves this host, read once: a small one inside
 * the RFORK (`imageData`: no round trip, the peer link authenticates it), a
 * larger one by the sha256 the executor fetches it by (FETCH/FILE); and what
 * this origin offers for it (imageOffer).
 */
async function imageRequest(path: string, ctx: ExecutorContext): Promise<{ fields: { imageData: Buffer; imageSize?: number } | { sha256: Buffer }; offer: Offer }> {
  let size: number;
  try {
    size = statSync(path).size;
    // A small image is read at once (the latency path) and goes inside the RFORK.
    if (size <= IMAGE_INLINE_MAX) {
      const data = readFileSync(path);
      if (data.length <= IMAGE_INLINE_MAX) return { fields: inlineImageFields(data), offer: imageOffer(path, data, undefined, ctx) };
    }
  } catch (e) {
    if (e instanceof NotStarted) throw e;
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `RFORK image ${path}: ${(e as Error).message}`, { fatal: false }));
  }
  if (size > TRANSFER_MAX) throw new NotStarted(new ProtocolError('BAD_REQUEST', `RFORK image: ${size} bytes, more than the ${TRANSFER_MAX} a transfer carries`, { fatal: false }));
  const sha256 = await hashImage(path);
  return { fields: { sha256 }, offer: imageOffer(path, path, sha256, ctx) };
}

/**
 * sha256 of a large image, in one pass that never holds the image: read
 * synchronously 8 MiB at a time into one buffer (a read of the client's memfd
 * is a copy of its pages: fs/promises readFile, through the thread pool in
 * small pieces, took 600 ms for 256 MiB against about 50 ms), hashed, with I/O
 * let in between: 256 MiB in one go held rexd about a second, long enough
 * for its peers' load requests to time out and take the link down under the
 * transfer that was about to start.
 */
async function hashImage(path: string): Promise<Buffer> {
  const hash = createHash('sha256');
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `RFORK image ${path}: ${(e as Error).message}`, { fatal: false }));
  }
  try {
    const buf = Buffer.allocUnsafe(8 << 20);
    for (let off = 0, n; (n = readSync(fd, buf, 0, buf.length, off)) > 0; off += n) {
      if (off + n > TRANSFER_MAX) throw new Error(`more than the ${TRANSFER_MAX} bytes a transfer carries`);
      hash.update(buf.subarray(0, n));
      await new Promise((r) => setImmediate(r));
    }
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `RFORK image ${path}: ${(e as Error).message}`, { fatal: false }));
  } finally {
    closeSync(fd);
  }
  return hash.digest();
}

