/**
 * The image hash (src/rfork/image.ts xxh64, @node-rs/xxhash; native/src/image_util.h
 * on the C side) is xxHash's XXH64 with seed 0 since image version 5: version 4's
 * had a wrong PRIME64_4 and differed from 8 bytes on (docs/IMAGE.md section 5).
 */
import { describe, expect, it } from 'vitest';
import { xxh64 } from '../../src/rfork/image.js';

const h = (s: string): bigint => xxh64(new TextEncoder().encode(s));

describe('the image hash', () => {
  it("is xxHash's XXH64 (seed 0), below 8 bytes and from 8 bytes on", () => {
    expect(h('')).toBe(0xef46db3751d8e999n);
    expect(h('abc')).toBe(0x44bc2cf5ad770999n);
    // Version 4's hash gave 0xb71e63f64bdc0343 and 0xb30afc8f3d8d51de for these.
    expect(h('12345678')).toBe(0xd2d02f08cf7cfd4an);
    expect(h('Nobody inspects the spammish repetition')).toBe(0xfbcea83c8a378bf1n);
  });
});
