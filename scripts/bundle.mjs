#!/usr/bin/env node
// Bundles the programs (rexd, rex, rex_key, repdb, rtop) from tsc's output in
// dist/ into dist/bin/, the files package.json `bin` names and every test and
// the local cluster run (src/util/paths.ts distBin). Why: Node 20's ES module
// loader costs about 0.5-1 ms per module (resolve, read, lex, compile), and
// rexd's start-up read some 100 modules of its own and of commander, pino and
// ajv; one bundle is read at once (docs/ARCHITECTURE.md, How rexd loads).
// Code splitting keeps every dynamic import() a chunk of its own, loaded when
// it is first needed. The chunks sit beside the
// entry points in dist/bin/, at the depth of dist/cli/, so that a path made
// from import.meta.url means the same from either. A source map is written
// beside each file (it chains tsc's maps, so stack traces name src/*.ts).
// Run by `npm run build` and `npm run prepare` after tsc; the tests' global
// set-up runs it too.
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'bin');

/**
 * The programs, each bundled on its own: its chunks (named after it) hold only its own code, so the files a
 * program reads at start are as few as its dynamic imports allow (rexd's start reads about 20).
 */
const programs = {
  rexd: 'dist/cli/rexd.js',
  rex: 'dist/cli/rex.js',
  rex_key: 'dist/cli/rex_key.js',
  repdb: 'dist/cli/repdb.js',
  rtop: 'dist/cli/rtop.js',
};

const common = {
  absWorkingDir: root,
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: 'linked',
  // Less text to parse at each start (V8 compiles what a program reads; rexd's start is about 20 ms faster
  // minified): whitespace and syntax only, so names stay as written in stack traces and profiles; the source
  // map gives the lines (node --enable-source-maps).
  minifyWhitespace: true,
  minifySyntax: true,
  // A WebAssembly module read from beside its JavaScript stays in node_modules, loaded as it is.
  // SQLite: src/util/sqlite.ts loads @photostructure/sqlite's addon by path and imports only its types, so
  // none of its JavaScript (node-gyp-build's search relative to the calling file, wrong beside a chunk) is bundled.
  external: ['libxml2-wasm'],
  // CommonJS packages in the bundle (commander, pino, ...) call require() for Node's built-ins.
  banner: { js: "import { createRequire as __rexRequire } from 'node:module'; const require = __rexRequire(import.meta.url);" },
  logLevel: 'warning',
};

rmSync(out, { recursive: true, force: true });
for (const [name, file] of Object.entries(programs)) {
  await build({ ...common, entryPoints: { [name]: file }, splitting: true, chunkNames: `${name}-[hash]` });
}
// The worker thread src/calls/programs.ts starts from beside its own file (in rexd's chunks: dist/bin/).
await build({ ...common, entryPoints: { 'program-worker': 'dist/calls/program-worker.js' } });
