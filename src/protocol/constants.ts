/**
 * Constants of wire protocol v1 (docs/PROTOCOL.md). The C twin is native/include/rex.h;
 * test/vectors/protocol-v1.json keeps the two in step.
 */

/** Bytes the initiator sends before its first frame: "REX!\r\n\x1a\n". */
export const PREFACE = Buffer.from([0x52, 0x45, 0x58, 0x21, 0x0d, 0x0a, 0x1a, 0x0a]);

/** Protocol versions this implementation speaks. */
export const VERSION_MIN = 1;
export const VERSION_MAX = 1;

/** Size of the fixed frame header. */
export const HEADER_SIZE = 12;
/** Size of an attribute header (tag, kind, length). */
export const ATTR_HEADER_SIZE = 7;

/** Hard limits of version 1; a receiver may advertise a smaller max-payload in HELLO. */
export const LIMITS = {
  maxPayload: 1 << 20,
  minPayload: 16 << 10,
  maxAttrs: 4096,
  maxDepth: 8,
  maxStreams: 1024,
  maxNonce: 64,
  maxPingData: 65536,
} as const;

/** Frame flag bits. */
export const FLAG_END = 0x0001;
export const FLAGS_KNOWN = FLAG_END;

/** Attribute tag bit: the receiver must refuse the frame if it does not know this tag. */
export const TAG_CRITICAL = 0x8000;

/** Message types (section 4 of docs/PROTOCOL.md). */
export const MsgType = {
  HELLO: 0x0001,
  ERROR: 0x0002,
  GOODBYE: 0x0003,
  WINDOW_UPDATE: 0x0004,
  PING: 0x0010,
  PONG: 0x0011,
  LOAD_GET: 0x0020,
  LOAD: 0x0021,
  HOSTS_GET: 0x0022,
  HOSTS: 0x0023,
  ENROLL: 0x0030,
  ENROLLED: 0x0031,
  EXEC: 0x0040,
  STARTED: 0x0041,
  DATA: 0x0042,
  SIGNAL: 0x0043,
  WINSIZE: 0x0044,
  EXIT: 0x0045,
  FETCH: 0x0046,
  FILE: 0x0047,
  PROGRESS: 0x0048,
  RFORK: 0x0060,
  CALL: 0x0070,
  RESULT: 0x0071,
  ENTRIES_GET: 0x0072,
  ENTRIES: 0x0073,
  CANCEL: 0x0074,
  CANCELLED: 0x0075,
  DEFINE: 0x0076,
  DEFINED: 0x0077,
} as const;

export type MsgTypeName = keyof typeof MsgType;

/** Reverse lookup for logs and errors: 0x0010 -> "PING". */
export function msgTypeName(type: number): string {
  for (const [k, v] of Object.entries(MsgType)) if (v === type) return k;
  return `0x${type.toString(16).padStart(4, '0')}`;
}

/** Attribute value kinds. */
export const Kind = { uint: 1, int: 2, f64: 3, string: 4, bytes: 5, list: 6, bool: 7 } as const;
export type KindName = keyof typeof Kind;

const KIND_NAMES: (KindName | undefined)[] = [];
for (const [k, v] of Object.entries(Kind)) KIND_NAMES[v] = k as KindName;

/** Reverse lookup of {@link Kind} (on the decoder's hot path: an array index, not a search). */
export function kindName(kind: number): KindName | undefined {
  return KIND_NAMES[kind];
}

/** Error codes carried by ERROR frames (the same numbers are REX_EPROTO_* in rex.h). */
export const ProtoError = {
  MALFORMED: 1,
  VERSION: 2,
  TOO_BIG: 3,
  UNSUPPORTED: 4,
  UNEXPECTED: 5,
  NO_HOST: 6,
  UNREACHABLE: 7,
  TIMEOUT: 8,
  BUSY: 9,
  INTERNAL: 10,
  DENIED: 11,
  BAD_REQUEST: 12,
  CRASHED: 13,
  NO_ENTRY: 14,
  CANCELLED: 15,
  INCOMPATIBLE: 16,
} as const;
export type ProtoErrorName = keyof typeof ProtoError;

/** Reverse lookup of {@link ProtoError}. */
export function protoErrorName(code: number): ProtoErrorName | `CODE_${number}` {
  for (const [k, v] of Object.entries(ProtoError)) if (v === code) return k as ProtoErrorName;
  return `CODE_${code}`;
}

/** HELLO role values. */
export const Role = { client: 1, peer: 2, daemon: 3 } as const;
export type RoleName = keyof typeof Role;
