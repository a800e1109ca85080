/** A connected pair of Unix sockets for tests of the connection layer. */
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Two ends of one real Unix-socket connection. */
export async function socketpair(): Promise<[Socket, Socket]> {
  const dir = mkdtempSync(join(tmpdir(), 'rex-sp-'));
  const path = join(dir, 's');
  const srv = createServer();
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  await new Promise<void>((r) => srv.listen(path, r));
  const a = connect(path);
  await new Promise((r) => a.once('connect', r));
  const b = await accepted;
  srv.close();
  rmSync(dir, { recursive: true, force: true });
  return [a, b];
}
