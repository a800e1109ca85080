/**
 * A message channel with descriptors over one AF_UNIX SOCK_SEQPACKET socket: the link
 * between the root monitor and a session controller (docs/ARCHITECTURE.md, "Privilege
 * separation primitives"). It drives the addon's sendFds/recvFds with an FdWatch: messages
 * arrive in order through onMessage, sends queue while the socket is full.
 *
 * Ownership: a received message's descriptors belong to onMessage, which must close or keep
 * them. A sent message's descriptors are the caller's; send() resolves once the kernel holds
 * its own references, after which the caller may close them. A message the addon refuses
 * (too many descriptors, header too long or empty: it has already closed their descriptors)
 * ends the channel with that error: a peer that sends one is not followed further.
 */
import { closeSync } from 'node:fs';
import { FDPASS_MAX_FDS, FDPASS_MAX_HEADER, loadAddon, type FdWatcher, type RexAddon } from '../util/native.js';

export interface FdChannelOptions {
  /** Most descriptors one incoming message may carry (default 8). */
  maxFds?: number;
  /** Longest incoming header (default FDPASS_MAX_HEADER). */
  maxHeader?: number;
  onMessage(header: Buffer, fds: number[]): void;
  /** Once: the peer closed (err undefined), a message was refused, or the socket failed. */
  onClose?(err?: Error): void;
}

interface Pending {
  header: Buffer;
  fds: readonly number[];
  resolve(): void;
  reject(e: Error): void;
}

export class FdChannel {
  private readonly addon: RexAddon;
  private watch: FdWatcher | undefined;
  private waitingWritable = false;
  private readonly queue: Pending[] = [];
  private closed = false;
  private readonly maxFds: number;
  private readonly maxHeader: number;

  /** Takes ownership of fd (closed by close()). */
  constructor(
    readonly fd: number,
    private readonly opts: FdChannelOptions,
  ) {
    this.addon = loadAddon();
    this.maxFds = opts.maxFds ?? 8;
    this.maxHeader = opts.maxHeader ?? FDPASS_MAX_HEADER;
    if (!Number.isInteger(this.maxFds) || this.maxFds < 0 || this.maxFds > FDPASS_MAX_FDS) throw new RangeError(`FdChannel: maxFds must be 0 to ${FDPASS_MAX_FDS}`);
    this.watch = this.addon.watchFd(fd, { readable: true }, (err, events) => {
      if (err) return this.end(new Error(`FdChannel fd ${fd}: ${err}`));
      if (events & 2 && this.waitingWritable) {
        this.waitingWritable = false;
        this.watch?.setEvents(1);
        this.flush();
      }
      if (events & 5) this.drain(); // readable, or hung up (recvFds then says eof)
    });
  }

  /** Sends one message; resolves once sent (the descriptors may then be closed here). */
  send(header: Uint8Array, fds: readonly number[] = []): Promise<void> {
    if (this.closed) return Promise.reject(new Error(`FdChannel fd ${this.fd}: closed`));
    const buf = Buffer.isBuffer(header) ? header : Buffer.from(header.buffer, header.byteOffset, header.byteLength);
    return new Promise((resolve, reject) => {
      this.queue.push({ header: buf, fds, resolve, reject });
      if (this.queue.length === 1) this.flush();
    });
  }

  /** Lets the event loop end while this channel is idle (its watchers unref'd). */
  unref(): this {
    this.watch?.unref();
    return this;
  }

  /** Stops watching, closes the socket, fails queued sends; onClose is not called. */
  close(): void {
    this.shut();
  }

  private flush(): void {
    while (this.queue.length && !this.closed) {
      const p = this.queue[0]!;
      let sent: boolean;
      try {
        sent = this.addon.sendFds(this.fd, p.fds, p.header);
      } catch (e) {
        this.queue.shift();
        p.reject(e as Error);
        continue;
      }
      if (!sent) {
        if (!this.waitingWritable) {
          this.waitingWritable = true;
          this.watch?.setEvents(3);
        }
        return;
      }
      this.queue.shift();
      p.resolve();
    }
  }

  private drain(): void {
    while (!this.closed) {
      let m;
      try {
        m = this.addon.recvFds(this.fd, this.maxFds, this.maxHeader);
      } catch (e) {
        this.end(e as Error);
        return;
      }
      if (m === 'again') return;
      if (m === 'eof') {
        this.end();
        return;
      }
      this.opts.onMessage(m.header, m.fds);
    }
  }

  private end(err?: Error): void {
    if (this.closed) return;
    this.shut();
    this.opts.onClose?.(err);
  }

  private shut(): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.close();
    this.watch = undefined;
    closeSync(this.fd);
    for (const p of this.queue.splice(0)) p.reject(new Error(`FdChannel fd ${this.fd}: closed`));
  }
}
