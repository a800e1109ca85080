/**
 * The environment a remote program gets: the caller's, minus variables that
 * describe the origin's session rather than the program's wishes (docs/EXEC.md,
 * "Environment"). Passing them on would point the program at sockets, displays
 * and terminals that do not exist on the executor, or at the origin's rexd.
 */

/** Variables never passed to an executor host, exactly as docs/EXEC.md lists them. */
export const ENV_DENY: readonly string[] = [
  // the origin's REX daemon and host choice: the program talks to the executor's own rexd
  'REX_SOCKET',
  'REX_CONFIG',
  'REX_HOST',
  // sockets and sessions of the origin
  'SSH_AUTH_SOCK',
  'SSH_AGENT_PID',
  'SSH_CONNECTION',
  'SSH_CLIENT',
  'SSH_TTY',
  'DISPLAY',
  'XAUTHORITY',
  'WAYLAND_DISPLAY',
  'DBUS_SESSION_BUS_ADDRESS',
  'XDG_RUNTIME_DIR',
  'XDG_SESSION_ID',
  'TMUX',
  'TMUX_PANE',
  'STY',
  'WINDOWID',
  'HOSTNAME',
  // the origin's working directory bookkeeping: set again for where the program really runs
  'PWD',
  'OLDPWD',
  // code injection into every program of the executor's user
  'LD_PRELOAD',
  'LD_AUDIT',
];

const DENY = new Set(ENV_DENY);

/** The caller's NAME=VALUE list minus the deny list; malformed entries (no `=`) are dropped. */
export function filterEnv(entries: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) {
    const eq = e.indexOf('=');
    if (eq <= 0) continue;
    const name = e.slice(0, eq);
    if (DENY.has(name)) continue;
    out[name] = e.slice(eq + 1);
  }
  return out;
}

/** `process.env` as the NAME=VALUE list EXEC carries. */
export function envList(env: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(env)) if (v !== undefined && !k.includes('=') && !k.includes('\0') && !v.includes('\0')) out.push(`${k}=${v}`);
  return out;
}
