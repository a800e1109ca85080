/** Locations inside the package (dist/, native/build/) or its installation (docs/INSTALL.md), wherever it is. */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let root: string | undefined;

/** The package's root directory (the one holding package.json), from src/ or dist/ alike. */
export function packageRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('package.json not found above ' + fileURLToPath(import.meta.url));
    dir = up;
  }
  root = dir;
  return dir;
}

/**
 * The program users run, as package.json `bin` names it: the bundle of a command (scripts/bundle.mjs),
 * e.g. distBin('rex_key') -> <root>/dist/bin/rex_key.js; rexd's is the launcher of its code-cached bundle,
 * <root>/dist/bin/rexd.cjs (src/cli/launch.cts).
 */
export function distBin(name: string): string {
  return join(packageRoot(), 'dist', 'bin', name === 'rexd' ? 'rexd.cjs' : `${name}.js`);
}

/** Whether a command line's word `arg` runs rexd: its launcher (rexd.cjs), an installed `rexd`, or its tsc output (rexd.js). */
export function isRexdProgram(arg: string): boolean {
  return /^rexd(\.c?js)?$/.test(basename(arg));
}

/**
 * How a user of this copy of REX runs program `name` from a shell, for the commands that hints print: `name` when
 * it is on PATH as this very program (an installation, `npm link`, a global install), else the absolute path of
 * the package's bin file for it (a clone, or a project that depends on REX), which works pasted as it is. Never
 * `npx name`: in a clone npx installs the project into its cache and runs its install scripts first (tens of
 * seconds), and outside it would fetch whatever the registry calls `name`.
 */
export function shellCommand(name: string, env: NodeJS.ProcessEnv = process.env): string {
  if (installed()) return name;
  const file = binFile(name);
  let ours: string;
  try {
    ours = realpathSync(file);
  } catch {
    return file;
  }
  for (const dir of (env.PATH ?? '').split(':')) {
    if (!dir) continue;
    try {
      if (realpathSync(join(dir, name)) === ours) return name;
    } catch {
      /* not there */
    }
  }
  return /^[A-Za-z0-9_./@+-]+$/.test(file) ? file : `'${file.replace(/'/g, `'\\''`)}'`;
}

/** The file package.json's `bin` names for program `name` (the native `rex`, the Node programs' bundles). */
export function binFile(name: string): string {
  try {
    const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { bin?: Record<string, string> };
    const f = pkg.bin?.[name];
    if (f) return join(packageRoot(), f);
  } catch {
    /* no package.json: the bundle's place */
  }
  return distBin(name);
}

/** What `make -C native install` records in the installed package (PREFIX/lib/rex/installed.json). */
export interface Installation {
  version: string;
  prefix: string;
  bindir: string;
  libexecdir: string;
  sysconfdir: string;
}

let installation: Installation | null | undefined;

/**
 * The installation this code belongs to, or undefined when it runs from a clone or an npm
 * package (no installed.json beside package.json). Read once: it does not change while we run.
 */
export function installed(): Installation | undefined {
  if (installation === undefined) {
    try {
      installation = JSON.parse(readFileSync(join(packageRoot(), 'installed.json'), 'utf8')) as Installation;
    } catch {
      installation = null;
    }
  }
  return installation ?? undefined;
}

/**
 * The directory of the helper programs rexd runs (rex-restore, rex_callctl, rex_pty, the demo
 * programs): $REX_LIBEXEC, else the installation's libexecdir (LIBEXECDIR/rex), else native/build/bin of the
 * clone. The one place that answers, so an installed rexd never reaches into a build tree.
 */
export function libexecDir(): string {
  return process.env.REX_LIBEXEC || installed()?.libexecdir || join(packageRoot(), 'native', 'build', 'bin');
}

/** A helper program, e.g. helper('rex-restore'). */
export function helper(name: string): string {
  return join(libexecDir(), name);
}
