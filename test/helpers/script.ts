// Runs a shell command under script(1), which gives it a pseudo-terminal, for
// the tests of what REX does on a terminal.
import { spawn, spawnSync } from 'node:child_process';

/** True when script(1) (util-linux) is installed. */
export const haveScript = spawnSync('script', ['--version']).status === 0;

/**
 * Runs `command` with `sh -c` on a new terminal and resolves with what was
 * written to it (echo included) and script's exit status. script's stdin is a
 * pipe held open until it exits: at end of input script types the terminal's
 * EOF character into the session, which a program reading the terminal in raw
 * mode would receive as a stray byte (a NUL once raw mode has cleared VEOF).
 */
export function underScript(command: string, opts: { env?: NodeJS.ProcessEnv; flush?: boolean; timeoutMs?: number } = {}): Promise<{ stdout: string; code: number | null }> {
  return new Promise((resolve, reject) => {
    const child = spawn('script', [opts.flush ? '-qfec' : '-qec', command, '/dev/null'], { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`script -c ${command}: no exit within ${opts.timeoutMs ?? 30_000} ms; it wrote:\n${stdout}`));
    }, opts.timeoutMs ?? 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ stdout, code });
    });
  });
}

/**
 * A shell script for underScript that starts `command` in the background with
 * the terminal as its stdin, once the terminal is 33x99, runs on the remote
 * side a program that prints its terminal's name and size, touches `ready`,
 * and on SIGWINCH prints the size again and exits 4; then resizes the terminal
 * to 40x120, signals the command, prints its status and whether the terminal
 * is back in canonical mode. `command` is followed by the remote program's
 * words (`sh -c '...'`).
 */
export function terminalResizeScript(command: string, ready: string): string[] {
  return [
    'stty rows 33 cols 99',
    `${command} sh -c 'trap "stty size; exit 4" WINCH; tty; stty size; touch ${ready}; while :; do sleep 0.05; done' </dev/tty &`,
    'pid=$!',
    `while [ ! -e ${ready} ]; do sleep 0.05; done`,
    'stty rows 40 cols 120',
    'kill -WINCH $pid',
    'wait $pid',
    'echo "status $?"',
    "stty -a | grep -o -- '-\\?icanon'",
  ];
}
