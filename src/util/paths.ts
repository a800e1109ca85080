/** Locations inside the installed package (dist/, native/build/), wherever it is installed. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
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
 * e.g. distBin('rexd') -> <root>/dist/bin/rexd.js.
 */
export function distBin(name: string): string {
  return join(packageRoot(), 'dist', 'bin', `${name}.js`);
}
