/**
 * A bounds-checked reader over one DWARF section. Every read names the section
 * and offset when it fails, so a truncated or corrupt file yields a RexError
 * such as "lib.so: section .debug_info offset 0x1a2: ULEB128 runs past the end".
 */
import { ErrorCodes, RexError } from '../../util/errors.js';

/** Formats an offset the way messages show it. */
export function hex(n: number | bigint): string {
  return '0x' + n.toString(16);
}

/** Throws the DWARF_MALFORMED error for `section` at `offset`. */
export function dwarfFail(file: string, section: string, offset: number, msg: string): never {
  throw new RexError(ErrorCodes.DWARF_MALFORMED, `${file}: section ${section} offset ${hex(offset)}: ${msg}`, {
    where: `${file}:${section}+${hex(offset)}`,
    hint: 'the debug information is truncated or corrupt; rebuild the library with -g, or reinstall its -dbgsym package',
  });
}

/** Throws the DWARF_UNSUPPORTED error for `section` at `offset`. */
export function dwarfUnsupported(file: string, section: string, offset: number, msg: string, hint: string): never {
  throw new RexError(ErrorCodes.DWARF_UNSUPPORTED, `${file}: section ${section} offset ${hex(offset)}: ${msg}`, {
    where: `${file}:${section}+${hex(offset)}`,
    hint,
  });
}

/** A position in one section's bytes; `pos` is the section-relative offset. */
export class Cursor {
  pos: number;
  /** Reads must stay below this offset (a unit's end, or the section's). */
  end: number;

  constructor(
    readonly buf: Buffer,
    readonly section: string,
    readonly file: string,
    pos = 0,
    end = buf.length,
  ) {
    this.pos = pos;
    this.end = Math.min(end, buf.length);
  }

  fail(msg: string, at = this.pos): never {
    dwarfFail(this.file, this.section, at, msg);
  }

  private need(n: number, what: string): void {
    if (this.pos + n > this.end) {
      this.fail(`${what} (${n} bytes) runs past the end of the ${this.end === this.buf.length ? 'section' : 'unit'} at ${hex(this.end)}`);
    }
  }

  u8(what = 'u8'): number {
    this.need(1, what);
    return this.buf[this.pos++]!;
  }

  u16(what = 'u16'): number {
    this.need(2, what);
    const v = this.buf.readUInt16LE(this.pos);
    this.pos += 2;
    return v;
  }

  u24(what = 'u24'): number {
    this.need(3, what);
    const v = this.buf.readUIntLE(this.pos, 3);
    this.pos += 3;
    return v;
  }

  u32(what = 'u32'): number {
    this.need(4, what);
    const v = this.buf.readUInt32LE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(what = 'u64'): bigint {
    this.need(8, what);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    return v;
  }

  /** A u64 that must fit a JS number (an offset or size). */
  u64n(what = 'u64'): number {
    const at = this.pos;
    const v = this.u64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${hex(v)} is too large`, at);
    return Number(v);
  }

  /** An unsigned integer of `size` bytes (1, 2, 4 or 8) as a bigint. */
  uN(size: number, what: string): bigint {
    switch (size) {
      case 1:
        return BigInt(this.u8(what));
      case 2:
        return BigInt(this.u16(what));
      case 4:
        return BigInt(this.u32(what));
      case 8:
        return this.u64(what);
      default:
        return this.fail(`${what}: unsupported size ${size}`);
    }
  }

  /** An offset of the unit's offset size (4 for 32-bit DWARF, 8 for 64-bit). */
  offset(size: 4 | 8, what: string): number {
    return size === 4 ? this.u32(what) : this.u64n(what);
  }

  /**
   * ULEB128 as a bigint. More than 10 bytes (70 bits) is rejected: no valid DWARF
   * value needs it, and an unbounded run of 0x80 bytes must not loop.
   */
  ulebBig(what = 'ULEB128'): bigint {
    const at = this.pos;
    let result = 0n;
    let shift = 0n;
    for (let i = 0; ; i++) {
      if (i >= 10) this.fail(`${what} is longer than 10 bytes (overflow)`, at);
      if (this.pos >= this.end) this.fail(`${what} runs past the end of the ${this.end === this.buf.length ? 'section' : 'unit'} at ${hex(this.end)}`, at);
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if ((b & 0x80) === 0) break;
    }
    if (result > 0xffffffffffffffffn) this.fail(`${what} does not fit 64 bits`, at);
    return result;
  }

  /** ULEB128 that must fit a JS safe integer (counts, codes, indexes). */
  uleb(what = 'ULEB128'): number {
    const at = this.pos;
    // Fast path: most values fit one or two bytes.
    if (this.pos < this.end) {
      const b = this.buf[this.pos]!;
      if ((b & 0x80) === 0) {
        this.pos++;
        return b;
      }
    }
    const v = this.ulebBig(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${hex(v)} is too large`, at);
    return Number(v);
  }

  /** SLEB128 as a bigint, at most 10 bytes. */
  sleb(what = 'SLEB128'): bigint {
    const at = this.pos;
    let result = 0n;
    let shift = 0n;
    let b = 0;
    for (let i = 0; ; i++) {
      if (i >= 10) this.fail(`${what} is longer than 10 bytes (overflow)`, at);
      if (this.pos >= this.end) this.fail(`${what} runs past the end of the ${this.end === this.buf.length ? 'section' : 'unit'} at ${hex(this.end)}`, at);
      b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      shift += 7n;
      if ((b & 0x80) === 0) break;
    }
    if (b & 0x40) result -= 1n << shift;
    return BigInt.asIntN(64, result);
  }

  /** A NUL-terminated string in place (DW_FORM_string). */
  cstr(what = 'string'): string {
    const at = this.pos;
    const nul = this.buf.indexOf(0, this.pos);
    if (nul < 0 || nul >= this.end) this.fail(`${what} is not NUL-terminated before ${hex(this.end)}`, at);
    const s = this.buf.toString('utf8', this.pos, nul);
    this.pos = nul + 1;
    return s;
  }

  skip(n: number, what: string): void {
    if (n < 0 || this.pos + n > this.end) this.fail(`${what} of ${n} bytes runs past the end of the ${this.end === this.buf.length ? 'section' : 'unit'} at ${hex(this.end)}`);
    this.pos += n;
  }
}

/** Reads a NUL-terminated string at `offset` of a string section (.debug_str, .debug_line_str). */
export function stringAt(buf: Buffer, section: string, file: string, offset: number, from: string): string {
  if (offset < 0 || offset >= buf.length) {
    dwarfFail(file, section, offset, `string offset ${hex(offset)} (from ${from}) is past the end of ${section} (${hex(buf.length)} bytes)`);
  }
  const nul = buf.indexOf(0, offset);
  if (nul < 0) dwarfFail(file, section, offset, `string (from ${from}) is not NUL-terminated`);
  return buf.toString('utf8', offset, nul);
}
