/**
 * Who is at the other end of the local socket. With librex's Node-API addon
 * (src/util/native.ts, SO_PEERCRED) rexd reads the caller's uid and serves only
 * its own user. Without the addon it falls back on the socket directory: rexd
 * creates it 0700 and owned by its user (paths.ts), so only that user (and root)
 * can connect at all.
 */
import type { Socket } from 'node:net';
import { loadAddon } from '../util/native.js';

type PeerCredFn = (fd: number) => { pid: number; uid: number; gid: number };

let peerCredentials: PeerCredFn | undefined;
let why = 'not loaded yet';

/** Loads the addon once; returns how local callers are checked, for the start-up log. */
export function initPeerCred(): string {
  try {
    const addon = loadAddon();
    peerCredentials = (fd) => addon.peerCredentials(fd);
    why = 'SO_PEERCRED (native addon)';
  } catch (e) {
    peerCredentials = undefined;
    why = `socket directory permissions only (addon unavailable: ${(e as Error).message.split('\n')[0]})`;
  }
  return why;
}

/** The caller's uid and pid, or undefined when only the directory permissions protect the socket. */
export function localPeer(sock: Socket): { uid: number; pid: number } | undefined {
  if (!peerCredentials) return undefined;
  const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return undefined;
  try {
    const c = peerCredentials(fd);
    return { uid: c.uid, pid: c.pid };
  } catch {
    return undefined;
  }
}
