/**
 * Identity IDs: short, self-certifying names of public keys, in the manner of
 * Syncthing device IDs. An ID is the first 160 bits of SHA-256 over the key's
 * SubjectPublicKeyInfo (DER), in RFC 4648 base32, grouped by four:
 * `MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E43U`. Whoever holds a key can compute its
 * ID; nobody can make another key with the same ID (a second preimage of
 * SHA-256 truncated to 160 bits), so an ID written in a grants file or an
 * enrollment token pins exactly one key.
 */
import { createHash } from 'node:crypto';
import { base32nopad } from '@scure/base';

/** Bytes of the SHA-256 digest an ID keeps. */
export const ID_BYTES = 20;
/** Characters of an ID without dashes. */
export const ID_CHARS = 32;

/** RFC 4648 base32 without padding (@scure/base). */
export function base32(bytes: Uint8Array): string {
  return base32nopad.encode(bytes);
}

/** The ID of a public key given as SPKI DER, grouped for display. */
export function keyId(spkiDer: Uint8Array): string {
  const digest = createHash('sha256').update(spkiDer).digest().subarray(0, ID_BYTES);
  return groupId(base32(digest));
}

/** Inserts a dash every four characters. */
export function groupId(raw: string): string {
  return raw.match(/.{1,4}/g)!.join('-');
}

/**
 * Reads an ID as a person may type it (any case, with or without dashes or
 * spaces) and returns the canonical grouped form, or undefined if it is not one.
 */
export function parseId(s: string): string | undefined {
  const raw = s.replace(/[-\s]/g, '').toUpperCase();
  if (raw.length !== ID_CHARS || !/^[A-Z2-7]+$/.test(raw)) return undefined;
  return groupId(raw);
}

/** The ID without dashes (for file names). */
export function compactId(id: string): string {
  return id.replace(/-/g, '');
}

/** True when `s` could be the start of an ID (8 or more base32 characters, dashes allowed). */
export function isIdPrefix(s: string): boolean {
  const raw = s.replace(/-/g, '').toUpperCase();
  return raw.length >= 8 && raw.length <= ID_CHARS && /^[A-Z2-7]+$/.test(raw) && /^[A-Za-z2-7-]+$/.test(s);
}
