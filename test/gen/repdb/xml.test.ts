/**
 * Entry-point XML: write → DTD-validate → read round trips, and hand-written
 * errors reported as file:line at the right line.
 */
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readEntryPointsXml, writeEntryPointsXml, validateXmlText } from '../../../src/gen/index.js';
import { isRexError } from '../../../src/util/errors.js';
import { demoXml } from './helpers.js';
import { runs } from '../../helpers/property.js';

function err(text: string): { code: string; where: string; message: string; hint: string } {
  try {
    readEntryPointsXml(text, 'hand.xml');
  } catch (e) {
    if (!isRexError(e)) throw e;
    return { code: e.code, where: e.where ?? '', message: e.message, hint: e.hint ?? '' };
  }
  throw new Error('expected an error');
}

const doc = (body: string) => `<?xml version="1.0"?>\n<rex-entry-points elf-file="libx.so">\n${body}\n</rex-entry-points>\n`;

describe('XML round trip', () => {
  it('demo.xml reads, writes identically (minus comments), validates, and reads back equal', () => {
    const set = readEntryPointsXml(demoXml(), 'demo.xml');
    expect(set.entries.map((e) => e.name)).toEqual(['add', 'apply', 'bump', 'checksum', 'fill', 'greet', 'log_msg', 'make_rect', 'mix', 'next_color', 'scale', 'sum', 'use_bits']);
    const text = writeEntryPointsXml(set);
    expect(() => validateXmlText(text, 'x')).not.toThrow();
    const again = readEntryPointsXml(text, 'again.xml');
    expect(writeEntryPointsXml(again)).toBe(text);
    const greet = again.entries.find((e) => e.name === 'greet')!;
    expect(greet.params.map((p) => [p.name, p.direction, p.sizeIs, p.string])).toEqual([['name', 'in', undefined, true], ['out', 'out', 'cap', true], ['cap', undefined, undefined, undefined]]);
    expect(greet.input.fixedSize).toBe(12);
    expect(again.host).toBe('alpha');
  });

  it('the written document carries frames, types and refusal comments', () => {
    const text = writeEntryPointsXml(readEntryPointsXml(demoXml(), 'demo.xml'));
    expect(text).toContain('<!DOCTYPE rex-entry-points SYSTEM "rex.dtd">');
    expect(text).toMatch(/<struct name="rect" size="32" align="8"/);
    expect(text).toMatch(/<!-- refused for remote calls: log_msg is variadic/);
    expect(text).toMatch(/<input size="24" align="8">\n\s*<slot name="buf" role="length" offset="0" size="4"\/>/);
  });
});

describe('hand-written XML errors are located', () => {
  it('not well-formed: the parser line', () => {
    const e = err('<?xml version="1.0"?>\n<rex-entry-points elf-file="x">\n<entry-point name="f">\n</rex-entry-points>\n');
    expect(e.code).toBe('REX_ERR_ENTRY_XML');
    expect(e.where).toBe('hand.xml:4');
  });

  it('DTD violation: unknown attribute value and unknown element, at their lines', () => {
    let e = err(doc('<entry-point name="f">\n  <param name="p" type="int32*" direction="sideways"/>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:4');
    expect(e.message).toMatch(/sideways/);
    e = err(doc('<entry-point name="f">\n\n  <argument name="p"/>\n</entry-point>'));
    expect(e.where).toMatch(/^hand\.xml:(3|5)$/);
  });

  it('wrong root element', () => {
    const e = err('<?xml version="1.0"?>\n<rex-config/>\n');
    expect(e.where).toBe('hand.xml:2');
  });

  it('unknown type names the line and suggests the definitions', () => {
    const e = err(doc('<struct name="pt">\n  <field name="x" type="int32"/>\n</struct>\n<entry-point name="f">\n  <returns type="int32"/>\n  <param name="p" type="pt"/>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:8');
    expect(e.message).toMatch(/unknown type 'pt'/);
    expect(e.hint).toMatch(/struct pt/);
  });

  it('bad type spelling, bad identifier, duplicate definitions', () => {
    expect(err(doc('<entry-point name="f">\n<param name="p" type="int32**[x]"/>\n</entry-point>')).where).toBe('hand.xml:4');
    expect(err(doc('<entry-point name="2f"/>')).message).toMatch(/not a C identifier/);
    const d = err(doc('<struct name="a"/>\n<union name="a"/>'));
    expect(d.where).toBe('hand.xml:4');
    expect(d.message).toMatch(/already defined at line 3/);
  });

  it('into= on anything but an out char ** into an in or inout char * is refused by line, saying how to mark it', () => {
    const ep = (endptr: string, text = 'type="char*" direction="in" string="yes"') =>
      doc(`<entry-point name="f">\n  <returns type="int64"/>\n  <param name="text" ${text}/>\n  <param name="endptr" ${endptr}/>\n</entry-point>`);
    const cases: [string, string | undefined, RegExp][] = [
      ['type="char**" direction="out" into="nope"', undefined, /into names 'nope', which is not a parameter/],
      ['type="char**" direction="in" into="text"', undefined, /into= needs direction="out"/],
      ['type="int32**" direction="out" into="text"', undefined, /into= needs a char \*\* \(a pointer to a char \*\), but its type is int32\*\*/],
      ['type="char**" direction="out" into="text" size-is="4"', undefined, /into= takes no size-is or string/],
      ['type="char**" direction="out" into="endptr"', undefined, /into names 'endptr', which is not an in or inout char \* parameter/],
      ['type="char**" direction="out" into="text"', 'type="char*" direction="out" size-is="8"', /into names 'text', which is not an in or inout char \* parameter/],
      ['type="char**" into="text"', undefined, /into= needs direction="out"/],
      ['type="int64" into="text"', undefined, /direction, size-is, string and into apply only to pointer parameters/],
      ['type="char**" direction="out" into="1x"', undefined, /into="1x" is not a parameter name/],
    ];
    for (const [endptr, text, want] of cases) {
      const e = err(ep(endptr, text));
      expect(e.message).toMatch(want);
      expect(e.where).toMatch(/^hand\.xml:\d+$/);
    }
    // the good mark round-trips through the XML writer
    const good = readEntryPointsXml(ep('type="char**" direction="out" into="text"'), 'hand.xml');
    expect(good.entries[0]!.params[1]!.into).toBe('text');
    expect(writeEntryPointsXml(good)).toContain('<param name="endptr" type="char**" direction="out" into="text"/>');
  });

  it('size-is naming a missing parameter, marks on a non-pointer', () => {
    let e = err(doc('<entry-point name="f">\n  <param name="buf" type="uint8*" direction="out" size-is="len"/>\n  <param name="n" type="uint32"/>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:4');
    expect(e.message).toMatch(/size-is names 'len', which is not a parameter/);
    expect(e.hint).toMatch(/buf, n/);
    e = err(doc('<entry-point name="f">\n  <param name="a" type="int32"/>\n  <param name="n" type="uint32" direction="in"/>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:5');
    expect(e.code).toBe('REX_ERR_ENTRY_INVALID');
  });

  it('a hand-edited frame size, slot or struct offset that disagrees with the layout', () => {
    let e = err(doc('<entry-point name="f">\n  <returns type="int32"/>\n  <param name="a" type="char"/>\n  <param name="b" type="double"/>\n  <input size="9" align="8"/>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:7');
    expect(e.message).toMatch(/input frame size is stated as 9, but the parameters lay out in 16 bytes/);
    e = err(doc('<entry-point name="f">\n  <param name="a" type="char"/>\n  <param name="b" type="double"/>\n  <input>\n    <slot name="a" role="value" offset="0" size="1"/>\n    <slot name="b" role="value" offset="1" size="8"/>\n  </input>\n</entry-point>'));
    expect(e.where).toBe('hand.xml:8');
    e = err(doc('<struct name="s" size="8">\n  <field name="c" type="char"/>\n  <field name="i" type="int32" offset="2"/>\n</struct>'));
    expect(e.where).toBe('hand.xml:5');
    expect(e.message).toMatch(/offset 2, but x86-64 SysV puts it at 4/);
    e = err(doc('<struct name="s" size="12">\n  <field name="c" type="char"/>\n  <field name="i" type="int32"/>\n</struct>'));
    expect(e.where).toBe('hand.xml:3');
  });

  it('a line offset shifts every location (XML stored inside another file)', () => {
    expect(() => readEntryPointsXml(doc('<entry-point name="f">\n<param name="p" type="nope"/>\n</entry-point>'), 'db:REXP[f]', { lineOffset: 10 })).toThrow(
      expect.objectContaining({ where: 'db:REXP[f]:14' }),
    );
  });
});

describe('property: random and mutated XML only ever raises RexError', () => {
  const base = demoXml();
  it('mutations of demo.xml', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: base.length - 1 }), fc.integer({ min: 0, max: 40 }), fc.string({ maxLength: 12 }), (at, del, ins) => {
        const text = base.slice(0, at) + ins + base.slice(at + del);
        try {
          readEntryPointsXml(text, 'm.xml');
        } catch (e) {
          if (!isRexError(e)) throw e;
          expect(e.where).toMatch(/^m\.xml/);
        }
      }),
      { numRuns: runs(300) },
    );
  });

  it('random attribute values in a small document', () => {
    const val = fc.oneof(fc.string({ maxLength: 10 }), fc.constantFrom('int32', 'char*', 'struct s', 'uint8[4]', 'n', '0', '-1', '99999999999', 'void', 'funcptr', 'opaque(16,3)', 'x[', 'in', 'yes'));
    fc.assert(
      fc.property(val, val, val, val, (type, dir, size, ret) => {
        const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
        const text = doc(`<struct name="s"><field name="a" type="${esc(type)}"/></struct>\n<entry-point name="f">\n<returns type="${esc(ret)}"/>\n<param name="p" type="${esc(type)}*" direction="${esc(dir)}" size-is="${esc(size)}"/>\n<param name="n" type="uint32"/>\n</entry-point>`);
        try {
          readEntryPointsXml(text, 'r.xml');
        } catch (e) {
          if (!isRexError(e)) throw e;
        }
      }),
      { numRuns: runs(300) },
    );
  });
});
