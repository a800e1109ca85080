/**
 * import() of a package that is an ES module only (libxml2-wasm, whose top-level await CommonJS cannot load), from
 * anywhere in REX, rexd's bundle included. rexd's bundle is CommonJS compiled with a V8 code cache
 * (src/cli/launch.cts), and Node 20 loses the import() callback of a function that comes from a code cache ("A
 * dynamic import callback was not specified"): the bundle therefore has no import() of its own (scripts/bundle.mjs
 * turns the others into require()), and its launcher, an ordinary CommonJS module beside it, lends its import() under
 * {@link IMPORTER}. A bare package name resolves the same from either file.
 */
export const IMPORTER = Symbol.for('rex.importEsm');

export function importEsm<T>(name: string): Promise<T> {
  const lent = (globalThis as { [IMPORTER]?: (specifier: string) => Promise<unknown> })[IMPORTER];
  return (lent ? lent(name) : import(name)) as Promise<T>;
}
