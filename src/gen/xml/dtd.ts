/**
 * DTD validation of entry-point XML with libxml2 (libxml2-wasm): the issue requires
 * every document repdb writes to be valid against schema/rex.dtd, and every
 * document it reads to be validated before it is interpreted.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DtdValidator, XmlDocument, XmlDtd, XmlLibError, type ErrorDetail } from 'libxml2-wasm';
import { RexError, ErrorCodes } from '../../util/errors.js';
import { packageRoot } from '../../util/paths.js';

/** Where schema/rex.dtd lives: in the package, found from src/, dist/ or a bundle's chunk in dist/bin/ alike. */
export const DTD_PATH = join(packageRoot(), 'schema', 'rex.dtd');

let dtdText: string | undefined;

/** The text of schema/rex.dtd (read once). */
export function dtdSource(): string {
  dtdText ??= readFileSync(DTD_PATH, 'utf8');
  return dtdText;
}

function located(file: string, details: ErrorDetail[], fallback: string, code: typeof ErrorCodes.ENTRY_XML): RexError {
  const first = details[0];
  const msg = (first?.message ?? fallback).trim();
  const more = details.length > 1 ? ` (and ${details.length - 1} more: ${details.slice(1, 3).map((d) => `line ${d.line}: ${d.message.trim()}`).join('; ')})` : '';
  return new RexError(code, msg + more, { where: first ? `${file}:${first.line}` : file, hint: 'the document must follow schema/rex.dtd (see docs/ENTRYPOINTS.md)' });
}

/**
 * Parses XML text into a libxml2 document without loading external entities or DTDs
 * (untrusted input must not make us read files). The caller must dispose() it.
 */
export function parseXml(text: string, file: string): XmlDocument {
  try {
    // As UTF-8 bytes: libxml2-wasm copies a Buffer into its heap at once, but encodes a
    // string char by char in JS (a third of the parse time for libc's 3 MB of XML).
    return XmlDocument.fromBuffer(Buffer.from(text, 'utf8'), { url: file });
  } catch (e) {
    if (e instanceof XmlLibError) throw located(file, e.details, e.message, ErrorCodes.ENTRY_XML);
    throw new RexError(ErrorCodes.ENTRY_XML, `cannot parse XML: ${(e as Error).message}`, { where: file });
  }
}

/** Validates a parsed document against schema/rex.dtd; throws ENTRY_XML at the first invalid line. */
export function validateDoc(doc: XmlDocument, file: string): void {
  const dtd = XmlDtd.fromString(dtdSource());
  const v = new DtdValidator(dtd);
  try {
    v.validate(doc);
  } catch (e) {
    if (e instanceof XmlLibError) throw located(file, e.details, e.message, ErrorCodes.ENTRY_XML);
    throw e;
  } finally {
    v.dispose();
  }
}

/** Parses and validates XML text, disposing everything; used to check what repdb writes. */
export function validateXmlText(text: string, file: string): void {
  const doc = parseXml(text, file);
  try {
    validateDoc(doc, file);
  } finally {
    doc.dispose();
  }
}
