/**
 * Root installation tests (test/daemon/root-*.test.ts): a root rexd (the monitor) started in the foreground
 * from a readable copy of the package, and stopped again.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/**
 * Starts the monitor of rex.rc `rc` and resolves once it serves; everything it writes on stderr goes to
 * `onLog` (the tests read its log lines). Rejects with that log if it exits first.
 */
export function startMonitor(pkgRoot: string, rc: string, onLog: (text: string) => void): Promise<ChildProcess> {
  const d = spawn(process.execPath, [join(pkgRoot, 'dist', 'bin', 'rexd.cjs'), '--foreground', '--config', rc], { stdio: ['ignore', 'ignore', 'pipe'] });
  d.stderr!.setEncoding('utf8');
  let log = '';
  return new Promise<ChildProcess>((resolve, reject) => {
    d.stderr!.on('data', (t: string) => {
      log += t;
      onLog(t);
      if (log.includes('rexd (root installation) started')) resolve(d);
    });
    d.once('exit', (code) => reject(new Error(`rexd (${rc}) exited (${code}): ${log}`)));
  });
}

/** Stops the monitors that still run (SIGTERM) and waits for each to exit. */
export async function stopMonitors(daemons: readonly ChildProcess[]): Promise<void> {
  for (const d of daemons) {
    if (d.exitCode === null && d.signalCode === null) {
      d.kill('SIGTERM');
      await new Promise((r) => d.once('exit', r));
    }
  }
}
