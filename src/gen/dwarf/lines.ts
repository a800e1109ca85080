/**
 * The file-name table of a .debug_line program header (DWARF 2-5), which is
 * all repdb needs from .debug_line: DW_AT_decl_file is an index into it, and
 * messages say "lib.c:12" rather than a DIE offset.
 */
import { Cursor, hex, stringAt } from './cursor.js';
import { DW_FORM } from './constants.js';
import type { Sections, Unit } from './units.js';

const DW_LNCT_path = 1;

/** File names of the line program at `offset`, indexed the way DW_AT_decl_file counts for `unit`'s version. */
export function readLineFiles(s: Sections, unit: Unit, offset: number): (string | undefined)[] {
  const c = new Cursor(s.line, '.debug_line', s.file, offset);
  if (offset >= s.line.length) c.fail(`line program offset ${hex(offset)} (DW_AT_stmt_list of the unit at .debug_info+${hex(unit.offset)}) is past the end of .debug_line`, offset);
  let len = c.u32('unit length');
  let offsetSize: 4 | 8 = 4;
  if (len === 0xffffffff) {
    len = c.u64n('64-bit unit length');
    offsetSize = 8;
  }
  const end = c.pos + len;
  if (end > s.line.length) c.fail(`line program length ${hex(len)} runs past the end of .debug_line`, offset);
  c.end = end;
  const version = c.u16('version');
  if (version < 2 || version > 5) c.fail(`line program version ${version} is not 2-5`, c.pos - 2);
  if (version >= 5) {
    c.u8('address size');
    c.u8('segment selector size');
  }
  const headerLength = c.offset(offsetSize, 'header length');
  const programStart = c.pos + headerLength;
  c.u8('minimum instruction length');
  if (version >= 4) c.u8('maximum operations per instruction');
  c.u8('default_is_stmt');
  c.u8('line_base');
  c.u8('line_range');
  const opcodeBase = c.u8('opcode_base');
  c.skip(Math.max(0, opcodeBase - 1), 'standard opcode lengths');
  const files: (string | undefined)[] = [];
  if (version <= 4) {
    // Include directories, then file entries; both lists end with an empty string.
    while (c.cstr('include directory') !== '') {
      /* directories are not needed for short names */
    }
    files.push(undefined); // DWARF 2-4 file numbers start at 1.
    for (;;) {
      const name = c.cstr('file name');
      if (name === '') break;
      c.uleb('directory index');
      c.uleb('modification time');
      c.uleb('file length');
      files.push(name);
    }
  } else {
    const readEntries = (what: string): (string | undefined)[] => {
      const nfmt = c.u8(`${what} entry format count`);
      const fmt: [number, number][] = [];
      for (let i = 0; i < nfmt; i++) fmt.push([c.uleb(`${what} content type`), c.uleb(`${what} form`)]);
      const count = c.uleb(`${what} count`);
      // Each entry takes at least one byte per format, so a huge count fails at the section end.
      const out: (string | undefined)[] = [];
      for (let i = 0; i < count; i++) {
        let path: string | undefined;
        if (nfmt === 0 && i > c.end - c.pos) c.fail(`${what} count ${count} cannot fit in the header`);
        for (const [ct, form] of fmt) {
          const v = readLineForm(c, s, form, offsetSize, what);
          if (ct === DW_LNCT_path && typeof v === 'string') path = v;
        }
        out.push(path);
      }
      return out;
    };
    readEntries('directory');
    files.push(...readEntries('file name'));
  }
  if (c.pos > programStart) c.fail(`line program header is longer than its header_length (${hex(headerLength)})`, offset);
  return files;
}

function readLineForm(c: Cursor, s: Sections, form: number, offsetSize: 4 | 8, what: string): string | undefined {
  const at = c.pos;
  switch (form) {
    case DW_FORM.string:
      return c.cstr(what);
    case DW_FORM.line_strp:
      return stringAt(s.lineStr, '.debug_line_str', s.file, c.offset(offsetSize, what), `.debug_line+${hex(at)}`);
    case DW_FORM.strp:
      return stringAt(s.str, '.debug_str', s.file, c.offset(offsetSize, what), `.debug_line+${hex(at)}`);
    case DW_FORM.udata:
      c.uleb(what);
      return undefined;
    case DW_FORM.data1:
      c.skip(1, what);
      return undefined;
    case DW_FORM.data2:
      c.skip(2, what);
      return undefined;
    case DW_FORM.data4:
      c.skip(4, what);
      return undefined;
    case DW_FORM.data8:
      c.skip(8, what);
      return undefined;
    case DW_FORM.data16:
      c.skip(16, what);
      return undefined;
    case DW_FORM.block:
      c.skip(c.uleb(what), what);
      return undefined;
    default:
      return c.fail(`${what}: form ${hex(form)} is not allowed in a line program header`, at);
  }
}
