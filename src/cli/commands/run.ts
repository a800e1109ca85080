/**
 * `rex run [--host H] [--] PROGRAM ARGS...`: runs PROGRAM on the least-loaded
 * host (or H) with execve-like semantics: stdio relayed in order, signals
 * forwarded, and this command ends as the remote program did (docs/EXEC.md).
 */
import { write, writeSync } from 'node:fs';
import { constants as osc } from 'node:os';
import type { Command } from 'commander';
import { RexClient } from '../../runtime/client.js';
import { envList } from '../../exec/executor/env.js';
import { localProgram, RemoteProcess, type ExitStatus } from '../../exec/origin/stub.js';
import { isRexError } from '../../util/errors.js';
import { FORWARDED_SIGNALS as FORWARDED } from '../../protocol/signals.js';

/** Signals `rex run` forwards to the remote program (TSTP also stops this command, as a local child's terminal would). */
export const FORWARDED_SIGNALS = FORWARDED.map((s) => `SIG${s}` as const);

/** Exit statuses of `rex run` when the remote program did not decide it (as a shell and ssh use them). */
export const RUN_STATUS = { notExecutable: 126, notFound: 127, lost: 255 } as const;

/**
 * Writes to fd 1 and 2 one chunk at a time, in arrival order across both, so
 * that interleaved stdout/stderr lines keep their order when both go to one
 * file or pipe. Blocking fds are written on the thread pool; an fd another
 * process made non-blocking is retried on EAGAIN.
 */
class OrderedWriter {
  private queue: { fd: number; data: Buffer; done: () => void }[] = [];
  private busy = false;
  private broken = false;

  /** `onBrokenPipe` is called once, on the first EPIPE: the reader of fd 1 or 2 has gone. */
  constructor(private readonly onBrokenPipe: () => void) {}

  push(fd: number, data: Buffer, done: () => void): void {
    this.queue.push({ fd, data, done });
    if (!this.busy) this.next();
  }

  private next(): void {
    const item = this.queue[0];
    if (!item) {
      this.busy = false;
      return;
    }
    this.busy = true;
    write(item.fd, item.data, 0, item.data.length, null, (err, n) => {
      if (err && (err as NodeJS.ErrnoException).code === 'EAGAIN') {
        setTimeout(() => this.next(), 5);
        return;
      }
      if (err) {
        // EPIPE: the reader went away (`rex run yes | head -1`). A local writer would get SIGPIPE and die
        // of it; the remote one gets the same signal. Drop the output, keep the credit flowing meanwhile
        // (a program that ignores SIGPIPE goes on as a local one would after EPIPE).
        if ((err as NodeJS.ErrnoException).code === 'EPIPE' && !this.broken) {
          this.broken = true;
          this.onBrokenPipe();
        }
        this.queue.shift();
        item.done();
      } else if (n < item.data.length) {
        item.data = item.data.subarray(n);
      } else {
        this.queue.shift();
        item.done();
      }
      this.next();
    });
  }
}

/**
 * Copies stdin to the remote stdin until EOF, respecting the remote's credit.
 * Through process.stdin (libuv handles, not the thread pool): a thread blocked
 * in read(2) on a terminal or an idle pipe would keep process.exit() from
 * finishing after the remote program has ended.
 */
function pumpStdin(rp: RemoteProcess): void {
  const input = process.stdin;
  input.on('data', (d: Buffer) => {
    if (!rp.write(d)) {
      input.pause();
      rp.once('drain', () => input.resume());
    }
  });
  input.on('end', () => rp.end());
  input.on('error', () => rp.end()); // no stdin at all (closed fd 0): the remote sees EOF
}

/** The exit record `rex run --json` prints (rex(1)): where the program ran and how it ended, or why it did not run. */
export interface RunRecord {
  host: string | null;
  pid: number | null;
  code: number | null;
  signal: string | null;
  /** The exit status of `rex run` itself: code, 128 + the signal's number, or one of RUN_STATUS. */
  status: number;
  error?: string;
}

/** Writes the exit record as one line of JSON on stdout, after all of the program's output. */
function printRecord(r: RunRecord): void {
  try {
    writeSync(1, `${JSON.stringify(r)}\n`);
  } catch {
    /* no reader any more: nothing to tell */
  }
}

/** The record of a program that ran and ended with `status`. */
function endedRecord(rp: RemoteProcess, status: ExitStatus): RunRecord {
  const signo = status.signal ? (osc.signals as Record<string, number>)[`SIG${status.signal}`] : undefined;
  return { host: status.host || rp.host || null, pid: rp.pid || null, code: status.code ?? null, signal: status.signal ?? null, status: status.signal ? 128 + (signo ?? 0) : (status.code ?? 0) };
}

/** Ends this process as the remote program ended: the same code, or death by the same signal. */
function endLike(status: ExitStatus): never {
  for (const s of FORWARDED_SIGNALS) process.removeAllListeners(s);
  if (process.stdin.isTTY) process.stdin.setRawMode(false); // death by a signal skips 'exit' handlers
  if (status.signal) {
    const name = `SIG${status.signal}` as NodeJS.Signals;
    if (name in osc.signals) {
      if (name === 'SIGPIPE') {
        // Node starts with SIGPIPE ignored; a listener added and removed leaves the default action
        // (libuv restores SIG_DFL), so that this process dies of PIPE as the remote program did.
        const reset = (): void => {};
        process.on(name, reset);
        process.removeListener(name, reset);
      }
      try {
        process.kill(process.pid, name);
      } catch {
        /* fall through to the shell's convention */
      }
    }
    // A signal this process cannot die of (one Node handles itself): exit as a shell would report it.
    process.exit(128 + ((osc.signals as Record<string, number>)[name] ?? 0));
  }
  process.exit(status.code ?? 0);
}

/** Registers `rex run` on the `rex` program. */
export function registerRunCommands(program: Command): void {
  // Options after PROGRAM belong to PROGRAM, not to rex: `rex run ls -l`.
  program.enablePositionalOptions();
  program
    .command('run')
    .description('run PROGRAM on the least-loaded host of the cluster (or --host), with stdio, signals and exit status relayed')
    .option('--host <host>', 'run on this host instead of the least-loaded one')
    .option('-T, --no-pty', 'no pseudo-terminal, even when stdin and stdout are terminals')
    .option('--socket <path>', 'rexd socket (default: $REX_SOCKET, else rex.rc socket)')
    .option('-c, --config <file>', 'rex.rc to read')
    .option('--json', 'after the program has ended, print its exit record as one line of JSON on stdout: {host, pid, code, signal, status}')
    .argument('<program>', 'program path or name (searched in PATH on the executor)')
    .argument('[args...]', 'its arguments')
    .passThroughOptions()
    .action(async (prog: string, args: string[], opts: { host?: string; socket?: string; config?: string; pty: boolean; json?: boolean }) => {
      const client = await RexClient.connect({ ...(opts.socket ? { socket: opts.socket } : {}), ...(opts.config ? { config: { file: opts.config } } : {}) });
      const host = opts.host ?? process.env.REX_HOST;
      let rp: RemoteProcess | undefined;
      const out = new OrderedWriter(() => rp?.signal('PIPE'));
      // The origin's copy, by hash: the executor fetches it when it lacks it or has another (rex-auto-transfer).
      const local = localProgram(prog, process.cwd(), process.env.PATH);
      // A terminal on both ends gets the remote program a terminal of its own (docs/EXEC.md, Terminals).
      const tty = opts.pty && process.stdin.isTTY === true && process.stdout.isTTY === true;
      const size = () => ({ rows: process.stdout.rows || 24, cols: process.stdout.columns || 80 });
      // A signal for the program: relayed once it runs. The handlers go in when its first output arrives at the latest
      // (before that output is written, so that whoever reacts to it finds them), and signals wait for `rp` meanwhile.
      let early: (typeof FORWARDED_SIGNALS)[number][] | undefined = [];
      const onSignal = (s: (typeof FORWARDED_SIGNALS)[number]): void => {
        if (!rp) {
          early?.push(s);
          return;
        }
        if (tty && s === 'SIGWINCH') {
          const { rows, cols } = size();
          rp.winsize(rows, cols);
          return;
        }
        rp.signal(s);
        // Ctrl-Z: the remote program stops, and so does this command, as a local child would with its terminal.
        if (s === 'SIGTSTP') process.kill(process.pid, 'SIGSTOP');
      };
      let handlers = false;
      const installHandlers = (): void => {
        if (handlers) return;
        handlers = true;
        for (const s of FORWARDED_SIGNALS) process.on(s, () => onSignal(s));
      };
      try {
        rp = await RemoteProcess.start(
          client.conn,
          { path: local?.path ?? prog, argv: [prog, ...args], env: envList(), cwd: process.cwd(), ...(host ? { host } : {}), ...(local ? { sha256: local.sha256 } : {}), ...(tty ? { pty: size() } : {}) },
          (fd, data, done) => {
            installHandlers();
            if (data) out.push(fd === 2 ? 2 : 1, data, done);
          },
        );
      } catch (e) {
        const proto = (e as { proto?: string }).proto;
        const message = isRexError(e) ? e.message : (e as Error).message;
        process.stderr.write(`rex run: ${message}\n`);
        const code = proto === 'NO_ENTRY' ? RUN_STATUS.notFound : proto === 'DENIED' ? RUN_STATUS.notExecutable : RUN_STATUS.lost;
        if (opts.json) printRecord({ host: host ?? null, pid: null, code: null, signal: null, status: code, error: message });
        process.exit(code);
      }
      if (tty) {
        // Keys go to the remote terminal as typed (Ctrl-C included); its own line discipline handles them.
        process.stdin.setRawMode(true);
        process.on('exit', () => process.stdin.setRawMode?.(false));
      }
      installHandlers();
      const waiting = early;
      early = undefined;
      for (const s of waiting) onSignal(s);
      pumpStdin(rp);
      let status: ExitStatus;
      try {
        status = await rp.exited;
      } catch (e) {
        process.stderr.write(`rex run: ${(e as Error).message}\n`);
        if (opts.json) printRecord({ host: rp.host || null, pid: rp.pid || null, code: null, signal: null, status: RUN_STATUS.lost, error: (e as Error).message });
        process.exit(RUN_STATUS.lost);
      }
      if (opts.json) printRecord(endedRecord(rp, status));
      endLike(status);
    });
}
