/**
 * Hosts that share no files (root only): besides its network namespace (netns.ts), each host of
 * a `--private-fs` cluster gets a mount namespace of its own, held by a file in /run/rex-mntns the
 * way `ip netns` holds network namespaces in /run/netns. In it an installed tree (a
 * `make -C native install DESTDIR=...`) is laid out at its PREFIX, and /etc/rex, /var/lib/rex,
 * /run/rex, /home and /tmp are the host's own directories, so a file on alpha is not on beta
 * unless REX moves it. The rest of the machine (/usr, /etc, /lib...) stays visible: the hosts
 * share their operating system, as the machines of a cluster installed alike do.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, RexError } from '../util/errors.js';
import type { Installation } from '../util/paths.js';

/** Where the files holding the hosts' mount namespaces live (a private mount, as /run/netns is). */
export const MNTNS_DIR = '/run/rex-mntns';

/** The directories each host has to itself, as its processes see them. */
export const PRIVATE_DIRS = ['/etc/rex', '/var/lib/rex', '/run/rex', '/home', '/tmp'] as const;

/** An installed tree: `make -C native install DESTDIR=dir PREFIX=prefix`. */
export interface InstalledTree {
  dir: string;
  prefix: string;
}

/** One host's private file system, recorded in cluster.json. */
export interface HostFs {
  /** The file holding its mount namespace (MNTNS_DIR/<netns name>). */
  mntns: string;
  /** Outside directory whose subdirectories are the host's private ones (root + '/etc/rex' ...). */
  root: string;
  tree: InstalledTree;
  /** The installation's directories as the host sees them (its installed.json). */
  installation: Installation;
}

function run(cmd: string, args: string[]): void {
  try {
    execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new RexError(ErrorCodes.USAGE, `${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
}

/** The installation recorded in a tree, or a usage error naming what is missing. */
export function treeInstallation(tree: InstalledTree): Installation {
  const file = join(tree.dir, tree.prefix, 'lib', 'rex', 'installed.json');
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Installation;
  } catch {
    throw new RexError(ErrorCodes.USAGE, `${tree.dir} holds no REX installed with PREFIX=${tree.prefix} (no ${file})`, {
      hint: `make -C native install DESTDIR=${tree.dir} PREFIX=${tree.prefix}`,
    });
  }
}

/**
 * The shell script run in a new mount namespace to lay a host out. Everything it mounts is
 * private to the namespace (unshare --propagation private), so nothing leaks back to the machine.
 */
const SETUP = `set -e
root=$1 tree=$2 prefix=$3
# The copies of other namespaces' files would keep those namespaces alive as long as this one.
for d in /run/netns ${MNTNS_DIR}; do if mountpoint -q "$d"; then umount -l "$d"; fi; done
# The installed tree in front of the machine's PREFIX (read-only: an installation is not written by what it runs).
mount -t overlay rex-tree -o "ro,lowerdir=$tree$prefix:$prefix" "$prefix"
# The host's directories, reached through a staging mount: once /home or /tmp is covered, a root below it is gone.
mount --bind "$root" ${MNTNS_DIR}
for d in ${PRIVATE_DIRS.join(' ')}; do mount --bind "${MNTNS_DIR}$d" "$d"; done
umount ${MNTNS_DIR}
`;

/** Makes MNTNS_DIR a private mount, so that namespace files can be bound in it (unshare refuses a shared one). */
function prepareDir(): void {
  mkdirSync(MNTNS_DIR, { recursive: true, mode: 0o755 });
  try {
    execFileSync('mountpoint', ['-q', MNTNS_DIR], { stdio: 'ignore' });
  } catch {
    run('mount', ['--bind', MNTNS_DIR, MNTNS_DIR]);
    run('mount', ['--make-private', MNTNS_DIR]);
  }
}

/**
 * Creates the mount namespace of one host, named `name` (its network namespace's name), with
 * its private directories under `root` (created here, /tmp mode 1777). On failure nothing stays.
 */
export function createHostFs(name: string, root: string, tree: InstalledTree): HostFs {
  const installation = treeInstallation(tree);
  for (const d of PRIVATE_DIRS) mkdirSync(join(root, d), { recursive: true, mode: 0o755 });
  // As every /tmp (mkdir's mode passes through the umask).
  chmodSync(join(root, 'tmp'), 0o1777);
  // Mount points on the machine: /etc/rex, /var/lib/rex and /run/rex are where an installed REX keeps
  // its files, and stay empty here (each host has its own over them).
  for (const d of [...PRIVATE_DIRS, tree.prefix]) mkdirSync(d, { recursive: true });
  prepareDir();
  const mntns = join(MNTNS_DIR, name);
  const fs: HostFs = { mntns, root, tree, installation };
  try {
    // unshare binds the namespace onto an existing file.
    writeFileSync(mntns, '', { mode: 0o444 });
    run('unshare', [`--mount=${mntns}`, '--propagation', 'private', '--', 'sh', '-c', SETUP, 'rex-host-fs', root, tree.dir, tree.prefix]);
  } catch (e) {
    destroyHostFs(fs);
    throw e;
  }
  return fs;
}

/**
 * Releases a host's mount namespace (it ends once its last process has). Its directories stay
 * under the cluster's, which `rex cluster down` leaves as it leaves the hosts' state.
 */
export function destroyHostFs(fs: HostFs): void {
  try {
    execFileSync('umount', ['-l', fs.mntns], { stdio: 'ignore' });
  } catch {
    /* not mounted: the namespace was never made, or is gone */
  }
  rmSync(fs.mntns, { force: true });
}

/** The command prefix that runs a program in a host's mount and network namespaces (files opened here, then entered). */
export function enterPrefix(fs: HostFs, netnsFile: string): string[] {
  return ['nsenter', `--net=${netnsFile}`, `--mount=${fs.mntns}`, '--'];
}

/** Where a path of a host's private directories is, seen from the machine. */
export function outside(fs: HostFs, inside: string): string {
  if (!PRIVATE_DIRS.some((d) => inside === d || inside.startsWith(d + '/'))) {
    throw new RangeError(`${inside} is not in a private directory of the host (${PRIVATE_DIRS.join(', ')})`);
  }
  return join(fs.root, inside);
}

/** `make -C native install DESTDIR=dir PREFIX=prefix` from this clone (the tree `--private-fs` lays out when given none). */
export function installTree(packageRoot: string, dir: string, prefix = '/usr'): InstalledTree {
  const native = join(packageRoot, 'native');
  if (!existsSync(join(native, 'Makefile'))) {
    throw new RexError(ErrorCodes.USAGE, `no native/Makefile in ${packageRoot}: cannot install a tree for the hosts`, { hint: 'give one with --tree DIR (make -C native install DESTDIR=DIR)' });
  }
  run('make', ['-s', '-C', native, 'install', `DESTDIR=${dir}`, `PREFIX=${prefix}`]);
  return { dir, prefix };
}
