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
import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

// rexd, whose start is timed (issue 15): one CommonJS bundle, rexd-main.cjs, that its entry point rexd.cjs
// (src/cli/launch.cts) compiles with V8's code cache, which Node 20 gives CommonJS run through node:vm and not ES
// modules. Its dynamic imports stay lazy (esbuild runs a module's top level when it is first imported); the repdb
// stack, which rexd needs only where the worker thread that reads definitions is missing (src/calls/programs.ts),
// stays out of the bundle (an error that says the worker is missing takes its place), as do libxml2-wasm and the
// addons. The bundle has no import() (Node 20 loses the import() callback of code from a code cache): those of
// bundled modules and built-ins become require(), and an ES-only package is imported by the launcher
// (src/util/import-esm.ts); the build fails if one is left.
const outsideRexd = {
  name: 'rexd-outside',
  setup(b) {
    b.onResolve({ filter: /\/gen\/index\.js$/ }, () => ({ path: 'repdb-readers', namespace: 'rexd-outside' }));
    b.onLoad({ filter: /.*/, namespace: 'rexd-outside' }, () => ({
      contents:
        "throw Object.assign(new Error(\"rexd reads programs' definitions in its worker thread, dist/bin/program-worker.js, which is missing: reinstall REX (npm install, or make -C native install)\"), { code: 'REX_NATIVE_ADDON' });",
      loader: 'js',
    }));
  },
};
const rexdBuild = await build({
  ...common,
  metafile: true,
  entryPoints: { 'rexd-main': 'dist/cli/rexd.js' },
  format: 'cjs',
  outExtension: { '.js': '.cjs' },
  plugins: [outsideRexd],
  supported: { 'dynamic-import': false },
  // The bundle's own URL where the sources read import.meta.url (paths beside the program, createRequire).
  define: { 'import.meta.url': '__rexImportMetaUrl' },
  banner: { js: "const __rexImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
});
// The bundle is a function body to the launcher, where a #! line is a syntax error: made a comment of one line, so
// the source map's lines stay.
const rexdMain = join(out, 'rexd-main.cjs');
const rexdCode = readFileSync(rexdMain, 'utf8');
const leftImports = Object.values(rexdBuild.metafile.outputs).flatMap((o) => o.imports.filter((i) => i.kind === 'dynamic-import').map((i) => i.path));
if (leftImports.length) throw new Error(`dist/bin/rexd-main.cjs has an import() of ${leftImports.join(', ')}: it would fail from the code cache; import an ES-only package with importEsm (src/util/import-esm.ts)`);
writeFileSync(rexdMain, rexdCode.replace(/^#!/, '//'));
await build({ ...common, entryPoints: { rexd: 'dist/cli/launch.cjs' }, format: 'cjs', outExtension: { '.js': '.cjs' }, define: { __REX_BUNDLE__: '"rexd-main.cjs"' }, banner: { js: '#!/usr/bin/env node' } });
chmodSync(join(out, 'rexd.cjs'), 0o755);
// The worker thread src/calls/programs.ts starts from beside its own file (in rexd's chunks: dist/bin/).
await build({ ...common, entryPoints: { 'program-worker': 'dist/calls/program-worker.js' } });
// rexd's code cache, made by a training run of the bundle just built (scripts/code-cache.mjs).
const trained = spawnSync(process.execPath, [join(root, 'scripts', 'code-cache.mjs')], { stdio: 'inherit' });
if (trained.status !== 0) process.exitCode = trained.status ?? 1;
