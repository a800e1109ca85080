/**
 * The live-daemon fuzzer (issue 12): mutated and random frames sent to a running
 * rexd over (a) its Unix socket as its local client, (b) its TLS port with a key
 * it has enrolled and granted, after a valid HELLO, and (c) its TLS port before
 * HELLO (with that key or with no certificate). Batches open with a valid
 * HELLO or none, a mutated one or two; then well-formed but wrong frames
 * ('deep') or damaged ones ('rough'), split into writes at random points, one
 * to three connections at once. After every batch rexd must still run and
 * answer a PING within a bound; at the end its descriptors must be back to
 * where they were and its memory must not have grown past a bound (see
 * RSS_GROWTH_MAX), and its log must show no request handler that failed.
 *
 * Budget: REX_FUZZ_SECONDS (default 20 here; `npm run fuzz` gives it 300) and
 * REX_FUZZ_RUNS (batches, unbounded by default). The seed is random and printed;
 * REX_FUZZ_SEED=N replays a run (the same batches, in the same order);
 * REX_FUZZ_CHANNELS=unix,tls,tls-pre picks the channels.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore, type OwnIdentity } from '../../src/keys/store.js';
import { PREFACE } from '../../src/protocol/constants.js';
import { decodeOne, encodeFrame } from '../../src/protocol/frame.js';
import { MsgType, frameToMessage, messageToFrame, msgTypeName } from '../../src/protocol/messages.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { byteMutationArb, frameCorpus, mutatedFrameArb, mutationArb, structuralMutationArb, type Mutation } from '../helpers/mutate.js';
import { RawPeer } from '../helpers/raw.js';

type Channel = 'unix' | 'tls' | 'tls-pre';

const SEED = process.env.REX_FUZZ_SEED ? Number(process.env.REX_FUZZ_SEED) : Math.floor(Math.random() * 0x7fffffff);
const SECONDS = Number(process.env.REX_FUZZ_SECONDS ?? 20);
const RUNS = Number(process.env.REX_FUZZ_RUNS ?? 1_000_000);
/** Which channels to fuzz (REX_FUZZ_CHANNELS=unix,tls,tls-pre), to tell apart where a finding comes from. */
const CHANNELS = (process.env.REX_FUZZ_CHANNELS ?? 'unix,tls,tls-pre').split(',') as Channel[];
/** A PING on a fresh connection must be answered within this, after every batch. */
const PING_BOUND_MS = Number(process.env.REX_FUZZ_PING_MS ?? 2000);
/** Descriptors rexd may hold above its starting count once every fuzz connection is closed. */
const FD_SLACK = 4;
/**
 * RSS growth allowed over the run, from the RSS after WARM_ROUNDS rounds. rexd is
 * a Node process: V8 grows its heap in steps and returns it lazily, and the first
 * TLS handshakes, pty jobs and decoder paths load code and caches once (rexd
 * starts lean and loads a feature's modules when first served). Measured: a 20 s run adds 20-30 MiB,
 * most of it in the first 400 rounds (the trend is printed every 100 rounds).
 * Past that plateau RSS still creeps up by about 1.2 KiB per round (0.7 KiB with
 * MALLOC_ARENA_MAX=1) on the Unix socket and on TLS alike, while the JS heap
 * does not grow (heap snapshots of rexd at rounds 1,500 and 7,000: 16.2 and
 * 15.7 MB) and descriptors stay flat: native memory, partly allocator
 * fragmentation, not a leak of JS objects or buffers. Measured again on
 * 2026-12-07 (the tree of 2883442 and the next alike): 37-45 MiB in a 20 s run alone, levelling off at about
 * 120 MiB of RSS after some 600 rounds, and 54 MiB once with the whole suite loading both cores (fewer rounds,
 * later collections). So the bound is 64 MiB for the 20 s of `npm test`, plus 0.1 MiB per further second for
 * long runs (300 s: 92 MiB); a leak of one 16 KiB buffer per round would exceed it before the end.
 */
/** Rounds after which rexd has loaded the code of the paths the fuzz reaches: the RSS baseline is taken then. */
const WARM_ROUNDS = 100;
const RSS_GROWTH_MAX = (process.env.REX_FUZZ_RSS_MIB ? Number(process.env.REX_FUZZ_RSS_MIB) : 64 + 0.1 * Math.max(0, SECONDS - 20)) * 1024 * 1024;
/** Stream of the PING that ends a batch, to tell its PONG from others. */
const PROBE_STREAM = 0x7ffffff1;

type Opening = 'hello' | 'none' | 'preface' | 'mutated-hello' | 'two-hellos' | 'peer-hello';

interface Batch {
  channel: Channel;
  opening: Opening;
  frames: { bytes: Buffer; how: string }[];
  /** For 'mutated-hello': what is done to the HELLO. */
  helloMutations: Mutation[];
  /** Where to split the bytes into separate writes (fractions of the length). */
  cuts: number[];
  end: 'probe' | 'close' | 'half-close';
  /** TLS without a client certificate (channel tls-pre only). */
  anonymous?: boolean;
}

/** True when every frame of `b` is a valid message of its type (or of a type unknown to version 1, which is not fatal). */
function typedFrames(b: Buffer): boolean {
  try {
    for (let rest = b; rest.length; ) {
      const r = decodeOne(rest);
      if (!('frame' in r)) return false;
      if (msgTypeName(r.frame.type).startsWith('0x')) return true;
      frameToMessage(r.frame);
      rest = rest.subarray(r.consumed);
    }
    return true;
  } catch {
    return false;
  }
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** What rexd's descriptors point at ("socket:[123]", "/dev/ptmx", ...), for a failure message. */
function fdTargets(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try {
      return `${fd} -> ${readlinkSync(`/proc/${pid}/fd/${fd}`)}`;
    } catch {
      return `${fd} (gone)`;
    }
  });
}

/** The `ss` lines of the sockets among `fds` (their kind, state and peer), when ss is installed. */
function socketLines(fds: string[]): string {
  const inodes = fds.map((f) => /socket:\[(\d+)\]/.exec(f)?.[1]).filter((x): x is string => !!x);
  if (!inodes.length) return '';
  try {
    const out = execFileSync('ss', ['-anpe'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n');
    return '\n' + out.filter((l) => inodes.some((i) => new RegExp(`ino:${i}\\b|\\s${i}\\s`).test(l))).join('\n');
  } catch {
    return '';
  }
}

function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m![1]) * 1024;
}

describe('live rexd under mutated and random frames', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let target: { pid: number; socket: string; host: string; port: number; logFile: string };
  let key: OwnIdentity;
  const corpus = frameCorpus();
  const hello = (role: number, host?: string): Buffer =>
    encodeFrame(messageToFrame({ type: 'HELLO', stream: 0, versionMin: 1, versionMax: 1, role, software: 'fuzz', ...(host ? { host } : {}) }));
  const probe = encodeFrame(messageToFrame({ type: 'PING', stream: PROBE_STREAM, nonce: new Uint8Array(8).fill(9) }));

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false }));
    await cluster.waitAllReachable();
    const b = cluster.host('beta');
    target = { pid: b.pid!, socket: b.socket, host: b.address, port: b.port, logFile: b.logFile };
    // alpha's own key: enrolled on beta and granted by the cluster fixture.
    key = new KeyStore(cluster.host('alpha').stateDir).load(cluster.host('alpha').identity);
  });
  afterAll(async () => {
    await stop?.();
  });

  async function open(b: Batch): Promise<RawPeer> {
    return b.channel === 'unix' ? RawPeer.open({ path: target.socket }) : RawPeer.openTls({ host: target.host, port: target.port, ...(b.anonymous ? {} : { own: key }) });
  }

  function bytesOf(b: Batch): Buffer {
    const opening: Record<Opening, Buffer[]> = {
      hello: [PREFACE, hello(1)],
      none: [],
      preface: [PREFACE],
      'mutated-hello': [PREFACE, b.helloMutations.reduce((x, m) => m(x), hello(1))],
      'two-hellos': [PREFACE, hello(1), hello(1)],
      'peer-hello': [PREFACE, hello(2, 'alpha')],
    };
    return Buffer.concat([...opening[b.opening], ...b.frames.map((f) => f.bytes), ...(b.end === 'probe' ? [probe] : [])]);
  }

  /** Plays one batch on a fresh connection; resolves with how it ended. */
  async function play(b: Batch): Promise<'answered' | 'closed' | 'quiet' | 'refused' | 'left'> {
    let p: RawPeer;
    const opening = open(b);
    try {
      // A connection rexd closes during the TLS handshake (a cap on connections, say) may settle neither way.
      p = await Promise.race([opening, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no handshake')), 3000).unref())]);
    } catch {
      void opening.then((late) => late.close(), () => {});
      return 'refused'; // liveness is checked separately, on a fresh connection
    }
    try {
      const all = bytesOf(b);
      const cuts = [...new Set(b.cuts.map((c) => Math.floor(c * all.length)))].sort((x, y) => x - y);
      let at = 0;
      for (const c of [...cuts, all.length]) {
        if (c <= at) continue;
        if (p.sock.destroyed) break;
        p.write(all.subarray(at, c));
        at = c;
        await new Promise((r) => setImmediate(r)); // separate reads on the other side
      }
      if (b.end === 'close') return 'left'; // we hang up at once
      if (b.end === 'half-close') p.sock.end();
      const deadline = Date.now() + 300;
      while (Date.now() < deadline && !p.sock.destroyed) {
        if (p.frames.some((f) => f.type === MsgType.PONG && f.stream === PROBE_STREAM)) return 'answered';
        await Promise.race([p.closed, new Promise((r) => setTimeout(r, 10))]); // sleep-ok: poll step, bounded by the 300 ms deadline above
      }
      if (p.frames.some((f) => f.type === MsgType.PONG && f.stream === PROBE_STREAM)) return 'answered';
      return p.sock.destroyed ? 'closed' : 'quiet';
    } finally {
      p.close();
    }
  }

  /** rexd runs and a PING on a new connection is answered within PING_BOUND_MS. */
  async function assertAlive(): Promise<void> {
    process.kill(target.pid, 0);
    const t0 = Date.now();
    const c = await RexClient.connect({ socket: target.socket, timeoutMs: PING_BOUND_MS });
    try {
      await c.ping();
    } finally {
      c.close();
    }
    const ms = Date.now() - t0;
    if (ms > PING_BOUND_MS) throw new Error(`rexd took ${ms} ms to answer a PING (bound ${PING_BOUND_MS} ms)`);
  }

  // Frames that end a connection by design (a second HELLO, GOODBYE, a fatal ERROR, a frame whose attributes
  // have the wrong kinds for its type) are left out of 'deep' batches, so that their well-formed but wrong
  // frames reach the request handlers one after another.
  const ending = new Set<number>([MsgType.HELLO, MsgType.GOODBYE, MsgType.ERROR]);
  const deepCorpus = corpus.filter((b) => !ending.has(b.readUInt16BE(4)) && typedFrames(b));
  const deepFrame = fc.oneof(
    { weight: 3, arbitrary: mutatedFrameArb(deepCorpus, structuralMutationArb) },
    { weight: 2, arbitrary: fc.constantFrom(...deepCorpus).map((bytes) => ({ bytes, how: 'valid' })) },
  );
  const roughFrame = fc.oneof(
    { weight: 3, arbitrary: mutatedFrameArb(corpus, structuralMutationArb) },
    { weight: 3, arbitrary: mutatedFrameArb(corpus, byteMutationArb) },
    { weight: 2, arbitrary: fc.constantFrom(...corpus).map((bytes) => ({ bytes, how: 'valid' })) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((u) => ({ bytes: Buffer.from(u), how: 'random bytes' })) },
  );
  const batchArb = (channel: Channel): fc.Arbitrary<Batch> => {
    const openings: Opening[] = channel === 'tls-pre' ? ['none', 'preface', 'mutated-hello'] : ['hello', 'hello', 'hello', 'hello', 'none', 'preface', 'mutated-hello', 'two-hellos', 'peer-hello'];
    return fc.record({
      channel: fc.constant(channel),
      opening: channel === 'tls-pre' ? fc.constantFrom(...openings) : fc.oneof(fc.constant<Opening>('hello'), fc.constantFrom(...openings)),
      // 'deep': well-formed frames after a valid HELLO get far; 'rough': damaged framing, random bytes, anything.
      frames: fc.oneof(fc.array(deepFrame, { minLength: 1, maxLength: 12 }), fc.array(roughFrame, { minLength: 1, maxLength: 8 })),
      helloMutations: fc.array(mutationArb, { minLength: 1, maxLength: 3 }),
      cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 5 }),
      end: fc.constantFrom<Batch['end']>('probe', 'probe', 'close', 'half-close'),
      anonymous: channel === 'tls-pre' ? fc.boolean() : fc.constant(false),
    });
  };
  // A round: one to three connections at once (their writes interleave), on any channels.
  const roundArb = fc.array(fc.oneof(...CHANNELS.map(batchArb)), { minLength: 1, maxLength: 3 });

  it(`stays up, answers PING within ${PING_BOUND_MS} ms, and keeps its fds and memory flat (seed ${SEED}, ${SECONDS} s)`, { timeout: SECONDS * 1000 + 60_000 }, async () => {
    console.log(`fuzz-live: seed ${SEED} (replay with REX_FUZZ_SEED=${SEED}), budget ${SECONDS} s${process.env.REX_FUZZ_RUNS ? `, ${RUNS} runs` : ''}, corpus ${corpus.length} frame sets (${deepCorpus.length} for deep batches)`);
    // Warm up every channel once, then take the baseline.
    for (const ch of ['unix', 'tls'] as const) expect(await play({ channel: ch, opening: 'hello', frames: [], helloMutations: [], cuts: [], end: 'probe' })).toBe('answered');
    await assertAlive();
    const fd0 = fdCount(target.pid);
    const fdsBefore = new Set(fdTargets(target.pid));
    const newFds = (): string => {
      const fresh = fdTargets(target.pid).filter((f) => !fdsBefore.has(f));
      return `rexd's new descriptors: ${fresh.join(', ')}${socketLines(fresh)}`;
    };
    const rssStart = rssBytes(target.pid);
    // rexd loads a feature's code when it first serves it (lean start): the baseline is taken once the fuzz has
    // reached those paths, after WARM_ROUNDS rounds (or at the start of a run too short for that).
    let rss0: number | undefined;
    const outcomes: Record<string, number> = {};
    let rounds = 0;
    const rssTrend: string[] = []; // MiB every 100 rounds: a leak climbs, a warm heap levels off
    const result = await fc.check(
      fc.asyncProperty(roundArb, async (round) => {
        if (++rounds % 100 === 0) rssTrend.push((rssBytes(target.pid) / 2 ** 20).toFixed(0));
        if (rounds === WARM_ROUNDS) rss0 = rssBytes(target.pid);
        const os = await Promise.all(round.map(play));
        round.forEach((b, i) => (outcomes[`${b.channel} ${os[i]}`] = (outcomes[`${b.channel} ${os[i]}`] ?? 0) + 1));
        await assertAlive();
      }),
      { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: SECONDS * 1000, markInterruptAsFailure: false, endOnFailure: true },
    );
    rss0 ??= rssStart;
    console.log(`fuzz-live: ${rounds} rounds, connections ${JSON.stringify(outcomes)}; fds ${fd0} -> ${fdCount(target.pid)}, RSS ${(rssStart / 2 ** 20).toFixed(1)} at start, ${(rss0 / 2 ** 20).toFixed(1)} after ${Math.min(rounds, WARM_ROUNDS)} rounds -> ${(rssBytes(target.pid) / 2 ** 20).toFixed(1)} MiB (every 100 rounds: ${rssTrend.join(' ')})`);
    if (result.failed) {
      const detail = result.counterexample ? JSON.stringify(result.counterexample[0]!.map((b) => ({ ...b, frames: b.frames.map((f) => ({ how: f.how, hex: f.bytes.toString('hex').slice(0, 200) })), helloMutations: b.helloMutations.map((m) => m.name) })), null, 1) : '';
      throw new Error(`fuzz-live failed after ${rounds} rounds (seed ${SEED}, replay with REX_FUZZ_SEED=${SEED}): ${(result.errorInstance as Error | undefined)?.message}\n${detail}`);
    }
    expect(rounds).toBeGreaterThan(10);
    // Every fuzz connection is closed: rexd's descriptors come back to the baseline.
    await vi.waitFor(() => expect(fdCount(target.pid), newFds()).toBeLessThanOrEqual(fd0 + FD_SLACK), { timeout: 15_000, interval: 200 });
    expect(rssBytes(target.pid) - rss0, `RSS growth over ${rounds} rounds, after the first ${Math.min(rounds, WARM_ROUNDS)} (bound ${(RSS_GROWTH_MAX / 2 ** 20).toFixed(0)} MiB)`).toBeLessThan(RSS_GROWTH_MAX);
    // Nothing reached a request handler as an unexpected exception (that is a bug even if rexd survived it).
    const failures = readFileSync(target.logFile, 'utf8').split('\n').filter((l) => /request handler failed|uncaught|unhandled/i.test(l));
    expect(failures.slice(0, 5)).toEqual([]);
  });
});

// Keep the mutation arbitraries honest: each one applies to short and empty input too.
describe('fuzz mutations', () => {
  it('apply to any input without throwing', () => {
    fc.assert(fc.property(mutationArb, fc.uint8Array({ maxLength: 64 }), (m, u) => void m(Buffer.from(u))), { numRuns: 500 });
  });
});
