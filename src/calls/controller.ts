/**
 * One call controller process (docs/CALLS.md): a child of rexd with a private
 * link on an inherited socketpair (fd 3, $REX_CALL_FD) carrying protocol v1
 * frames without preface or HELLO. The manager (manager.ts) decides what runs
 * where; this class only starts the process, matches answers to requests by
 * stream id, and turns the process's death into errors for whatever was in
 * flight: a signal is a crash of the function being called.
 */
import { JOB_ENV, type Containment } from '../exec/executor/contain.js';
import type { JobRecord } from '../exec/executor/jobs.js';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { ProtoError, protoErrorName, type ProtoErrorName } from '../protocol/constants.js';
import { FrameDecoder, ProtocolError, encodeFrame } from '../protocol/frame.js';
import { frameToMessage, messageToFrame, type Message } from '../protocol/messages.js';

/** How to start a controller: the generic one for a shared object, or a program that serves itself (rex_serve). */
export type ControllerLaunch =
  | { kind: 'library'; controllerPath: string; object: string }
  | { kind: 'program'; exec: string; args?: string[] };

/** A request body the manager sends (any message but the envelope). */
export type LinkRequest = Message extends infer M ? (M extends Message ? Omit<M, 'stream' | 'end'> : never) : never;

interface Pending {
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  /** Function being called, for crash messages. */
  fn?: string;
  onAccepted?: () => void;
}

/** Bytes of the controller's stderr kept for messages (why it failed to start). */
const STDERR_TAIL = 2048;

/** Set by rexd: each controller is a contained job of its own, recorded for the restart clean-up (docs/EXEC.md, Containment). */
export const controllerJobs: { jobs?: JobRecord; containment?: Containment } = {};

/** A running controller process and its link. */
export class Controller {
  readonly pid: number;
  /** Set once the process has exited (or could not start). */
  dead: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
  /** The controller runs code of an rjump that may never return; it no longer counts against the pool. */
  jumped = false;
  private readonly child: ChildProcess;
  private readonly link: Socket;
  private readonly decoder = new FrameDecoder();
  private readonly pending = new Map<number, Pending>();
  private nextStream = 1;
  private stderrTail = '';
  private killedFor: string | undefined;
  private readonly exitWaiters: (() => void)[] = [];

  constructor(
    readonly program: string,
    launch: ControllerLaunch,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const [cmd, args] = launch.kind === 'library' ? [launch.controllerPath, [launch.object]] : [launch.exec, launch.args ?? []];
    // fd 3 is a socketpair (libuv creates one for each 'pipe'); stdout is dropped,
    // stderr is kept for messages; the controller is its own process group leader
    // so that a kill reaches what it started.
    const { jobs, containment } = controllerJobs;
    const id = containment?.newId();
    this.child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'], env: { ...env, REX_CALL_FD: '3', ...(id ? { [JOB_ENV]: id } : {}) } });
    this.pid = this.child.pid ?? -1;
    if (id && this.pid > 0) {
      const box = containment!.enter(this.pid, id);
      jobs?.add(this.pid, box);
      this.child.once('exit', () => {
        containment!.end(box);
        jobs?.remove(this.pid);
      });
    }
    this.link = this.child.stdio[3] as Socket;
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-STDERR_TAIL);
    });
    this.link.on('data', (chunk: Buffer) => this.onData(chunk));
    this.link.on('error', () => {
      /* EPIPE/ECONNRESET: the exit event reports why */
    });
    this.child.on('error', (e) => this.onExit(null, null, e));
    // 'close', not 'exit': stderr is complete by then, so a start-up failure can quote it.
    this.child.on('close', (code, signal) => this.onExit(code, signal));
  }

  /** What the controller wrote to stderr lately (trimmed), for messages. */
  get stderr(): string {
    return this.stderrTail.trim();
  }

  /** Calls in flight or requests waiting for an answer. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Sends a request; resolves with the answer, rejects with a ProtocolError (ERROR answer, or the process died). */
  request(body: LinkRequest, extra: { fn?: string; onAccepted?: () => void } = {}): Promise<Message> {
    if (this.dead) return Promise.reject(this.deathError(extra.fn));
    const stream = this.nextStream;
    this.nextStream = this.nextStream >= 0x7fff_fff0 ? 1 : this.nextStream + 2;
    return new Promise<Message>((resolve, reject) => {
      this.pending.set(stream, { resolve, reject, ...extra });
      this.link.write(encodeFrame(messageToFrame({ ...body, stream } as Message)));
    });
  }

  /** Kills the process (SIGKILL: it may be stuck in the called function); pending requests fail with `why`. */
  kill(why: string): void {
    if (this.dead) return;
    this.killedFor ??= why;
    this.child.kill('SIGKILL');
  }

  /** Resolves when the process has exited. */
  exited(): Promise<void> {
    return this.dead ? Promise.resolve() : new Promise((r) => this.exitWaiters.push(r));
  }

  private onData(chunk: Buffer): void {
    let frames;
    try {
      frames = this.decoder.push(chunk);
    } catch (e) {
      this.kill(`it sent a bad frame: ${(e as Error).message}`);
      return;
    }
    for (const f of frames) {
      const p = this.pending.get(f.stream);
      if (!p) continue; // a late answer to a request that was given up
      let m: Message;
      try {
        m = frameToMessage(f);
      } catch (e) {
        this.kill(`it sent an unreadable answer: ${(e as Error).message}`);
        return;
      }
      if (m.type === 'RESULT' && m.accepted && !m.end) {
        p.onAccepted?.();
        continue;
      }
      this.pending.delete(f.stream);
      if (m.type === 'ERROR') {
        const name = protoErrorName(m.code);
        p.reject(new ProtocolError(name in ProtoError ? (name as ProtoErrorName) : 'INTERNAL', m.message ?? '(no message)', { fatal: false }));
      } else p.resolve(m);
    }
  }

  private deathError(fn: string | undefined): ProtocolError {
    const d = this.dead!;
    const who = `the controller of ${this.program} (pid ${this.pid})`;
    const tail = this.stderr ? `: ${this.stderr.split('\n').slice(-3).join(' / ')}` : '';
    if (d.error) return new ProtocolError('INTERNAL', `cannot start ${who}: ${d.error.message}`, { fatal: false });
    if (this.killedFor) return new ProtocolError('INTERNAL', `${who} was killed: ${this.killedFor}`, { fatal: false });
    if (d.signal && fn) {
      return new ProtocolError('CRASHED', `${fn}: the function crashed its controller with ${d.signal} (program ${this.program}, pid ${this.pid}); the next call gets a fresh controller`, { fatal: false });
    }
    const how = d.signal ? `was killed by ${d.signal}` : `exited with status ${d.code}`;
    return new ProtocolError(fn ? 'CRASHED' : 'INTERNAL', `${fn ? `${fn}: ` : ''}${who} ${how}${tail}`, { fatal: false });
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (this.dead) return;
    this.dead = error ? { code, signal, error } : { code, signal };
    this.link.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(this.deathError(p.fn));
    for (const w of this.exitWaiters.splice(0)) w();
  }
}
