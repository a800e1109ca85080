/**
 * The signals of SIGNAL messages (docs/PROTOCOL.md 4.9), the one table of them.
 * A stub that stands for a remote program (`rex run`, rexecve(), rfork()'s
 * parent side) forwards the `forwarded` ones it receives; an executor delivers
 * every name of the table and ignores others. wire.h's REX_FORWARDED_SIGNALS is
 * generated from it (scripts/gen-protocol.mjs), for librex and rex_pty.
 */
export const SIGNAL_TABLE = {
  INT: { forwarded: true },
  TERM: { forwarded: true },
  HUP: { forwarded: true },
  QUIT: { forwarded: true },
  USR1: { forwarded: true },
  USR2: { forwarded: true },
  WINCH: { forwarded: true },
  TSTP: { forwarded: true },
  STOP: { forwarded: false },
  CONT: { forwarded: true },
  /** For the origin's rexd when its stub vanished. */
  KILL: { forwarded: false },
  ALRM: { forwarded: true },
  PIPE: { forwarded: false },
  TTIN: { forwarded: false },
  TTOU: { forwarded: false },
} as const satisfies Record<string, { forwarded: boolean }>;

export type SignalName = keyof typeof SIGNAL_TABLE;
type Forwarded = { [K in SignalName]: (typeof SIGNAL_TABLE)[K]['forwarded'] extends true ? K : never }[SignalName];

/** Names (without SIG) an executor delivers to the program: every name of the table (strings, as SIGNAL carries them). */
export const RELAYED_SIGNALS: readonly string[] = Object.keys(SIGNAL_TABLE);

/** Names (without SIG) a stub forwards to its remote program, in the table's order. */
export const FORWARDED_SIGNALS: readonly Forwarded[] = (Object.keys(SIGNAL_TABLE) as SignalName[]).filter((s): s is Forwarded => SIGNAL_TABLE[s].forwarded);
