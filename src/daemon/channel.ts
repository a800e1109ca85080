/**
 * The channel between the monitor (root) and one session controller (docs/ROOT.md): a
 * SOCK_SEQPACKET socket pair whose messages are a JSON header of at most 64 KiB and up to
 * four descriptors (SCM_RIGHTS), read and written without blocking through the addon's
 * sendFds/recvFds and a poll handle. Messages keep their boundaries, so a header is never
 * split or merged with the next one; each side validates every header it reads (the
 * monitor treats a controller as untrusted: it runs the user's code).
 */
import { closeSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { loadAddon, type FdWatcher, type RexAddon } from '../util/native.js';

/** Most descriptors a channel message carries. */
export const CHANNEL_MAX_FDS = 4;
/** Largest header a channel message carries (bytes). */
export const CHANNEL_MAX_HEADER = 64 * 1024;

/** One message: its header, parsed, and the descriptors that came with it (the receiver owns them). */
export interface ChannelMessage {
  header: Record<string, unknown>;
  fds: number[];
}

/**
 * One end of a channel. Emits 'message' (ChannelMessage), 'error' (Error: a refused message,
 * already dropped with its descriptors) and 'close' once the other end is gone.
 */
export class FdChannel extends EventEmitter {
  private readonly addon: RexAddon;
  private watch: FdWatcher | undefined;
  private writeWatch: FdWatcher | undefined;
  private readonly pending: { header: Buffer; fds: number[]; closeAfter: boolean }[] = [];
  private closed = false;

  constructor(readonly fd: number) {
    super();
    this.addon = loadAddon();
    // Messages wait in the socket until someone listens for them: a controller reads its first connection only
    // once it serves, and an 'message' emitted before that would be lost with its descriptors.
    this.on('newListener', (event: string) => {
      if (event === 'message' && !this.watch && !this.closed) this.watch = this.addon.watchFd(fd, { readable: true }, (err) => this.readable(err));
    });
  }

  /**
   * Sends a header and descriptors. With `closeAfter`, the descriptors are closed here once sent
   * (they were made for the other side). Messages are sent in order; a full socket queues them.
   */
  send(header: Record<string, unknown>, fds: number[] = [], closeAfter = false): void {
    const buf = Buffer.from(JSON.stringify(header));
    if (buf.length > CHANNEL_MAX_HEADER) throw new RangeError(`channel header of ${buf.length} bytes exceeds ${CHANNEL_MAX_HEADER}`);
    if (fds.length > CHANNEL_MAX_FDS) throw new RangeError(`channel message with ${fds.length} descriptors exceeds ${CHANNEL_MAX_FDS}`);
    if (this.closed) {
      if (closeAfter) for (const fd of fds) safeClose(fd);
      return;
    }
    this.pending.push({ header: buf, fds, closeAfter });
    this.flush();
  }

  private flush(): void {
    while (this.pending.length > 0 && !this.closed) {
      const m = this.pending[0]!;
      let sent: boolean;
      try {
        sent = this.addon.sendFds(this.fd, m.fds, m.header);
      } catch (e) {
        // The other end is gone (EPIPE, ECONNRESET): everything queued is dropped with it.
        this.end(e as Error);
        return;
      }
      if (!sent) {
        this.writeWatch ??= this.addon.watchFd(this.fd, { writable: true }, () => {
          this.writeWatch?.close();
          this.writeWatch = undefined;
          this.flush();
        });
        return;
      }
      this.pending.shift();
      if (m.closeAfter) for (const fd of m.fds) safeClose(fd);
    }
  }

  private readable(err: string | null): void {
    if (err) return this.end(new Error(`channel: ${err}`));
    for (;;) {
      if (this.closed) return;
      let m;
      try {
        m = this.addon.recvFds(this.fd, CHANNEL_MAX_FDS, CHANNEL_MAX_HEADER);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ETOOMANYREFS' || code === 'EMSGSIZE' || code === 'EBADMSG') {
          this.emit('error', new Error(`channel message refused: ${(e as Error).message}`));
          continue;
        }
        return this.end(e as Error);
      }
      if (m === 'again') return;
      if (m === 'eof') return this.end();
      let header: unknown;
      try {
        header = JSON.parse(m.header.toString('utf8'));
      } catch {
        header = undefined;
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) {
        for (const fd of m.fds) safeClose(fd);
        this.emit('error', new Error('channel message refused: its header is not a JSON object'));
        continue;
      }
      this.emit('message', { header: header as Record<string, unknown>, fds: m.fds } satisfies ChannelMessage);
    }
  }

  /** Closes this end (the other end reads end-of-file). */
  close(): void {
    this.end();
  }

  private end(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.watch?.close();
    this.writeWatch?.close();
    this.watch = this.writeWatch = undefined;
    for (const m of this.pending.splice(0)) if (m.closeAfter) for (const fd of m.fds) safeClose(fd);
    safeClose(this.fd);
    this.emit('close', err);
  }
}

/** Closes a descriptor that may already be closed. */
export function safeClose(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    /* already closed */
  }
}
