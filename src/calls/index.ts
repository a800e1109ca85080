/**
 * Remote calls, the daemon's side (docs/CALLS.md): the call-controller manager
 * and the router rexd runs, program definitions, targets and entry listings.
 * What callers import (rcall, CallChannel, CallError, the stub transports) is
 * the runtime's: src/runtime/.
 */
export { CallManager, DEFAULT_DEADLINE_MS, signature, type ProgramSpec, type CallIdentity, type Authorize, type CallLog, type CallManagerOptions, type ManagerCallOptions, type EntryInfo } from './manager.js';
export { Controller, type ControllerLaunch } from './controller.js';
export { defineBody, ffiCode, type DefineBody } from './define.js';
export { parseTarget, formatTarget, type CallTarget } from './target.js';
export { managerTransport } from './direct.js';
export { loadProgram, loadProgramOffThread, type LoadedProgram, type ProgramConfig } from './programs.js';
export { CallRouter, type CallRouterOptions, type RoutePeer, type RouteCaller } from './router.js';
