/**
 * Typed messages on top of frames: one table says which attributes each message
 * type has (docs/PROTOCOL.md section 4), and the same table drives encoding,
 * decoding and validation, so the spec, the encoder and the checker cannot drift.
 * It is also the source of librex's attribute tags: scripts/gen-protocol.mjs
 * writes native/src/wire.h's protocol block from it and constants.ts (run it after a change).
 */
import { ATTR_HEADER_SIZE, HEADER_SIZE, TAG_CRITICAL, LIMITS } from './constants.js';
import { ProtocolError, attrsSize, encodeFrame, type Attr, type Frame } from './encode.js';

/** How a field maps to an attribute: its tag, wire kind and TypeScript form. */
export type FieldSpec =
  | { tag: number; t: 'u32' | 'u64n'; required?: boolean } // uint as number (u64n: up to 2^53)
  | { tag: number; t: 'u64'; required?: boolean } // uint as bigint
  | { tag: number; t: 'f64'; required?: boolean }
  | { tag: number; t: 'str'; required?: boolean; max?: number }
  | { tag: number; t: 'bytes'; required?: boolean; max?: number }
  | { tag: number; t: 'bool'; required?: boolean }
  | { tag: number; t: 'strs'; max: number; maxEach: number; critical?: true } // a repeated string attribute, in order; critical: sent with the CRITICAL bit
  | { tag: number; t: 'f64list'; required?: boolean; max: number }
  | { tag: number; t: 'group'; fields: Record<string, FieldSpec>; repeated: true; max: number }
  | { tag: number; t: 'struct'; fields: Record<string, FieldSpec>; required?: boolean }; // one nested list

/** One XSAVE state component of a CPU profile (docs/PROTOCOL.md 4.5). */
const CPU_COMPONENT = {
  index: { tag: 1, t: 'u32', required: true },
  offset: { tag: 2, t: 'u32', required: true },
  size: { tag: 3, t: 'u32', required: true },
} as const satisfies Record<string, FieldSpec>;

/** A host's CPU profile in LOAD and HOSTS (docs/PROTOCOL.md 4.5; src/cpu/wire.ts checks the values). */
const CPU_PROFILE = {
  leaves: { tag: 1, t: 'bytes', required: true, max: 1024 },
  xcr0: { tag: 2, t: 'u64', required: true },
  xsaveSize: { tag: 3, t: 'u32' },
  components: { tag: 4, t: 'group', fields: CPU_COMPONENT, repeated: true, max: 62 },
  modelName: { tag: 5, t: 'str', max: 48 },
} as const satisfies Record<string, FieldSpec>;

const HOST_ENTRY = {
  name: { tag: 1, t: 'str', required: true, max: 255 },
  address: { tag: 2, t: 'str', max: 255 },
  port: { tag: 3, t: 'u32' },
  load: { tag: 4, t: 'f64' },
  cores: { tag: 5, t: 'u32' },
  jobs: { tag: 6, t: 'u32' },
  reachable: { tag: 7, t: 'bool' },
  ageMs: { tag: 8, t: 'u64n' },
  self: { tag: 9, t: 'bool' },
  error: { tag: 10, t: 'str', max: 4096 },
  loadavg1: { tag: 11, t: 'f64' },
  cpu: { tag: 12, t: 'struct', fields: CPU_PROFILE },
} as const satisfies Record<string, FieldSpec>;

/** One member of a cluster in a JOINED answer (docs/KEYS.md "Joining a cluster"): its rexd's certificate and address. */
const MEMBER_ENTRY = {
  name: { tag: 1, t: 'str', required: true, max: 255 },
  cert: { tag: 2, t: 'bytes', required: true, max: 16384 },
  address: { tag: 3, t: 'str', required: true, max: 255 },
  port: { tag: 4, t: 'u32', required: true },
  /** Why the introducer could not introduce the new host to this member (it was down, or refused). */
  error: { tag: 5, t: 'str', max: 4096 },
} as const satisfies Record<string, FieldSpec>;

/** Largest input or output frame of a remote call: it travels in one protocol frame (REX_CALL_MAX_FRAME in rex.h). */
export const CALL_MAX_FRAME = LIMITS.maxPayload - 1024;

/** Most argument strings a CALL_CLI carries (a definition has at most 127 parameters; more is a usage error either way). */
export const CALL_CLI_MAX_ARGS = 1024;

/** One entry point in an ENTRIES answer (docs/PROTOCOL.md 4.7). */
const CALL_ENTRY = {
  name: { tag: 1, t: 'str', required: true, max: 255 },
  inputSize: { tag: 2, t: 'u32' },
  outputSize: { tag: 3, t: 'u32' },
  callable: { tag: 4, t: 'bool' },
  refusal: { tag: 5, t: 'str', max: 4096 },
  signature: { tag: 6, t: 'str', max: 4096 },
  /** The entry point as JSON (src/runtime/frames EntryDesc), so callers can encode frames. */
  definition: { tag: 7, t: 'str', max: 262144 },
  variable: { tag: 8, t: 'bool' },
} as const satisfies Record<string, FieldSpec>;

/** One parameter of a DEFINE (rexd to a call controller; src/calls/define.ts). */
const DEFINE_PARAM = {
  kind: { tag: 1, t: 'u32', required: true },
  ffi: { tag: 2, t: 'str', max: 65536 },
  offset: { tag: 3, t: 'u32', required: true },
  size: { tag: 4, t: 'u32' },
  direction: { tag: 5, t: 'u32' },
  elemSize: { tag: 6, t: 'u32' },
  align: { tag: 7, t: 'u32' },
  string: { tag: 8, t: 'bool' },
  countKind: { tag: 9, t: 'u32' },
  count: { tag: 10, t: 'u32' },
  outOffset: { tag: 11, t: 'u32' },
  /** An out char ** returned as an offset: 1 + the index of the char * parameter it points into. */
  into: { tag: 12, t: 'u32' },
} as const satisfies Record<string, FieldSpec>;

/** One shared library named by EXEC (docs/PROTOCOL.md 4.9): the executor fetches it when it lacks it. */
const EXEC_LIB = {
  name: { tag: 1, t: 'str', required: true, max: 255 },
  path: { tag: 2, t: 'str', required: true, max: 4096 },
  sha256: { tag: 3, t: 'bytes', required: true, max: 32 },
  size: { tag: 4, t: 'u64n' },
} as const satisfies Record<string, FieldSpec>;

/** Largest DATA chunk of a stdio stream (docs/PROTOCOL.md 4.9): well inside one frame. */
export const EXEC_MAX_CHUNK = 256 * 1024;

/** Largest rfork image sent inside its RFORK (tag 15) instead of fetched by hash: one frame, with room for the file list. */
export const IMAGE_INLINE_MAX = 768 * 1024;

/**
 * The attribute lists nested in messages, by the name their tags have in C
 * (REX_<NAME>_<FIELD> in wire.h, generated by scripts/gen-protocol.mjs, which
 * refuses a nested list that is not named here).
 */
export const ATTRIBUTE_GROUPS: Record<string, Record<string, FieldSpec>> = {
  HOST: HOST_ENTRY,
  ENTRY: CALL_ENTRY,
  PARAM: DEFINE_PARAM,
  EXEC_LIB: EXEC_LIB,
  MEMBER: MEMBER_ENTRY,
  CPU_PROFILE: CPU_PROFILE,
  CPU_COMPONENT: CPU_COMPONENT,
};

/**
 * Every message of version 1, one entry each: its type number on the wire
 * (section 4 of docs/PROTOCOL.md), whether it ends its request by default
 * (`final`: an answer sets the END flag unless the sender says otherwise), and
 * its attributes. MsgType and MESSAGE_SPECS are views of it; wire.h's enum
 * rex_msg_type and tag enums are generated from it (scripts/gen-protocol.mjs).
 */
export const MESSAGES = {
  HELLO: {
    type: 0x0001,
    attrs: {
      versionMin: { tag: 1, t: 'u32' },
      versionMax: { tag: 2, t: 'u32' },
      version: { tag: 3, t: 'u32' },
      role: { tag: 4, t: 'u32', required: true },
      host: { tag: 5, t: 'str', max: 255 },
      maxPayload: { tag: 6, t: 'u32' },
      software: { tag: 7, t: 'str', max: 255 },
      program: { tag: 8, t: 'str', max: 63 },
    },
  },
  ERROR: {
    type: 0x0002,
    final: true,
    attrs: {
      code: { tag: 1, t: 'u32', required: true },
      message: { tag: 2, t: 'str', max: 65536 },
      fatal: { tag: 3, t: 'bool' },
      refType: { tag: 4, t: 'u32' },
      host: { tag: 5, t: 'str', max: 255 },
    },
  },
  GOODBYE: { type: 0x0003, attrs: { reason: { tag: 1, t: 'str', max: 4096 } } },
  WINDOW_UPDATE: { type: 0x0004, attrs: { increment: { tag: 1, t: 'u32', required: true }, fd: { tag: 2, t: 'u32' } } },
  PING: {
    type: 0x0010,
    attrs: {
      nonce: { tag: 1, t: 'bytes', max: LIMITS.maxNonce },
      target: { tag: 2, t: 'str', max: 255 },
      data: { tag: 3, t: 'bytes', max: LIMITS.maxPingData },
      program: { tag: 4, t: 'str', max: 63 },
    },
  },
  PONG: {
    type: 0x0011,
    final: true,
    attrs: {
      nonce: { tag: 1, t: 'bytes', max: LIMITS.maxNonce },
      data: { tag: 3, t: 'bytes', max: LIMITS.maxPingData },
      host: { tag: 4, t: 'str', max: 255 },
      hops: { tag: 5, t: 'u32' },
    },
  },
  LOAD_GET: { type: 0x0020, attrs: {} },
  LOAD: {
    type: 0x0021,
    final: true,
    attrs: {
      host: { tag: 1, t: 'str', required: true, max: 255 },
      load: { tag: 2, t: 'f64', required: true },
      loadavg: { tag: 3, t: 'f64list', max: 3 },
      cores: { tag: 4, t: 'u32' },
      jobs: { tag: 5, t: 'u32' },
      time: { tag: 6, t: 'u64n' },
      memAvailable: { tag: 7, t: 'u64n' },
      cpu: { tag: 8, t: 'struct', fields: CPU_PROFILE },
    },
  },
  HOSTS_GET: { type: 0x0022, attrs: {} },
  HOSTS: { type: 0x0023, final: true, attrs: { hosts: { tag: 1, t: 'group', fields: HOST_ENTRY, repeated: true, max: 1024 } } },
  ENROLL: {
    type: 0x0030,
    attrs: {
      secret: { tag: 1, t: 'str', max: 64 },
      proof: { tag: 2, t: 'bytes', max: 64 },
      cert: { tag: 3, t: 'bytes', max: 16384 },
    },
  },
  ENROLLED: {
    type: 0x0031,
    final: true,
    attrs: {
      server: { tag: 1, t: 'str', required: true, max: 255 },
      serverId: { tag: 2, t: 'str', required: true, max: 64 },
      name: { tag: 3, t: 'str', required: true, max: 255 },
      id: { tag: 4, t: 'str', required: true, max: 64 },
      already: { tag: 5, t: 'bool' },
    },
  },
  JOIN: {
    type: 0x0032,
    attrs: {
      secret: { tag: 1, t: 'str', required: true, max: 64 },
      proof: { tag: 2, t: 'bytes', required: true, max: 64 },
      /** Where the joining host's rexd listens, as it knows it; without an address the member takes the connection's source. */
      address: { tag: 3, t: 'str', max: 255 },
      port: { tag: 4, t: 'u32', required: true },
    },
  },
  JOINED: {
    type: 0x0033,
    final: true,
    attrs: {
      server: { tag: 1, t: 'str', required: true, max: 255 },
      serverId: { tag: 2, t: 'str', required: true, max: 64 },
      name: { tag: 3, t: 'str', required: true, max: 255 },
      id: { tag: 4, t: 'str', required: true, max: 64 },
      members: { tag: 5, t: 'group', fields: MEMBER_ENTRY, repeated: true, max: 1024 },
    },
  },
  INTRODUCE: {
    type: 0x0034,
    attrs: {
      cert: { tag: 1, t: 'bytes', required: true, max: 16384 },
      address: { tag: 2, t: 'str', required: true, max: 255 },
      port: { tag: 3, t: 'u32', required: true },
    },
  },
  INTRODUCED: {
    type: 0x0035,
    final: true,
    attrs: {
      name: { tag: 1, t: 'str', required: true, max: 255 },
      id: { tag: 2, t: 'str', required: true, max: 64 },
      already: { tag: 3, t: 'bool' },
    },
  },
  EXEC: {
    type: 0x0040,
    attrs: {
      path: { tag: 1, t: 'str', required: true, max: 4096 },
      argv: { tag: 2, t: 'strs', max: 65536, maxEach: 131072 },
      env: { tag: 3, t: 'strs', max: 65536, maxEach: 131072 },
      cwd: { tag: 4, t: 'str', max: 4096 },
      host: { tag: 5, t: 'str', max: 255 },
      pty: { tag: 6, t: 'bool' },
      rows: { tag: 7, t: 'u32' },
      cols: { tag: 8, t: 'u32' },
      window: { tag: 9, t: 'u32' },
      program: { tag: 10, t: 'str', max: 63 },
      sha256: { tag: 11, t: 'bytes', max: 32 },
      // Tags 12, 13, 15 and 16 were rfork's (image, fds, imageData, imageSize): RFORK carries them now.
      libs: { tag: 14, t: 'group', fields: EXEC_LIB, repeated: true, max: 512 },
      // Placement limited to these hosts (REX_PLACE_HOSTS, docs/PLACEMENT.md): a Slurm allocation inside a larger cluster.
      // CRITICAL: a rexd that does not know it must refuse (UNSUPPORTED), not place the work anywhere.
      among: { tag: 17, t: 'strs', max: 1024, maxEach: 255, critical: true },
    },
  },
  /** rfork (docs/RFORK.md section 5): restore a process image; its stream is EXEC's. Shared fields keep EXEC's tags. */
  RFORK: {
    type: 0x0060,
    attrs: {
      path: { tag: 1, t: 'str', required: true, max: 4096 },
      cwd: { tag: 4, t: 'str', max: 4096 },
      host: { tag: 5, t: 'str', max: 255 },
      window: { tag: 9, t: 'u32' },
      program: { tag: 10, t: 'str', max: 63 },
      sha256: { tag: 11, t: 'bytes', max: 32 },
      fds: { tag: 13, t: 'bytes', max: 4 * 1024 },
      files: { tag: 14, t: 'group', fields: EXEC_LIB, repeated: true, max: 512 },
      imageData: { tag: 15, t: 'bytes', max: IMAGE_INLINE_MAX },
      imageSize: { tag: 16, t: 'u32' },
      among: { tag: 17, t: 'strs', max: 1024, maxEach: 255, critical: true },
    },
  },
  STARTED: {
    type: 0x0041,
    attrs: {
      host: { tag: 1, t: 'str', required: true, max: 255 },
      pid: { tag: 2, t: 'u32' },
      window: { tag: 3, t: 'u32' },
      cwd: { tag: 4, t: 'str', max: 4096 },
      fdWindow: { tag: 5, t: 'u32' },
    },
  },
  DATA: {
    type: 0x0042,
    attrs: {
      fd: { tag: 1, t: 'u32', required: true },
      data: { tag: 2, t: 'bytes', max: EXEC_MAX_CHUNK },
      eof: { tag: 3, t: 'bool' },
    },
  },
  SIGNAL: { type: 0x0043, attrs: { signal: { tag: 1, t: 'str', required: true, max: 16 } } },
  WINSIZE: { type: 0x0044, attrs: { rows: { tag: 1, t: 'u32', required: true }, cols: { tag: 2, t: 'u32', required: true } } },
  EXIT: {
    type: 0x0045,
    final: true,
    attrs: {
      code: { tag: 1, t: 'u32' },
      signal: { tag: 2, t: 'str', max: 16 },
      core: { tag: 3, t: 'bool' },
      host: { tag: 4, t: 'str', max: 255 },
    },
  },
  FETCH: {
    type: 0x0046,
    attrs: {
      sha256: { tag: 1, t: 'bytes', required: true, max: 32 },
      path: { tag: 2, t: 'str', max: 4096 },
      dest: { tag: 3, t: 'str', max: 4096 },
    },
  },
  FILE: {
    type: 0x0047,
    attrs: {
      data: { tag: 1, t: 'bytes', max: EXEC_MAX_CHUNK },
      eof: { tag: 2, t: 'bool' },
      error: { tag: 3, t: 'str', max: 4096 },
      size: { tag: 4, t: 'u64n' },
      copied: { tag: 5, t: 'bool' },
    },
  },
  PROGRESS: {
    type: 0x0048,
    attrs: {
      done: { tag: 1, t: 'u64n', required: true },
      total: { tag: 2, t: 'u64n', required: true },
      path: { tag: 3, t: 'str', max: 4096 },
    },
  },
  CALL: {
    type: 0x0070,
    attrs: {
      target: { tag: 1, t: 'str', required: true, max: 1024 },
      input: { tag: 2, t: 'bytes', required: true, max: CALL_MAX_FRAME },
      deadlineMs: { tag: 3, t: 'u32' },
      async: { tag: 4, t: 'bool' },
      outMax: { tag: 5, t: 'u32' },
      // Placement (target host `*` or none) only among these hosts: REX_PLACE_HOSTS, docs/PLACEMENT.md.
      among: { tag: 6, t: 'strs', max: 1024, maxEach: 255, critical: true },
    },
  },
  RESULT: {
    type: 0x0071,
    final: true,
    attrs: {
      output: { tag: 1, t: 'bytes', max: CALL_MAX_FRAME },
      host: { tag: 2, t: 'str', max: 255 },
      accepted: { tag: 3, t: 'bool' },
    },
  },
  ENTRIES_GET: {
    type: 0x0072,
    attrs: {
      target: { tag: 1, t: 'str', required: true, max: 1024 },
      /** Exactly this entry point (docs/PROTOCOL.md 4.7): what a call needs, without the list. */
      name: { tag: 2, t: 'str', max: 255 },
      /** A glob (`*`, `?`, `[...]`) the serving rexd matches names against. */
      match: { tag: 3, t: 'str', max: 255 },
      /** Cursor: the `next` of the previous page; only names after it (byte order). */
      after: { tag: 4, t: 'str', max: 255 },
      /** At most this many entries; the server may send fewer (a page never exceeds the frame limits). */
      limit: { tag: 5, t: 'u32' },
    },
  },
  ENTRIES: {
    type: 0x0073,
    final: true,
    attrs: {
      entries: { tag: 1, t: 'group', fields: CALL_ENTRY, repeated: true, max: 4096 },
      program: { tag: 2, t: 'str', max: 255 },
      host: { tag: 3, t: 'str', max: 255 },
      /** More entries follow: ask again with `after` = this (the last name of this page). Absent: the last page. */
      next: { tag: 4, t: 'str', max: 255 },
    },
  },
  CANCEL: { type: 0x0074, attrs: { call: { tag: 1, t: 'u32', required: true } } },
  CANCELLED: { type: 0x0075, final: true, attrs: { found: { tag: 1, t: 'bool' } } },
  DEFINE: {
    type: 0x0076,
    attrs: {
      name: { tag: 1, t: 'str', required: true, max: 255 },
      inputSize: { tag: 2, t: 'u32', required: true },
      outputSize: { tag: 3, t: 'u32', required: true },
      returns: { tag: 4, t: 'str', required: true, max: 65536 },
      params: { tag: 5, t: 'group', fields: DEFINE_PARAM, repeated: true, max: 127 },
      symbol: { tag: 6, t: 'str', max: 255 },
    },
  },
  DEFINED: { type: 0x0077, final: true, attrs: {} },
  /**
   * `rex call` of the native front end, served by the local rexd (local clients only, docs/PROTOCOL.md 4.7.1):
   * the command line's strings as given; rexd runs the Node CLI's own `rex call` (src/cli/commands/call.ts
   * callCommand) over its own request table, as this client, and answers with what to print.
   */
  CALL_CLI: {
    type: 0x0078,
    attrs: {
      target: { tag: 1, t: 'str', required: true, max: 1024 },
      args: { tag: 2, t: 'strs', max: CALL_CLI_MAX_ARGS, maxEach: CALL_MAX_FRAME },
      json: { tag: 3, t: 'bool' },
      hex: { tag: 4, t: 'str', max: CALL_MAX_FRAME },
      /** --timeout as written (the CLI's own check reads it); absent: the default, 30000. */
      timeout: { tag: 5, t: 'str', max: 64 },
      /** The socket path the client connected to, as it names it: messages say `rexd at SOCKET` as the Node CLI's do. */
      socket: { tag: 6, t: 'str', max: 107 },
    },
  },
  /** What `rex call` prints: stdout in order over one or more frames; the last (END) has stderr and the exit status. */
  CALL_OUTPUT: {
    type: 0x0079,
    final: true,
    attrs: {
      stdout: { tag: 1, t: 'bytes', max: CALL_MAX_FRAME },
      stderr: { tag: 2, t: 'bytes', max: CALL_MAX_FRAME },
      status: { tag: 3, t: 'u32' },
    },
  },
} as const satisfies Record<string, MessageEntry>;

/** What one entry of {@link MESSAGES} gives. */
interface MessageEntry {
  readonly type: number;
  readonly final?: boolean;
  readonly attrs: Record<string, FieldSpec>;
}

type Entries = typeof MESSAGES;
export type MsgTypeName = keyof Entries;

/** Message types by name (section 4 of docs/PROTOCOL.md), in the order of their numbers. */
export const MsgType = Object.fromEntries(
  Object.entries(MESSAGES)
    .map(([name, e]) => [name, e.type] as const)
    .sort((x, y) => x[1] - y[1]),
) as { readonly [N in MsgTypeName]: Entries[N]['type'] };

/** The attribute table of every message type of version 1, in MESSAGES' order. */
export const MESSAGE_SPECS = Object.fromEntries(Object.entries(MESSAGES).map(([name, e]) => [name, e.attrs])) as {
  readonly [N in MsgTypeName]: Entries[N]['attrs'];
};

const NAME_OF_TYPE = new Map<number, MsgTypeName>(Object.entries(MsgType).map(([k, v]) => [v, k as MsgTypeName]));
const FINAL = new Set<MsgTypeName>((Object.keys(MESSAGES) as MsgTypeName[]).filter((n) => 'final' in MESSAGES[n]));

/** Reverse lookup for logs and errors: 0x0010 -> "PING". */
export function msgTypeName(type: number): string {
  return NAME_OF_TYPE.get(type) ?? `0x${type.toString(16).padStart(4, '0')}`;
}

type Specs = typeof MESSAGE_SPECS;

type FieldValue<F> = F extends { t: 'u32' | 'u64n' }
  ? number
  : F extends { t: 'u64' }
    ? bigint
    : F extends { t: 'f64' }
      ? number
      : F extends { t: 'str' }
        ? string
        : F extends { t: 'bytes' }
          ? Uint8Array
          : F extends { t: 'bool' }
            ? boolean
            : F extends { t: 'f64list' }
              ? number[]
              : F extends { t: 'strs' }
                ? string[]
              : F extends { t: 'group'; fields: infer G }
                ? Body<G>[]
                : F extends { t: 'struct'; fields: infer G }
                  ? Body<G>
                  : never;

type Body<S> = { -readonly [K in keyof S as S[K] extends { required: true } ? K : never]: FieldValue<S[K]> } & {
  -readonly [K in keyof S as S[K] extends { required: true } ? never : K]?: FieldValue<S[K]>;
};

/** A typed message: its type name, stream and fields. */
export type Message = {
  [N in MsgTypeName]: { type: N; stream: number; end?: boolean } & Body<Specs[N]>;
}[MsgTypeName];

/** The message of type N. */
export type MessageOf<N extends MsgTypeName> = Extract<Message, { type: N }>;

/** One entry of an ENTRIES answer. */
export type EntryInfo = NonNullable<MessageOf<'ENTRIES'>['entries']>[number];

/** Bytes and attributes one entry takes inside an ENTRIES payload (its list attribute included). */
export function entryWireSize(e: EntryInfo): { bytes: number; attrs: number } {
  const value = bodyToAttrs(MESSAGE_SPECS.ENTRIES.entries.fields as Record<string, FieldSpec>, e as unknown as Record<string, unknown>);
  return { bytes: ATTR_HEADER_SIZE + attrsSize(value), attrs: 1 + value.length };
}

/**
 * The HOSTS answer for a receiver that accepts `maxPayload` bytes: the cluster
 * view as it is when it fits one frame; else without the peers' CPU profiles
 * (the largest part: `rex hosts` then shows their CPU as unknown); else a
 * clear error. HOSTS does not page: its length is the cluster's, which rex.rc
 * bounds (docs/PROTOCOL.md 4.6).
 */
export function fitHosts(hosts: HostEntry[], maxPayload: number = LIMITS.maxPayload): { hosts: HostEntry[]; cpuOmitted: boolean } {
  const budget = Math.min(maxPayload, LIMITS.maxPayload);
  const measure = (hs: HostEntry[]): { bytes: number; attrs: number } => {
    const attrs = bodyToAttrs(MESSAGE_SPECS.HOSTS as Record<string, FieldSpec>, { hosts: hs });
    return { bytes: attrsSize(attrs), attrs: countAttrs(attrs) };
  };
  const fits = (m: { bytes: number; attrs: number }): boolean => m.bytes <= budget && m.attrs <= LIMITS.maxAttrs;
  if (fits(measure(hosts))) return { hosts, cpuOmitted: false };
  const lean = hosts.map((h) => (h.self || !h.cpu ? h : (({ cpu: _, ...rest }) => rest)(h)));
  const m = measure(lean);
  if (fits(m)) return { hosts: lean, cpuOmitted: true };
  throw new ProtocolError('INTERNAL', `the cluster view of ${hosts.length} hosts does not fit one HOSTS frame even without CPU profiles (${m.bytes} bytes, ${m.attrs} attributes; at most ${budget} bytes and ${LIMITS.maxAttrs} attributes)`, {
    fatal: false,
    hint: 'protocol version 1 carries about 300 hosts per cluster view: split the cluster (rex.rc hosts)',
  });
}

function countAttrs(attrs: Attr[]): number {
  let n = 0;
  for (const a of attrs) n += 1 + (a.kind === 'list' ? countAttrs(a.value) : 0);
  return n;
}

/** Entries of a HOSTS message. */
export type HostEntry = NonNullable<MessageOf<'HOSTS'>['hosts']>[number];

function fieldToAttr(spec: FieldSpec, value: unknown): Attr[] {
  switch (spec.t) {
    case 'u32':
    case 'u64n':
      return [{ tag: spec.tag, kind: 'uint', value: BigInt(value as number) }];
    case 'u64':
      return [{ tag: spec.tag, kind: 'uint', value: value as bigint }];
    case 'f64':
      return [{ tag: spec.tag, kind: 'f64', value: value as number }];
    case 'str':
      return [{ tag: spec.tag, kind: 'string', value: value as string }];
    case 'bytes':
      return [{ tag: spec.tag, kind: 'bytes', value: value as Uint8Array }];
    case 'bool':
      return [{ tag: spec.tag, kind: 'bool', value: value as boolean }];
    case 'strs':
      return (value as string[]).map((v) => ({ tag: spec.critical ? spec.tag | TAG_CRITICAL : spec.tag, kind: 'string' as const, value: v }));
    case 'f64list':
      return [{ tag: spec.tag, kind: 'list', value: (value as number[]).map((v) => ({ tag: 1, kind: 'f64' as const, value: v })) }];
    case 'group':
      return (value as Record<string, unknown>[]).map((g) => ({ tag: spec.tag, kind: 'list' as const, value: bodyToAttrs(spec.fields, g) }));
    case 'struct':
      return [{ tag: spec.tag, kind: 'list', value: bodyToAttrs(spec.fields, value as Record<string, unknown>) }];
  }
}

function bodyToAttrs(specs: Record<string, FieldSpec>, body: Record<string, unknown>): Attr[] {
  const out: Attr[] = [];
  for (const [name, spec] of compiled(specs).fields) {
    const v = body[name];
    if (v === undefined) continue;
    out.push(...fieldToAttr(spec, v));
  }
  return out;
}

/**
 * One DATA frame carrying `data`, several buffers, as the parts to write
 * (header and attributes, then the buffers as they are): the executor sends
 * what it read from a program in a few reads as one frame, joining nothing.
 */
export function dataFrameParts(stream: number, fd: number, data: readonly Uint8Array[]): Uint8Array[] {
  let n = 0;
  for (const d of data) n += d.byteLength;
  if (n > EXEC_MAX_CHUNK) throw new RangeError(`DATA of ${n} bytes exceeds ${EXEC_MAX_CHUNK}`);
  // The frame with an empty data attribute, its last; then its lengths grow by n.
  const head = encodeFrame(messageToFrame({ type: 'DATA', stream, fd, data: new Uint8Array(0) }));
  head.writeUInt32BE(head.length - HEADER_SIZE + n, 0);
  head.writeUInt32BE(n, head.length - 4);
  return [head, ...data];
}

/**
 * {@link messageToFrame} of `{ ...body, stream, end }` without making that
 * object (a request's and an answer's envelope, on every round trip).
 */
export function bodyToFrame(body: { type: MsgTypeName; end?: boolean }, stream: number, end: boolean | undefined = body.end): Frame {
  const specs = MESSAGE_SPECS[body.type] as Record<string, FieldSpec>;
  return {
    type: MsgType[body.type],
    flags: end ?? FINAL.has(body.type) ? 1 : 0,
    stream,
    attrs: bodyToAttrs(specs, body as unknown as Record<string, unknown>),
  };
}

/** Turns a typed message into a frame. */
export function messageToFrame(m: Message): Frame {
  const specs = MESSAGE_SPECS[m.type] as Record<string, FieldSpec>;
  return {
    type: MsgType[m.type],
    flags: m.end ?? FINAL.has(m.type) ? 1 : 0,
    stream: m.stream,
    attrs: bodyToAttrs(specs, m as unknown as Record<string, unknown>),
  };
}

const KIND_OF: Record<FieldSpec['t'], Attr['kind']> = {
  u32: 'uint',
  u64n: 'uint',
  u64: 'uint',
  f64: 'f64',
  str: 'string',
  bytes: 'bytes',
  bool: 'bool',
  f64list: 'list',
  strs: 'string',
  group: 'list',
  struct: 'list',
};

function bad(where: string, msg: string): ProtocolError {
  return new ProtocolError('MALFORMED', `${where}: ${msg}`);
}

/** A message spec prepared for the hot path: decoding and encoding run on every request. */
interface CompiledSpec {
  byTag: Map<number, [string, FieldSpec]>;
  fields: [string, FieldSpec][];
  required: [string, FieldSpec][];
}

const COMPILED = new WeakMap<Record<string, FieldSpec>, CompiledSpec>();

/** The spec's lookup tables, built once per spec. */
function compiled(specs: Record<string, FieldSpec>): CompiledSpec {
  let c = COMPILED.get(specs);
  if (!c) {
    const fields = Object.entries(specs);
    c = {
      byTag: new Map(fields.map(([name, spec]) => [spec.tag, [name, spec]])),
      fields,
      required: fields.filter(([, spec]) => 'required' in spec && spec.required),
    };
    COMPILED.set(specs, c);
  }
  return c;
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

function attrsToBody(specs: Record<string, FieldSpec>, attrs: Attr[], where: string, body: Record<string, unknown> = {}): Record<string, unknown> {
  const { byTag, required } = compiled(specs);
  for (const a of attrs) {
    const entry = byTag.get(a.tag & ~TAG_CRITICAL);
    if (!entry) {
      if (a.tag & TAG_CRITICAL) {
        throw new ProtocolError('UNSUPPORTED', `${where}: critical attribute ${a.tag & ~TAG_CRITICAL} is not known to this version`, { fatal: false });
      }
      continue; // unknown, non-critical: ignored so that newer peers can add fields
    }
    const [name, spec] = entry;
    if (a.kind !== KIND_OF[spec.t]) throw bad(where, `attribute ${name} (tag ${spec.tag}) must be ${KIND_OF[spec.t]}, got ${a.kind}`);
    if (spec.t === 'strs') {
      const list = (body[name] as string[] | undefined) ?? [];
      if (list.length >= spec.max) throw bad(where, `more than ${spec.max} ${name} entries`);
      const len = Buffer.byteLength(a.value as string);
      if (len > spec.maxEach) throw bad(where, `${name}[${list.length}] is ${len} bytes, at most ${spec.maxEach} allowed`);
      list.push(a.value as string);
      body[name] = list;
      continue;
    }
    if (spec.t === 'group') {
      const list = (body[name] as unknown[] | undefined) ?? [];
      if (list.length >= spec.max) throw bad(where, `more than ${spec.max} ${name} entries`);
      list.push(attrsToBody(spec.fields, a.value as Attr[], `${where} ${name}[${list.length}]`));
      body[name] = list;
      continue;
    }
    if (name in body) throw bad(where, `attribute ${name} (tag ${spec.tag}) repeated`);
    switch (spec.t) {
      case 'u32': {
        const v = a.value as bigint;
        if (v > 0xffff_ffffn) throw bad(where, `attribute ${name} = ${v} exceeds 32 bits`);
        body[name] = Number(v);
        break;
      }
      case 'u64n': {
        const v = a.value as bigint;
        if (v > MAX_SAFE) throw bad(where, `attribute ${name} = ${v} exceeds 2^53`);
        body[name] = Number(v);
        break;
      }
      case 'str':
      case 'bytes': {
        const len = spec.t === 'str' ? Buffer.byteLength(a.value as string) : (a.value as Uint8Array).byteLength;
        if (spec.max !== undefined && len > spec.max) throw bad(where, `attribute ${name} is ${len} bytes, at most ${spec.max} allowed`);
        body[name] = a.value;
        break;
      }
      case 'struct':
        body[name] = attrsToBody(spec.fields, a.value as Attr[], `${where} ${name}`);
        break;
      case 'f64list': {
        const items = a.value as Attr[];
        if (items.length > spec.max || items.some((i) => i.kind !== 'f64')) throw bad(where, `attribute ${name} must be a list of at most ${spec.max} f64`);
        body[name] = items.map((i) => i.value as number);
        break;
      }
      default:
        body[name] = a.value;
    }
  }
  for (const [name, spec] of required) {
    if (!(name in body)) {
      throw new ProtocolError('BAD_REQUEST', `${where}: required attribute ${name} (tag ${spec.tag}) missing`, { fatal: false });
    }
  }
  return body;
}

/** Turns a frame into a typed message, validating it against the table. */
export function frameToMessage(f: Frame): Message {
  const name = NAME_OF_TYPE.get(f.type);
  if (!name) {
    throw new ProtocolError('UNSUPPORTED', `message type 0x${f.type.toString(16).padStart(4, '0')} is not known to protocol version 1`, { fatal: false });
  }
  // The envelope first, then the fields into the same object: no copy per message.
  const m: Record<string, unknown> = { type: name, stream: f.stream, end: (f.flags & 1) === 1 };
  return attrsToBody(MESSAGE_SPECS[name] as Record<string, FieldSpec>, f.attrs, name, m) as Message;
}
