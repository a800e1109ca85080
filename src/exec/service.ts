/**
 * rexd's EXEC service: a local client's EXEC runs here or is routed to the
 * chosen peer over the authenticated peer connection (as PING's target is), and
 * the origin rexd relays the stream both ways without buffering beyond the
 * per-stream credit; a peer's EXEC always runs here.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, isAbsolute, resolve } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Connection, Reply, StreamHandle } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import { EXEC_MAX_CHUNK, IMAGE_INLINE_MAX, type Message, type MessageOf } from '../protocol/messages.js';
import { fetchDelayForTests, fileSha256, TRANSFER_MAX } from './transfer.js';
import type { PeerLink } from '../daemon/peers.js';
import { dropSpare, endContained, killGroup, runHere, running, type ExecutorContext } from './executor.js';
import { controllerJobs } from '../calls/controller.js';
import type { Containment } from './contain.js';
import { MAX_LIBRARIES, neededLibraries, type NeededLibrary } from './libraries.js';
import { readImageInfo } from '../rfork/image.js';
import { cannotRunMessage, cpuShortfall, Placement, type PlacementPolicy } from '../placement/index.js';
import { advertisedCpuProfile } from '../cpu/wire.js';
import { missingFor, type CpuNeeds } from '../cpu/profile.js';
import { imageRefused, type ExecLimit } from './limit.js';
import { testSwitch } from '../util/testmode.js';

/** Who sent an EXEC: a local client (may be routed) or a peer (runs here). */
export interface ExecCaller {
  local: boolean;
  /** The local client's program (HELLO), forwarded so program-limited grants apply at the executor. */
  program?: string;
  /** The local client's pid (SO_PEERCRED): an rfork image is read from that process's own descriptor only. */
  pid?: number;
  /** A peer's requester granted only one program: it may run that program's executables only (src/exec/limit.ts). */
  limit?: ExecLimit;
}

/** Refusals after which the next candidate host is tried (placement only, not an explicit host). */
const TRY_NEXT = new Set(['DENIED', 'UNREACHABLE', 'TIMEOUT', 'BUSY', 'NO_ENTRY', 'INCOMPATIBLE']);

function body(m: Message): Reply {
  const { stream: _s, end: _e, ...rest } = m;
  return rest as Reply;
}

/** The EXEC service of one rexd. */
export class ExecService {
  /** The one placement of this rexd (src/placement/): calls place through it too. */
  readonly placer: Placement;

  constructor(
    private readonly ctx: ExecutorContext,
    private readonly peers: ReadonlyMap<string, PeerLink>,
    policy: PlacementPolicy = 'least-loaded',
    private readonly peerTimeout = 5000,
  ) {
    this.placer = new Placement({ host: ctx.hostName, measure: () => ctx.meter.measure(), peers: () => [...peers.values()].map((p) => p.state) }, policy);
  }

  /**
   * Contains every job of this rexd with `c` (docs/EXEC.md, Containment): EXEC
   * programs, rfork children and call controllers; an origin link silent for
   * `originSilenceMs` is taken for dead.
   */
  contain(c: Containment, originSilenceMs: number): void {
    this.ctx.containment = c;
    this.ctx.originSilenceMs = originSilenceMs;
    controllerJobs.containment = c;
    if (this.ctx.jobs) controllerJobs.jobs = this.ctx.jobs;
  }

  /** Ends what a crashed predecessor left running (call once at start-up); returns the pids killed. */
  reapLeftovers(): number[] {
    const c = this.ctx.containment;
    if (c) this.ctx.log.info({ containment: c.mode, ...(c.base ? { cgroups: c.base } : { why: c.reason }) }, `EXEC: jobs contained by ${c.mode === 'cgroup' ? 'cgroup v2' : 'process group and subreaper'}`);
    const killed = [...(this.ctx.jobs?.reapLeftovers() ?? []), ...(c?.reapBase() ?? [])];
    if (killed.length > 0) this.ctx.log.warn({ pids: killed }, 'EXEC: killed programs left running by a previous rexd');
    return killed;
  }

  /** Serves one EXEC on `conn`; resolves with the EXIT answer. */
  async serve(m: MessageOf<'EXEC'>, caller: ExecCaller, conn: Connection): Promise<Reply> {
    const self = this.ctx.hostName;
    const explicit = m.host !== undefined && m.host !== '' && m.host !== '*';
    if (m.image && caller.limit) throw imageRefused(caller.limit);
    if (m.image) m = checkImage(m, caller);
    // EXEC libs is the origin rexd's to set (from the files it offers), never a local client's.
    if (caller.local && m.libs) m = { ...m, libs: [] };
    if (!caller.local) {
      // Only the origin's rexd routes, and only once.
      if (explicit && m.host !== self) throw new ProtocolError('BAD_REQUEST', `EXEC for host ${m.host} reached ${self}: peers may not ask for forwarding`, { fatal: false });
      return runHere(m, conn, this.ctx, undefined, caller.limit);
    }
    if (explicit) {
      if (m.host === self) return runHere(m, conn, this.ctx);
      if (!this.peers.has(m.host!)) {
        throw new ProtocolError('NO_HOST', `no host "${m.host}" in this cluster (known: ${[self, ...this.peers.keys()].join(', ')})`, { fatal: false });
      }
      if (m.image) await this.checkNamedHost(m, m.host!);
      try {
        return await this.relay(m, m.host!, caller, conn);
      } catch (e) {
        throw e instanceof NotStarted ? e.cause : e;
      }
    }
    // An rfork image goes only where its CPU state and the features its code may have chosen exist (docs/PLACEMENT.md).
    const image = m.image ? m : undefined;
    const { order: placed, unfit } = this.placer.plan(image ? { needs: () => this.imageNeeds(image) } : {});
    if (unfit.length > 0) this.ctx.log.info({ image: m.path, excluded: unfit.map((u) => cannotRunMessage(u.name, u.missing)) }, 'EXEC: hosts that cannot run this rfork image are not candidates');
    if (placed.length === 0) throw new ProtocolError('INCOMPATIBLE', `no host can run this image: ${unfit.map((u) => cannotRunMessage(u.name, u.missing)).join('; ')}`, { fatal: false });
    // Test switch: placement by load skips this host, so that the tests move every child to another one.
    const away = testSwitch('REX_TEST_PLACE_ELSEWHERE') === '1';
    const order = placed.filter((h) => !away || h !== self);
    const refusals: ProtocolError[] = [];
    for (const host of order) {
      const release = this.placer.reserve(host);
      try {
        if (host === self) return await runHere(m, conn, this.ctx, release);
        return await this.relay(m, host, caller, conn, release);
      } catch (e) {
        release();
        // Once the program has started somewhere, its outcome is final; only a refusal before that moves on.
        const cause = e instanceof NotStarted ? e.cause : e;
        if (!(cause instanceof ProtocolError) || !TRY_NEXT.has(cause.proto) || (host === self && cause.proto !== 'NO_ENTRY' && cause.proto !== 'DENIED')) throw cause;
        if (!conn.isOpen) throw cause; // the client is gone (Ctrl-C during a transfer): nobody waits for another host
        refusals.push(cause);
      }
    }
    if (refusals.length === 1) throw refusals[0]!;
    // The same answer everywhere (no such program, not permitted) is that answer; a mixture says it all.
    const proto = refusals.every((r) => r.proto === refusals[0]?.proto) ? refusals[0]!.proto : 'UNREACHABLE';
    const notCandidates = unfit.map((u) => `; not tried: ${cannotRunMessage(u.name, u.missing)}`).join('');
    throw new ProtocolError(proto, `no host could run ${m.path}: ${refusals.map((r) => r.message).join('; ') || 'no reachable host'}${notCandidates}`, { fatal: false });
  }

  /** What a local client's rfork image needs of the CPU (its metadata only is read). */
  private imageNeeds(m: MessageOf<'EXEC'>): CpuNeeds {
    try {
      return readImageInfo(m.path, { metadataOnly: true, name: 'rfork image', checkHash: false }).cpuNeeds;
    } catch (e) {
      throw new ProtocolError('BAD_REQUEST', `EXEC image: ${(e as Error).message}`, { fatal: false });
    }
  }

  /**
   * A peer named for an rfork image (--host, REX_HOST, rfork_on) must be able
   * to run it: refused before the image is sent, naming what it lacks. A peer
   * not reached yet is reached first; one that cannot be is left to the relay
   * (UNREACHABLE).
   */
  private async checkNamedHost(m: MessageOf<'EXEC'>, host: string): Promise<void> {
    const peer = this.peers.get(host)!;
    if (!peer.state.figure && !peer.connection) await peer.connectNow();
    if (!peer.state.reachable || !peer.state.figure) return;
    const missing = cpuShortfall(this.imageNeeds(m), { ...(peer.state.cpu ? { cpu: peer.state.cpu } : {}) });
    if (missing.length === 0) return;
    const msg = cannotRunMessage(host, missing);
    this.ctx.log.warn({ image: m.path, host, missing }, `EXEC: ${msg}`);
    throw new ProtocolError('INCOMPATIBLE', msg, { fatal: false });
  }

  /**
   * An executable sent to a host whose CPU lacks features this one has may
   * have been built for them: a warning (never a refusal) in this rexd's log
   * and, as one line on the client's stderr, right after STARTED.
   */
  private warnTransferred(path: string, host: string, peer: PeerLink, conn: Connection, clientStream: number): void {
    const own = advertisedCpuProfile();
    const missing = peer.state.cpu ? missingFor({ features: own.features, xcr0: own.xcr0 }, peer.state.cpu) : [];
    if (missing.length === 0) return;
    const line = `rex: warning: ${path} was sent to ${host}, whose CPU lacks what this host's has (${missing.join(', ')}): if it was built for them it may stop with SIGILL there`;
    this.ctx.log.warn({ program: path, host, missing }, 'EXEC: transferred executable to a host whose CPU lacks features of the origin');
    conn.sendOn(clientStream, { type: 'DATA', fd: 2, data: Buffer.from(`${line}\n`) });
  }

  /** Ends every program this rexd runs (rexd stopping: no orphans). */
  stop(): void {
    dropSpare(this.ctx);
    for (const c of running) killGroup(c, 500);
    endContained(this.ctx);
  }

  /** Runs `m` on peer `host` and relays its stream to the local client's stream on `conn`. */
  private async relay(m: MessageOf<'EXEC'>, host: string, caller: ExecCaller, conn: Connection, onStarted?: () => void): Promise<Reply> {
    const peer = this.peers.get(host)!;
    const link = peer.connection ?? (await peer.connectNow());
    if (!link) {
      const why = peer.state.error ?? 'not connected yet';
      if (/DENIED/.test(why)) throw new NotStarted(new ProtocolError('DENIED', `${host} refuses this host: ${why}`, { fatal: false }));
      throw new NotStarted(new ProtocolError('UNREACHABLE', `host ${peer.label} is unreachable: ${why}`, { fatal: false }));
    }
    const { stream: clientStream, end: _e, host: _h, ...rest } = m;
    const image = m.image ? await imageRequest(m.path, this.ctx) : undefined;
    if (!conn.isOpen) throw new NotStarted(new ProtocolError('CANCELLED', `the client went away before ${m.path} was sent to ${host}`, { fatal: false }));
    const request = { ...rest, host, ...(caller.program ? { program: caller.program } : {}), ...image?.fields };
    // The files this origin sends if asked (FETCH): the program and the libraries it needs (or the image and the files it maps), by hash; nothing else.
    const offer = image?.offer ?? offeredFiles(m, m.sha256, this.ctx);
    const libs = offer.libs.map((l) => ({ name: l.name, path: l.path, sha256: Buffer.from(l.sha256, 'hex'), size: l.size }));
    return new Promise<Reply>((resolve, reject) => {
      let started = false;
      let ended: (() => void) | undefined;
      let h: StreamHandle | undefined;
      // Set when the local client goes away before STARTED (Ctrl-C during a transfer): the transfer stops, the executor is told.
      const transfer = { cancelled: false, fetching: false, program: false };
      const early = {
        onMessage: () => {}, // the client sends nothing before STARTED (PROTOCOL.md 4.9)
        onClose: () => {
          if (started) return;
          transfer.cancelled = true;
          if (transfer.fetching) h?.send({ type: 'SIGNAL', signal: 'INT' });
        },
      };
      // A client already gone never calls onClose: it is the same as one that leaves now.
      if (!conn.adoptStream(clientStream, early)) early.onClose();
      let timer: NodeJS.Timeout | undefined;
      // peer-timeout bounds the executor's silence before STARTED, not a transfer: PROGRESS re-arms it, and it
      // is off while this side serves a FETCH (an external copy command sends no PROGRESS).
      const arm = (ms = this.peerTimeout): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          if (started) return;
          h?.forget();
          reject(new NotStarted(new ProtocolError('TIMEOUT', `${host} did not start ${m.path} within ${ms} ms`, { fatal: false })));
        }, ms);
      };
      arm();
      try {
        h = link.openStream({ ...request, ...(libs.length > 0 ? { libs } : {}) } as Omit<MessageOf<'EXEC'>, 'stream'> & { type: 'EXEC' }, {
          onMessage: (x) => {
            if (x.type === 'STARTED' && !started) {
              started = true;
              clearTimeout(timer);
              ended = this.placer.placed(host);
              onStarted?.();
              if (transfer.cancelled) {
                // The client left while the program was being sent: it must not run on unattended.
                h!.send({ type: 'SIGNAL', signal: 'HUP' });
                setTimeout(() => h!.send({ type: 'SIGNAL', signal: 'KILL' }), 2000).unref();
                return;
              }
              // From here on, the client's frames on its stream go straight to the executor.
              const relay = {
                onMessage: (y: Message) => {
                  if (y.type === 'DATA' || y.type === 'WINDOW_UPDATE' || y.type === 'SIGNAL' || y.type === 'WINSIZE') h!.send(body(y));
                },
                onClose: () => {
                  // The local client vanished: end the remote program (HUP, then KILL) so it is no orphan.
                  h!.send({ type: 'SIGNAL', signal: 'HUP' });
                  setTimeout(() => h!.send({ type: 'SIGNAL', signal: 'KILL' }), 2000).unref();
                },
              };
              if (!conn.adoptStream(clientStream, relay)) relay.onClose();
              conn.sendOn(clientStream, body(x));
              if (transfer.program) this.warnTransferred(m.path, host, peer, conn, clientStream);
              return;
            }
            if (x.type === 'FETCH' && !started) {
              transfer.fetching = true;
              if (!m.image && m.sha256 && Buffer.compare(Buffer.from(x.sha256), Buffer.from(m.sha256)) === 0) transfer.program = true;
              const how = { mode: this.ctx.autoTransfer ?? 'on', ...(this.ctx.transferCommand ? { command: this.ctx.transferCommand } : {}), self: this.ctx.hostName, peer: host, address: peer.state.address };
              clearTimeout(timer);
              // After a transfer the executor still works silently on a file of up to 256 MiB (an rfork image is
              // restored from it): the bound is then that of the executor's own restore, 30 s.
              void serveFetch(offer.files, x, h!, link, how, transfer, this.ctx.log).finally(() => {
                if (!started) arm(Math.max(this.peerTimeout, 30_000));
              });
              return;
            }
            if (x.type === 'PROGRESS' && !started) {
              arm(x.done < x.total ? this.peerTimeout : Math.max(this.peerTimeout, 30_000));
              conn.sendOn(clientStream, body(x));
              return;
            }
            if (x.type === 'EXIT') {
              ended?.();
              resolve(body(x));
              return;
            }
            if (x.type === 'DATA' || x.type === 'WINDOW_UPDATE') conn.sendOn(clientStream, body(x));
          },
          onClose: (err) => {
            clearTimeout(timer);
            ended?.();
            if (!err) return; // EXIT resolved already
            const proto = (err as Error & { proto?: string }).proto;
            if (!started) {
              reject(new NotStarted(new ProtocolError((proto as ProtocolError['proto']) ?? 'UNREACHABLE', proto ? err.message : `${host}: ${err.message}`, { fatal: false })));
            } else {
              reject(new ProtocolError('UNREACHABLE', `lost ${host} while ${m.path} ran there: ${err.message}`, { fatal: false }));
            }
          },
        });
      } catch (e) {
        clearTimeout(timer);
        reject(new NotStarted(new ProtocolError('UNREACHABLE', `${host}: ${(e as Error).message}`, { fatal: false })));
      }
    });
  }
}

/** The program (by the hash the executor will be told) and its libraries, as this origin offers them for FETCH. */
function offeredFiles(m: MessageOf<'EXEC'>, sha256: Uint8Array | undefined, ctx: ExecutorContext): { files: Map<string, string>; libs: NeededLibrary[] } {
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

/**
 * What an origin offers for an rfork image: the image itself, and each file
 * it maps privately (program, libraries), named in EXEC `libs` with its
 * sha256 so that the executor maps its own identical copy or fetches one
 * (docs/RFORK.md section 5). Files mapped shared are left to the restorer's
 * strict identity check: a copy could not share writes with the origin.
 */
function imageOffer(path: string, data: Buffer, sha256: Uint8Array | undefined, ctx: ExecutorContext): { files: Map<string, string>; libs: NeededLibrary[] } {
  const files = new Map<string, string>(sha256 ? [[Buffer.from(sha256).toString('hex'), path]] : []);
  const libs: NeededLibrary[] = [];
  let info;
  try {
    info = readImageInfo(data, { metadataOnly: true, name: 'rfork image', checkHash: false });
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `EXEC image: ${(e as Error).message}`, { fatal: false }));
  }
  for (const f of info.files) {
    if (f.shared || f.path.includes('=') || libs.length >= MAX_LIBRARIES) continue;
    let hex: string;
    try {
      hex = fileSha256(f.path);
    } catch (e) {
      ctx.log.warn({ file: f.path, err: (e as Error).message }, 'EXEC: a file the rfork image maps cannot be read here; the executor must have it');
      continue;
    }
    files.set(hex, f.path);
    libs.push({ name: basename(f.path), path: f.path, sha256: hex, size: f.size });
  }
  return { files, libs };
}

/** How this origin answers FETCH: its rex-auto-transfer setting and the executor's name and address. */
interface FetchHow {
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
async function serveFetch(files: Map<string, string>, f: MessageOf<'FETCH'>, h: StreamHandle, link: Connection, how: FetchHow, transfer: { cancelled: boolean }, log: ExecutorContext['log']): Promise<void> {
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
  if (how.mode === 'command' && how.command) {
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
    const hash = createHash('sha256');
    h.send({ type: 'FILE', size });
    const delay = fetchDelayForTests();
    for (let off = 0; off <= TRANSFER_MAX; ) {
      if (delay) await new Promise((r) => setTimeout(r, delay));
      // Backpressure: the link is shared with other streams, and a cancelled transfer must stop soon.
      while (link.congested && !transfer.cancelled && link.isOpen) await new Promise((r) => setTimeout(r, 5));
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
      hash.update(chunk.subarray(0, n));
      h.send({ type: 'FILE', data: chunk.subarray(0, n) });
    }
    const hex = hash.digest('hex');
    if (hex !== want) h.send({ type: 'FILE', error: `${path} changed on the origin since the request (sha256 ${hex})` });
    else h.send({ type: 'FILE', eof: true });
  } catch (e) {
    h.send({ type: 'FILE', error: `the origin cannot read ${path}: ${(e as Error).message}` });
  } finally {
    closeSync(fd);
  }
}

/** Runs a transfer command with /bin/sh; resolves undefined on success, else why it failed. Killed when the transfer is cancelled. */
function runTransferCommand(line: string, transfer: { cancelled: boolean }): Promise<string | undefined> {
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

/**
 * An rfork image (EXEC `image`, docs/RFORK.md section 5): from a local client
 * it must be that client's own memfd, /proc/PID/fd/N with PID its SO_PEERCRED
 * pid (rexd reads nothing else on its behalf). From a peer it must carry the
 * sha256 the executor fetches it by.
 */
function checkImage(m: MessageOf<'EXEC'>, caller: ExecCaller): MessageOf<'EXEC'> {
  if (!caller.local) {
    if (!m.imageData && (!m.sha256 || m.sha256.byteLength !== 32)) throw new ProtocolError('BAD_REQUEST', 'EXEC image from a peer with neither its bytes (imageData) nor its sha256', { fatal: false });
    if (m.imageSize !== undefined && !m.imageData) throw new ProtocolError('BAD_REQUEST', 'EXEC imageSize without imageData: it is the inflated length of an inline image', { fatal: false });
    return m;
  }
  if (m.imageData || m.imageSize !== undefined) throw new ProtocolError('BAD_REQUEST', 'EXEC imageData comes from a peer only: a local client names its image descriptor', { fatal: false });
  const own = /^\/proc\/(\d+)\/fd\/(\d+)$/.exec(m.path);
  if (!own || caller.pid === undefined || Number(own[1]) !== caller.pid) {
    throw new ProtocolError('DENIED', `EXEC image ${m.path}: an image must be the client's own descriptor, /proc/${caller.pid ?? 'PID'}/fd/N`, { fatal: false });
  }
  return m;
}

/**
 * How a local client's image leaves this host, read once: a small one inside
 * the EXEC (`imageData`: no round trip, the peer link authenticates it), a
 * larger one by the sha256 the executor fetches it by (FETCH/FILE); and what
 * this origin offers for it (imageOffer).
 */
async function imageRequest(path: string, ctx: ExecutorContext): Promise<{ fields: { imageData: Buffer; imageSize?: number } | { sha256: Buffer }; offer: ReturnType<typeof imageOffer> }> {
  let data: Buffer;
  try {
    // A small image is read at once (the latency path); a large one (up to 1 GiB) without holding the event loop.
    data = statSync(path).size <= IMAGE_INLINE_MAX ? readFileSync(path) : await readFile(path);
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `EXEC image ${path}: ${(e as Error).message}`, { fatal: false }));
  }
  if (data.length <= IMAGE_INLINE_MAX) return { fields: inlineImageFields(data), offer: imageOffer(path, data, undefined, ctx) };
  if (data.length > TRANSFER_MAX) throw new NotStarted(new ProtocolError('BAD_REQUEST', `EXEC image: ${data.length} bytes, more than the ${TRANSFER_MAX} a transfer carries`, { fatal: false }));
  // Hashed 8 MiB at a time, letting I/O in between: 256 MiB in one go held rexd about a second, long enough for
  // its peers' load requests to time out and take the link down under the transfer that was about to start.
  const hash = createHash('sha256');
  for (let off = 0; off < data.length; off += 8 << 20) {
    hash.update(data.subarray(off, off + (8 << 20)));
    await new Promise((r) => setImmediate(r));
  }
  const sha256 = hash.digest();
  return { fields: { sha256 }, offer: imageOffer(path, data, sha256, ctx) };
}

/**
 * An inline image as it goes in the EXEC: raw DEFLATE (RFC 1951) at level 1
 * with `imageSize` its inflated length, when that is smaller. An image is
 * mostly pages with a few live bytes each (the seed's example: 136 KiB that
 * deflate to 16 KiB in about 0.7 ms, and inflate in 0.25 ms), so what crosses
 * the link shrinks several times; on loopback that costs a little latency, on
 * a 1 Gb/s link it saves about what it costs.
 */
export function inlineImageFields(image: Buffer): { imageData: Buffer; imageSize?: number } {
  const packed = deflateRawSync(image, { level: 1, memLevel: 9 });
  return packed.length < image.length ? { imageData: packed, imageSize: image.length } : { imageData: image };
}

/** A refusal before the program started anywhere: placement may try the next host. */
class NotStarted extends Error {
  constructor(override readonly cause: ProtocolError) {
    super(cause.message);
  }
}
