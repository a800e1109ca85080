/**
 * A call transport straight into a CallManager of this process, without rexd
 * in between (tests, and tools that serve their own programs). The runtime's
 * transports (src/runtime/transport.ts) go through the local rexd instead.
 */
import { stubTarget, toCallError, type Transport } from '../runtime/transport.js';
import type { CallIdentity, CallManager } from './manager.js';

/**
 * A transport straight into `manager`. The stub's owner host and user (from
 * the XML) are ignored: the manager serves this host as its own user;
 * `opts.host` still applies.
 */
export function managerTransport(manager: CallManager, identity?: CallIdentity): Transport {
  return async (target, input, opts) => {
    try {
      return await manager.call(stubTarget(target, opts, false), input, {
        ...(identity ? { identity } : {}),
        ...(opts.timeoutMs !== undefined ? { deadlineMs: opts.timeoutMs } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (e) {
      throw toCallError(e);
    }
  };
}
