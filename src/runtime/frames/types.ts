/**
 * The type vocabulary of REX frames (version 1): C types as x86-64 SysV sees them,
 * independent of DWARF and of XML. These plain objects are what generated stubs
 * embed and what repdb's model is made of, so they must stay JSON-serialisable
 * (bigint only in values, never in descriptions).
 */

/** Scalar types with a fixed size and alignment on x86-64 SysV. */
export type Prim =
  | 'bool'
  | 'char'
  | 'int8'
  | 'uint8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32'
  | 'int64'
  | 'uint64'
  | 'int128'
  | 'uint128'
  | 'float'
  | 'double'
  | 'longdouble';

/** All primitive names, in a stable order (used by parsers and property tests). */
export const PRIMS: readonly Prim[] = [
  'bool', 'char', 'int8', 'uint8', 'int16', 'uint16', 'int32', 'uint32',
  'int64', 'uint64', 'int128', 'uint128', 'float', 'double', 'longdouble',
];

/** A C type. Structs and unions are referenced by name into the entry point's type table. */
export type TypeDesc =
  | { kind: 'void' }
  | { kind: 'prim'; prim: Prim }
  /** An enum travels as its underlying integer. */
  | { kind: 'enum'; name: string; prim: Prim }
  | { kind: 'struct' | 'union'; name: string }
  | { kind: 'array'; elem: TypeDesc; count: number }
  | { kind: 'pointer'; target: TypeDesc }
  /** A pointer to a function: laid out as a pointer, never callable remotely. */
  | { kind: 'funcptr' }
  /** A type REX cannot encode (complex numbers, vectors): only its size and alignment are known. */
  | { kind: 'opaque'; size: number; align: number };

/** One member of a struct or union; bit-fields carry `bits`. */
export interface FieldDesc {
  name: string;
  type: TypeDesc;
  /** Byte offset as stated by the compiler or the XML; checked against the computed one when present. */
  offset?: number;
  /** Width in bits for a bit-field (REX does not lay out bit-fields itself). */
  bits?: number;
  bitOffset?: number;
}

/** A struct or union definition. */
export interface AggregateDesc {
  kind: 'struct' | 'union';
  name: string;
  fields: FieldDesc[];
  /** Stated size and alignment; required when the aggregate has bit-fields, checked otherwise. */
  size?: number;
  align?: number;
}

/** An enum definition (only its constants; values travel as `prim`). */
export interface EnumDesc {
  name: string;
  prim: Prim;
  values: { name: string; value: string }[];
}

/** How a pointer parameter's buffer moves between hosts (MIDL's [in], [out], [in,out]). */
export type Direction = 'in' | 'out' | 'inout';

/** A function parameter, with the marks that make a pointer safe to send. */
export interface ParamDesc {
  name: string;
  type: TypeDesc;
  /** Only for pointers: which way the pointed-to buffer travels. */
  direction?: Direction;
  /** Only for pointers: element count, from another parameter (by name) or a constant. Absent: one element. */
  sizeIs?: string | number;
  /** Only for `char *`: a NUL-terminated string. */
  string?: boolean;
  /**
   * Only for an out `char **` (strtol's endptr): the name of the in or inout `char *`
   * parameter it points into. The pointer the function stores comes back as a byte
   * offset into that parameter's buffer (an int64; -1 when it is NULL or points
   * elsewhere), since an address means nothing on the caller's host (docs/FRAMES.md).
   */
  into?: string;
}

/** Everything needed to lay out and encode the frames of one entry point. */
export interface EntryDesc {
  name: string;
  params: ParamDesc[];
  returns: TypeDesc;
  variadic?: boolean;
  /** Every struct/union reachable from the parameters and return type. */
  types: AggregateDesc[];
  /** The enums reachable from the signature, so values can be shown by name (absent: shown as numbers). */
  enums?: EnumDesc[];
}

/** Why an entry point cannot be called remotely, and how to fix the definition. */
export interface Refusal {
  /** The parameter, return value or field path the refusal is about ("param buf", "return"). */
  where: string;
  message: string;
  /** How to mark it in XML, or what to change in C. */
  hint: string;
}
