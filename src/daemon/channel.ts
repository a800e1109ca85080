/**
 * The channel between the monitor (root) and one session controller (docs/ROOT.md): JSON
 * headers of at most 64 KiB with up to four descriptors per message, over the SOCK_SEQPACKET
 * FdChannel of fdchannel.ts. Each side validates every header it reads (the monitor treats a
 * controller as untrusted: it runs the user's code); a message the addon refuses, or one whose
 * header is not a JSON object, ends the channel.
 */
import { closeSync } from 'node:fs';
import { EventEmitter } from 'node:events';
import { FdChannel } from './fdchannel.js';

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
 * One end of a channel. Emits 'message' (ChannelMessage) and 'close' (Error | undefined) once
 * the other end is gone or broke the rules. Reading starts when the first 'message' listener is
 * added: until then messages wait in the socket (a controller reads its first connection only
 * once it serves).
 */
export class SessionChannel extends EventEmitter {
  private chan: FdChannel | undefined;
  private closed = false;

  constructor(readonly fd: number) {
    super();
    this.on('newListener', (event: string) => {
      if (event === 'message' && !this.chan && !this.closed) this.open();
    });
  }

  private open(): void {
    this.chan = new FdChannel(this.fd, {
      maxFds: CHANNEL_MAX_FDS,
      maxHeader: CHANNEL_MAX_HEADER,
      onMessage: (raw, fds) => {
        let header: unknown;
        try {
          header = JSON.parse(raw.toString('utf8'));
        } catch {
          header = undefined;
        }
        if (typeof header !== 'object' || header === null || Array.isArray(header)) {
          for (const fd of fds) safeClose(fd);
          return this.end(new Error('channel message refused: its header is not a JSON object'));
        }
        this.emit('message', { header: header as Record<string, unknown>, fds } satisfies ChannelMessage);
      },
      onClose: (err) => this.end(err),
    });
  }

  /**
   * Sends a header and descriptors. With `closeAfter`, the descriptors are closed here once the kernel holds them
   * (they were made for the other side). Messages go in order; a full socket queues them.
   */
  send(header: Record<string, unknown>, fds: number[] = [], closeAfter = false): void {
    const buf = Buffer.from(JSON.stringify(header));
    if (buf.length > CHANNEL_MAX_HEADER) throw new RangeError(`channel header of ${buf.length} bytes exceeds ${CHANNEL_MAX_HEADER}`);
    if (fds.length > CHANNEL_MAX_FDS) throw new RangeError(`channel message with ${fds.length} descriptors exceeds ${CHANNEL_MAX_FDS}`);
    const done = () => {
      if (closeAfter) for (const fd of fds) safeClose(fd);
    };
    if (this.closed) return done();
    if (!this.chan) this.open();
    this.chan!.send(buf, fds).then(done, done);
  }

  /** Closes this end (the other end reads end-of-file). */
  close(): void {
    this.end();
  }

  private end(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    if (this.chan) this.chan.close();
    else safeClose(this.fd);
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
