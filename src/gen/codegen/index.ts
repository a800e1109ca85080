/**
 * Code generation from the entry-point model: a TypeScript module of typed stubs
 * and a C header of frame structs, each rendered from a view model through a
 * handlebars template in templates/ (noEscape: the output is code, not HTML).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Handlebars from 'handlebars';
import type { EntryPointSet } from '../model/entrypoint.js';
import { tsModuleView, moduleBaseName } from './ts.js';
import { cHeaderView } from './c.js';
import { packageRoot } from '../../util/paths.js';

export { moduleBaseName, RUNTIME_IMPORT } from './ts.js';
export { escapeIdent, NameScope } from './names.js';

/** Where the templates live: in the package, found from src/, dist/ or a bundle's chunk in dist/bin/ alike. */
export const TEMPLATE_DIR = join(packageRoot(), 'templates') + '/';

const cache = new Map<string, Handlebars.TemplateDelegate>();

function template(name: string): Handlebars.TemplateDelegate {
  let t = cache.get(name);
  if (!t) {
    t = Handlebars.compile(readFileSync(TEMPLATE_DIR + name, 'utf8'), { noEscape: true, strict: true });
    cache.set(name, t);
  }
  return t;
}

/** Renders the `<lib>.rex.ts` module for a set; `from` names the input in the header line. */
export function generateTs(set: EntryPointSet, from = set.elfFile): string {
  return template('ts-module.hbs')(tsModuleView(set, from));
}

/** Renders the `<lib>.rex.h` header for a set. */
export function generateCHeader(set: EntryPointSet, from = set.elfFile): string {
  return template('c-header.hbs')(cHeaderView(set, from, moduleBaseName(set.elfFile)));
}
