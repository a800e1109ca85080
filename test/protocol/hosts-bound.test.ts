// HOSTS does not page: its length is the cluster's. A cluster view too large
// for one frame drops the peers' CPU profiles, and past that is a clear error
// instead of a frame every receiver refuses (docs/PROTOCOL.md 4.6).
import { describe, expect, it } from 'vitest';
import { LIMITS } from '../../src/protocol/constants.js';
import { decodeOne, encodeFrame } from '../../src/protocol/frame.js';
import { fitHosts, frameToMessage, messageToFrame, type HostEntry } from '../../src/protocol/messages.js';

const cpu = {
  leaves: new Uint8Array(96).fill(7),
  xcr0: 0x2e7n,
  xsaveSize: 2696,
  components: [2, 5, 6, 7, 9].map((index, i) => ({ index, offset: 576 + i * 64, size: 64 })),
  modelName: 'Test CPU @ 3.00GHz',
};
const host = (i: number): HostEntry => ({ name: `host${i}`, address: `10.0.${i >> 8}.${i & 255}`, port: 7800, load: 0.5, cores: 8, jobs: 1, reachable: true, ageMs: 100, self: i === 0, loadavg1: 0.4, cpu });

function roundTrip(hosts: HostEntry[], maxPayload: number = LIMITS.maxPayload): HostEntry[] {
  const bytes = encodeFrame(messageToFrame({ type: 'HOSTS', stream: 2, hosts }));
  const r = decodeOne(bytes, maxPayload);
  if (!('frame' in r)) throw new Error('incomplete');
  const m = frameToMessage(r.frame);
  return m.type === 'HOSTS' ? (m.hosts ?? []) : [];
}

describe('HOSTS is bounded', () => {
  it('a small cluster view goes as it is', () => {
    const hs = [0, 1, 2].map(host);
    const f = fitHosts(hs);
    expect(f.cpuOmitted).toBe(false);
    expect(roundTrip(f.hosts).map((h) => h.cpu?.modelName)).toEqual(['Test CPU @ 3.00GHz', 'Test CPU @ 3.00GHz', 'Test CPU @ 3.00GHz']);
  });

  it('150 hosts with CPU profiles exceed the attribute limit: the peers go without them, and the frame is legal', () => {
    const hs = Array.from({ length: 150 }, (_, i) => host(i));
    expect(() => roundTrip(hs)).toThrow(/more than 4096 attributes/);
    const f = fitHosts(hs);
    expect(f.cpuOmitted).toBe(true);
    const back = roundTrip(f.hosts);
    expect(back).toHaveLength(150);
    expect(back[0]!.cpu?.modelName).toBe('Test CPU @ 3.00GHz');
    expect(back.slice(1).every((h) => h.cpu === undefined)).toBe(true);
  });

  it('a cluster view that cannot fit at all is a clear error', () => {
    const hs = Array.from({ length: 500 }, (_, i) => host(i));
    expect(() => fitHosts(hs)).toThrow(/the cluster view of 500 hosts does not fit one HOSTS frame even without CPU profiles \(\d+ bytes, \d+ attributes/);
  });
});
