#!/usr/bin/env node
// Generates the roff man pages from docs/man/*.md:
//
//   docs/man/NAME.SECTION.md  ->  dist/man/NAME.SECTION     (rex.1.md -> rex.1, rex.rc.5.md -> rex.rc.5)
//
// Run by the package's `prepare` and `build` scripts, so `npm install` / `npm ci`
// produce them beside dist/'s JavaScript; package.json's `man` field lists them
// and test/docs/man.test.ts checks that list against this script's output and
// renders every page with `man --warnings`. The pages are build output (dist/ is
// not committed), so the Markdown stays the one text that is edited.
//
// remark-man (unified) writes the roff. Three things it does not do are done here,
// each marked in the Markdown tree before remark-man runs and resolved in its
// output, because remark-man takes no handlers of its own:
//   - NAME: the pages carry their own "## NAME" section (several names for some
//     pages: rgetpid, rgetppid, ...); remark-man would add a second one from the
//     title line, so the title and that section are taken out of the tree and the
//     NAME line is written once, with every name, as whatis/apropos read it.
//   - lines of code blocks starting with "." or "'" would be taken by troff as
//     requests (`./rex.rc` in rex.rc(5)): they get the `\&` guard.
//   - tables: remark-man lays every cell out as one unbreakable line, wider than
//     80 columns; here the last column wraps (tbl's `x` with T{ T} text blocks),
//     and an "@" inside a cell (NAME@VERSION) is kept from being read as
//     remark-man's cell separator.
//
//   node scripts/gen-man.mjs [--out DIR]   (DIR defaults to dist/man)
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import remarkGfm from 'remark-gfm';
import remarkMan from 'remark-man';
import remarkParse from 'remark-parse';
import { unified } from 'unified';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const out = resolve(outIdx >= 0 ? args[outIdx + 1] ?? '' : join(root, 'dist', 'man'));
if (outIdx >= 0 && !args[outIdx + 1]) throw new Error('gen-man: --out needs a directory');
const src = join(root, 'docs', 'man');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));

// Private-use characters: remark-man's escaping leaves them alone, and no page uses them.
const GUARD = '\uE000'; // becomes \& at the start of a code line
const AT = '\uE001'; // an "@" inside a table cell

/** docs/man/rex.rc.5.md -> { name: 'rex.rc', section: '5' }; null for other files. */
export function pageOf(file) {
  const m = /^(.+)\.([1-9])\.md$/.exec(file);
  return m ? { name: m[1], section: m[2] } : null;
}

function textOf(node) {
  if (node.type === 'text' || node.type === 'inlineCode') return node.value;
  return (node.children ?? []).map(textOf).join('');
}

/** Splits "rgetpid, rgetppid - the origin's view" at its first dash. */
function splitName(text) {
  const m = /^(.*?)\s+(?:\\-|[-—–]+)\s+(.*)$/s.exec(text.replace(/\s+/g, ' ').trim());
  return m ? { names: m[1].split(/\s*,\s*/), description: m[2] } : null;
}

function visit(node, fn) {
  fn(node);
  for (const c of node.children ?? []) visit(c, fn);
}

/** The unified transformer: takes the title and NAME out, marks what the output step resolves. */
function prepareTree(page, meta) {
  return (tree) => {
    const kids = tree.children;
    const title = kids.findIndex((n) => n.type === 'heading' && n.depth === 1);
    let fromTitle = null;
    if (title >= 0) {
      const t = textOf(kids[title]);
      const m = /^\S+\s*\(\w+\)\s*(?:[-—–]+\s*(.*))?$/.exec(t.trim());
      if (m?.[1]) fromTitle = { names: [page.name], description: m[1] };
      kids.splice(title, 1);
    }
    const nameAt = kids.findIndex((n) => n.type === 'heading' && n.depth === 2 && textOf(n).trim().toUpperCase() === 'NAME');
    let fromSection = null;
    if (nameAt >= 0) {
      let end = nameAt + 1;
      while (end < kids.length && !(kids[end].type === 'heading' && kids[end].depth <= 2)) end++;
      fromSection = splitName(kids.slice(nameAt + 1, end).map(textOf).join(' '));
      kids.splice(nameAt, end - nameAt);
    }
    const name = fromSection ?? fromTitle;
    if (!name) throw new Error(`gen-man: docs/man/${page.name}.${page.section}.md has no NAME section ("name - what it is") nor a title "name(section) - what it is"`);
    meta.names = name.names;
    meta.description = name.description;
    visit(tree, (n) => {
      if (n.type === 'code') n.value = n.value.replace(/^(?=[.'])/gm, GUARD);
      if (n.type === 'table') visit(n, (c) => {
        if (c.type === 'text' || c.type === 'inlineCode') c.value = c.value.replaceAll('@', AT);
      });
    });
  };
}

/** Rewrites remark-man's tbl block: wrapping last column, text blocks, "@" restored. */
function fixTable(block) {
  const lines = block.split('\n');
  // remark-man's shape: .TS / tab(@) allbox; / heading format / row format "." / rows / .TE
  const [ts, opts, head, fmt, ...rest] = lines;
  const te = rest.pop();
  if (ts !== '.TS' || opts !== 'tab(@) allbox;' || te !== '.TE' || !fmt.endsWith(' .')) {
    throw new Error(`gen-man: remark-man's table output changed shape:\n${block}`);
  }
  const cols = fmt.slice(0, -2).split(' ');
  const rowFmt = cols.map((c, i) => (i === cols.length - 1 ? `${c}x` : c)).join(' ');
  const cell = (c) => `T{\n\\&${c.replaceAll(AT, '@')}\nT}`;
  const [header, ...rows] = rest;
  return [
    '.TS',
    opts,
    head,
    `${rowFmt} .`,
    header.split('@').map((c) => c.replaceAll(AT, '@')).join('@'),
    ...rows.map((r) => r.split('@').map(cell).join('@')),
    '.TE',
  ].join('\n');
}

export async function renderPage(file, text, date) {
  const page = pageOf(file);
  if (!page) throw new Error(`gen-man: ${file} is not named NAME.SECTION.md`);
  const meta = {};
  const vfile = await unified()
    .use(remarkParse)
    .use(remarkGfm)
    .use(() => prepareTree(page, meta))
    .use(remarkMan, { name: page.name, section: page.section, date, version: `${pkg.name} ${pkg.version}`, manual: 'REX Manual' })
    .process({ path: join(src, file), value: text });
  let roff = String(vfile);
  // remark-man writes ".SH "NAME"\n\fBname\fR" (then nothing, having no description):
  // replaced by the whole line, "name1, name2 \- description".
  const esc = (s) => s.replace(/\\/g, '\\[rs]').replace(/-/g, '\\-');
  const nameHead = `.SH "NAME"\n\\fB${page.name.replace(/\\/g, '\\[rs]')}\\fR\n`;
  if (!roff.includes(nameHead)) throw new Error(`gen-man: remark-man's NAME output changed shape for ${file}`);
  roff = roff.replace(nameHead, `.SH "NAME"\n${meta.names.map(esc).join(', ')} \\- ${meta.description.replace(/\\/g, '\\[rs]')}\n`);
  roff = roff.replace(/^\.TS\n[\s\S]*?^\.TE$/gm, fixTable);
  roff = roff.replaceAll(GUARD, '\\&');
  if (roff.includes(AT)) throw new Error(`gen-man: a marked "@" outside a table in ${file}`);
  const header = `.\\" Generated by scripts/gen-man.mjs from docs/man/${file}: edit that file, not this one.\n`;
  // tbl must run for pages with tables: man reads this first line to know it.
  const preproc = roff.includes('\n.TS\n') ? `'\\" t\n` : '';
  return { out: `${page.name}.${page.section}`, roff: preproc + header + roff };
}

export function manFiles() {
  return readdirSync(src).filter((f) => pageOf(f)).sort();
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  // SOURCE_DATE_EPOCH (reproducible builds) dates the pages; else the build's day.
  const date = process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) * 1000 : Date.now();
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const files = manFiles();
  for (const f of files) {
    const { out: name, roff } = await renderPage(f, readFileSync(join(src, f), 'utf8'), date);
    writeFileSync(join(out, name), roff);
  }
  console.log(`gen-man: ${files.length} pages in ${out}`);
}
