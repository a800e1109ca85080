/**
 * rexd's EXEC service: a local client's EXEC runs here or is routed to the
 * chosen peer over the authenticated peer connection (as PING's target is), and
 * the origin rexd relays the stream both ways without buffering beyond the
 * per-stream credit; a peer's EXEC always runs here.
 */
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { Connection, Reply, StreamHandle } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import { EXEC_MAX_CHUNK, type Message, type MessageOf } from '../protocol/messages.js';
import { TRANSFER_MAX } from './transfer.js';
import type { PeerLink } from '../daemon/peers.js';
import { killGroup, runHere, running, type ExecutorContext } from './executor.js';
import { Placer, type Candidate, type PlacementPolicy } from './placement.js';

/** Who sent an EXEC: a local client (may be routed) or a peer (runs here). */
export interface ExecCaller {
  local: boolean;
  /** The local client's program (HELLO), forwarded so program-limited grants apply at the executor. */
  program?: string;
  /** The local client's pid (SO_PEERCRED): an rfork image is read from that process's own descriptor only. */
  pid?: number;
}

/** Refusals after which the next candidate host is tried (placement only, not an explicit host). */
const TRY_NEXT = new Set(['DENIED', 'UNREACHABLE', 'TIMEOUT', 'BUSY', 'NO_ENTRY']);

function body(m: Message): Reply {
  const { stream: _s, end: _e, ...rest } = m;
  return rest as Reply;
}

/** The EXEC service of one rexd. */
export class ExecService {
  readonly placer: Placer;

  constructor(
    private readonly ctx: ExecutorContext,
    private readonly peers: ReadonlyMap<string, PeerLink>,
    policy: PlacementPolicy = 'least-loaded',
    private readonly peerTimeout = 5000,
  ) {
    this.placer = new Placer(policy);
  }

  /** Ends what a crashed predecessor left running (call once at start-up); returns the pids killed. */
  reapLeftovers(): number[] {
    const killed = this.ctx.jobs?.reapLeftovers() ?? [];
    if (killed.length > 0) this.ctx.log.warn({ pids: killed }, 'EXEC: killed programs left running by a previous rexd');
    return killed;
  }

  /** Serves one EXEC on `conn`; resolves with the EXIT answer. */
  async serve(m: MessageOf<'EXEC'>, caller: ExecCaller, conn: Connection): Promise<Reply> {
    const self = this.ctx.hostName;
    const explicit = m.host !== undefined && m.host !== '' && m.host !== '*';
    if (m.image) m = checkImage(m, caller);
    if (!caller.local) {
      // Only the origin's rexd routes, and only once.
      if (explicit && m.host !== self) throw new ProtocolError('BAD_REQUEST', `EXEC for host ${m.host} reached ${self}: peers may not ask for forwarding`, { fatal: false });
      return runHere(m, conn, this.ctx);
    }
    if (explicit) {
      if (m.host === self) return runHere(m, conn, this.ctx);
      if (!this.peers.has(m.host!)) {
        throw new ProtocolError('NO_HOST', `no host "${m.host}" in this cluster (known: ${[self, ...this.peers.keys()].join(', ')})`, { fatal: false });
      }
      try {
        return await this.relay(m, m.host!, caller, conn);
      } catch (e) {
        throw e instanceof NotStarted ? e.cause : e;
      }
    }
    const order = this.placer.order(this.candidates());
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
        refusals.push(cause);
      }
    }
    if (refusals.length === 1) throw refusals[0]!;
    // The same answer everywhere (no such program, not permitted) is that answer; a mixture says it all.
    const proto = refusals.every((r) => r.proto === refusals[0]?.proto) ? refusals[0]!.proto : 'UNREACHABLE';
    throw new ProtocolError(proto, `no host could run ${m.path}: ${refusals.map((r) => r.message).join('; ') || 'no reachable host'}`, { fatal: false });
  }

  /** Hosts that can be asked now: this one, and peers with a fresh figure, in rex.rc order. */
  candidates(): Candidate[] {
    const now = Date.now();
    const fig = this.ctx.meter.measure();
    const out: Candidate[] = [{ name: this.ctx.hostName, self: true, load: fig.load, cores: fig.cores, figureAt: now }];
    for (const p of this.peers.values()) {
      const s = p.state;
      if (!s.reachable || !s.figure || s.receivedAt === undefined) continue;
      out.push({ name: s.name, self: false, load: s.figure.load, cores: s.figure.cores, figureAt: s.receivedAt });
    }
    return out;
  }

  /** Ends every program this rexd runs (rexd stopping: no orphans). */
  stop(): void {
    for (const c of running) killGroup(c, 500);
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
    const request = { ...rest, host, ...(caller.program ? { program: caller.program } : {}), ...(m.image ? { sha256: imageHash(m.path) } : {}) };
    return new Promise<Reply>((resolve, reject) => {
      let started = false;
      let ended: (() => void) | undefined;
      let h: StreamHandle | undefined;
      const timer = setTimeout(() => {
        if (started) return;
        h?.forget();
        reject(new NotStarted(new ProtocolError('TIMEOUT', `${host} did not start ${m.path} within ${this.peerTimeout} ms`, { fatal: false })));
      }, this.peerTimeout);
      try {
        h = link.openStream(request as Omit<MessageOf<'EXEC'>, 'stream'> & { type: 'EXEC' }, {
          onMessage: (x) => {
            if (x.type === 'STARTED' && !started) {
              started = true;
              clearTimeout(timer);
              ended = this.placer.placed(host);
              onStarted?.();
              // From here on, the client's frames on its stream go straight to the executor.
              conn.adoptStream(clientStream, {
                onMessage: (y) => {
                  if (y.type === 'DATA' || y.type === 'WINDOW_UPDATE' || y.type === 'SIGNAL' || y.type === 'WINSIZE') h!.send(body(y));
                },
                onClose: () => {
                  // The local client vanished: end the remote program (HUP, then KILL) so it is no orphan.
                  h!.send({ type: 'SIGNAL', signal: 'HUP' });
                  setTimeout(() => h!.send({ type: 'SIGNAL', signal: 'KILL' }), 2000).unref();
                },
              });
              conn.sendOn(clientStream, body(x));
              return;
            }
            if (x.type === 'FETCH' && !started) {
              sendProgram(m, x, h!);
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

/**
 * Answers an executor's FETCH with the program the local client named: read
 * here (the origin, as the client's user), checked against the hash the
 * executor asked for, sent in FILE chunks.
 */
function sendProgram(m: MessageOf<'EXEC'>, f: MessageOf<'FETCH'>, h: StreamHandle): void {
  const path = isAbsolute(m.path) ? m.path : resolve(m.cwd ?? '/', m.path);
  let data: Buffer;
  try {
    const st = statSync(path);
    if (st.size > TRANSFER_MAX) throw new Error(`${path} is ${st.size} bytes, more than the ${TRANSFER_MAX} a transfer carries`);
    data = readFileSync(path);
  } catch (e) {
    h.send({ type: 'FILE', error: `the origin cannot read ${path}: ${(e as Error).message}` });
    return;
  }
  const hex = createHash('sha256').update(data).digest('hex');
  if (hex !== Buffer.from(f.sha256).toString('hex')) {
    h.send({ type: 'FILE', error: `${path} changed on the origin since the request (sha256 ${hex})` });
    return;
  }
  h.send({ type: 'FILE', size: data.length });
  for (let off = 0; off < data.length; off += EXEC_MAX_CHUNK) h.send({ type: 'FILE', data: data.subarray(off, off + EXEC_MAX_CHUNK) });
  h.send({ type: 'FILE', eof: true });
}

/**
 * An rfork image (EXEC `image`, docs/RFORK.md section 5): from a local client
 * it must be that client's own memfd, /proc/PID/fd/N with PID its SO_PEERCRED
 * pid (rexd reads nothing else on its behalf). From a peer it must carry the
 * sha256 the executor fetches it by.
 */
function checkImage(m: MessageOf<'EXEC'>, caller: ExecCaller): MessageOf<'EXEC'> {
  if (!caller.local) {
    if (!m.sha256 || m.sha256.byteLength !== 32) throw new ProtocolError('BAD_REQUEST', 'EXEC image from a peer without its sha256', { fatal: false });
    return m;
  }
  const own = /^\/proc\/(\d+)\/fd\/(\d+)$/.exec(m.path);
  if (!own || caller.pid === undefined || Number(own[1]) !== caller.pid) {
    throw new ProtocolError('DENIED', `EXEC image ${m.path}: an image must be the client's own descriptor, /proc/${caller.pid ?? 'PID'}/fd/N`, { fatal: false });
  }
  return m;
}

/** The sha256 an executor fetches a local client's image by (computed when the image leaves this host). */
function imageHash(path: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (e) {
    throw new NotStarted(new ProtocolError('BAD_REQUEST', `EXEC image ${path}: ${(e as Error).message}`, { fatal: false }));
  }
  if (data.length > TRANSFER_MAX) throw new NotStarted(new ProtocolError('BAD_REQUEST', `EXEC image: ${data.length} bytes, more than the ${TRANSFER_MAX} a transfer carries`, { fatal: false }));
  return createHash('sha256').update(data).digest();
}

/** A refusal before the program started anywhere: placement may try the next host. */
class NotStarted extends Error {
  constructor(override readonly cause: ProtocolError) {
    super(cause.message);
  }
}
