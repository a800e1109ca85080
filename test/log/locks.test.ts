// The transaction log keeps SQLite's locks: its private-file check after the
// database is open must not open and close the database's files, because
// closing any descriptor of a file drops every POSIX lock the process holds on
// it (fcntl(2)). Without its shared lock on the -shm file, another process
// opening the log (rex log, a test's reader) took itself for the first,
// truncated the -shm rexd had mapped, and rexd died of SIGBUS in walFindFrame.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { queryLog, TransactionLog } from '../../src/log/txlog.js';

const dir = mkdtempSync(join(tmpdir(), 'rex-log-locks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** POSIX locks this process holds on the file's inode, from /proc/locks. */
function locksOn(file: string): string[] {
  const ino = statSync(file).ino;
  return readFileSync('/proc/locks', 'utf8')
    .split('\n')
    .filter((l) => / POSIX /.test(l) && l.split(/\s+/)[4] === String(process.pid) && l.split(/\s+/)[5]?.endsWith(`:${ino}`));
}

describe('the transaction log and SQLite\'s locks', () => {
  it('holds its shared lock on the -shm file once open, and keeps it while another reader comes and goes', async () => {
    const file = join(dir, 'rex-log.sqlite');
    const log = new TransactionLog(file, 'h');
    try {
      log.record({ kind: 'transaction', outcome: 'ok', target: 'x' });
      await log.flush();
      expect(locksOn(`${file}-shm`).length, 'POSIX locks of this process on the -shm file').toBeGreaterThan(0);
      expect(queryLog(file, { limit: 10 }).length).toBeGreaterThan(0);
      log.record({ kind: 'transaction', outcome: 'ok', target: 'y' });
      await log.flush();
      expect(locksOn(`${file}-shm`).length).toBeGreaterThan(0);
      expect(queryLog(file, { limit: 10 }).map((r) => r.target)).toEqual(['y', 'x']);
    } finally {
      log.close();
    }
  });
});
