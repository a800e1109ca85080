/**
 * Starting the executor's processes (programs, the pty helper, restorers)
 * without Node's child_process.spawn: libuv forks, and fork() copies the page
 * tables of rexd (a 100 MB process), which blocks the event loop 2-6 ms per
 * start. The addon's spawnProcess uses glibc's posix_spawn (clone with
 * CLONE_VM|CLONE_VFORK: about 0.4 ms whatever rexd's size) and reaps the child
 * through a pidfd on the event loop. The returned object has the part of
 * ChildProcess's shape the executor uses (pid, stdio sockets, 'exit',
 * exitCode/signalCode, kill), so either kind of child goes through the same
 * code; child_process.spawn remains the path when the addon cannot be loaded
 * or the file is not an absolute path.
 */
import { spawn as nodeSpawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { loadAddon, type RexAddon } from '../../util/native.js';
import { signalName } from '../../util/signals.js';

/** What the executor uses of a child process; node's ChildProcess has this shape too. */
export interface Child extends EventEmitter {
  readonly pid?: number | undefined;
  readonly exitCode: number | null;
  readonly signalCode: NodeJS.Signals | null;
  readonly stdio: readonly (Readable | Writable | null | undefined)[];
  readonly stderr: Readable | null;
  kill(signal?: NodeJS.Signals | number): boolean;
}

export interface StartOptions {
  argv0?: string;
  cwd: string;
  env: NodeJS.ProcessEnv;
  stdio: ('pipe' | 'ignore')[];
}


/** A child started by the addon's posix_spawn. */
class SpawnedChild extends EventEmitter implements Child {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  readonly pid: number;
  readonly stdio: (Socket | null)[];

  constructor(addon: RexAddon, file: string, args: readonly string[], o: StartOptions) {
    super();
    const env = Object.entries(o.env).flatMap(([k, v]) => (v === undefined ? [] : [`${k}=${v}`]));
    const { pid, fds } = addon.spawnProcess(file, [o.argv0 ?? file, ...args], env, o.cwd, o.stdio, (code, signal) => {
      this.exitCode = code;
      this.signalCode = signal === null ? null : (signalName(signal) ?? 'SIGKILL');
      // As node's ChildProcess does: nobody can write to a dead program, so its stdin socket is closed
      // (otherwise rexd kept one descriptor per job whose origin never sent stdin EOF).
      this.stdio[0]?.destroy();
      this.emit('exit', this.exitCode, this.signalCode);
    });
    this.pid = pid;
    // As node does for 'pipe': the child's stdin is written only; its other descriptors are read (and may be written).
    this.stdio = fds.map((fd, i) => (fd < 0 ? null : new Socket({ fd, readable: i !== 0, writable: true })));
  }

  get stdin(): Socket | null {
    return this.stdio[0] ?? null;
  }

  get stdout(): Socket | null {
    return this.stdio[1] ?? null;
  }

  get stderr(): Socket | null {
    return this.stdio[2] ?? null;
  }

  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    try {
      process.kill(this.pid, signal);
      return true;
    } catch {
      return false;
    }
  }
}

let addon: RexAddon | null | undefined;

/**
 * Starts `file` in a session of its own (as spawn's `detached`). With the
 * addon and an absolute path the child runs when this returns, and a program
 * that cannot start is thrown as an Error with `code` (ENOENT, EACCES, ...);
 * otherwise node's spawn is used and such a failure arrives as its 'error'
 * event (`native` false: wait for 'spawn' or 'error').
 */
export function startChild(file: string, args: readonly string[], o: StartOptions): { child: Child; native: boolean } {
  if (addon === undefined) {
    try {
      addon = process.env.REX_NODE_SPAWN === '1' ? null : loadAddon();
    } catch {
      addon = null;
    }
  }
  if (addon && file.startsWith('/')) return { child: new SpawnedChild(addon, file, args, o), native: true };
  return { child: nodeSpawn(file, args, { ...(o.argv0 ? { argv0: o.argv0 } : {}), cwd: o.cwd, env: o.env, stdio: o.stdio, detached: true }), native: false };
}
