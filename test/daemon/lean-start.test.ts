// A lean daemon (issue 15): rexd imports only what it serves. Starting it and
// serving a first connection loads none of repdb's generator (src/gen: the
// codegen with handlebars, the XML reader with libxml2-wasm, DWARF, SQL), which
// load on first use (a program's definitions, an XML rex.rc). The modules a
// real rexd process loads are recorded by a module loader hook (node:module
// register) and a wrapper of CommonJS's loader, given to it by NODE_OPTIONS.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { tempDir } from '../calls/helpers.js';

const dir = tempDir('rex-lean-');
let cluster: LocalCluster | undefined;

afterAll(async () => {
  await cluster?.down();
  rmSync(dir, { recursive: true, force: true });
});

/** Files that make node record every module it loads (ES modules by URL, CommonJS by path) in $REX_TRACE_MODULES. */
function tracer(): string {
  writeFileSync(
    join(dir, 'trace-hooks.mjs'),
    `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(process.env.REX_TRACE_MODULES, url + '\\n');
  return next(url, context);
}
`,
  );
  writeFileSync(
    join(dir, 'trace.mjs'),
    `import { register } from 'node:module';
import { createRequire } from 'node:module';
import { appendFileSync } from 'node:fs';
register(${JSON.stringify(pathToFileURL(join(dir, 'trace-hooks.mjs')).href)});
const Module = createRequire(import.meta.url)('node:module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const out = load.apply(this, arguments);
  try {
    appendFileSync(process.env.REX_TRACE_MODULES, Module._resolveFilename(request, parent, isMain) + '\\n');
  } catch {}
  return out;
};
`,
  );
  return join(dir, 'trace.mjs');
}

describe('rexd start-up', () => {
  it("serves its first connection without loading repdb's generator, handlebars or libxml2-wasm", async () => {
    const list = join(dir, 'modules.txt');
    const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, REX_TRACE_MODULES: process.env.REX_TRACE_MODULES };
    process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ''} --import ${pathToFileURL(tracer()).href}`.trim();
    process.env.REX_TRACE_MODULES = list;
    try {
      // One host with its key: up() starts its rexd and returns once it has answered HELLO on its socket.
      cluster = await LocalCluster.up({ dir: join(dir, 'cluster'), hosts: 1, netns: false, trust: 'keys', logLevel: 'warn' });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const loaded = readFileSync(list, 'utf8').split('\n').filter(Boolean);
    // The record is of rexd itself (not of the tracer alone).
    expect(loaded.some((m) => m.endsWith('/dist/daemon/rexd.js'))).toBe(true);
    const heavy = loaded.filter(
      (m) =>
        /\/node_modules\/(handlebars|libxml2-wasm)\//.test(m) ||
        // The ELF reader (src/gen/elf) is not repdb's: the EXEC origin lists a program's libraries with it.
        (/\/dist\/gen\//.test(m) && !/\/dist\/gen\/elf\/index\.js$/.test(m)),
    );
    expect(heavy).toEqual([]);
  }, 120_000);
});
