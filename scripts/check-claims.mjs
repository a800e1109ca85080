#!/usr/bin/env node
/**
 * Lists what the README and docs claim against the tests that show it, so
 * that a claim without a test stays visible (issue: tests that can fail).
 *
 * A claim is marked in the Markdown where it is made, with an HTML comment
 * (invisible when rendered):
 *
 *     rexd ends the programs it runs on SIGTERM. <!-- claim: exec.sigterm-ends-jobs -->
 *
 * and a test that shows it says so in a comment right above its `it(...)`:
 *
 *     // claim: exec.sigterm-ends-jobs
 *     it('ends the programs it runs, their children included, and exits', ...)
 *
 * Fails (exit 1) when a marked claim has no test, a test names a claim no doc
 * makes, or a doc says "tested" of something it does not mark as a claim.
 * `--list` prints every claim with its tests.
 *
 * Usage: node scripts/check-claims.mjs [--list]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(fileURLToPath(import.meta.url), '..', '..');
const list = process.argv.includes('--list');

function files(dir, ext) {
  const out = [];
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) {
      if (e !== 'node_modules' && e !== 'fixtures') out.push(...files(p, ext));
    } else if (e.endsWith(ext)) out.push(p);
  }
  return out.sort();
}

const ID = /^[a-z0-9]+(?:[.-][a-z0-9]+)*$/;
const problems = [];

/** claim id -> { where, text } */
const claims = new Map();
const docs = [join(root, 'README.md'), ...files(join(root, 'docs'), '.md')];
for (const file of docs) {
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    const where = `${relative(root, file)}:${i + 1}`;
    const marks = [...line.matchAll(/<!--\s*claim:\s*([^>]*?)\s*-->/g)];
    for (const m of marks) {
      for (const id of m[1].split(/[\s,]+/).filter(Boolean)) {
        if (!ID.test(id)) problems.push(`${where}: claim id "${id}" is not of the form area.name (lower case, digits, '.' and '-')`);
        else if (claims.has(id)) problems.push(`${where}: claim "${id}" is made again (first at ${claims.get(id).where}); give it another id`);
        else {
          // The claim's text: this line and the one before, without Markdown, for the listing.
          const text = `${lines[i - 1] ?? ''} ${line}`.replace(/<!--.*?-->/g, '').replace(/[`*_]/g, '').replace(/\s+/g, ' ').trim();
          claims.set(id, { where, text: text.length > 100 ? `...${text.slice(-97)}` : text });
        }
      }
    }
    // "tested" in prose is a claim about the suite: it must be marked (on this line or the next five).
    if (/\(tested\b|\btested[:(]|\bTested:/.test(line.replace(/<!--.*?-->/g, ''))) {
      const near = lines.slice(i, i + 6).join(' ');
      if (!/<!--\s*claim:/.test(near)) problems.push(`${where}: says "tested" but marks no claim: add <!-- claim: area.name --> and name it in the test`);
    }
  });
}

/** claim id -> [{ where, title }] */
const tests = new Map();
for (const file of files(join(root, 'test'), '.ts')) {
  const lines = readFileSync(file, 'utf8').split('\n');
  lines.forEach((line, i) => {
    const m = /^\s*\/\/\s*claims?:\s*(.+)$/.exec(line);
    if (!m) return;
    const where = `${relative(root, file)}:${i + 1}`;
    let title;
    for (let j = i + 1; j < Math.min(lines.length, i + 6); j++) {
      const t = /\b(?:it|test)(?:\.\w+(?:\([^)]*\))?)?\(\s*(['"`])(.*?)\1/.exec(lines[j]);
      if (t) {
        title = t[2];
        break;
      }
    }
    if (title === undefined) {
      problems.push(`${where}: a claim comment must stand right above an it(...) or test(...)`);
      return;
    }
    for (const id of m[1].split(/[\s,]+/).filter(Boolean)) {
      if (!tests.has(id)) tests.set(id, []);
      tests.get(id).push({ where, title });
    }
  });
}

for (const [id, ts] of tests) if (!claims.has(id)) problems.push(`${ts[0].where}: names claim "${id}", which no doc makes (mark it in the doc, or fix the id)`);
const untested = [...claims].filter(([id]) => !tests.has(id));
for (const [id, c] of untested) problems.push(`${c.where}: claim "${id}" has no test: ${c.text}`);

if (list) {
  for (const [id, c] of [...claims].sort(([a], [b]) => a.localeCompare(b))) {
    console.log(`${id}  (${c.where})\n  ${c.text}`);
    for (const t of tests.get(id) ?? []) console.log(`  - ${t.where}  ${t.title}`);
    if (!tests.has(id)) console.log('  - NO TEST');
  }
}
for (const p of problems) console.error(p);
console.log(`claims: ${claims.size} marked in the docs, ${claims.size - untested.length} with a test, ${untested.length} without; ${problems.length} problem(s)`);
process.exit(problems.length === 0 ? 0 : 1);
