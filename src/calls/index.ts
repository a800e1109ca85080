/**
 * Remote calls (docs/CALLS.md): the call-controller manager rexd runs, the
 * transports generated stubs call through, and the raw `rcall(target, frame)`.
 */
import { RexClient, type ClientOptions } from '../runtime/client.js';
import { setTransport, type CallOptions } from '../runtime/codegen-v1.js';
import { CallChannel } from './transport.js';

export { CallManager, DEFAULT_DEADLINE_MS, signature, type ProgramSpec, type CallIdentity, type Authorize, type CallLog, type CallManagerOptions, type ManagerCallOptions, type EntryInfo } from './manager.js';
export { Controller, type ControllerLaunch } from './controller.js';
export { defineBody, ffiCode, type DefineBody } from './define.js';
export { parseTarget, formatTarget, type CallTarget } from './target.js';
export { CallChannel, CallError, managerTransport, programOf, toCallError, MAX_IN_FLIGHT } from './transport.js';
export { loadProgram, type ProgramConfig } from './programs.js';
export { CallRouter, type CallRouterOptions, type RoutePeer, type RouteCaller } from './router.js';

let shared: { key: string; channel: Promise<CallChannel> } | undefined;
const clients: RexClient[] = [];

/** Closes the connection rcall() and installRexTransport() share (so that a program can exit). */
export function closeSharedChannel(): void {
  for (const c of clients.splice(0)) c.close();
  shared = undefined;
}

/** A channel on a connection to the local rexd, shared by rcall() and installRexTransport() with the same options. */
export function sharedChannel(opts: ClientOptions = {}): Promise<CallChannel> {
  const key = JSON.stringify(opts);
  if (!shared || shared.key !== key) {
    const channel = RexClient.connect(opts).then((c) => {
      clients.push(c);
      return new CallChannel(c.conn);
    });
    channel.catch(() => {
      if (shared?.channel === channel) shared = undefined; // the next call tries again
    });
    shared = { key, channel };
  }
  return shared.channel;
}

/** Sends an input frame to HOST.USER.PROGRAM.FUNCTION through the local rexd and resolves with the output frame. */
export async function rcall(target: string, frame: Uint8Array, opts: CallOptions & { client?: ClientOptions } = {}): Promise<Uint8Array> {
  return (await sharedChannel(opts.client)).call(target, frame, opts);
}

/** Makes generated stubs call through the local rexd. */
export function installRexTransport(opts: ClientOptions = {}): void {
  setTransport(async (target, input, callOpts) => (await sharedChannel(opts)).transport()(target, input, callOpts));
}
