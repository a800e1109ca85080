// Calls placed by the one placement (docs/PLACEMENT.md, docs/CALLS.md
// "Routing"): a `*` target honours rex.rc placement-policy as EXEC does. Under
// round-robin, six calls in a row on a three-host cluster where every host
// offers the program run twice on each host (the router's own least-loaded
// choice, before issue 15, sent them all to one host).
import { rmSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { buildLibrary, tempDir, writeXml } from './helpers.js';

let dir: string;
let stop: (() => Promise<void>) | undefined;
let alpha: RexClient | undefined;

beforeAll(async () => {
  dir = tempDir();
  const lib = buildLibrary(dir);
  const xml = writeXml(dir, lib);
  const started = await startCluster(3, { rc: [`programs : calltest=${lib}:${xml}`, 'placement-policy : round-robin'] });
  stop = started.stop;
  await started.cluster.waitAllReachable();
  alpha = await started.cluster.client('alpha');
}, 120_000);

afterAll(async () => {
  alpha?.close();
  await stop?.();
  rmSync(dir, { recursive: true, force: true });
});

describe('calls honour the placement policy', () => {
  // claim: placement.calls-policy
  it('round-robin: * calls take the hosts that offer the program in turn', async () => {
    const hosts: string[] = [];
    for (let i = 1; i <= 6; i++) {
      const r = await alpha!.call('*.calltest.neg32', Uint8Array.of(i, 0, 0, 0));
      expect(Buffer.from(r.output).readInt32LE(0)).toBe(-i);
      hosts.push(r.host!);
    }
    const counts = Object.fromEntries(['alpha', 'beta', 'gamma'].map((h) => [h, hosts.filter((x) => x === h).length]));
    expect(counts).toEqual({ alpha: 2, beta: 2, gamma: 2 });
    // In turn: each host once in every three calls.
    expect(new Set(hosts.slice(0, 3)).size).toBe(3);
  }, 60_000);
});
