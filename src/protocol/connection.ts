/**
 * One protocol v1 connection over a byte stream (Unix socket or TCP): preface,
 * HELLO negotiation, multiplexed requests with stream ids and timeouts, and
 * answers to the peer's requests. Used by rexd (both directions) and by clients.
 */
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { ErrorCodes, RexError } from '../util/errors.js';
import { LIMITS, PREFACE, ProtoError, Role, VERSION_MAX, VERSION_MIN, protoErrorName, type RoleName } from './constants.js';
import { FrameDecoder, ProtocolError, encodeFrameParts, type Frame, type RawFrame } from './frame.js';
import { MsgType, bodyToFrame, dataFrameParts, frameToMessage, messageToFrame, type Message, type MessageOf, type MsgTypeName } from './messages.js';
import { quote } from '../util/quote.js';

/** What the local side says about itself in HELLO. */
export interface LocalIdentity {
  role: RoleName;
  host?: string;
  software: string;
  /** The PROGRAM of a HOST.USER.PROGRAM identity, when a client speaks for one. */
  program?: string;
}

/** What we learnt about the other side from its HELLO. */
export interface PeerHello {
  role: RoleName;
  host?: string;
  software?: string;
  program?: string;
  version: number;
  maxPayload: number;
}

/** A message body without the envelope, as request handlers return it. */
export type Reply = Message extends infer M ? (M extends Message ? Omit<M, 'stream' | 'end'> : never) : never;

/** Answers one request from the peer; throw ProtocolError to answer with ERROR. */
export type RequestHandler = (msg: Message, conn: Connection) => Promise<Reply> | Reply;

export interface ConnectionOptions {
  /** True for the side that opened the connection (sends the preface, uses odd stream ids). */
  initiator: boolean;
  local: LocalIdentity;
  /** Called for every request the peer sends after HELLO. */
  onRequest?: RequestHandler;
  /** Acceptor only: decide whether to accept the peer's HELLO; throw ProtocolError to refuse. */
  onHello?: (hello: PeerHello) => void;
  /** Time allowed for the handshake and, by default, for each request. */
  timeoutMs?: number;
  /**
   * How long the handshake may take (default timeoutMs). Longer where the other side may be starting: in the root
   * installation a user's first connection starts their session controller (docs/ROOT.md).
   */
  helloTimeoutMs?: number;
  /** A peer that stalls in the middle of a frame for this long is disconnected. */
  idleFrameTimeoutMs?: number;
  /** For messages: "alpha@127.0.0.1:7801" or "local client uid 1000". */
  label: string;
  /** Called after each request of the peer has been answered (for the transaction log). */
  onServed?: (info: ServedInfo) => void;
  /**
   * Output bytes queued in the socket above which this side stops reading the
   * peer's requests and holds back its own (default {@link HIGH_WATER}).
   */
  highWater?: number;
}

/** What {@link ConnectionOptions.onServed} reports about one answered request. */
export interface ServedInfo {
  msg: Message;
  requestBytes: number;
  responseBytes: number;
  ms: number;
  /** Set when the answer was an ERROR. */
  error?: ProtocolError;
}

/**
 * Default output high-water mark: one maximal frame plus room for many small
 * answers. Above it a connection applies backpressure (docs/PROTOCOL.md 3.1).
 */
export const HIGH_WATER = LIMITS.maxPayload + 256 * 1024;

interface Pending {
  resolve: (m: Message) => void;
  reject: (e: Error) => void;
  /** performance.now() after which it times out (see Connection.armDeadline). */
  deadline: number;
  timeoutMs: number;
  type: MsgTypeName;
}

type State = 'preface' | 'hello' | 'open' | 'closed';

/** Receives the frames of one long-lived stream (EXEC's stdio): every message, then one close. */
export interface StreamListener {
  /** A message of the peer on this stream; ERROR and END-flagged messages are the last. */
  onMessage(m: Message): void;
  /** The stream is over: `err` when the connection failed or the peer answered ERROR. */
  onClose(err?: Error): void;
  /**
   * A relay's pass-through: frames of these types (without END) are not decoded
   * but handed to `onRaw` as they arrived, to go on with {@link Connection.sendRawOn}
   * or {@link StreamHandle.sendRaw} (the origin rexd's DATA and WINDOW_UPDATE).
   */
  raw?: { types: ReadonlySet<number>; onRaw(f: RawFrame): void };
}

/** A stream this side opened with {@link Connection.openStream}. */
export interface StreamHandle {
  readonly id: number;
  /** Sends one more message on the stream (DATA, SIGNAL, WINDOW_UPDATE...). */
  send(m: Reply, end?: boolean): void;
  /** Forgets the stream locally (later frames on it are dropped). */
  forget(): void;
  /** Sends a frame received undecoded (StreamListener.raw) on this stream, rewriting only its stream id. */
  sendRaw(f: RawFrame): void;
}

/** setTimeout's longest delay. */
const TIMER_MAX_MS = 2 ** 31 - 1;
/** How many ended long-lived streams a connection remembers, to drop the peer's late frames on them. */
const ENDED_STREAMS = 1024;
/** Frames that only ever continue a stream (never open one). */
const STREAM_FRAME_TYPES: ReadonlySet<number> = new Set([MsgType.DATA, MsgType.WINDOW_UPDATE, MsgType.SIGNAL, MsgType.WINSIZE]);

/** A protocol v1 connection; emits 'close' (with an Error or undefined) once. */
export class Connection extends EventEmitter {
  readonly label: string;
  peer: PeerHello | undefined;
  private state: State;
  private decoder = new FrameDecoder();
  private prefaceBuf = Buffer.alloc(0);
  private nextStream: number;
  private pending = new Map<number, Pending>();
  /**
   * One timer for all pending requests (not one per request: a setTimeout and a
   * clearTimeout per request were a measurable part of a round trip), armed for
   * the earliest deadline; referenced only while requests are pending.
   */
  private deadlineTimer: NodeJS.Timeout | undefined;
  private deadlineAt = Infinity;
  private serving = new Set<number>();
  /** Streams we opened that stay open for many frames (docs/PROTOCOL.md 4.9). */
  private outStreams = new Map<number, StreamListener>();
  /** Peer streams whose handler asked to see the peer's later frames on them. */
  private adopted = new Map<number, StreamListener>();
  /**
   * Streams this side served as long-lived ones and has ended, most recent
   * last (at most ENDED_STREAMS): stream frames the peer sent before it saw
   * the end (DATA, WINDOW_UPDATE, SIGNAL, WINSIZE crossing the EXIT) are
   * dropped quietly instead of being answered as unknown requests.
   */
  private ended = new Set<number>();
  /** Stream frames dropped because their stream had just ended (see `ended`). */
  lateFrames = 0;
  private helloWaiter: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private closedWith: Error | undefined;
  /** Responses that arrived for streams no longer open (late answers after a timeout). */
  droppedResponses = 0;
  /** performance.now() when bytes last arrived: a peer that sends anything is alive, even if an answer is late. */
  lastReceivedAt = performance.now();
  /** True while reading is paused because the peer does not read our output. */
  private readPaused = false;
  private drainWaiters: (() => void)[] = [];
  private readonly highWater: number;

  constructor(
    private readonly socket: Socket,
    private readonly opts: ConnectionOptions,
  ) {
    super();
    this.label = opts.label;
    this.state = opts.initiator ? 'hello' : 'preface';
    this.nextStream = opts.initiator ? 1 : 2;
    this.highWater = opts.highWater ?? HIGH_WATER;
    socket.setNoDelay?.(true);
    socket.on('drain', () => this.onDrain());
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.teardown(new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} failed: ${e.message}`, { cause: e })));
    socket.on('close', () => this.teardown(this.closedWith ?? new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} closed`)));
  }

  /** Runs the handshake: as initiator sends preface and HELLO; as acceptor waits for them. */
  handshake(): Promise<PeerHello> {
    const timeoutMs = this.opts.helloTimeoutMs ?? this.opts.timeoutMs ?? 5000;
    return new Promise<PeerHello>((resolve, reject) => {
      const timer = setTimeout(() => {
        const e = new RexError(ErrorCodes.CONN_TIMEOUT, `no HELLO from ${this.label} within ${timeoutMs} ms`, {
          hint: 'is the other side a REX daemon of a compatible version (in a root installation, is the session controller starting? its log is session.log in your state directory)?',
        });
        this.destroy(e);
        reject(e);
      }, timeoutMs);
      this.helloWaiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve(this.peer!);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      if (this.opts.initiator) {
        this.socket.write(PREFACE);
        this.sendRaw(
          messageToFrame({
            type: 'HELLO',
            stream: 0,
            versionMin: VERSION_MIN,
            versionMax: VERSION_MAX,
            role: Role[this.opts.local.role],
            software: this.opts.local.software,
            maxPayload: LIMITS.maxPayload,
            ...(this.opts.local.host ? { host: this.opts.local.host } : {}),
            ...(this.opts.local.program ? { program: this.opts.local.program } : {}),
          }),
        );
      }
    });
  }

  /** True once HELLO has been exchanged and until the connection closes. */
  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Sends a request and resolves with the peer's response (ERROR answers reject). */
  request<N extends MsgTypeName>(msg: Omit<MessageOf<N>, 'stream'> & { type: N }, timeoutMs = this.opts.timeoutMs ?? 5000): Promise<Message> {
    if (this.state !== 'open') {
      return Promise.reject(this.closedWith ?? new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} is not open`));
    }
    if (this.pending.size >= LIMITS.maxStreams) {
      return Promise.reject(new RexError(ErrorCodes.PROTO_REMOTE, `too many requests in flight to ${this.label} (${LIMITS.maxStreams})`));
    }
    let stream = this.nextStream;
    while (this.pending.has(stream) || stream === 0) stream = (stream + 2) >>> 0 || (this.opts.initiator ? 1 : 2);
    this.nextStream = (stream + 2) >>> 0 || (this.opts.initiator ? 1 : 2);
    return new Promise<Message>((resolve, reject) => {
      const p: Pending = { resolve, reject, deadline: performance.now() + timeoutMs, timeoutMs, type: msg.type };
      this.pending.set(stream, p);
      this.armDeadline(p.deadline);
      const send = () => {
        if (this.pending.get(stream) === p) this.sendRaw(bodyToFrame(msg, stream));
      };
      // Backpressure: while the peer is not reading, new requests wait instead of piling up in memory.
      if (this.congested) this.drainWaiters.push(send);
      else send();
    });
  }

  /**
   * Opens a stream that carries many frames both ways (EXEC and its stdio):
   * every message of the peer on it goes to `listener` until one with END or an
   * ERROR. Flow control is the caller's: per-stream credit (WINDOW_UPDATE).
   */
  openStream<N extends MsgTypeName>(msg: Omit<MessageOf<N>, 'stream'> & { type: N }, listener: StreamListener): StreamHandle {
    if (this.state !== 'open') throw this.closedWith ?? new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} is not open`);
    if (this.pending.size + this.outStreams.size >= LIMITS.maxStreams) {
      throw new RexError(ErrorCodes.PROTO_REMOTE, `too many requests in flight to ${this.label} (${LIMITS.maxStreams})`);
    }
    let stream = this.nextStream;
    while (this.pending.has(stream) || this.outStreams.has(stream) || stream === 0) stream = (stream + 2) >>> 0 || (this.opts.initiator ? 1 : 2);
    this.nextStream = (stream + 2) >>> 0 || (this.opts.initiator ? 1 : 2);
    this.outStreams.set(stream, listener);
    this.sendRaw(messageToFrame({ ...msg, stream, end: false } as Message));
    return {
      id: stream,
      send: (m, end = false) => {
        if (this.outStreams.has(stream)) this.sendRaw(messageToFrame({ ...m, stream, end } as Message));
      },
      forget: () => void this.outStreams.delete(stream),
      sendRaw: (f) => {
        if (this.outStreams.has(stream)) this.sendRawFrame(stream, f);
      },
    };
  }

  /**
   * Called by a request handler that serves a long-lived stream: the peer's
   * later frames on `stream` go to `listener` until the handler's reply (sent
   * with END) closes it. Returns false, and calls nothing, when the stream is
   * already gone (the connection closed while the handler awaited something):
   * the caller must then give up on its own, or it waits forever.
   */
  adoptStream(stream: number, listener: StreamListener): boolean {
    if (this.state === 'closed' || !this.serving.has(stream)) return false;
    this.adopted.set(stream, listener);
    return true;
  }

  /** Sends a message on a stream the peer opened and this side serves, without closing it. */
  sendOn(stream: number, m: Reply): void {
    if (this.serving.has(stream)) this.sendRaw(messageToFrame({ ...m, stream, end: false } as Message));
  }

  /** Sends one DATA of several buffers, joined on the wire only (dataFrameParts), on a stream the peer opened and this side serves. */
  sendDataOn(stream: number, fd: number, data: readonly Uint8Array[]): void {
    if (this.serving.has(stream) && !this.socket.destroyed && this.socket.writable) this.sendParts(dataFrameParts(stream, fd, data));
  }

  /** Sends a frame received undecoded (StreamListener.raw) on a stream the peer opened and this side serves. */
  sendRawOn(stream: number, f: RawFrame): void {
    if (this.serving.has(stream)) this.sendRawFrame(stream, f);
  }

  private sendRawFrame(stream: number, f: RawFrame): void {
    const header = Buffer.from(f.header);
    header.writeUInt32BE(stream, 8);
    this.sendParts([header, ...f.payload]);
  }

  /** True while more than the high-water mark of output waits in the socket. */
  get congested(): boolean {
    return this.socket.writableLength > this.highWater;
  }

  /**
   * Resolves once the output is below the high-water mark again (at once when
   * it is), or after `maxMs` at the latest, so that a caller that must also
   * notice a cancellation or a closed link (which drops the waiters) looks
   * again: a bulk sender waits for the socket's drain instead of polling.
   */
  writable(maxMs = 50): Promise<void> {
    if (!this.congested || this.state === 'closed') return Promise.resolve();
    return new Promise((resolve) => {
      let done = false;
      const go = (): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(go, maxMs);
      this.drainWaiters.push(go);
    });
  }

  /** Bytes of output queued in the socket (for tests and diagnostics). */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  /** Answers with a fatal ERROR (e.g. DENIED when access is revoked) and closes. */
  abort(e: ProtocolError): void {
    if (this.state === 'closed') return;
    this.fatal(new ProtocolError(e.proto, e.message, { fatal: true }));
  }

  private onDrain(): void {
    while (!this.congested && this.drainWaiters.length > 0) this.drainWaiters.shift()!();
    if (this.readPaused && !this.congested) {
      this.readPaused = false;
      this.socket.resume();
    }
  }

  /** Says GOODBYE and closes. */
  close(reason = 'closing'): void {
    if (this.state === 'closed') return;
    if (this.state === 'open') this.sendRaw(messageToFrame({ type: 'GOODBYE', stream: 0, reason }));
    this.closedWith = new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} closed: ${reason}`);
    this.socket.end();
    this.teardown(this.closedWith);
  }

  /** Closes at once, without GOODBYE. */
  destroy(err?: Error): void {
    this.closedWith ??= err;
    this.socket.destroy();
    this.teardown(err ?? new RexError(ErrorCodes.CONN_CLOSED, `connection to ${this.label} destroyed`));
  }

  private sendRaw(f: Frame): number {
    if (this.socket.destroyed || !this.socket.writable) return 0;
    // Large byte values (stdio, file chunks) go out as they are, next to the frame's own bytes, in one writev.
    return this.sendParts(encodeFrameParts(f));
  }

  /** Writes an encoded frame (encodeFrameParts). */
  private sendParts(parts: Uint8Array[]): number {
    if (this.socket.destroyed || !this.socket.writable) return 0;
    let bytes = 0;
    if (parts.length === 1) {
      this.socket.write(parts[0]!);
      bytes = parts[0]!.length;
    } else {
      this.socket.cork();
      for (const p of parts) {
        this.socket.write(p);
        bytes += p.length;
      }
      this.socket.uncork();
    }
    if (this.congested && !this.readPaused && this.state !== 'closed') {
      // The peer is not reading our answers: stop reading its requests until it catches up, so
      // that it feels the pressure through TCP instead of this side buffering without bound.
      this.readPaused = true;
      this.socket.pause();
    }
    return bytes;
  }

  private sendError(stream: number, e: ProtocolError, refType?: number): number {
    return this.sendRaw(
      messageToFrame({
        type: 'ERROR',
        stream,
        code: e.protoCode,
        message: e.message,
        fatal: e.fatal,
        ...(refType !== undefined ? { refType } : {}),
      }),
    );
  }

  private fatal(e: ProtocolError, refType?: number): void {
    const err = new ProtocolError(e.proto, `${this.label}: ${e.message}`, { fatal: true });
    this.sendError(0, new ProtocolError(e.proto, e.message, { fatal: true }), refType);
    this.closedWith = err;
    this.socket.end();
    setTimeout(() => this.socket.destroy(), 1000).unref();
    this.teardown(err);
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return;
    this.lastReceivedAt = performance.now();
    if (this.state === 'preface') {
      this.prefaceBuf = Buffer.concat([this.prefaceBuf, chunk]);
      if (this.prefaceBuf.length < PREFACE.length) return;
      if (!this.prefaceBuf.subarray(0, PREFACE.length).equals(PREFACE)) {
        // Not a REX client: say nothing it could misread, just close.
        this.destroy(new RexError(ErrorCodes.PROTO_MALFORMED, `${this.label} did not send the REX preface; not a REX client`));
        return;
      }
      chunk = this.prefaceBuf.subarray(PREFACE.length);
      this.prefaceBuf = Buffer.alloc(0);
      this.state = 'hello';
      if (chunk.length === 0) return;
    }
    try {
      this.decoder.push(chunk, (f) => this.onFrame(f), this.rawHooks);
    } catch (e) {
      if (e instanceof ProtocolError) this.fatal(e);
      else this.destroy(e as Error);
      return;
    }
    this.armIdleTimer();
  }

  private armIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.decoder.buffered === 0 || this.state === 'closed') return;
    const ms = this.opts.idleFrameTimeoutMs ?? 30_000;
    this.idleTimer = setTimeout(() => {
      this.destroy(new RexError(ErrorCodes.CONN_TIMEOUT, `${this.label} stalled for ${ms} ms in the middle of a frame`));
    }, ms);
    this.idleTimer.unref();
  }

  /** The stream listener a frame of the peer on `stream` goes to, if any. */
  private listenerOf(stream: number): StreamListener | undefined {
    if (stream === 0) return undefined;
    return (stream % 2 === 1) === this.opts.initiator ? this.outStreams.get(stream) : this.adopted.get(stream);
  }

  /** Frames a stream listener takes undecoded (StreamListener.raw): never one with END, never before HELLO. */
  private readonly rawHooks = {
    want: (type: number, flags: number, stream: number): boolean => {
      if (this.state !== 'open' || flags !== 0) return false;
      return this.listenerOf(stream)?.raw?.types.has(type) ?? false;
    },
    onRaw: (f: RawFrame): void => {
      if (this.state !== 'closed') this.listenerOf(f.stream)?.raw?.onRaw(f);
    },
  };

  private onFrame(f: Frame): void {
    if (this.state === 'closed') return;
    if (this.state === 'hello') {
      this.onHelloFrame(f);
      return;
    }
    if (f.type === MsgType.HELLO) throw new ProtocolError('UNEXPECTED', 'second HELLO on an open connection');
    if (f.type === MsgType.GOODBYE) {
      let reason = 'no reason given';
      try {
        const m = frameToMessage(f) as MessageOf<'GOODBYE'>;
        if (m.reason) reason = quote(m.reason, 500);
      } catch {
        /* a malformed GOODBYE still means goodbye */
      }
      this.closedWith = new RexError(ErrorCodes.CONN_CLOSED, `connection closed by ${this.label}: ${reason}`);
      this.socket.end();
      this.teardown(this.closedWith);
      return;
    }
    const pending = f.stream !== 0 ? this.pending.get(f.stream) : undefined;
    const isOurStream = f.stream !== 0 && (f.stream % 2 === 1) === this.opts.initiator;
    const streamListener = f.stream === 0 ? undefined : isOurStream ? this.outStreams.get(f.stream) : this.adopted.get(f.stream);
    if (streamListener) {
      this.onStreamFrame(f, streamListener, isOurStream);
      return;
    }
    if (f.type === MsgType.ERROR || isOurStream) {
      // A response (or an error answering one of our requests, or a connection-level error).
      if (f.stream === 0) {
        const m = safeMessage(f);
        const err = remoteError(this.label, m);
        this.closedWith = err;
        if (m && m.type === 'ERROR' && m.fatal) this.destroy(err);
        else this.emit('peer-error', err);
        return;
      }
      if (!pending) {
        this.droppedResponses++;
        return;
      }
      this.pending.delete(f.stream);
      if (this.pending.size === 0) this.deadlineTimer?.unref();
      let m: Message;
      try {
        m = frameToMessage(f);
      } catch (e) {
        pending.reject(e as Error);
        return;
      }
      if (m.type === 'ERROR') pending.reject(remoteError(this.label, m));
      else pending.resolve(m);
      return;
    }
    this.onPeerRequest(f);
  }

  private onStreamFrame(f: Frame, l: StreamListener, ours: boolean): void {
    let m: Message;
    try {
      m = frameToMessage(f);
    } catch (e) {
      if (e instanceof ProtocolError && e.fatal) throw e;
      if (ours) {
        this.outStreams.delete(f.stream);
        l.onClose(e as Error);
      } else this.sendError(f.stream, e as ProtocolError, f.type);
      return;
    }
    const last = ours && (m.type === 'ERROR' || (f.flags & 1) === 1);
    if (last) this.outStreams.delete(f.stream);
    if (m.type === 'ERROR') {
      l.onClose(remoteError(this.label, m));
      return;
    }
    l.onMessage(m);
    if (last) l.onClose();
  }

  private onHelloFrame(f: Frame): void {
    if (f.type !== MsgType.HELLO) {
      if (f.type === MsgType.ERROR && this.opts.initiator) {
        const err = remoteError(this.label, safeMessage(f));
        this.helloWaiter?.reject(err);
        this.destroy(err);
        return;
      }
      throw new ProtocolError('UNEXPECTED', `expected HELLO, got frame type 0x${f.type.toString(16)}`);
    }
    const m = frameToMessage(f) as MessageOf<'HELLO'>;
    const role = (Object.keys(Role) as RoleName[]).find((k) => Role[k] === m.role);
    if (!role) throw new ProtocolError('MALFORMED', `HELLO role ${m.role} is not 1, 2 or 3`);
    const maxPayload = Math.min(LIMITS.maxPayload, Math.max(LIMITS.minPayload, m.maxPayload ?? LIMITS.maxPayload));
    if (this.opts.initiator) {
      if (m.version === undefined || m.version < VERSION_MIN || m.version > VERSION_MAX) {
        throw new ProtocolError('VERSION', `${this.label} chose protocol version ${m.version ?? '(none)'}; this side speaks ${VERSION_MIN}..${VERSION_MAX}`);
      }
      this.peer = { role, version: m.version, maxPayload, ...(m.host ? { host: m.host } : {}), ...(m.software ? { software: m.software } : {}) };
    } else {
      const lo = Math.max(m.versionMin ?? 1, VERSION_MIN);
      const hi = Math.min(m.versionMax ?? 1, VERSION_MAX);
      if (hi < lo) {
        throw new ProtocolError('VERSION', `no common protocol version: peer speaks ${m.versionMin}..${m.versionMax}, this side ${VERSION_MIN}..${VERSION_MAX}`, {
          hint: 'upgrade the older side',
        });
      }
      this.peer = { role, version: hi, maxPayload, ...(m.host ? { host: m.host } : {}), ...(m.software ? { software: m.software } : {}), ...(m.program ? { program: m.program } : {}) };
      this.opts.onHello?.(this.peer);
      this.sendRaw(
        messageToFrame({
          type: 'HELLO',
          stream: 0,
          version: hi,
          role: Role[this.opts.local.role],
          software: this.opts.local.software,
          maxPayload: LIMITS.maxPayload,
          ...(this.opts.local.host ? { host: this.opts.local.host } : {}),
        }),
      );
    }
    this.state = 'open';
    this.helloWaiter?.resolve();
    this.helloWaiter = undefined;
    this.emit('open', this.peer);
  }

  /** Forgets an adopted stream, remembering that it ended (late frames on it are dropped). */
  private endAdopted(stream: number): void {
    if (!this.adopted.delete(stream)) return;
    this.ended.delete(stream);
    this.ended.add(stream);
    if (this.ended.size > ENDED_STREAMS) this.ended.delete(this.ended.values().next().value!);
  }

  private onPeerRequest(f: Frame): void {
    if (this.ended.has(f.stream) && STREAM_FRAME_TYPES.has(f.type)) {
      this.lateFrames++;
      return;
    }
    if (f.stream === 0) {
      this.sendError(0, new ProtocolError('UNEXPECTED', `request type 0x${f.type.toString(16)} on stream 0`, { fatal: false }), f.type);
      return;
    }
    if (this.serving.has(f.stream)) {
      this.sendError(f.stream, new ProtocolError('UNEXPECTED', `stream ${f.stream} is already in use`, { fatal: false }), f.type);
      return;
    }
    if (this.serving.size >= LIMITS.maxStreams) {
      this.sendError(f.stream, new ProtocolError('BUSY', `more than ${LIMITS.maxStreams} requests open`, { fatal: false }), f.type);
      return;
    }
    let m: Message;
    try {
      m = frameToMessage(f);
    } catch (e) {
      if (e instanceof ProtocolError && !e.fatal) {
        this.sendError(f.stream, e, f.type);
        return;
      }
      throw e;
    }
    const handler = this.opts.onRequest;
    if (!handler) {
      this.sendError(f.stream, new ProtocolError('UNSUPPORTED', `${m.type} is not served here`, { fatal: false }), f.type);
      return;
    }
    this.serving.add(f.stream);
    const t0 = performance.now();
    const served = this.opts.onServed;
    const report = (responseBytes: number, error?: ProtocolError) => {
      if (!served) return;
      try {
        served({ msg: m, requestBytes: frameSize(f), responseBytes, ms: performance.now() - t0, ...(error ? { error } : {}) });
      } catch {
        /* logging must never break serving */
      }
    };
    const answer = (reply: Reply) => {
      this.serving.delete(f.stream);
      this.endAdopted(f.stream);
      let parts: Uint8Array[];
      try {
        // An answer that cannot be encoded (past the frame's limits, a bad value) is this side's fault: the peer gets
        // INTERNAL on its stream and the connection and the daemon go on (it used to escape as an unhandled rejection).
        parts = encodeFrameParts(bodyToFrame(reply, f.stream, true));
      } catch (e) {
        this.emit('handler-error', e);
        const pe = new ProtocolError('INTERNAL', `internal error: the answer to ${m.type} (${reply.type}) cannot be sent: ${(e as Error).message}`, { fatal: false });
        report(this.sendError(f.stream, pe, f.type), pe);
        return;
      }
      report(this.sendParts(parts));
    };
    let result: Reply | Promise<Reply>;
    try {
      result = handler(m, this);
    } catch (e) {
      result = Promise.reject(e);
    }
    // A handler that answers at once (PING, LOAD_GET) is answered in this tick:
    // no promise round trip on the hottest path.
    if (!(result instanceof Promise)) {
      answer(result);
      return;
    }
    result.then(
        answer,
        (e: unknown) => {
          this.serving.delete(f.stream);
          this.endAdopted(f.stream);
          if (e instanceof ProtocolError && e.fatal) {
            // A handler may refuse so firmly that the connection ends (e.g. an unknown key).
            report(0, e);
            this.abort(e);
            return;
          }
          const pe =
            e instanceof ProtocolError
              ? new ProtocolError(e.proto, e.message, { fatal: false })
              : new ProtocolError('INTERNAL', `internal error serving ${m.type}: ${(e as Error)?.message ?? e}`, { fatal: false });
          if (!(e instanceof ProtocolError)) this.emit('handler-error', e);
          report(this.sendError(f.stream, pe, f.type), pe);
        },
      );
  }

  /** Makes the deadline timer fire by `deadline` (and hold the process while requests are pending). */
  private armDeadline(deadline: number): void {
    const t = this.deadlineTimer;
    if (t && this.deadlineAt <= deadline) {
      t.ref();
      return;
    }
    if (t) clearTimeout(t);
    this.deadlineAt = deadline;
    // At most setTimeout's limit (about 24.8 days): a later deadline is swept then and the timer armed again.
    this.deadlineTimer = setTimeout(() => this.onDeadline(), Math.min(TIMER_MAX_MS, Math.max(1, Math.ceil(deadline - performance.now()))));
  }

  private onDeadline(): void {
    this.deadlineTimer = undefined;
    this.deadlineAt = Infinity;
    // After a blocked event loop, timers run before what arrived meanwhile is read: one I/O phase first
    // (setImmediate runs after it), so that an answer already waiting in the socket still counts.
    setImmediate(() => {
      if (this.state === 'closed') return;
      const now = performance.now();
      let next = Infinity;
      for (const [stream, p] of this.pending) {
        if (p.deadline <= now) {
          this.pending.delete(stream);
          p.reject(new RexError(ErrorCodes.CONN_TIMEOUT, `${p.type} to ${this.label} got no answer within ${p.timeoutMs} ms`));
        } else if (p.deadline < next) next = p.deadline;
      }
      if (next !== Infinity) this.armDeadline(next);
    });
  }

  private teardown(err: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.drainWaiters = [];
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.closedWith ??= err;
    this.helloWaiter?.reject(err);
    this.helloWaiter = undefined;
    if (this.deadlineTimer) clearTimeout(this.deadlineTimer);
    this.deadlineTimer = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    const streams = [...this.outStreams.values(), ...this.adopted.values()];
    this.outStreams.clear();
    this.adopted.clear();
    // Handlers still at work find their streams gone (adoptStream returns false) instead of waiting forever.
    this.serving.clear();
    for (const l of streams) {
      try {
        l.onClose(err);
      } catch {
        /* one stream's cleanup must not stop the others' */
      }
    }
    this.emit('close', err);
  }
}

/** Encoded size of a frame, computed without encoding it. */
function frameSize(f: Frame): number {
  return 12 + attrsSize(f.attrs);
}

function attrsSize(attrs: Frame['attrs']): number {
  let n = 0;
  for (const a of attrs) {
    n += 7;
    switch (a.kind) {
      case 'string':
        n += Buffer.byteLength(a.value);
        break;
      case 'bytes':
        n += a.value.byteLength;
        break;
      case 'list':
        n += attrsSize(a.value);
        break;
      case 'bool':
        n += 1;
        break;
      default:
        n += 8; // numbers: the usual width; exact enough for a log
    }
  }
  return n;
}

function safeMessage(f: Frame): Message | undefined {
  try {
    return frameToMessage(f);
  } catch {
    return undefined;
  }
}

/** The RexError for an ERROR frame received from `label`. */
export function remoteError(label: string, m: Message | undefined): RexError {
  if (!m || m.type !== 'ERROR') return new RexError(ErrorCodes.PROTO_REMOTE, `${label} sent an unreadable ERROR frame`);
  const name = protoErrorName(m.code);
  const code =
    m.code === ProtoError.NO_HOST
      ? ErrorCodes.HOST_UNKNOWN
      : m.code === ProtoError.UNREACHABLE
        ? ErrorCodes.HOST_UNREACHABLE
        : m.code === ProtoError.TIMEOUT
          ? ErrorCodes.CONN_TIMEOUT
          : m.code === ProtoError.VERSION
            ? ErrorCodes.PROTO_VERSION
            : ErrorCodes.PROTO_REMOTE;
  const e = new RexError(code, `${m.host !== undefined ? quote(m.host) : label}: ${name}: ${m.message !== undefined ? quote(m.message, 4000, true) : '(no message)'}`);
  (e as RexError & { proto?: string }).proto = name;
  return e;
}
