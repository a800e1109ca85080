/**
 * rexd's EXEC service: a local client's EXEC runs here or is routed to the
 * chosen peer over the authenticated peer connection (as PING's target is), and
 * the origin rexd relays the stream both ways without buffering beyond the
 * per-stream credit; a peer's EXEC always runs here. rfork's RFORK is routed
 * and relayed the same way (route(); src/rfork/origin.ts says what differs).
 */
import type { Connection, Reply, StreamHandle, StreamListener } from '../../protocol/connection.js';
import { MsgType } from '../../protocol/messages.js';
import { ProtocolError } from '../../protocol/frame.js';
import type { Message, MessageOf } from '../../protocol/messages.js';
import { offeredFiles, serveFetch, type Offer } from '../origin/transfer.js';
import { localProgram } from '../origin/stub.js';
import type { PeerLink } from '../../daemon/peers.js';
import { endContained, FROM_ORIGIN, killGroup, runHere, running, type ExecutorContext } from './executor.js';
import { controllerJobs } from '../../calls/controller.js';
import type { Containment } from './contain.js';
import { cannotRunMessage, Placement, type PlacementPolicy } from '../../placement/index.js';
import type { CpuNeeds } from '../../cpu/profile.js';
import { advertisedCpuProfile } from '../../cpu/wire.js';
import { missingFor } from '../../cpu/profile.js';
import type { ExecLimit } from './limit.js';
import { testSwitch } from '../../util/testmode.js';

/** Who sent an EXEC: a local client (may be routed) or a peer (runs here). */
export interface ExecCaller {
  local: boolean;
  /** The local client's program (HELLO), forwarded so program-limited grants apply at the executor. */
  program?: string;
  /** The local client's pid (SO_PEERCRED): an rfork image is read from that process's own descriptor only. */
  pid?: number;
  /** A peer's requester granted only one program: it may run that program's executables only (src/exec/executor/limit.ts). */
  limit?: ExecLimit;
}

/**
 * One request the service places, runs or relays: EXEC's program, or
 * RFORK's process image (src/rfork/origin.ts), which differ in what they send
 * along, offer for FETCH, and where they may go.
 */
export interface Routed {
  m: MessageOf<'EXEC'> | MessageOf<'RFORK'>;
  /** Runs it on this host; `onStarted` once it runs. */
  here(onStarted?: () => void): Promise<Reply>;
  /** What goes with the request to a peer (EXEC libs; RFORK the image or its hash, and files) and what this origin then offers for FETCH. */
  outgoing(): Promise<{ fields: Partial<MessageOf<'EXEC'>> | Partial<MessageOf<'RFORK'>>; offer: Offer }>;
  /** What it needs of a host's CPU (rfork: the image's); read only when a peer is a candidate. Absent: any host. */
  needs?(): CpuNeeds;
  /** A peer named explicitly may be refused before anything is sent (rfork: its CPU). */
  checkNamed?(host: string, peer: PeerLink): Promise<void>;
  /** A FETCH of this hash is for the program itself (its transfer draws the CPU warning after STARTED). */
  isProgram?(sha256: Uint8Array): boolean;
}

/** EXEC libs (RFORK files) as they go on the wire, from what the origin offers. */
export function libsField(offer: Offer): MessageOf<'EXEC'>['libs'] & {} {
  return offer.libs.map((l) => ({ name: l.name, path: l.path, sha256: Buffer.from(l.sha256, 'hex'), size: l.size }));
}

/** What an origin rexd relays between its client and the executor without decoding it. */
const PASS_THROUGH: ReadonlySet<number> = new Set([MsgType.DATA, MsgType.WINDOW_UPDATE]);

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
    readonly ctx: ExecutorContext,
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
  serve(m: MessageOf<'EXEC'>, caller: ExecCaller, conn: Connection): Promise<Reply> {
    // EXEC libs is the origin rexd's to set (from the files it offers), never a local client's.
    if (caller.local && m.libs) m = { ...m, libs: [] };
    // A local client that names no hash (librex's rexecve(): C has no sha256 at hand) gets the one
    // rex run and spawn() send, of the program as this host has it: without it no executor
    // could fetch a program that exists only here.
    if (caller.local && !m.sha256) {
      const local = localProgram(m.path, m.cwd ?? '/', [...(m.env ?? [])].reverse().find((e) => e.startsWith('PATH='))?.slice(5));
      if (local) m = { ...m, path: local.path, sha256: local.sha256 };
    }
    const program = m;
    return this.route(
      {
        m: program,
        here: (onStarted) => runHere(program, conn, this.ctx, onStarted, caller.limit),
        outgoing: async () => {
          // The files this origin sends if asked (FETCH): the program and the libraries it needs, by hash; nothing else.
          const offer = offeredFiles(program, program.sha256, this.ctx);
          return { fields: offer.libs.length > 0 ? { libs: libsField(offer) } : {}, offer };
        },
        isProgram: (sha256) => !!program.sha256 && Buffer.compare(Buffer.from(sha256), Buffer.from(program.sha256)) === 0,
      },
      caller,
      conn,
    );
  }

  /**
   * Runs `job` here or on the host it names or placement chooses, relaying
   * its stream from that host's rexd (a local client's request only: a
   * peer's always runs here); resolves with the EXIT answer. EXEC's service,
   * and RFORK's (src/rfork/origin.ts).
   */
  async route(job: Routed, caller: ExecCaller, conn: Connection): Promise<Reply> {
    const m = job.m;
    const self = this.ctx.hostName;
    const explicit = m.host !== undefined && m.host !== '' && m.host !== '*';
    if (!caller.local) {
      // Only the origin's rexd routes, and only once.
      if (explicit && m.host !== self) throw new ProtocolError('BAD_REQUEST', `${m.type} for host ${m.host} reached ${self}: peers may not ask for forwarding`, { fatal: false });
      return job.here();
    }
    if (explicit) {
      if (m.host === self) return job.here();
      if (!this.peers.has(m.host!)) {
        throw new ProtocolError('NO_HOST', `no host "${m.host}" in this cluster (known: ${[self, ...this.peers.keys()].join(', ')})`, { fatal: false });
      }
      await job.checkNamed?.(m.host!, this.peers.get(m.host!)!);
      try {
        return await this.relay(job, m.host!, caller, conn);
      } catch (e) {
        throw e instanceof NotStarted ? e.cause : e;
      }
    }
    // An rfork image goes only where its CPU state and the features its code may have chosen exist (docs/PLACEMENT.md).
    // A client limited to some hosts (REX_PLACE_HOSTS: a Slurm allocation in a larger cluster) is placed among them only.
    const among = m.among && m.among.length > 0 ? m.among : undefined;
    const { order: placed, unfit } = this.placer.plan({ ...(job.needs ? { needs: () => job.needs!() } : {}), ...(among ? { among } : {}) });
    if (among && placed.length === 0 && unfit.length === 0) {
      throw new ProtocolError('NO_HOST', `none of the hosts this request may be placed on (${among.join(', ')}) is a reachable host of this cluster (reachable: ${this.placer.candidates().map((c) => c.name).join(', ')})`, { fatal: false });
    }
    if (unfit.length > 0) this.ctx.log.info({ image: m.path, excluded: unfit.map((u) => cannotRunMessage(u.name, u.missing)) }, `${m.type}: hosts that cannot run this rfork image are not candidates`);
    if (placed.length === 0) throw new ProtocolError('INCOMPATIBLE', `no host can run this image: ${unfit.map((u) => cannotRunMessage(u.name, u.missing)).join('; ')}`, { fatal: false });
    // Test switch: placement by load skips this host, so that the tests move every child to another one.
    const away = testSwitch('REX_TEST_PLACE_ELSEWHERE') === '1';
    const order = placed.filter((h) => !away || h !== self);
    const refusals: ProtocolError[] = [];
    for (const host of order) {
      const release = this.placer.reserve(host);
      try {
        if (host === self) return await job.here(release);
        return await this.relay(job, host, caller, conn, release);
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
    this.ctx.stopped = true;
    for (const end of this.ctx.atStop ?? []) end();
    for (const c of running) killGroup(c, 500);
    endContained(this.ctx);
  }

  /** Runs `job` on peer `host` and relays its stream to the local client's stream on `conn`. */
  private async relay(job: Routed, host: string, caller: ExecCaller, conn: Connection, onStarted?: () => void): Promise<Reply> {
    const m = job.m;
    const peer = this.peers.get(host)!;
    const link = peer.connection ?? (await peer.connectNow());
    if (!link) {
      const why = peer.state.error ?? 'not connected yet';
      if (/DENIED/.test(why)) throw new NotStarted(new ProtocolError('DENIED', `${host} refuses this host: ${why}`, { fatal: false }));
      throw new NotStarted(new ProtocolError('UNREACHABLE', `host ${peer.label} is unreachable: ${why}`, { fatal: false }));
    }
    const { stream: clientStream, end: _e, host: _h, among: _a, ...rest } = m;
    // What goes with the request to this host, and the files this origin sends if asked (FETCH), by hash; nothing else.
    const { fields, offer } = await job.outgoing();
    if (!conn.isOpen) throw new NotStarted(new ProtocolError('CANCELLED', `the client went away before ${m.path} was sent to ${host}`, { fatal: false }));
    const request = { ...rest, host, ...(caller.program ? { program: caller.program } : {}), ...fields } as Omit<Routed['m'], 'stream'>;
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
        h = link.openStream(request, {
          // The executor's DATA and WINDOW_UPDATE go to the client as they came (docs/PROTOCOL.md 3.1):
          // only the stream id is rewritten, the payload is neither decoded nor copied. None comes before STARTED.
          raw: { types: PASS_THROUGH, onRaw: (f) => conn.sendRawOn(clientStream, f) },
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
              // From here on, the client's frames on its stream go straight to the executor: DATA and
              // WINDOW_UPDATE as they came, only their stream id rewritten (no decoding, no copy).
              const relay: StreamListener = {
                onMessage: (y: Message) => {
                  if (FROM_ORIGIN.has(y.type)) h!.send(body(y));
                },
                raw: { types: PASS_THROUGH, onRaw: (f) => h!.sendRaw(f) },
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
              if (job.isProgram?.(x.sha256)) transfer.program = true;
              const how = { mode: this.ctx.autoTransfer ?? 'on', ...(this.ctx.transferCommand ? { command: this.ctx.transferCommand } : {}), self: this.ctx.hostName, peer: host, address: peer.state.address };
              clearTimeout(timer);
              // After a transfer the executor still works silently on a file of up to 256 MiB (an rfork image is
              // restored from it): the bound is then that of the executor's own restore, 30 s.
              void serveFetch(offer.files, x, h!, link, how, transfer, this.ctx.log, offer.hashed).finally(() => {
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

/** A refusal before the program started anywhere: placement may try the next host. */
export class NotStarted extends Error {
  constructor(override readonly cause: ProtocolError) {
    super(cause.message);
  }
}
