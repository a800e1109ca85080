/**
 * The XML form of the configuration: root <rex-config>, one element per rc key.
 * The document is validated against schema/rex.dtd (libxml2) before any element
 * is interpreted; libxml2's DOM gives the line of every element for messages.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes } from '../util/errors.js';
import { packageRoot } from '../util/paths.js';
import { KEYS_BY_NAME, KEY_SPECS, didYouMean } from './keys.js';
import { normalize, type Definition, type NormalizeEnv } from './normalize.js';
import type { ConfigItem, ScanResult } from './rc.js';
import { ConfigError, clip, type ConfigDiagnostic, type LoadedConfig } from './types.js';
import { importEsm } from '../util/import-esm.js';
import { CONFIG_DATABASE_KEY } from './database.js';

/** schema/rex.dtd in the package, found from src/, dist/ or a bundle's chunk in dist/bin/ alike. */
const DTD_FILE = (): string => join(packageRoot(), 'schema', 'rex.dtd');
let dtdText: string | undefined;

/** The element names the configuration section of the DTD defines (for did-you-mean): <include>, <config-database>, the keys, and their list items. */
const CONFIG_ELEMENTS = ['include', CONFIG_DATABASE_KEY, ...KEY_SPECS.flatMap((s) => [s.key, ...(s.value.list?.xml ? [s.value.list.xml.child] : [])])];

type LibXml = typeof import('libxml2-wasm');
let libxml: Promise<LibXml> | undefined;

/** libxml2-wasm is loaded on first use: instantiating the wasm module costs ~60 ms that rc-only users need not pay. */
function loadLibXml(): Promise<LibXml> {
  libxml ??= importEsm<LibXml>('libxml2-wasm');
  return libxml;
}

interface XmlDetail {
  message: string;
  line?: number;
  xpath?: string;
}

function detailsOf(e: unknown): XmlDetail[] {
  const details = (e as { details?: XmlDetail[] }).details;
  if (Array.isArray(details) && details.length) return details;
  return [{ message: e instanceof Error ? e.message : String(e) }];
}

/** The rc key an XPath such as /rex-config/servers/server[2] points into, if any. */
function keyOfXpath(xpath: string | undefined): string | undefined {
  const seg = xpath?.split('/')[2]?.replace(/\[\d+\]$/, '');
  return seg !== undefined && KEYS_BY_NAME.has(seg) ? seg : undefined;
}

/** Scans XML config text: well-formedness, DTD validity, then one item per element. */
export async function scanXml(text: string, file: string): Promise<ScanResult> {
  const items: ConfigItem[] = [];
  const diagnostics: ConfigDiagnostic[] = [];
  const diag = (message: string, line?: number, key?: string, code: ConfigDiagnostic['code'] = ErrorCodes.CONFIG_XML) => {
    const d: ConfigDiagnostic = { code, file, message };
    if (line !== undefined && line > 0) d.line = line;
    if (key !== undefined) d.key = key;
    diagnostics.push(d);
  };

  const lx = await loadLibXml();
  dtdText ??= readFileSync(DTD_FILE(), 'utf8');
  let doc: InstanceType<LibXml['XmlDocument']> | undefined;
  try {
    try {
      // NONET and NO_XXE: a configuration file must not make REX fetch or read other files behind its back.
      doc = lx.XmlDocument.fromString(text, { url: file, option: lx.ParseOption.XML_PARSE_NONET | lx.ParseOption.XML_PARSE_NO_XXE });
    } catch (e) {
      for (const d of detailsOf(e)) diag(`malformed XML: ${d.message.trim()}`, d.line);
      return { items, diagnostics };
    }
    const dtd = lx.XmlDtd.fromString(dtdText);
    const validator = new lx.DtdValidator(dtd);
    try {
      validator.validate(doc);
    } catch (e) {
      const details = detailsOf(e);
      // An undeclared element also breaks its parent's content model; the second message adds nothing.
      const undeclaredIn = new Set(details.filter((d) => /^No declaration for element/.test(d.message)).map((d) => d.xpath?.replace(/\/[^/]*$/, '')));
      for (const d of details) {
        if (/content does not follow the DTD/.test(d.message) && undeclaredIn.has(d.xpath)) continue;
        let message = d.message.trim();
        const undeclared = /^No declaration for element (\S+)/.exec(message);
        let key = keyOfXpath(d.xpath);
        if (undeclared) {
          key = clip(undeclared[1]!);
          const guess = didYouMean(undeclared[1]!, CONFIG_ELEMENTS);
          message = `unknown element <${key}>${guess ? `; did you mean <${guess}>?` : `; expected one of: ${CONFIG_ELEMENTS.join(', ')}`}`;
        }
        diag(`does not match schema/rex.dtd: ${message}`, d.line, key);
      }
      return { items, diagnostics };
    } finally {
      validator.dispose();
    }

    const root = doc.root;
    if (root.name !== 'rex-config') {
      diag(`the root element is <${clip(root.name)}>; a configuration file's root element must be <rex-config>`, root.line);
      return { items, diagnostics };
    }
    for (let n = root.firstChild; n; n = n.next) {
      if (!(n instanceof lx.XmlElement)) continue;
      const line = n.line;
      const attr = (name: string) => n.attr(name)?.value;
      if (n.name === 'include') {
        items.push({ kind: 'include', path: attr('file') ?? '', system: false, file, line });
        continue;
      }
      if (n.name === CONFIG_DATABASE_KEY) {
        // The rc directive `config-database : TARGET` at this element's line: the loader follows both alike
        // (src/config/load.ts readDatabase), so position, "at most one", the target's syntax and errors are rc's.
        items.push({ kind: 'def', def: { key: CONFIG_DATABASE_KEY, value: { text: (attr('target') ?? '').trim() }, file, line } });
        continue;
      }
      const value: Definition['value'] = { text: n.content.trim() };
      const listXml = KEYS_BY_NAME.get(n.name)?.value.list?.xml;
      if (listXml) {
        value.items = [];
        for (let c = n.firstChild; c; c = c.next) {
          if (!(c instanceof lx.XmlElement)) continue;
          const cattr = (name: string) => c.attr(name)?.value.trim();
          value.items.push({ text: listXml.text(cattr, c.content.trim()), line: c.line });
        }
        value.text = value.items.map((i) => i.text).join(', ');
      }
      items.push({ kind: 'def', def: { key: n.name, value, file, line } });
    }
  } catch (e) {
    // libxml2-wasm throws plain Errors for some inputs (e.g. encodings it cannot decode).
    for (const d of detailsOf(e)) diag(`cannot read XML: ${d.message.trim()}`, d.line);
  } finally {
    doc?.dispose();
  }
  return { items, diagnostics };
}

/**
 * Parses one XML configuration text on its own (no file access: <include> is
 * reported, since only loadConfig resolves it) and returns the normalised
 * configuration. Throws a ConfigError listing every problem.
 */
export async function parseXmlConfig(text: string, file: string, env: NormalizeEnv = {}): Promise<LoadedConfig> {
  const { items, diagnostics } = await scanXml(text, file);
  const defs: Definition[] = [];
  for (const it of items) {
    if (it.kind === 'def' && it.def.key === CONFIG_DATABASE_KEY) diagnostics.push({ code: ErrorCodes.CONFIG_DATABASE, file, line: it.def.line!, key: it.def.key, message: '<config-database> needs a database; use loadConfig() to read it' });
    else if (it.kind === 'def') defs.push(it.def);
    else diagnostics.push({ code: ErrorCodes.CONFIG_INCLUDE, file, line: it.line, message: `<include file="${clip(it.path)}"> needs the file system; use loadConfig() to read included files` });
  }
  // An invalid document is not interpreted at all: its elements may not mean what they seem to.
  if (diagnostics.some((d) => d.code === ErrorCodes.CONFIG_XML)) throw new ConfigError(diagnostics);
  const loaded = normalize(defs, env, diagnostics);
  if (diagnostics.length) throw new ConfigError(diagnostics);
  return { ...loaded, files: [file] };
}
