/**
 * The one way REX quotes untrusted input (a config value, a grants line, a
 * peer's name or reason, a command-line argument) in an error message: control
 * characters escaped, and at most `max` characters, followed by how long the
 * whole was, so that a 10 MB line or a binary file cannot flood a terminal or a
 * log row.
 */

/** Characters shown of an untrusted string by default. */
export const QUOTE_MAX = 80;

/**
 * `s` bounded for a message: printable, at most `max` characters, then `... (N bytes)` when cut.
 * `keepLines` keeps newlines (a multi-line message from a peer); other control characters are always escaped.
 */
export function quote(s: string, max = QUOTE_MAX, keepLines = false): string {
  const head = s.length > max ? s.slice(0, max) : s;
  const printable = head.replace(keepLines ? /[\u0000-\u0009\u000b-\u001f\u007f\u2028\u2029]/g : /[\u0000-\u001f\u007f\u2028\u2029]/g, (c) => {
    const n = c.charCodeAt(0);
    return n > 0xff ? `\\u${n.toString(16)}` : `\\x${n.toString(16).padStart(2, '0')}`;
  });
  return s.length > max ? `${printable}... (${Buffer.byteLength(s)} bytes)` : printable;
}
