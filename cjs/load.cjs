'use strict';
// The `require` condition of package.json's exports (cjs/index.cjs, cjs/codegen-v1.cjs). The package
// is ES modules (dist/runtime/*.js) and ships no CommonJS build. Node 20.19 and later (22.12 and
// later on 22) load an ES module through require() (it has no top-level await), and so does this
// file there; older Nodes (20.0-20.18, or --no-experimental-require-module) cannot (ERR_REQUIRE_ESM),
// so there require() throws an error saying what to write instead: import, or await import() from
// CommonJS. Documented in README (Install) and docs/INSTALL.md.
module.exports = function load(req, file, spec) {
  try {
    return req(file);
  } catch (e) {
    if (!e || e.code !== 'ERR_REQUIRE_ESM') throw e;
    const err = new Error(
      `${spec} is an ES module, and this Node (${process.version}) cannot require() one ` +
        `(Node 20.19 and later can, unless started with --no-experimental-require-module): ` +
        `use \`import { spawn } from '${spec}'\` in an ES module, or \`const rex = await import('${spec}')\` from CommonJS`,
      { cause: e },
    );
    err.code = 'ERR_REQUIRE_ESM';
    throw err;
  }
};
