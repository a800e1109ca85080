// librex's client (rload, rex_hosts through native/build/bin/rex_hosts_demo)
// against the TypeScript protocol implementation acting as the daemon side
// (src/protocol/connection.ts over a real Unix socket). The same C program
// against a real rexd cluster is the daemon's integration test.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Connection, type PeerHello, type RequestHandler } from '../../src/protocol/connection.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import { packageRoot } from '../../src/util/paths.js';

const demo = join(packageRoot(), 'native', 'build', 'bin', 'rex_hosts_demo');
const run = promisify(execFile);

describe('librex client against the TypeScript protocol stack', () => {
  let dir: string;
  let path: string;
  let server: Server | undefined;
  let hellos: PeerHello[];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'rex-interop-'));
    path = join(dir, 'rexd.sock');
    hellos = [];
  });
  afterEach(async () => {
    if (server) await new Promise((r) => server!.close(r));
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function serve(onRequest: RequestHandler): Promise<void> {
    server = createServer((sock) => {
      const conn = new Connection(sock, {
        initiator: false,
        local: { role: 'daemon', host: 'alpha', software: 'interop-test/0' },
        label: 'librex client',
        onRequest,
        onHello: (h) => hellos.push(h),
      });
      conn.handshake().catch(() => undefined);
      conn.on('close', () => undefined);
    });
    await new Promise<void>((r) => server!.listen(path, r));
  }

  it('rload() and rex_hosts() read LOAD and HOSTS answers', async () => {
    await serve((msg) => {
      if (msg.type === 'LOAD_GET') return { type: 'LOAD', host: 'alpha', load: 0.625, loadavg: [1.25, 1, 0.5], cores: 2, jobs: 1, time: Date.now() };
      if (msg.type === 'HOSTS_GET') {
        return {
          type: 'HOSTS',
          hosts: [
            { name: 'alpha', address: '127.0.0.1', port: 7801, load: 0.625, cores: 2, jobs: 1, reachable: true, ageMs: 12, self: true, loadavg1: 1.25 },
            { name: 'beta', address: '127.0.0.1', port: 7802, reachable: false, error: 'connect ECONNREFUSED 127.0.0.1:7802' },
          ],
        };
      }
      throw new ProtocolError('UNSUPPORTED', `${msg.type} is not served here`, { fatal: false });
    });
    const { stdout } = await run(demo, [], { env: { ...process.env, REX_SOCKET: path } });
    expect(stdout).toBe(
      'rload: 0.625\n' +
        'host alpha 127.0.0.1:7801 load 0.625 cores 2 jobs 1 reachable self age 12ms\n' +
        'host beta 127.0.0.1:7802 cores 0 jobs 0 unreachable error: connect ECONNREFUSED 127.0.0.1:7802\n',
    );
    expect(hellos).toHaveLength(2);
    expect(hellos[0]).toMatchObject({ role: 'client', software: 'librex/0.1.0', version: 1 });
  });

  it('an ERROR answer becomes errno and a detail naming the code and message', async () => {
    await serve(() => {
      throw new ProtocolError('DENIED', 'uid 1234 may not ask for the load', { fatal: false });
    });
    const err = await run(demo, [], { env: { ...process.env, REX_SOCKET: path } }).then(
      () => undefined,
      (e: { code: number; stderr: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toBe(`rload: Permission denied (rexd at ${path} answered ERROR DENIED: uid 1234 may not ask for the load)\n`);
  });
});
