/**
 * The C-level view of an ELF object's debug information that repdb works from.
 *
 * This is the contract between the DWARF reader (src/gen/dwarf/) and everything
 * that consumes it (the entry-point model, frame layout, XML/SQL writers, codegen).
 * It is deliberately language-level (C types), not DWARF-level: no DIE offsets leak
 * out except as `origin` strings used in error messages.
 */

/** Index of a type in {@link DebugInfo.types}. */
export type TypeId = number;

/** Where something came from, for messages: "lib.c:12" or ".debug_info+0x1a2". */
export interface Origin {
  file?: string;
  line?: number;
  /** Section and offset of the DIE, always present: ".debug_info+0x1a2". */
  die: string;
}

/** How a base type's bits are to be read (DW_ATE_*). */
export type BaseEncoding = 'signed' | 'unsigned' | 'signed_char' | 'unsigned_char' | 'bool' | 'float' | 'complex_float' | 'other';

export type CType =
  | { kind: 'void'; origin?: Origin }
  | { kind: 'base'; name: string; size: number; encoding: BaseEncoding; origin: Origin }
  | { kind: 'pointer'; size: number; target: TypeId; origin: Origin }
  | { kind: 'const' | 'volatile' | 'restrict' | 'atomic'; target: TypeId; origin: Origin }
  | { kind: 'typedef'; name: string; target: TypeId; origin: Origin }
  /** `counts` per dimension, outermost first; null for an unknown bound (`int a[]`). */
  | { kind: 'array'; element: TypeId; counts: (number | null)[]; origin: Origin }
  | {
      kind: 'struct' | 'union';
      /** Absent for anonymous aggregates. */
      name?: string;
      /** Absent when only declared (incomplete type). */
      size?: number;
      declaration: boolean;
      members: Member[];
      origin: Origin;
    }
  | { kind: 'enum'; name?: string; size: number; underlying?: TypeId; enumerators: { name: string; value: bigint }[]; origin: Origin }
  /** A function type (the target of a function pointer). */
  | { kind: 'function'; returnType: TypeId; params: TypeId[]; variadic: boolean; prototyped: boolean; origin: Origin }
  /**
   * A type the reader found but will not describe, rather than guess: C++ references,
   * DW_TAG_unspecified_type, type-unit references (DW_FORM_ref_sig8 into .debug_types),
   * dwz supplementary-file references, member offsets given as location expressions...
   * `what` names the DWARF construct, `reason` says why; a matching warning is in
   * {@link DebugInfo.diagnostics}. A frame cannot carry it: consumers must refuse it clearly.
   */
  | { kind: 'unsupported'; what: string; reason: string; name?: string; origin: Origin };

export interface Member {
  /** Absent for anonymous struct/union members. */
  name?: string;
  type: TypeId;
  /** Byte offset from the start of the aggregate. */
  offset: number;
  /** Set only for bit-fields: width in bits and bit offset from the start of the aggregate. */
  bitSize?: number;
  bitOffset?: number;
}

export interface Param {
  name?: string;
  type: TypeId;
}

export interface FunctionInfo {
  name: string;
  linkageName?: string;
  /** DW_AT_external: visible outside its compilation unit. */
  external: boolean;
  /** The type id of `void` when the function returns nothing. */
  returnType: TypeId;
  params: Param[];
  variadic: boolean;
  /**
   * Taken from DW_AT_declaration DIEs of this name (all of which agree), there being no
   * definition: an exported function written in assembly (glibc's strlen) whose callers'
   * units declare it. No address.
   */
  declaration?: boolean;
  /** Entry address when the DIE has one (DW_AT_low_pc); undefined for declarations. */
  address?: bigint;
  origin: Origin;
}

export interface Diagnostic {
  severity: 'warning' | 'error';
  /** A warning about an entry point a user will look for (repdb prints it; most reader warnings it does not). */
  entry?: boolean;
  /** Section and offset (".debug_info+0x1a2") or file:line the message is about. */
  where: string;
  message: string;
}

export interface DebugInfo {
  /** The ELF file the information describes (not the separate debug file). */
  file: string;
  /** The file the DWARF was read from (the same file, or a separate debug file found via build-id / .gnu_debuglink). */
  debugFile: string;
  /** DWARF versions of the compilation units read. */
  dwarfVersions: number[];
  /** Always contains a `void` entry; TypeIds index this array. */
  types: CType[];
  /**
   * Every function with a definition (DW_AT_low_pc or ranges) that is external, deduplicated by name;
   * plus, marked `declaration`, the defined ELF function symbols without a DWARF definition whose
   * external DWARF declarations all agree.
   */
  functions: FunctionInfo[];
  diagnostics: Diagnostic[];
}
