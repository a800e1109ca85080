/**
 * rexd's entry point, `dist/bin/rexd.cjs` (package.json `bin`): it runs rexd's bundle, `rexd-main.cjs`, through the
 * V8 code cache that the build wrote beside it, so that rexd's start does not compile its code again each time
 * (issue 15: rexd start to its first answer <= 150 ms; compiling the bundle was some 25 ms of it).
 * docs/ARCHITECTURE.md, How rexd loads, says what it saves and why it is built this way.
 *
 * Node 20 has no compile cache for modules of its own (node:module's enableCompileCache came with Node 22), so the
 * bundle is CommonJS, compiled here by node:vm with the cache as `cachedData`. The cache is written only by the
 * build (scripts/code-cache.mjs, through REX_CODE_CACHE_OUT), in the package's own dist/bin/, never at run time
 * and never in a shared directory: a cache is code, and one that another local user could write would be theirs
 * to run as whoever starts rexd (the /tmp cache path of the brief). V8 checks the cache against its version and
 * flags, and against the source's length only: the cache file therefore starts with the SHA-256 of the bundle it
 * was made from, and a cache of any other bundle is not used. Without a cache, or when V8 rejects it (another Node
 * version), the bundle is compiled as any script: slower, the same program.
 *
 * Bundled on its own by scripts/bundle.mjs as CommonJS (the program's bundle name defined as __REX_BUNDLE__).
 */
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Script } from 'node:vm';

declare const __REX_BUNDLE__: string;

/** What the cache file holds before V8's data: the SHA-256 of the bundle the data was made from. */
const HASH_BYTES = 32;

/** Why the cache was or was not used, for REX_CODE_CACHE_REPORT=1 (the tests and `npm run bench -- start` read it). */
type CacheState = 'used' | 'rejected' | 'absent' | 'stale' | 'unsafe' | 'writing';

function report(state: CacheState): void {
  if (process.env.REX_CODE_CACHE_REPORT === '1') process.stderr.write(`rex code cache: ${state}\n`);
}

function launch(): void {
  const file = join(__dirname, __REX_BUNDLE__);
  const code = readFileSync(file);
  const hash = createHash('sha256').update(code).digest();
  const out = process.env.REX_CODE_CACHE_OUT;
  let cachedData: Buffer | undefined;
  let state: CacheState = 'writing';
  if (!out) {
    let fd: number | undefined;
    try {
      fd = openSync(`${file}.cache`, 'r');
      // As sshd's StrictModes: a cache that someone other than the bundle's owner wrote, or could write, is not run.
      const st = fstatSync(fd);
      if (st.uid !== statSync(file).uid || (st.mode & 0o022) !== 0 || !st.isFile()) state = 'unsafe';
      else {
        const cache = readFileSync(fd);
        if (cache.length > HASH_BYTES && hash.equals(cache.subarray(0, HASH_BYTES))) cachedData = cache.subarray(HASH_BYTES);
        else state = 'stale';
      }
    } catch {
      state = 'absent';
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  // The function wrapper of a CommonJS module (node:module's wrap()); the bundle starts with no #! line.
  const source = `(function (exports, require, module, __filename, __dirname) { ${code.toString('utf8')}\n})`;
  const script = new Script(source, { filename: file, ...(cachedData ? { cachedData } : {}) });
  if (cachedData) state = script.cachedDataRejected ? 'rejected' : 'used';
  report(state);
  if (out) {
    // The build's training run (scripts/code-cache.mjs): what V8 compiled by the time rexd exits goes into the cache.
    process.once('exit', () => {
      try {
        writeFileSync(out, Buffer.concat([hash, script.createCachedData()]), { flag: 'wx', mode: 0o644 });
      } catch (e) {
        process.stderr.write(`rex code cache: not written: ${e instanceof Error ? e.message : String(e)}\n`);
        process.exitCode = 1;
      }
    });
  }
  // The bundle's import() of an ES module goes through this file's (src/util/import-esm.ts): Node 20 loses the
  // import() callback of code that comes from a code cache.
  (globalThis as Record<symbol, unknown>)[Symbol.for('rex.importEsm')] = (specifier: string) => import(specifier);
  const mod = { exports: {} };
  (script.runInThisContext() as (...a: unknown[]) => void).call(mod.exports, mod.exports, createRequire(file), mod, file, __dirname);
}

launch();
