/**
 * What the origin side (src/exec/origin/) and the executor side
 * (src/exec/executor/) of remote execution both rely on, and rfork's sides
 * too (src/rfork/): the relay's starting credit, the signals an origin may
 * relay, the transfer bound, and the content hash files are named by.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';

/** Credit each side starts with when EXEC/STARTED name none: keeps a fast link busy, yet stays below a connection's high-water mark (PROTOCOL.md 3.1). */
export const DEFAULT_WINDOW = 1 << 20;

/**
 * The most credit an executor takes from EXEC/RFORK `window` (a u32 on the wire): what a reader that stops can
 * leave in the daemons' queues is bounded by this, whatever a client asks. librex's stub asks 4 MiB.
 */
export const MAX_WINDOW = 16 << 20;

/** Signals an origin may send (names without SIG): the one table, src/protocol/signals.ts, from which C's list is generated. */
export { RELAYED_SIGNALS } from '../protocol/signals.js';

/** Largest program transferred (it travels through the daemons' memory once). */
export const TRANSFER_MAX = 1 << 30;

const hashes = new Map<string, { key: string; hex: string }>();

/** sha256 of a file, remembered per (path, device, inode, size, mtime) so a program is hashed once. */
export function fileSha256(path: string): string {
  const st = statSync(path);
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = hashes.get(path);
  if (hit && hit.key === key) return hit.hex;
  const hex = createHash('sha256').update(readFileSync(path)).digest('hex');
  hashes.set(path, { key, hex });
  return hex;
}
