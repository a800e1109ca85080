// Shared by the benchmarks (not a benchmark itself): percentiles and the raw
// TCP echo round trip that REX's round trips are compared with.
import { fork } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { connect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/** Median, p90, p99 and min of a list of round-trip times. */
export function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p90: q(0.9), p99: q(0.99), min: s[0] };
}

/** Milliseconds from a monotonic clock. */
export const ms = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Round trips (ms) of `size`-byte messages to a raw TCP echo server in a
 * separate Node process (as rexd is one), `n` after `warmup` unmeasured ones;
 * with `tls` ({keyFile, certFile, key, cert}: PEM files and texts), over TLS 1.3
 * with client certificates, as between rexds.
 */
export async function tcpEchoRtts(size, n, warmup, tls) {
  const server = fork(new URL('./echo-server.mjs', import.meta.url), tls ? ['tls', tls.keyFile, tls.certFile] : [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const port = await new Promise((r) => server.once('message', r));
  const sock = await new Promise((r, j) => {
    const s = tls
      ? tlsConnect({ host: '127.0.0.1', port, key: tls.key, cert: tls.cert, minVersion: 'TLSv1.3', rejectUnauthorized: false })
      : connect({ host: '127.0.0.1', port });
    s.setNoDelay(true);
    s.once(tls ? 'secureConnect' : 'connect', () => r(s));
    s.once('error', j);
  });
  const msg = Buffer.alloc(size, 7);
  const rtts = [];
  let pending;
  let got = 0;
  sock.on('data', (d) => {
    got += d.length;
    if (got >= size) {
      got -= size;
      pending();
    }
  });
  for (let i = 0; i < warmup + n; i++) {
    const t0 = ms();
    await new Promise((r) => {
      pending = r;
      sock.write(msg);
    });
    if (i >= warmup) rtts.push(ms() - t0);
  }
  sock.destroy();
  server.kill();
  return rtts;
}

/**
 * One headline figure for `npm run bench`'s results table (bench/results.mjs):
 * REX, its peer measured in the same run, the ratio and the target. Printed
 * as a plain line, and appended as one JSON line to $REX_BENCH_RESULTS when
 * bench/run.mjs collects them. `better` says which way the ratio should go:
 * 'lower' (a time: REX / peer <= target) or 'higher' (a rate: REX / peer >= target).
 */
export function record({ measure, rex, peer, peerName, unit, target, better = 'lower' }) {
  const ratio = peer ? rex / peer : undefined;
  const met = ratio === undefined || target === undefined ? undefined : better === 'lower' ? ratio <= target : ratio >= target;
  const row = { bench: process.argv[1]?.split('/').pop()?.replace(/\.mjs$/, ''), measure, rex, peer, peerName, unit, ratio, target, better, met };
  const tgt = target === undefined ? '' : `   target ${better === 'lower' ? '<=' : '>='} ${+target.toFixed(2)}x: ${met ? 'met' : 'NOT met'}`;
  console.log(`result: ${measure}: REX ${fmtNum(rex)} ${unit}${peer ? `, ${peerName} ${fmtNum(peer)} ${unit}, ratio ${ratio.toFixed(2)}x` : ''}${tgt}`);
  if (process.env.REX_BENCH_RESULTS) appendFileSync(process.env.REX_BENCH_RESULTS, `${JSON.stringify(row)}\n`);
  return row;
}

/** A figure with three significant digits at most (1,234 / 12.3 / 0.123). */
export function fmtNum(x) {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? Math.round(x).toLocaleString('en-US') : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
}
