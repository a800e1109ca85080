/**
 * The directories rexd executes or maps files from (docs/EXEC.md, "Where
 * files live"): the program cache, the per-run library directories and the
 * rfork images, all in rexd's private state directory, plus rex.rc
 * rex-temp-directory, where a program runs when its caller's cwd does not
 * exist here. Checked at start as OpenSSH's StrictModes checks ~/.ssh: a
 * directory that is a symbolic link, belongs to another user or is writable
 * by group or others, or has a parent that someone else could change, would
 * let another local user put a program where rexd runs it; rexd refuses to
 * start, naming the directory and the fix.
 */
import { lstatSync, mkdirSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ErrorCodes, RexError } from '../../util/errors.js';

/** Where the executor keeps its files, all under the state directory. */
export interface ExecDirs {
  /** Content-addressed programs, libraries and rfork images fetched from origins, with their insertion records. */
  cache: string;
  /** Per-run directories of libraries put first in LD_LIBRARY_PATH. */
  run: string;
  /** rfork images received inline in EXEC, each removed once restored. */
  images: string;
}

/** The executor's directories of a state directory. */
export function execDirs(stateDirectory: string): ExecDirs {
  return { cache: join(stateDirectory, 'cache'), run: join(stateDirectory, 'exec-run'), images: join(stateDirectory, 'exec-images') };
}

/** The uid rexd runs as. */
export function ownUid(): number {
  return process.getuid?.() ?? 0;
}

function refuse(dir: string, what: string, why: string, hint: string): never {
  throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${what} ${dir} ${why}; rexd will not execute or map files from it`, { where: dir, hint });
}

/**
 * Checks that `dir` is a directory (not a symbolic link), owned by rexd's uid
 * and not writable by group or others, creating it (0700, and its missing
 * parents 0700) when it does not exist; then checks its parents (see
 * {@link checkParents}). Throws RexError DAEMON_STATE_DIR saying what is
 * wrong and how to fix it.
 */
export function ensureSafeDir(dir: string, what: string, setting: string): void {
  const uid = ownUid();
  try {
    lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) refuse(dir, what, 'is a symbolic link (rexd does not follow links there)', `remove the link (rm ${dir}) so that rexd creates a private directory there, or point ${setting} at a directory of rexd's user`);
  if (!st.isDirectory()) refuse(dir, what, 'is not a directory', `remove it (rm ${dir}) or point ${setting} elsewhere`);
  if (st.uid !== uid) refuse(dir, what, `belongs to uid ${st.uid}, not to rexd's uid ${uid}`, `remove it (rm -rf ${dir}; another user may have put files in it) so that rexd creates it, or point ${setting} at a directory of rexd's user`);
  if ((st.mode & 0o022) !== 0) {
    refuse(dir, what, `is writable by ${st.mode & 0o020 ? 'its group' : ''}${(st.mode & 0o022) === 0o022 ? ' and ' : ''}${st.mode & 0o002 ? 'others' : ''} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`, `chmod 700 ${dir} after checking nobody else put files in it, or remove it (rm -rf ${dir}) so that rexd creates it private`);
  }
  checkParents(dir, what, setting);
}

/**
 * Checks every directory above `dir`, after resolving symbolic links in them
 * (as OpenSSH's safe_path): each must belong to root or rexd's uid and must
 * not be writable by group or others, unless it is sticky (/tmp): there
 * nobody but the owner may rename or remove what rexd created.
 */
export function checkParents(dir: string, what: string, setting: string): void {
  const uid = ownUid();
  let p = realpathSync(dirname(dir));
  for (;;) {
    const st = lstatSync(p);
    if (st.uid !== uid && st.uid !== 0) {
      refuse(dir, what, `is inside ${p}, which belongs to uid ${st.uid} (neither root nor rexd's uid ${uid}), who could replace it`, `point ${setting} at a directory whose parents belong to root or rexd's user`);
    }
    if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) {
      refuse(dir, what, `is inside ${p}, which group or others can write (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}) and is not sticky, so they could replace it`, `chmod go-w ${p}, or point ${setting} elsewhere`);
    }
    if (p === '/') return;
    p = dirname(p);
  }
}

/**
 * Checks (and creates) every directory the executor runs or maps files from,
 * at rexd's start: the cache, run and image directories in the state
 * directory, and rex-temp-directory.
 */
export function checkExecDirectories(stateDirectory: string, tempDirectory: string): void {
  const dirs = execDirs(stateDirectory);
  ensureSafeDir(stateDirectory, 'state directory', 'state-directory in rex.rc');
  ensureSafeDir(dirs.cache, 'program cache', 'state-directory in rex.rc');
  ensureSafeDir(dirs.run, 'library run directory', 'state-directory in rex.rc');
  ensureSafeDir(dirs.images, 'rfork image directory', 'state-directory in rex.rc');
  ensureSafeDir(tempDirectory, 'rex-temp-directory', 'rex-temp-directory in rex.rc');
}
