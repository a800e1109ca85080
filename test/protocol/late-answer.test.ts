// A request's timeout after a blocked event loop: the answer that arrived
// while the loop was blocked is read before the request is given up. The
// server runs in a worker thread, so it answers while this thread is blocked.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, expect, it } from 'vitest';
import { Connection } from '../../src/protocol/connection.js';
import { packageRoot } from '../../src/util/paths.js';

const dir = mkdtempSync(join(tmpdir(), 'rex-late-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SERVER = `
const { parentPort, workerData } = require('node:worker_threads');
const net = require('node:net');
import(workerData.module).then(({ Connection }) => {
  const srv = net.createServer((s) => {
    const c = new Connection(s, { initiator: false, local: { role: 'daemon', host: 'srv', software: 'test' }, label: 'client',
      onRequest: (m) => (Buffer.from(m.nonce).toString() === 'never' ? new Promise(() => {}) : { type: 'PONG', nonce: m.nonce, host: 'srv', hops: 0 }) });
    c.handshake().catch(() => {});
  });
  srv.listen(workerData.path, () => parentPort.postMessage('ready'));
});
`;

it('an answer that arrived while the event loop was blocked past the timeout still resolves the request', async () => {
  const path = join(dir, 's');
  const worker = new Worker(SERVER, { eval: true, workerData: { path, module: pathToFileURL(join(packageRoot(), 'dist', 'protocol', 'connection.js')).href } });
  try {
    await new Promise((r) => worker.once('message', r));
    const sock = connect(path);
    await new Promise((r) => sock.once('connect', r));
    const client = new Connection(sock, { initiator: true, local: { role: 'client', software: 'test' }, label: 'server' });
    await client.handshake();
    // Control: with the loop free, the answer comes within the timeout.
    expect(await client.request({ type: 'PING', nonce: Buffer.from('a') }, 1000)).toMatchObject({ type: 'PONG', host: 'srv' });
    // Ask with a 50 ms timeout, then hold this thread's loop for 300 ms: the worker answers meanwhile.
    const late = client.request({ type: 'PING', nonce: Buffer.from('b') }, 50);
    const until = Date.now() + 300;
    while (Date.now() < until) {
      /* a synchronous burst of work, as hashing a large image was */
    }
    expect(await late).toMatchObject({ type: 'PONG', host: 'srv' });
    // A request the peer never answers still times out.
    await expect(client.request({ type: 'PING', nonce: Buffer.from('never') }, 100)).rejects.toThrow(/PING to server got no answer within 100 ms/);
    // One timer serves all pending requests: a short timeout asked after a long one still ends on time,
    // each with its own message, and answers to others in between are unaffected.
    const long = client.request({ type: 'PING', nonce: Buffer.from('never') }, 1500);
    const t0 = Date.now();
    const short = client.request({ type: 'PING', nonce: Buffer.from('never') }, 120);
    expect(await client.request({ type: 'PING', nonce: Buffer.from('c') }, 1000)).toMatchObject({ type: 'PONG' });
    await expect(short).rejects.toThrow(/PING to server got no answer within 120 ms/);
    expect(Date.now() - t0).toBeLessThan(1000);
    await expect(long).rejects.toThrow(/PING to server got no answer within 1500 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    client.destroy();
  } finally {
    await worker.terminate();
  }
});
