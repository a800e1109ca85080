/**
 * Every error REX raises on purpose is a RexError with a stable `code`.
 * While the message may change, the code should not: scripts and tests match on it.
 * Messages say what went wrong, where (file:line, field, peer) and what to do next.
 */

/** Stable error codes, grouped by area. Add new ones here only. */
export const ErrorCodes = {
  // configuration (rex.rc, XML config)
  CONFIG_SYNTAX: 'REX_ERR_CONFIG_SYNTAX',
  CONFIG_UNKNOWN_KEY: 'REX_ERR_CONFIG_UNKNOWN_KEY',
  CONFIG_VALUE: 'REX_ERR_CONFIG_VALUE',
  CONFIG_INCLUDE: 'REX_ERR_CONFIG_INCLUDE',
  CONFIG_NOT_FOUND: 'REX_ERR_CONFIG_NOT_FOUND',
  CONFIG_XML: 'REX_ERR_CONFIG_XML',
  CONFIG_DATABASE: 'REX_ERR_CONFIG_DATABASE',
  // wire protocol
  PROTO_MALFORMED: 'REX_ERR_PROTO_MALFORMED',
  PROTO_TOO_BIG: 'REX_ERR_PROTO_TOO_BIG',
  PROTO_VERSION: 'REX_ERR_PROTO_VERSION',
  PROTO_UNSUPPORTED: 'REX_ERR_PROTO_UNSUPPORTED',
  PROTO_UNEXPECTED: 'REX_ERR_PROTO_UNEXPECTED',
  PROTO_REMOTE: 'REX_ERR_PROTO_REMOTE',
  CONN_CLOSED: 'REX_ERR_CONN_CLOSED',
  CONN_TIMEOUT: 'REX_ERR_CONN_TIMEOUT',
  // daemon
  DAEMON_ADDRESS_IN_USE: 'REX_ERR_DAEMON_ADDRESS_IN_USE',
  DAEMON_BIND_REFUSED: 'REX_ERR_DAEMON_BIND_REFUSED',
  DAEMON_NOT_RUNNING: 'REX_ERR_DAEMON_NOT_RUNNING',
  DAEMON_STATE_DIR: 'REX_ERR_DAEMON_STATE_DIR',
  HOST_UNKNOWN: 'REX_ERR_HOST_UNKNOWN',
  HOST_UNREACHABLE: 'REX_ERR_HOST_UNREACHABLE',
  // ELF / DWARF / entry points / codegen
  ELF_MALFORMED: 'REX_ERR_ELF_MALFORMED',
  DWARF_MALFORMED: 'REX_ERR_DWARF_MALFORMED',
  DWARF_MISSING: 'REX_ERR_DWARF_MISSING',
  DWARF_UNSUPPORTED: 'REX_ERR_DWARF_UNSUPPORTED',
  ENTRY_XML: 'REX_ERR_ENTRY_XML',
  ENTRY_INVALID: 'REX_ERR_ENTRY_INVALID',
  ENTRY_SYMBOL_MISSING: 'REX_ERR_ENTRY_SYMBOL_MISSING',
  FRAME_LAYOUT: 'REX_ERR_FRAME_LAYOUT',
  FRAME_ENCODE: 'REX_ERR_FRAME_ENCODE',
  CODEGEN_NAME: 'REX_ERR_CODEGEN_NAME',
  ENTRY_REFUSED: 'REX_ERR_ENTRY_REFUSED',
  CALL_NO_TRANSPORT: 'REX_ERR_CALL_NO_TRANSPORT',
  // remote calls (src/calls/, rcall)
  CALL_CRASHED: 'REX_ERR_CALL_CRASHED',
  CALL_TIMEOUT: 'REX_ERR_CALL_TIMEOUT',
  CALL_CANCELLED: 'REX_ERR_CALL_CANCELLED',
  CALL_DENIED: 'REX_ERR_CALL_DENIED',
  CALL_NO_ENTRY: 'REX_ERR_CALL_NO_ENTRY',
  CALL_BAD_FRAME: 'REX_ERR_CALL_BAD_FRAME',
  CALL_CONTROLLER: 'REX_ERR_CALL_CONTROLLER',
  CALL_TARGET: 'REX_ERR_CALL_TARGET',
  USAGE: 'REX_ERR_USAGE',
  // native code (librex, the Node-API addon)
  NATIVE_ADDON: 'REX_ERR_NATIVE_ADDON',
  // identity and trust (rex_key, TLS, grants, enrollment) and the transaction log
  KEY_MISSING: 'REX_ERR_KEY_MISSING',
  KEY_EXISTS: 'REX_ERR_KEY_EXISTS',
  KEY_PERMISSIONS: 'REX_ERR_KEY_PERMISSIONS',
  KEY_INVALID: 'REX_ERR_KEY_INVALID',
  KEY_UNKNOWN: 'REX_ERR_KEY_UNKNOWN',
  GRANTS_SYNTAX: 'REX_ERR_GRANTS_SYNTAX',
  TOKEN_INVALID: 'REX_ERR_TOKEN_INVALID',
  TOKEN_EXPIRED: 'REX_ERR_TOKEN_EXPIRED',
  TOKEN_USED: 'REX_ERR_TOKEN_USED',
  AUTH_DENIED: 'REX_ERR_AUTH_DENIED',
  ENROLL_FAILED: 'REX_ERR_ENROLL_FAILED',
  LOG_DATABASE: 'REX_ERR_LOG_DATABASE',
  // a PostgreSQL server (src/db/postgres.ts): a bad URL, a connection or statement that failed
  DATABASE: 'REX_ERR_DATABASE',
  // rfork process images (docs/IMAGE.md)
  IMAGE_MALFORMED: 'REX_ERR_IMAGE_MALFORMED',
  IMAGE_TRUNCATED: 'REX_ERR_IMAGE_TRUNCATED',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface RexErrorDetails {
  /** "file:line", a field name, or a peer ("alpha@127.0.0.1:7801"). */
  where?: string;
  /** What the user should do next. */
  hint?: string;
  cause?: unknown;
}

/** An error REX raises on purpose, with a stable code and a location. */
export class RexError extends Error {
  readonly code: ErrorCode;
  readonly where?: string;
  readonly hint?: string;

  constructor(code: ErrorCode, message: string, details: RexErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = 'RexError';
    this.code = code;
    if (details.where !== undefined) this.where = details.where;
    if (details.hint !== undefined) this.hint = details.hint;
  }

  /** The form printed by the CLI: "where: error: message (hint)". */
  format(): string {
    const prefix = this.where ? `${this.where}: error: ` : 'error: ';
    return prefix + this.message + (this.hint ? `\n  hint: ${this.hint}` : '');
  }
}

/** True for RexError instances, including ones from another copy of this module. */
export function isRexError(e: unknown): e is RexError {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string' && (e as unknown as { code: string }).code.startsWith('REX_ERR_');
}
