/**
 * The type spelling used in XML attributes (`type="struct point*"`, `type="int32[3][4]"`).
 * Postfix `*` wraps everything to its left; a run of `[N]` reads as in C
 * (`int32[3][4]` is three arrays of four). docs/ENTRYPOINTS.md specifies it.
 */
import { PRIMS, type Prim, type TypeDesc } from '../../runtime/frames/types.js';

/** A parsed type spelling before names are resolved against the definitions. */
export type TypeSyntax =
  | { kind: 'named'; tag: 'struct' | 'union' | 'enum' | 'typedef'; name: string }
  | { kind: 'void' }
  | { kind: 'prim'; prim: Prim }
  | { kind: 'funcptr' }
  | { kind: 'opaque'; size: number; align: number }
  | { kind: 'pointer'; target: TypeSyntax }
  | { kind: 'array'; elem: TypeSyntax; count: number };

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Parses a type spelling; returns an error message instead of throwing so callers can locate it. */
export function parseTypeString(s: string): TypeSyntax | string {
  const m = /^\s*(struct|union|enum)?\s*([A-Za-z_][A-Za-z0-9_]*|opaque\(\s*\d+\s*,\s*\d+\s*\))\s*((?:\*|\[\s*\d+\s*\]|\s)*)$/.exec(s);
  if (!m) return `'${s}' is not a type (expected e.g. int32, struct point, char*, double[4])`;
  const tag = m[1] as 'struct' | 'union' | 'enum' | undefined;
  const word = m[2]!;
  let base: TypeSyntax;
  if (tag) {
    if (!IDENT.test(word)) return `'${s}': '${word}' is not a name`;
    base = { kind: 'named', tag, name: word };
  } else if (word.startsWith('opaque')) {
    const [size, align] = word.slice(7, -1).split(',').map((x) => Number(x.trim())) as [number, number];
    if (!(align > 0 && (align & (align - 1)) === 0)) return `'${s}': alignment ${align} is not a power of two`;
    base = { kind: 'opaque', size, align };
  } else if (word === 'void') base = { kind: 'void' };
  else if (word === 'funcptr') base = { kind: 'funcptr' };
  else if ((PRIMS as readonly string[]).includes(word)) base = { kind: 'prim', prim: word as Prim };
  else base = { kind: 'named', tag: 'typedef', name: word };
  let t: TypeSyntax = base;
  let run: number[] = [];
  const flush = () => {
    for (let i = run.length - 1; i >= 0; i--) t = { kind: 'array', elem: t, count: run[i]! };
    run = [];
  };
  for (const tok of m[3]!.match(/\*|\[\s*\d+\s*\]/g) ?? []) {
    if (tok === '*') {
      flush();
      t = { kind: 'pointer', target: t };
    } else {
      const n = Number(tok.slice(1, -1).trim());
      if (!Number.isSafeInteger(n) || n > 0xffffffff) return `'${s}': array count ${tok} is too large`;
      run.push(n);
    }
  }
  flush();
  if (base.kind === 'funcptr' && t !== base) return `'${s}': funcptr cannot be pointed to or put in an array here`;
  return t;
}

/** Spells a resolved type the way parseTypeString reads it back. */
export function formatType(t: TypeDesc): string {
  switch (t.kind) {
    case 'void': return 'void';
    case 'prim': return t.prim;
    case 'enum': return `enum ${t.name}`;
    case 'struct': case 'union': return `${t.kind} ${t.name}`;
    case 'funcptr': return 'funcptr';
    case 'opaque': return `opaque(${t.size},${t.align})`;
    case 'pointer': return `${formatType(t.target)}*`;
    case 'array': {
      const dims: number[] = [];
      let e: TypeDesc = t;
      while (e.kind === 'array') {
        dims.push(e.count);
        e = e.elem;
      }
      return formatType(e) + dims.map((d) => `[${d}]`).join('');
    }
  }
}
