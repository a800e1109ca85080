/**
 * Identifier checking for generated code: names that are reserved in TypeScript
 * or C, or not identifiers at all, are escaped deterministically (a trailing `_`);
 * two names that end up equal are a located CODEGEN_NAME error, never a silent rename.
 */
import { RexError, ErrorCodes } from '../../util/errors.js';

const TS_RESERVED = new Set(
  ('break case catch class const continue debugger default delete do else enum export extends false finally for function if import in ' +
    'instanceof new null return super switch this throw true try typeof var void while with implements interface let package private ' +
    'protected public static yield await arguments eval async of type any number string boolean symbol object never unknown bigint undefined ' +
    'Promise Uint8Array Array').split(' '),
);

const C_RESERVED = new Set(
  ('auto break case char const continue default do double else enum extern float for goto if inline int long register restrict return ' +
    'short signed sizeof static struct switch typedef union unsigned void volatile while _Bool _Complex _Imaginary _Alignas _Alignof ' +
    '_Atomic _Generic _Noreturn _Static_assert _Thread_local bool true false alignas alignof offsetof NULL').split(' '),
);

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Escapes `name` for the target language: invalid characters become `_`, reserved words get a trailing `_`. */
export function escapeIdent(name: string, lang: 'ts' | 'c'): string {
  let n = name.replace(/[^A-Za-z0-9_]/g, '_');
  if (!IDENT.test(n)) n = `_${n}`;
  const reserved = lang === 'ts' ? TS_RESERVED : C_RESERVED;
  while (reserved.has(n)) n = `${n}_`;
  return n;
}

/** Hands out escaped identifiers within one scope and rejects collisions with where they came from. */
export class NameScope {
  private readonly used = new Map<string, { original: string; where: string }>();

  constructor(private readonly lang: 'ts' | 'c', private readonly what: string) {}

  /** The escaped identifier for `original`; throws CODEGEN_NAME if another name already escaped to it. */
  take(original: string, where: string): string {
    const id = escapeIdent(original, this.lang);
    const prev = this.used.get(id);
    if (prev && prev.original !== original) {
      throw new RexError(ErrorCodes.CODEGEN_NAME, `${this.what} '${original}' becomes the identifier '${id}', which '${prev.original}' (${prev.where}) already uses`, {
        where,
        hint: 'rename one of them in the XML',
      });
    }
    if (prev) {
      throw new RexError(ErrorCodes.CODEGEN_NAME, `${this.what} '${original}' is defined twice (also at ${prev.where})`, { where, hint: 'remove or rename one' });
    }
    this.used.set(id, { original, where });
    return id;
  }

  /** Reserves an identifier the generator itself uses. */
  reserve(id: string): void {
    this.used.set(id, { original: id, where: 'generated code' });
  }
}
