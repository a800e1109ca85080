// A raw echo server in its own process: the peer that bench/ping.mjs and bench/profile.mjs measure REX
// against. Plain TCP by default; with `tls KEYFILE CERTFILE`, TLS 1.3 with that key, asking the client
// for its certificate as rexd does (the floor of one hop between rexds).
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { createServer as createTlsServer } from 'node:tls';

const [mode, keyFile, certFile] = process.argv.slice(2);
const echo = (s) => {
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
  s.on('error', () => {});
};
const server =
  mode === 'tls'
    ? createTlsServer({ key: readFileSync(keyFile), cert: readFileSync(certFile), minVersion: 'TLSv1.3', requestCert: true, rejectUnauthorized: false }, echo)
    : createServer(echo);
server.listen(0, '127.0.0.1', () => process.send(server.address().port));
process.on('disconnect', () => process.exit(0));
