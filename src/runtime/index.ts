/**
 * The REX runtime for TypeScript programs: `import { RexClient } from '@rex-cluster/rex'`.
 * Generated stubs import the versioned entry point `@rex-cluster/rex/runtime/codegen-v1` instead.
 */
export { RexClient, resolveSocket, type ClientOptions } from './client.js';
export {
  spawn,
  exec,
  execFile,
  childProcess,
  RemoteChildProcess,
  type RemoteChildProcessWithoutNullStreams,
  type ChildProcessModule,
  type SpawnOptions,
  type SpawnOptionsWithoutStdio,
  type RexSpawnOptions,
  type CommonOptions,
  type ExecOptions,
  type ExecFileOptions,
  type SpawnError,
  type ExecError,
  type ExecCallback,
  type ExecBufferCallback,
  type PromiseWithChild,
} from './spawn.js';
export { rcall, rexTransport, closeSharedChannel } from './rcall.js';
export { CallError } from './transport.js';
export type { HostEntry, Message, MessageOf } from '../protocol/messages.js';
export type { HostView } from './client.js';
export { RexError, ErrorCodes, isRexError, type ErrorCode } from '../util/errors.js';
