/**
 * The package as other local users can run it. Tests of the root installation start programs as
 * test users (rex-session drops to them): those users must be able to read dist/, native/build and
 * node_modules. A clone under /root (0700) is not readable by them, so then the runtime files are
 * copied once into a world-readable temporary directory; otherwise the clone is used as it is.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, cpSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The runtime parts of the package a rexd needs, and the programs the root installation's tests run as their users. */
const PARTS = ['package.json', 'dist', 'schema', 'templates', 'node_modules', 'native/build', 'test/fixtures/root'];

/** True when every directory above and including `dir` lets others traverse it. */
function traversable(dir: string): boolean {
  for (let d = dir; ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) return false;
    if (dirname(d) === d) return true;
  }
}

/** A package root other users can read, and how to remove it when it is a copy. */
export function readablePackage(): { root: string; copied: boolean; remove(): void } {
  if (traversable(join(ROOT, 'dist', 'bin'))) return { root: ROOT, copied: false, remove: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), 'rex-pkg-'));
  chmodSync(dir, 0o755);
  for (const p of PARTS) cpSync(join(ROOT, p), join(dir, p), { recursive: true, preserveTimestamps: true });
  // Files copied keep their modes; make sure others may read them (a umask of 077 would not let them).
  execFileSync('chmod', ['-R', 'o+rX', dir]);
  return { root: dir, copied: true, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
