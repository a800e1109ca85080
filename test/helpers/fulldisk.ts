/**
 * Test fixture: a real full disk. As root, a small tmpfs mounted on a temp
 * directory (unmounted by `remove`); `fill()` writes a file until the kernel
 * answers ENOSPC, `free()` deletes it. Without root there is no way to fill a
 * disk for real without harming the machine: callers skip and say so.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** True when a tmpfs can be mounted here (root). */
export const CAN_MOUNT = process.getuid?.() === 0;

/** Why full-disk tests are skipped, printed by them. */
export const NO_MOUNT_REASON = 'not root: a full disk is simulated with a small tmpfs, which needs mount(2); skipped';

export interface FullDisk {
  dir: string;
  /** Writes a filler file until ENOSPC. */
  fill(): void;
  /** Deletes the filler file. */
  free(): void;
  /** Unmounts and removes the mount point. */
  remove(): void;
}

/** Mounts a tmpfs of `size` (e.g. '4m') on a fresh temp directory. */
export function mountTmpfs(size: string): FullDisk {
  const dir = mkdtempSync(join(tmpdir(), 'rex-fulldisk-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
  const filler = join(dir, 'filler');
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      try {
        for (const chunk of [Buffer.alloc(1 << 16, 1), Buffer.alloc(512, 1), Buffer.alloc(1, 1)]) {
          try {
            for (;;) writeSync(fd, chunk);
          } catch (e) {
            if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
          }
        }
      } finally {
        closeSync(fd);
      }
    },
    free() {
      rmSync(filler, { force: true });
    },
    remove() {
      try {
        execFileSync('umount', [dir]);
      } catch {
        execFileSync('umount', ['-l', dir]);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
