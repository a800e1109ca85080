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
