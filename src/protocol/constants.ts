/**
 * Constants of wire protocol v1 (docs/PROTOCOL.md): with messages.ts and
 * signals.ts the one description of the protocol. native/src/wire.h's
 * protocol block is generated from them (scripts/gen-protocol.mjs);
 * test/vectors/protocol-v1.json checks both implementations against the spec.
 */
import { ErrorCodes, type ErrorCode } from '../util/errors.js';


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

// Message types (MsgType, MsgTypeName, msgTypeName) are in messages.ts, each
// number in one entry with its message's attributes.

/** Attribute value kinds. */
export const Kind = { uint: 1, int: 2, f64: 3, string: 4, bytes: 5, list: 6, bool: 7 } as const;
export type KindName = keyof typeof Kind;

const KIND_NAMES: (KindName | undefined)[] = [];
for (const [k, v] of Object.entries(Kind)) KIND_NAMES[v] = k as KindName;

/** Reverse lookup of {@link Kind} (on the decoder's hot path: an array index, not a search). */
export function kindName(kind: number): KindName | undefined {
  return KIND_NAMES[kind];
}

/**
 * The codes of ERROR frames (docs/PROTOCOL.md 4.2), the one table of them: the
 * number on the wire, the short text (rex_strerror's in C), and the RexError
 * code a TypeScript caller sees. wire.h's REX_EPROTO_* (the number negated) and
 * errors.c's names and texts are generated from it (scripts/gen-protocol.mjs).
 */
export const PROTO_ERRORS = {
  MALFORMED: { code: 1, text: 'malformed frame or attribute', rex: ErrorCodes.PROTO_MALFORMED },
  VERSION: { code: 2, text: 'no common protocol version', rex: ErrorCodes.PROTO_VERSION },
  TOO_BIG: { code: 3, text: "frame payload above the receiver's limit", rex: ErrorCodes.PROTO_TOO_BIG },
  UNSUPPORTED: { code: 4, text: 'unknown message type or critical attribute', rex: ErrorCodes.PROTO_UNSUPPORTED },
  UNEXPECTED: { code: 5, text: 'frame at the wrong time', rex: ErrorCodes.PROTO_UNEXPECTED },
  NO_HOST: { code: 6, text: 'no such REX host', rex: ErrorCodes.HOST_UNKNOWN },
  UNREACHABLE: { code: 7, text: 'REX host unreachable', rex: ErrorCodes.HOST_UNREACHABLE },
  TIMEOUT: { code: 8, text: 'timed out waiting for a REX host', rex: ErrorCodes.CONN_TIMEOUT },
  BUSY: { code: 9, text: 'too many open requests', rex: ErrorCodes.PROTO_REMOTE },
  INTERNAL: { code: 10, text: 'internal error in the REX daemon', rex: ErrorCodes.PROTO_REMOTE },
  DENIED: { code: 11, text: 'not authorized', rex: ErrorCodes.PROTO_REMOTE },
  BAD_REQUEST: { code: 12, text: 'request attributes missing or out of range', rex: ErrorCodes.PROTO_MALFORMED },
  CRASHED: { code: 13, text: 'the called function crashed its controller', rex: ErrorCodes.CALL_CRASHED },
  NO_ENTRY: { code: 14, text: 'no such program or function', rex: ErrorCodes.CALL_NO_ENTRY },
  CANCELLED: { code: 15, text: 'the call was cancelled', rex: ErrorCodes.CALL_CANCELLED },
  INCOMPATIBLE: { code: 16, text: 'the host cannot run this image', rex: ErrorCodes.PROTO_REMOTE },
} as const satisfies Record<string, { code: number; text: string; rex: ErrorCode }>;

/** ERROR codes by name: PROTO_ERRORS' numbers. */
export const ProtoError = Object.fromEntries(Object.entries(PROTO_ERRORS).map(([k, v]) => [k, v.code])) as {
  readonly [K in keyof typeof PROTO_ERRORS]: (typeof PROTO_ERRORS)[K]['code'];
};
export type ProtoErrorName = keyof typeof ProtoError;

/** Reverse lookup of {@link ProtoError}. */
export function protoErrorName(code: number): ProtoErrorName | `CODE_${number}` {
  for (const [k, v] of Object.entries(ProtoError)) if (v === code) return k as ProtoErrorName;
  return `CODE_${code}`;
}

/** HELLO role values. */
export const Role = { client: 1, peer: 2, daemon: 3 } as const;
export type RoleName = keyof typeof Role;
