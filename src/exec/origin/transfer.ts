/**
 * The origin's side of a transfer (rex.rc rex-auto-transfer, docs/EXEC.md
 * "Transfer"): what the origin rexd offers for FETCH, and how it answers
 * one (FILE chunks, or the rex-auto-transfer command). What a client names
 * (the program's path and hash) is localProgram in stub.ts, which stays lean
 * for `rex run`; the executor's side, the cache, is src/exec/executor/transfer.ts.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { Connection, StreamHandle } from '../../protocol/connection.js';
import { EXEC_MAX_CHUNK, type MessageOf } from '../../protocol/messages.js';
import type { Logger } from '../../daemon/log.js';
import { testSwitch } from '../../util/testmode.js';
import { TRANSFER_MAX } from '../protocol.js';
import { neededLibraries, type NeededLibrary } from '../executor/libraries.js';

/** What an origin offers for FETCH: files by sha256 (hex), and those it names in the request (EXEC libs, RFORK files). */
export interface Offer {
  files: Map<string, string>;
  libs: NeededLibrary[];
  /**
   * Files (sha256 hex) this origin hashed itself just before offering them (an
   * rfork image): served without hashing them again, the executor verifies
   * every byte against the sha256 either way (a copy that changed meanwhile is
   * refused there, not here).
   */
  hashed?: ReadonlySet<string>;
}

/**
 * Test seam: REX_TEST_FETCH_DELAY_MS makes an origin wait that long before
 * each FILE chunk it sends, so that a test can interrupt a transfer that a
 * loopback link would otherwise finish before the interruption lands.
 */
export function fetchDelayForTests(): number {
  const ms = Number(testSwitch('REX_TEST_FETCH_DELAY_MS'));
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 1000) : 0;
}

/** The program (by the hash the executor will be told) and its libraries, as this origin offers them for FETCH. */
export function offeredFiles(m: MessageOf<'EXEC'>, sha256: Uint8Array | undefined, ctx: { autoTransfer?: 'on' | 'off' | 'command'; log: Logger }): Offer {
  const files = new Map<string, string>();
  if (!sha256 || sha256.byteLength !== 32) return { files, libs: [] };
  const path = isAbsolute(m.path) ? m.path : resolve(m.cwd ?? '/', m.path);
  files.set(Buffer.from(sha256).toString('hex'), path);
  if (ctx.autoTransfer === 'off') return { files, libs: [] };
  let libs: NeededLibrary[] = [];
  try {
    const ld = [...(m.env ?? [])].reverse().find((e) => e.startsWith('LD_LIBRARY_PATH='))?.slice('LD_LIBRARY_PATH='.length);
    libs = neededLibraries(path, ld);
  } catch (e) {
    ctx.log.warn({ program: path, err: (e as Error).message }, 'EXEC: cannot list the shared libraries of the program; sending none');
  }
  for (const l of libs) files.set(l.sha256, l.path);
  return { files, libs };
}

/** How this origin answers FETCH: its rex-auto-transfer setting and the executor's name and address. */
export interface FetchHow {
  mode: 'on' | 'off' | 'command';
  command?: string;
  self: string;
  peer: string;
  address: string;
}

/** Quotes a word for /bin/sh. */
function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The shell command of `rex-auto-transfer: command: ...` for one file:
 * {source}, {host} (the executor's address in rex.rc servers), {name} (its
 * REX name) and {destination} replaced by quoted words. A command naming none
 * of {source}, {host}, {destination} gets ` {source} {host}:{destination}`
 * appended, so `rsync -a` and `scp -q` work as written.
 */
export function transferCommandLine(command: string, v: { source: string; host: string; name: string; destination: string }): string {
  const full = /\{(source|host|destination)\}/.test(command) ? command : `${command} {source} {host}:{destination}`;
  return full.replace(/\{(source|host|name|destination)\}/g, (_, k: keyof typeof v) => shq(v[k]));
}

/**
 * Answers an executor's FETCH with a file this origin offered (the program or
 * one of its libraries, read here as the client's user): FILE chunks sent as
 * the peer link drains (so that a cancelled transfer stops within one
 * high-water mark), or an external copy by the rex-auto-transfer command.
 * The executor verifies the hash either way.
 */
export async function serveFetch(files: Map<string, string>, f: MessageOf<'FETCH'>, h: StreamHandle, link: Connection, how: FetchHow, transfer: { cancelled: boolean }, log: Logger, hashed?: ReadonlySet<string>): Promise<void> {
  const want = Buffer.from(f.sha256).toString('hex');
  const path = files.get(want);
  if (!path) {
    h.send({ type: 'FILE', error: `${how.self} offers no file with sha256 ${want} for this program` });
    return;
  }
  if (how.mode === 'off') {
    h.send({ type: 'FILE', error: `${path} is not sent: rex-auto-transfer is off on ${how.self}` });
    return;
  }
  // An rfork image streams into the executor's restorer in FILE chunks (src/rfork/executor.ts streamImage): a copy
  // by the command would have no file to land in.
  if (how.mode === 'command' && how.command && !hashed?.has(want)) {
    // The destination comes from the peer: an absolute path only, so that it can never read as an option (-e...) of cp or rsync.
    if (!f.dest || !f.dest.startsWith('/') || /[\n\r\0]/.test(f.dest)) {
      h.send({ type: 'FILE', error: `${how.peer} named no usable destination (FETCH dest must be an absolute path) for the rex-auto-transfer command of ${how.self}` });
      return;
    }
    const line = transferCommandLine(how.command, { source: path, host: how.address, name: how.peer, destination: f.dest });
    const why = await runTransferCommand(line, transfer);
    if (transfer.cancelled) {
      h.send({ type: 'FILE', error: `cancelled: the client on ${how.self} went away` });
      return;
    }
    if (why) {
      log.warn({ command: line, why }, 'EXEC: rex-auto-transfer command failed');
      h.send({ type: 'FILE', error: `rex-auto-transfer command on ${how.self} failed: ${why}` });
    } else h.send({ type: 'FILE', eof: true, copied: true });
    return;
  }
  let fd: number;
  let size: number;
  try {
    fd = openSync(path, 'r');
    size = fstatSync(fd).size;
  } catch (e) {
    h.send({ type: 'FILE', error: `the origin cannot read ${path}: ${(e as Error).message}` });
    return;
  }
  try {
    if (size > TRANSFER_MAX) {
      h.send({ type: 'FILE', error: `${path} is ${size} bytes, more than the ${TRANSFER_MAX} a transfer carries` });
      return;
    }
    // One pass over a file hashed just before (an rfork image, 256 MiB: 0.2-0.4 s of this event loop) is enough.
    const hash = hashed?.has(want) ? undefined : createHash('sha256');
    h.send({ type: 'FILE', size });
    const delay = fetchDelayForTests();
    for (let off = 0; off <= TRANSFER_MAX; ) {
      if (delay) await new Promise((r) => setTimeout(r, delay));
      // Backpressure: the link is shared with other streams, and a cancelled transfer must stop soon.
      // Woken by the link's drain (polling in 5 ms steps left the link idle most of the time: 256 MiB took seconds).
      while (link.congested && !transfer.cancelled && link.isOpen) await link.writable();
      if (!link.isOpen) return;
      if (transfer.cancelled) {
        // The executor may be between two files and miss the SIGNAL: this answer ends its wait too.
        h.send({ type: 'FILE', error: `cancelled: the client on ${how.self} went away` });
        return;
      }
      const chunk = Buffer.allocUnsafe(EXEC_MAX_CHUNK);
      const n = readSync(fd, chunk, 0, chunk.length, off);
      if (n === 0) break;
      off += n;
      hash?.update(chunk.subarray(0, n));
      h.send({ type: 'FILE', data: chunk.subarray(0, n) });
    }
    const hex = hash?.digest('hex') ?? want;
    if (hex !== want) h.send({ type: 'FILE', error: `${path} changed on the origin since the request (sha256 ${hex})` });
    else h.send({ type: 'FILE', eof: true });
  } catch (e) {
    h.send({ type: 'FILE', error: `the origin cannot read ${path}: ${(e as Error).message}` });
  } finally {
    closeSync(fd);
  }
}

/** Runs a transfer command with /bin/sh; resolves undefined on success, else why it failed. Killed when the transfer is cancelled. */
export function runTransferCommand(line: string, transfer: { cancelled: boolean }): Promise<string | undefined> {
  return new Promise((done) => {
    const child = spawn('/bin/sh', ['-c', line], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => {
      if (err.length < 4096) err += d.toString('utf8');
    });
    const watch = setInterval(() => {
      if (!transfer.cancelled || child.pid === undefined) return;
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
    }, 50);
    child.once('error', (e) => {
      clearInterval(watch);
      done(`cannot start /bin/sh: ${e.message}`);
    });
    child.once('close', (code, signal) => {
      clearInterval(watch);
      if (code === 0) return done(undefined);
      const tail = err.trim().split('\n').slice(-2).join('; ');
      done(`${signal ? `killed by ${signal}` : `exit status ${code}`}${tail ? `: ${tail}` : ''}`);
    });
  });
}

