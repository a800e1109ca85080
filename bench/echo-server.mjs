// A raw TCP echo server in its own process: the peer that bench/ping.mjs measures REX against.
import { createServer } from 'node:net';

const server = createServer((s) => {
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
  s.on('error', () => {});
});
server.listen(0, '127.0.0.1', () => process.send(server.address().port));
process.on('disconnect', () => process.exit(0));
