/**
 * The daemon's files: the state directory (0700), the Unix socket in run/, the
 * pidfile and the log file. A directory that others can write to, or that belongs
 * to someone else, would let them impersonate the daemon: refuse it.
 */
import { chmodSync, lstatSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';

/** Linux sun_path is 108 bytes including the NUL. */
export const MAX_SOCKET_PATH = 107;

/** Creates `dir` (and parents) as 0700 if missing, and checks that it is ours and private. */
export function ensurePrivateDir(dir: string, what: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) {
    throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${what} ${dir} is not a directory`, { where: dir, hint: 'remove it or point state-directory elsewhere in rex.rc' });
  }
  const uid = process.getuid?.() ?? st.uid;
  if (st.uid !== uid) {
    throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${what} ${dir} belongs to uid ${st.uid}, not to you (uid ${uid})`, {
      where: dir,
      hint: 'each user needs a state directory of their own (rex.rc state-directory)',
    });
  }
  if ((st.mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/** The files rexd uses, derived from the socket path and state directory. */
export interface DaemonPaths {
  stateDir: string;
  socket: string;
  runDir: string;
  pidFile: string;
  logFile: string;
}

/** Works out the daemon's file paths and refuses a socket path the kernel cannot bind. */
export function daemonPaths(stateDir: string, socket: string): DaemonPaths {
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) {
    throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `socket path is ${Buffer.byteLength(socket)} bytes, the limit is ${MAX_SOCKET_PATH}: ${socket}`, {
      where: 'rex.rc socket',
      hint: 'set a shorter `socket` or `state-directory` in rex.rc',
    });
  }
  const runDir = dirname(socket);
  return { stateDir, socket, runDir, pidFile: join(runDir, 'rexd.pid'), logFile: join(stateDir, 'log', 'rexd.log') };
}

/** The pid in a pidfile, or undefined. */
export function readPid(pidFile: string): number | undefined {
  try {
    const n = Number.parseInt(readFileSync(pidFile, 'utf8').trim(), 10);
    return Number.isSafeInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}
