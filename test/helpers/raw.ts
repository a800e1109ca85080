/** A raw protocol v1 peer for tests: sends exactly the bytes a test wants and collects what comes back. */
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { OwnIdentity } from '../../src/keys/store.js';
import { FrameDecoder, encodeFrame, type Frame } from '../../src/protocol/frame.js';
import { PREFACE } from '../../src/protocol/constants.js';
import { frameToMessage, messageToFrame, type Message } from '../../src/protocol/messages.js';

/** A socket with a frame reader; `closed` resolves when the other side closes. */
export class RawPeer {
  readonly frames: Frame[] = [];
  readonly closed: Promise<void>;
  private decoder = new FrameDecoder();
  private waiters: (() => void)[] = [];

  constructor(readonly sock: Socket) {
    sock.on('data', (d: Buffer) => {
      try {
        this.decoder.push(d, (f) => this.frames.push(f));
      } catch {
        /* the test looks at what arrived */
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((r) => sock.on('close', () => r()));
    sock.on('error', () => {});
  }

  static open(opts: { path: string } | { host: string; port: number }): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = connect(opts as never);
      s.once('connect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  /** A TLS 1.3 connection presenting `own`'s certificate (or none); the server's key is not checked. */
  static openTls(opts: { host: string; port: number; own?: OwnIdentity }): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s: TLSSocket = tlsConnect({
        host: opts.host,
        port: opts.port,
        minVersion: 'TLSv1.3',
        maxVersion: 'TLSv1.3',
        rejectUnauthorized: false,
        ...(opts.own ? { key: opts.own.keyPem, cert: opts.own.certPem } : {}),
      });
      s.once('secureConnect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  write(b: Buffer | Uint8Array): void {
    this.sock.write(b);
  }

  send(m: Message): void {
    this.sock.write(encodeFrame(messageToFrame(m)));
  }

  /** Preface and a HELLO as `role` (1 client, 2 peer). */
  hello(role = 1, host?: string): void {
    this.write(PREFACE);
    this.send({ type: 'HELLO', stream: 0, versionMin: 1, versionMax: 1, role, software: 'test', ...(host ? { host } : {}) });
  }

  /** Waits until `n` frames have arrived (or the socket closed), at most `ms`. */
  async waitFrames(n: number, ms = 5000): Promise<Message[]> {
    const deadline = Date.now() + ms;
    while (this.frames.length < n && Date.now() < deadline && !this.sock.destroyed) {
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.frames.map((f) => frameToMessage(f));
  }

  close(): void {
    this.sock.destroy();
  }
}
