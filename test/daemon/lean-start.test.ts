// A lean daemon (issue 15): rexd imports only what it serves. Starting it and
// serving a first connection loads none of repdb's generator (src/gen: the
// codegen with handlebars, the XML reader with libxml2-wasm, DWARF, SQL), which
// load on first use (a program's definitions, an XML rex.rc), and none of the
// code of its features (exec, rfork, calls: Feature in src/daemon/dispatch.ts),
// which is read once rexd serves (its warm-up) or by a feature's first request.
// The modules a real rexd process loads (the program users run: the bundle in
// dist/bin/, whose chunks' source maps name the modules in them: modulesOf) are recorded
// by a module loader hook (node:module register) and a wrapper of CommonJS's
// loader, given to it by NODE_OPTIONS; a wrapper of fs.writeSync marks the
// moment rexd logs that it serves ('rexd started', after every listener is up).
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { tempDir } from '../calls/helpers.js';
import { modulesOf } from '../helpers/modules.js';

const dir = tempDir('rex-lean-');
let cluster: LocalCluster | undefined;

afterAll(async () => {
  await cluster?.down();
  rmSync(dir, { recursive: true, force: true });
});

/** The line the record has where rexd logged that it serves. */
const READY = 'READY';

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
const require = createRequire(import.meta.url);
const Module = require('node:module');
const load = Module._load;
Module._load = function (request, parent, isMain) {
  const out = load.apply(this, arguments);
  try {
    appendFileSync(process.env.REX_TRACE_MODULES, Module._resolveFilename(request, parent, isMain) + '\\n');
  } catch {}
  return out;
};
// rexd's log (pino, synchronous) goes through fs.writeSync.
const fs = require('node:fs');
const writeSync = fs.writeSync;
let ready = false;
fs.writeSync = function (fd, data) {
  const out = writeSync.apply(this, arguments);
  if (!ready && typeof data === 'string' && data.includes('"msg":"rexd started"')) {
    ready = true;
    appendFileSync(process.env.REX_TRACE_MODULES, ${JSON.stringify(READY)} + '\\n');
  }
  return out;
};
`,
  );
  return join(dir, 'trace.mjs');
}

/** The code of rexd's features, read only once it serves (src/daemon/rexd.ts loadExec, src/calls/service.ts, src/rfork/requests.ts). */
const FEATURE_MODULES = [
  'src/exec/executor/service.ts',
  'src/exec/executor/executor.ts',
  'src/exec/executor/contain.ts',
  'src/rfork/origin.ts',
  'src/rfork/image.ts',
  'src/calls/manager.ts',
  'src/calls/router.ts',
];

describe('rexd start-up', () => {
  it("serves its first connection without loading repdb's generator, handlebars or libxml2-wasm, or its features' code, which it loads after", async () => {
    const list = join(dir, 'modules.txt');
    const saved = { NODE_OPTIONS: process.env.NODE_OPTIONS, REX_TRACE_MODULES: process.env.REX_TRACE_MODULES };
    process.env.NODE_OPTIONS = `${saved.NODE_OPTIONS ?? ''} --import ${pathToFileURL(tracer()).href}`.trim();
    process.env.REX_TRACE_MODULES = list;
    try {
      // One host with its key: up() starts its rexd and returns once it has answered HELLO on its socket.
      cluster = await LocalCluster.up({ dir: join(dir, 'cluster'), hosts: 1, netns: false, trust: 'keys', logLevel: 'info' });
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
    const record = () => readFileSync(list, 'utf8').split('\n').filter(Boolean);
    // Once it serves, rexd loads its features in the background: wait for the last of them.
    await vi.waitFor(() => expect(modulesOf(record())).toEqual(expect.arrayContaining(FEATURE_MODULES)), { timeout: 30_000, interval: 100 });
    const all = record();
    const mark = all.indexOf(READY);
    expect(mark).toBeGreaterThan(0);
    const atStart = modulesOf(all.slice(0, mark));
    // The record is of rexd itself (not of the tracer alone).
    expect(atStart).toContain('src/daemon/rexd.ts');
    expect(atStart.filter((m) => FEATURE_MODULES.includes(m))).toEqual([]);
    const heavy = modulesOf(all).filter(
      (m) =>
        /^node_modules\/(handlebars|libxml2-wasm)\//.test(m) ||
        // The ELF reader (src/gen/elf) is not repdb's: the EXEC origin lists a program's libraries with it.
        (/^(src|dist)\/gen\//.test(m) && !/^(src|dist)\/gen\/elf\/index\.(ts|js)$/.test(m)),
    );
    expect(heavy).toEqual([]);
  }, 120_000);
});
