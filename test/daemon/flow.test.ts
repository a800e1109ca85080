/**
 * Backpressure (docs/PROTOCOL.md 3.1): a peer that does not read makes the
 * other side stop, not buffer without bound, in both directions.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HIGH_WATER, Connection } from '../../src/protocol/connection.js';
import { PREFACE, LIMITS } from '../../src/protocol/constants.js';
import { encodeFrame, FrameDecoder } from '../../src/protocol/frame.js';
import { messageToFrame } from '../../src/protocol/messages.js';

const servers: Server[] = [];
const sockets: Socket[] = [];
afterEach(() => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const s of servers.splice(0)) s.close();
});

function listen(onSocket: (s: Socket) => void): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer((s) => {
      sockets.push(s);
      onSocket(s);
    }).listen(0, '127.0.0.1', () => resolve((srv.address() as { port: number }).port));
    servers.push(srv);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const DATA = new Uint8Array(LIMITS.maxPingData);
const FRAME = encodeFrame(messageToFrame({ type: 'PING', stream: 1, data: DATA })).length;

describe('backpressure', () => {
  // claim: protocol.flow-control
  it('a client that sends requests but never reads the answers stops the server from reading, and gets every answer once it reads', async () => {
    let conn: Connection | undefined;
    let served = 0;
    const port = await listen((s) => {
      conn = new Connection(s, {
        initiator: false,
        local: { role: 'daemon', host: 'srv', software: 'test' },
        label: 'slow client',
        onRequest: (m) => {
          served++;
          return { type: 'PONG', ...(m.type === 'PING' && m.data ? { data: m.data } : {}), host: 'srv' };
        },
      });
      void conn.handshake().catch(() => {});
    });
    const N = 400; // 400 x 64 KiB = 25 MiB of answers
    const client = connect({ port, host: '127.0.0.1' });
    sockets.push(client);
    await new Promise((r) => client.once('connect', r));
    client.pause(); // the slow reader
    client.write(PREFACE);
    client.write(encodeFrame(messageToFrame({ type: 'HELLO', stream: 0, versionMin: 1, versionMax: 1, role: 1 })));
    for (let i = 0; i < N; i++) client.write(encodeFrame(messageToFrame({ type: 'PING', stream: 2 * i + 1, data: DATA })));
    // Let the server run until it can do no more.
    let last = -1;
    for (let i = 0; i < 50 && served !== last; i++) {
      last = served;
      await sleep(100); // sleep-ok: a quiet period is the event (no request served for 100 ms)
    }
    expect(served).toBeLessThan(N); // it stopped reading requests...
    expect(conn!.queuedBytes).toBeLessThanOrEqual(HIGH_WATER + FRAME); // ...instead of queueing every answer
    // The reader catches up: every answer arrives, in full.
    const dec = new FrameDecoder();
    let answers = 0;
    client.on('data', (d: Buffer) => dec.push(d, (f) => (answers += f.type === 0x11 ? 1 : 0)));
    client.resume();
    await vi.waitFor(() => expect(answers).toBe(N), { timeout: 20_000, interval: 25 });
    expect(served).toBe(N);
  });

  // claim: protocol.flow-control
  it('requests to a peer that does not read wait in the requester instead of piling up in its socket', async () => {
    const port = await listen((s) => {
      // Answer HELLO, then stop reading for good.
      s.once('data', () => {
        s.write(encodeFrame(messageToFrame({ type: 'HELLO', stream: 0, version: 1, role: 3, host: 'stuck' })));
        s.pause();
      });
    });
    const sock = connect({ port, host: '127.0.0.1' });
    sockets.push(sock);
    await new Promise((r) => sock.once('connect', r));
    const conn = new Connection(sock, { initiator: true, local: { role: 'client', software: 'test' }, label: 'stuck peer', timeoutMs: 60_000 });
    await conn.handshake();
    const pending = Array.from({ length: 400 }, () => conn.request({ type: 'PING', data: DATA }, 60_000).catch(() => undefined));
    await vi.waitFor(() => expect(conn.congested).toBe(true), { timeout: 10_000, interval: 20 });
    expect(conn.queuedBytes).toBeLessThanOrEqual(HIGH_WATER + 2 * FRAME);
    conn.destroy();
    await Promise.all(pending);
  });
});
