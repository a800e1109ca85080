/**
 * Waiting for the transaction log without guessing how long its batches take.
 * rexd records rows in the order things happen and writes them in that order,
 * so a row recorded after an event is on disk only once the event's rows are:
 * {@link logBarrier} makes such a row (a local PING under a unique program
 * name) and polls until it is there.
 */
import { vi } from 'vitest';
import { queryLog, type LogQuery, type LogRow } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';

let seq = 0;

/** Resolves once every row rexd at `socket` recorded before the call is in `db`. */
export async function logBarrier(socket: string, db: string, timeout = 10_000): Promise<void> {
  const program = `barrier${process.pid}x${++seq}`;
  // Rows since just before the barrier, all of them: a busy host (peer polls, other tests' work) may log more than a
  // page of rows after it, so "among the newest 20" could miss it for good.
  const since = Date.now() - 1000;
  const c = await RexClient.connect({ socket, program });
  try {
    await c.ping();
  } finally {
    c.close();
  }
  await vi.waitFor(
    () => {
      if (!queryLog(db, { since, limit: 100_000 }).some((r) => r.identity?.endsWith(`.${program}`))) throw new Error(`the barrier row (program ${program}) is not in ${db} yet`);
    },
    { timeout, interval: 25 },
  );
}

/** The rows matching `q` once the log has caught up with everything before this call. */
export async function settledRows(socket: string, db: string, q: LogQuery): Promise<LogRow[]> {
  await logBarrier(socket, db);
  return queryLog(db, q);
}

/** Polls `db` until `pred` holds for the rows matching `q`; returns them (for rows of a remote host's doing). */
export function waitForRows(db: string, q: LogQuery, pred: (rows: LogRow[]) => boolean = (r) => r.length > 0, timeout = 10_000): Promise<LogRow[]> {
  return vi.waitFor(
    () => {
      const rows = queryLog(db, q);
      if (!pred(rows)) throw new Error(`no matching rows in ${db} for ${JSON.stringify(q)} (${rows.length} rows)`);
      return rows;
    },
    { timeout, interval: 25 },
  );
}
