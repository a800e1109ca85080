import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../src/util/sqlite.js';
import { afterAll, describe, expect, it } from 'vitest';
import { sinceTime } from '../../src/cli/commands/log.js';
import { queryLog, TransactionLog } from '../../src/log/txlog.js';

const tmp = mkdtempSync(join(tmpdir(), 'rex-log-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('transaction log', () => {
  it('records events in batches and reads them back newest first with filters', () => {
    const file = join(tmp, 'a', 'log.sqlite');
    const log = new TransactionLog(file, 'beta');
    const t0 = Date.parse('2026-01-01T00:00:00Z');
    log.record({ time: t0, kind: 'auth', identity: 'alpha.alice', identityId: 'ID1', fromHost: 'alpha', peerAddress: '10.0.0.1', outcome: 'ok' });
    log.record({ time: t0 + 1000, kind: 'transaction', identity: 'alpha.alice.render', identityId: 'ID1', fromHost: 'alpha', peerAddress: '10.0.0.1', messageType: 'PING', target: 'beta', outcome: 'ok', bytesIn: 40, bytesOut: 44, durationMs: 0.1234567 });
    log.record({ time: t0 + 2000, kind: 'auth', identity: 'mallory.root', identityId: 'ID2', peerAddress: '10.6.6.6', outcome: 'denied', reason: 'unknown key' });
    log.close();
    const all = queryLog(file);
    expect(all.map((r) => r.identity)).toEqual(['mallory.root', 'alpha.alice.render', 'alpha.alice']);
    expect(all[1]).toMatchObject({ host: 'beta', kind: 'transaction', message_type: 'PING', target: 'beta', bytes_in: 40, bytes_out: 44, duration_ms: 0.123, time: '2026-01-01T00:00:01.000Z' });
    expect(queryLog(file, { identity: 'alpha.alice' }).map((r) => r.identity)).toEqual(['alpha.alice.render', 'alpha.alice']); // HOST.USER covers its programs
    expect(queryLog(file, { identity: 'ID2' }).map((r) => r.identity)).toEqual(['mallory.root']);
    expect(queryLog(file, { outcome: 'denied' })).toHaveLength(1);
    expect(queryLog(file, { host: 'alpha' })).toHaveLength(2);
    expect(queryLog(file, { host: 'beta' })).toHaveLength(3); // the logging host matches too
    expect(queryLog(file, { since: t0 + 500 })).toHaveLength(2);
    expect(queryLog(file, { kind: 'auth', limit: 1 }).map((r) => r.identity)).toEqual(['mallory.root']);
    expect(queryLog(file, { identity: 'alpha%' })).toEqual([]); // LIKE wildcards are escaped
  });

  it('uses only portable column types (TEXT, INTEGER, REAL)', () => {
    const file = join(tmp, 'types.sqlite');
    new TransactionLog(file, 'h').close();
    const db = openDatabase(file, { readonly: true });
    const types = new Set((db.prepare("SELECT type FROM pragma_table_info('rex_log')").all() as { type: string }[]).map((r) => r.type));
    db.close();
    expect([...types].sort()).toEqual(['INTEGER', 'REAL', 'TEXT']);
  });

  it('a log that cannot be opened is reported once and never throws at the caller', () => {
    const blocker = join(tmp, 'not-a-dir');
    writeFileSync(blocker, 'x');
    const errors: string[] = [];
    const log = new TransactionLog(join(blocker, 'log.sqlite'), 'h', (e) => errors.push(e.message));
    log.record({ kind: 'auth', outcome: 'ok' });
    log.flush();
    log.close();
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/cannot open the transaction log .*not-a-dir\/log\.sqlite/);
  });

  it('reading a log that does not exist says so', () => {
    expect(() => queryLog(join(tmp, 'none.sqlite'))).toThrow(/cannot open the transaction log .*none\.sqlite/);
  });

  it('--since takes a duration ago or an ISO time', () => {
    const now = Date.parse('2026-01-01T12:00:00Z');
    expect(sinceTime('10m', now)).toBe(now - 600_000);
    expect(sinceTime('2h', now)).toBe(now - 7_200_000);
    expect(sinceTime('7d', now)).toBe(now - 7 * 86_400_000);
    expect(sinceTime('2026-01-01T11:00:00Z', now)).toBe(now - 3_600_000);
    expect(() => sinceTime('yesterday', now)).toThrow('--since yesterday: expected a duration ago (30s, 10m, 2h, 7d) or an ISO-8601 time');
  });
});
