/**
 * CALL_CLI (docs/PROTOCOL.md 4.7.1): the native front end's `rex call` (native/frontend/rex.c), served by
 * the local rexd, which is already warm, so that a call from the shell does not pay Node's start-up.
 *
 * rexd runs the Node CLI's own `rex call` (callCommand, src/cli/commands/call.ts) with a CallChannel whose
 * connection is this rexd's request table, entered as the client that sent CALL_CLI: its ENTRIES_GET and
 * CALL go through the same dispatch, authorization and routing as the Node CLI's would over its own
 * connection, and each is logged as theirs would be. Every request and answer is passed through the wire
 * codec, and an ERROR becomes the error the Node CLI's connection would have raised, so the bytes printed
 * and the exit status are the Node CLI's by construction, not by a second implementation.
 */
import { callCommand } from '../cli/commands/call.js';
import type { Request, RequestTable } from '../daemon/dispatch.js';
import type { Reply } from '../protocol/connection.js';
import { remoteError } from '../protocol/connection.js';
import { encodeFrame, ProtocolError } from '../protocol/encode.js';
import { decodeOne } from '../protocol/frame.js';
import { bodyToFrame, CALL_MAX_FRAME, frameToMessage, type Message, type MessageOf, type MsgTypeName } from '../protocol/messages.js';
import { CallChannel, type CallConnection } from '../runtime/transport.js';
import { ErrorCodes, RexError } from '../util/errors.js';

/** A message as the other side of a connection would read it: encoded (refused past the limits) and decoded. */
function overWire(body: { type: MsgTypeName }, stream: number): Message {
  const d = decodeOne(encodeFrame(bodyToFrame(body, stream, true)));
  if ('incomplete' in d) throw new ProtocolError('INTERNAL', `${body.type} did not encode to one frame`);
  return frameToMessage(d.frame);
}

/** The ERROR frame a connection sends for a handler's error (Connection.serveRequest). */
function errorFrame(e: unknown, type: MsgTypeName): Message {
  const pe = e instanceof ProtocolError ? e : new ProtocolError('INTERNAL', `internal error serving ${type}: ${(e as Error)?.message ?? String(e)}`, { fatal: false });
  return overWire({ type: 'ERROR', code: pe.protoCode, message: pe.message, fatal: false } as Reply, 0);
}

/** Serves one CALL_CLI: what `rex call` prints, sent as CALL_OUTPUT frames on its stream, the last with the status. */
export async function serveCallCli(table: RequestTable, m: MessageOf<'CALL_CLI'>, req: Request): Promise<Reply> {
  // The Node CLI names rexd by the socket path it connected to (src/runtime/client.ts): the client says which.
  const label = `rexd at ${m.socket ?? '(socket)'}`;
  const conn: CallConnection = {
    label,
    request: async <N extends MsgTypeName>(body: Omit<MessageOf<N>, 'stream'> & { type: N }, timeoutMs = 5000): Promise<Message> => {
      const msg = overWire(body, m.stream);
      const t0 = performance.now();
      let timer: NodeJS.Timeout | undefined;
      // Connection.request's own deadline and words; a handler's late answer is dropped, as the connection drops it.
      const timedOut = new RexError(ErrorCodes.CONN_TIMEOUT, `${body.type} to ${label} got no answer within ${timeoutMs} ms`);
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(timedOut), timeoutMs);
      });
      let reply: Message;
      try {
        reply = overWire(await Promise.race([table.serve(req.from, msg), late]), m.stream);
      } catch (e) {
        if (e === timedOut) throw e;
        const err = errorFrame(e, body.type);
        table.served(req.from, { msg, requestBytes: 0, responseBytes: 0, ms: performance.now() - t0, error: e instanceof ProtocolError ? e : new ProtocolError('INTERNAL', (err as MessageOf<'ERROR'>).message ?? '') });
        throw remoteError(label, err);
      } finally {
        clearTimeout(timer);
      }
      // The inner request's transaction log row, as the Node CLI's own request would have it.
      table.served(req.from, { msg, requestBytes: 0, responseBytes: 0, ms: performance.now() - t0 });
      if (reply.type === 'ERROR') throw remoteError(label, reply);
      return reply;
    },
  };
  const channel = new CallChannel(conn);
  const out = await callCommand(m.target, m.args ?? [], { ...(m.json ? { json: true } : {}), ...(m.hex !== undefined ? { hex: m.hex } : {}), ...(m.timeout !== undefined ? { timeout: m.timeout } : {}) }, async () => ({ channel, close: () => {} }));
  // stdout, then stderr, in frames of at most CALL_MAX_FRAME bytes; the last one ends the stream with the status.
  const parts: { stdout?: Buffer; stderr?: Buffer }[] = [];
  for (const [key, text] of [['stdout', out.stdout], ['stderr', out.stderr]] as const) {
    const b = Buffer.from(text);
    for (let i = 0; i < b.length; i += CALL_MAX_FRAME) parts.push({ [key]: b.subarray(i, i + CALL_MAX_FRAME) });
  }
  const last = parts.pop() ?? {};
  for (const p of parts) req.from.conn.sendOn(m.stream, { type: 'CALL_OUTPUT', ...p });
  return { type: 'CALL_OUTPUT', ...last, status: out.status };
}
