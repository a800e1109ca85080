/**
 * The image hash (src/rfork/image.ts xxh64, native/src/image_util.h): what it
 * gives, pinned, including where it is not xxHash's XXH64 (its PRIME64_4 is
 * 0x85EBCA77C2B2CA63, xxHash's 0x85EBCA77C2B2AE63: docs/IMAGE.md section 5).
 * Making it XXH64 changes these values, and needs an image version 5.
 */
import { describe, expect, it } from 'vitest';
import { xxh64 } from '../../src/rfork/image.js';

const h = (s: string): bigint => xxh64(new TextEncoder().encode(s));

describe('the image hash', () => {
  it('is XXH64 (seed 0) for inputs shorter than 8 bytes', () => {
    expect(h('')).toBe(0xef46db3751d8e999n);
    expect(h('abc')).toBe(0x44bc2cf5ad770999n);
  });

  it('differs from XXH64 from 8 bytes on, by its PRIME64_4; the values REX images carry', () => {
    // xxHash's XXH64 of these is 0xd2d02f08cf7cfd4a and 0xfbcea83c8a378bf1.
    expect(h('12345678')).toBe(0xb71e63f64bdc0343n);
    expect(h('Nobody inspects the spammish repetition')).toBe(0xb30afc8f3d8d51den);
  });
});
