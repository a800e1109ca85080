/**
 * The default way TypeScript programs make remote calls: one shared
 * connection to the local rexd (many calls in flight on it, answers matched by
 * stream), used by `rcall(target, frame)` and by generated stubs when no other
 * transport is installed. The connection does not keep the process alive
 * while idle.
 */
import { RexClient, type ClientOptions } from './client.js';
import { CallChannel, type CallOptions, type Transport } from './transport.js';

let shared: { key: string; channel: Promise<CallChannel> } | undefined;
const clients: RexClient[] = [];

/** Closes the connection rcall() and the default stub transport share. */
export function closeSharedChannel(): void {
  for (const c of clients.splice(0)) c.close();
  shared = undefined;
}

/** A channel on a connection to the local rexd, shared by everyone asking with the same options. */
export function sharedChannel(opts: ClientOptions = {}): Promise<CallChannel> {
  const key = JSON.stringify(opts);
  if (!shared || shared.key !== key) {
    const channel = RexClient.connect(opts).then((c) => {
      clients.push(c.unref());
      c.conn.on('close', () => {
        if (shared?.channel === channel) shared = undefined; // rexd restarted: the next call reconnects
      });
      return new CallChannel(c.conn);
    });
    channel.catch(() => {
      if (shared?.channel === channel) shared = undefined; // the next call tries again
    });
    shared = { key, channel };
  }
  return shared.channel;
}

/**
 * Sends an input frame to HOST.USER.PROGRAM.FUNCTION (HOST `*` or absent: the
 * host rexd's placement picks among those offering PROGRAM) through the local rexd and resolves with
 * the output frame. Failures are CallErrors (CALL_CRASHED, CALL_TIMEOUT,
 * CALL_DENIED, CALL_NO_ENTRY, CALL_BAD_FRAME, ...).
 */
export async function rcall(target: string, frame: Uint8Array, opts: CallOptions & { client?: ClientOptions; async?: boolean } = {}): Promise<Uint8Array> {
  return (await sharedChannel(opts.client)).call(target, frame, opts);
}

/** The stub transport through the local rexd (what generated stubs use unless another is installed). */
export function rexTransport(opts: ClientOptions = {}): Transport {
  return async (target, input, callOpts) => (await sharedChannel(opts)).transport()(target, input, callOpts);
}
