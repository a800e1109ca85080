// The modules a process loaded, from the files a loader hook recorded: a
// program is a bundle in dist/bin/ (scripts/bundle.mjs), and each of its
// chunks stands for the modules its source map names (src/*.ts through tsc's
// maps, node_modules/...); any other file stands for itself.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../../src/util/paths.js';

/** `files` (file: URLs or paths; node: built-ins are skipped) as module paths from the package's root, e.g. src/cli/commands/run.ts. */
export function modulesOf(files: readonly string[]): string[] {
  const root = packageRoot();
  const out = new Set<string>();
  for (const f of files) {
    if (f.startsWith('node:') || !f.includes('/')) continue;
    const path = f.startsWith('file:') ? fileURLToPath(f) : f;
    if (existsSync(`${path}.map`)) {
      const map = JSON.parse(readFileSync(`${path}.map`, 'utf8')) as { sources: string[]; sourceRoot?: string };
      for (const s of map.sources) out.add(relative(root, resolve(dirname(path), map.sourceRoot ?? '', s)));
    } else out.add(relative(root, path));
  }
  return [...out];
}
