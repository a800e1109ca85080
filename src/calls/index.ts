/**
 * Remote calls (docs/CALLS.md): the call-controller manager rexd runs, the
 * transports generated stubs call through, and the raw `rcall(target, frame)`.
 */
import type { ClientOptions } from '../runtime/client.js';
import { setTransport } from '../runtime/codegen-v1.js';
import { rexTransport } from '../runtime/rcall.js';

export { CallManager, DEFAULT_DEADLINE_MS, signature, type ProgramSpec, type CallIdentity, type Authorize, type CallLog, type CallManagerOptions, type ManagerCallOptions, type EntryInfo } from './manager.js';
export { Controller, type ControllerLaunch } from './controller.js';
export { defineBody, ffiCode, type DefineBody } from './define.js';
export { parseTarget, formatTarget, type CallTarget } from './target.js';
export { CallChannel, CallError, managerTransport, programOf, toCallError, MAX_IN_FLIGHT } from './transport.js';
export { loadProgram, loadProgramOffThread, type LoadedProgram, type ProgramConfig } from './programs.js';
export { CallRouter, type CallRouterOptions, type RoutePeer, type RouteCaller } from './router.js';

export { closeSharedChannel, rcall, rexTransport, sharedChannel } from '../runtime/rcall.js';

/** Makes generated stubs call through the local rexd (the default; this re-installs it after a test transport). */
export function installRexTransport(opts: ClientOptions = {}): void {
  setTransport(rexTransport(opts));
}
