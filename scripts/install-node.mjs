#!/usr/bin/env node
// The Node half of `make -C native install` (docs/INSTALL.md): the package's runtime files under
// LIBDIR/rex (dist/, schema/, templates/, package.json, the production node_modules, the addon),
// installed.json telling that code where its installation puts the helpers, and one launcher per
// program of package.json's `bin` in BINDIR. Run by native/Makefile with the install directories:
//   node scripts/install-node.mjs --destdir D --prefix P --bindir B --libdir L --libexecdir X --sysconfdir S [--node NODE]
// Paths are where the files live once installed; DESTDIR is prepended only when writing.
import { chmodSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = dirname(dirname(fileURLToPath(import.meta.url)));
const args = {};
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i];
  const v = process.argv[i + 1];
  if (!k?.startsWith('--') || v === undefined) {
    console.error(`install-node: expected --name value pairs, got ${process.argv.slice(2).join(' ')}`);
    process.exit(2);
  }
  args[k.slice(2)] = v;
}
for (const k of ['prefix', 'bindir', 'libdir', 'libexecdir', 'sysconfdir']) {
  if (!args[k]?.startsWith('/')) {
    console.error(`install-node: --${k} must be an absolute path, got ${args[k] ?? 'nothing'}`);
    process.exit(2);
  }
}
const destdir = args.destdir ?? '';
const node = args.node ?? 'node';
const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8'));
const libRex = join(args.libdir, 'rex');
const out = (p) => destdir + p;

for (const need of ['dist', 'native/build/Release/rex_addon.node']) {
  if (!existsSync(join(repo, need))) {
    console.error(`install-node: ${need} is missing: run npm install (or npm run build) first`);
    process.exit(1);
  }
}

// A fresh copy: files a former version had must not linger beside the new ones.
rmSync(out(libRex), { recursive: true, force: true });
mkdirSync(out(libRex), { recursive: true });
cpSync(join(repo, 'package.json'), out(join(libRex, 'package.json')));
// dist/man goes to MANDIR (the Makefile); the rest is the compiled code.
cpSync(join(repo, 'dist'), out(join(libRex, 'dist')), { recursive: true, filter: (src) => relative(join(repo, 'dist'), src) !== 'man' });
for (const d of ['schema', 'templates']) cpSync(join(repo, d), out(join(libRex, d)), { recursive: true });
// src/util/native.ts loads the addon from native/build/Release below the package root.
mkdirSync(out(join(libRex, 'native/build/Release')), { recursive: true });
cpSync(join(repo, 'native/build/Release/rex_addon.node'), out(join(libRex, 'native/build/Release/rex_addon.node')));

// The production dependencies, found the way Node's resolver finds them (the nearest
// node_modules up from the package that needs one), each copied to the same place.
const copied = new Set();
function resolveDep(fromDir, name) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const cand = join(dir, 'node_modules', name);
    if (existsSync(join(cand, 'package.json'))) return cand;
    if (dir === repo || dirname(dir) === dir) return undefined;
  }
}
function copyPackage(dir) {
  if (copied.has(dir)) return;
  copied.add(dir);
  const meta = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  // A package built by node-gyp needs its compiled .node files, not its C sources or build tree.
  const gyp = existsSync(join(dir, 'binding.gyp'));
  const skip = new Set(['node_modules', ...(gyp ? ['build', 'deps', 'src'] : [])]);
  const to = out(join(libRex, relative(repo, dir)));
  mkdirSync(to, { recursive: true });
  for (const e of readdirSync(dir)) if (!skip.has(e)) cpSync(join(dir, e), join(to, e), { recursive: true });
  if (gyp && existsSync(join(dir, 'build/Release'))) {
    mkdirSync(join(to, 'build/Release'), { recursive: true });
    for (const f of readdirSync(join(dir, 'build/Release'))) if (f.endsWith('.node')) cpSync(join(dir, 'build/Release', f), join(to, 'build/Release', f));
  }
  const deps = { ...meta.dependencies, ...meta.optionalDependencies };
  for (const name of Object.keys(deps)) {
    const found = resolveDep(dir, name);
    if (found) copyPackage(found);
    else if (!meta.optionalDependencies?.[name]) throw new Error(`install-node: ${meta.name} needs ${name}, which is not in node_modules (npm install)`);
  }
}
for (const name of Object.keys(pkg.dependencies ?? {})) {
  const found = resolveDep(repo, name);
  if (!found) throw new Error(`install-node: dependency ${name} is not in node_modules: run npm install first`);
  copyPackage(found);
}

// Where the installed code finds what is not below it (src/util/paths.ts installed()).
writeFileSync(
  out(join(libRex, 'installed.json')),
  JSON.stringify({ version: pkg.version, prefix: args.prefix, bindir: args.bindir, libexecdir: join(args.libexecdir, 'rex'), sysconfdir: args.sysconfdir }, null, 2) + '\n',
);

// One launcher per Node program of package.json's bin. A native entry (`rex`: native/build/bin/rex, the
// front end of native/frontend/rex.c) is no Node program: the Makefile installs its own build of it in
// BINDIR, one that finds the Node CLI at LIBDIR/rex/dist/bin/rex.js (copied above with dist/).
mkdirSync(out(args.bindir), { recursive: true });
const launched = [];
for (const [name, file] of Object.entries(pkg.bin ?? {})) {
  if (!/\.c?js$/.test(file)) continue;
  launched.push(name);
  const target = join(libRex, file);
  if (target.includes("'")) throw new Error(`install-node: ${target} has a quote, which the launcher cannot hold`);
  const launcher = out(join(args.bindir, name));
  writeFileSync(
    launcher,
    [
      '#!/bin/sh',
      `# ${name}: the launcher \`make -C native install\` wrote (scripts/install-node.mjs). It runs the`,
      `# installed program with node: $REX_NODE when set, else ${node === 'node' ? 'the first node on PATH' : node}.`,
      `exec "\${REX_NODE:-${node}}" '${target}' "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(launcher, 0o755);
}
console.log(`install-node: ${libRex} (${copied.size} packages of node_modules), launchers ${launched.join(', ')} in ${args.bindir}`);
