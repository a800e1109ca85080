// docs/PLACEMENT.md, "Authorization and fallbacks": a candidate that refuses before the program
// starts (here DENIED: beta grants the origin only another program, so it stays a reachable candidate
// that answers load queries, and refuses the EXEC itself) makes the origin try the next one; the job
// runs elsewhere, and the refusal is in the refusing host's log.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { RemoteProcess } from '../../src/exec/origin/stub.js';
import { KeyStore, writeFileAtomic } from '../../src/keys/store.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { waitForRows } from '../helpers/logsync.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

describe('placement falls back when a host refuses', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let client: RexClient;

  beforeAll(async () => {
    // round-robin: every host is first in turn, so beta is asked within three jobs whatever the loads.
    ({ cluster, stop } = await startCluster(3, { rc: ['placement-policy : round-robin'] }));
    await cluster.waitAllReachable();
    client = await RexClient.connect({ socket: cluster.host('alpha').socket });
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await stop?.();
  });

  // claim: placement.fallback
  it('six jobs placed while beta refuses alpha all run, none on beta, and beta logged each refusal', async () => {
    const beta = cluster.host('beta');
    const store = new KeyStore(beta.stateDir);
    const alphaId = cluster.host('alpha').identity;
    // One atomic edit: alpha's grant on beta now covers only program "other". Alpha's session stays (it still has a
    // grant), and beta keeps answering its load queries, so it stays a candidate that refuses the EXEC itself.
    const grants = readFileSync(store.grantsFile, 'utf8');
    const limited = grants.replace(new RegExp(`^grant ${alphaId.replace('.', '\\.')}$`, 'm'), `grant ${alphaId} program=other`);
    expect(limited).not.toBe(grants);
    writeFileAtomic(store.grantsFile, limited, 0o600);
    const hosts: string[] = [];
    for (let i = 0; i < 6; i++) {
      let out = '';
      const rp = await RemoteProcess.start(client.conn, { path: '/bin/echo', argv: ['/bin/echo', `job${i}`], env: ['PATH=/usr/bin:/bin'] }, (_fd, data, done) => {
        if (data) out += data.toString();
        done();
      });
      rp.end();
      expect((await rp.exited).code).toBe(0);
      expect(out).toBe(`job${i}\n`);
      hosts.push(rp.host);
    }
    expect(hosts).not.toContain('beta');
    expect(new Set(hosts)).toEqual(new Set(['alpha', 'gamma']));
    const refused = (rows: { message_type: string | null; reason: string | null }[]) => rows.filter((r) => r.message_type === 'EXEC' && /not granted/.test(r.reason ?? ''));
    const rows = await waitForRows(join(beta.stateDir, 'rex-log.sqlite'), { outcome: 'denied', identity: alphaId }, (r) => refused(r).length > 0);
    expect(refused(rows).length).toBeGreaterThanOrEqual(1);
  });
});
