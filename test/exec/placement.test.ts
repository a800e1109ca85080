import { describe, expect, it } from 'vitest';
import { loadConfigFromString } from './config-helper.js';
import { advertisedCpuProfile } from '../../src/cpu/wire.js';
import { CALL_SHARE, Placement, Placer, type Candidate, type PlacementSources } from '../../src/placement/index.js';

const hosts = (loads: number[], cores = 2, figureAt = 1000): Candidate[] => loads.map((load, i) => ({ name: ['alpha', 'beta', 'gamma'][i]!, self: i === 0, load, cores, figureAt }));

describe('placement (docs/PLACEMENT.md)', () => {
  it('least-loaded puts the idlest host first and keeps the others as fallbacks', () => {
    expect(new Placer('least-loaded').order(hosts([0.9, 0.1, 0.5]))).toEqual(['beta', 'gamma', 'alpha']);
  });

  it('a tie goes to the origin, then to rex.rc order', () => {
    expect(new Placer('least-loaded').order(hosts([0.2, 0.2, 0.2]))).toEqual(['alpha', 'beta', 'gamma']);
  });

  it("corrects a peer's figure with our jobs: started since count, ended since no longer count", () => {
    let t = 2000;
    const p = new Placer('least-loaded', () => t);
    const c = hosts([0.9, 0.0, 0.0]);
    const picks: string[] = [];
    const ends: (() => void)[] = [];
    for (let i = 0; i < 4; i++) {
      const first = p.order(c)[0]!;
      picks.push(first);
      if (first !== 'alpha') ends.push(p.placed(first));
      t += 1;
    }
    // beta and gamma take turns (each running job adds 1/cores); the busy origin gets nothing.
    expect(picks).toEqual(['beta', 'gamma', 'beta', 'gamma']);
    expect(p.effectiveLoad(c[1]!)).toBe(1);
    // A new figure (taken while the jobs ran) counts them itself; once they end, they come off it.
    const fresh = { name: 'beta', self: false, load: 1, cores: 2, figureAt: t + 1 };
    expect(p.effectiveLoad(fresh)).toBe(1);
    t += 5;
    for (const end of ends) end();
    expect(p.effectiveLoad(fresh)).toBe(0);
    // Jobs decided but not started count everywhere, the origin included.
    const release = p.reserve('alpha');
    expect(p.effectiveLoad(c[0]!)).toBeCloseTo(1.4);
    release();
    expect(p.effectiveLoad(c[0]!)).toBeCloseTo(0.9);
  });

  it('round-robin rotates and random permutes every candidate', () => {
    const rr = new Placer('round-robin');
    expect([0, 1, 2, 3].map(() => rr.order(hosts([0, 0, 0]))[0])).toEqual(['alpha', 'beta', 'gamma', 'alpha']);
    const rnd = new Placer('random', Date.now, () => 0);
    expect(rnd.order(hosts([0, 0, 0])).sort()).toEqual(['alpha', 'beta', 'gamma']);
  });

  it('reserve takes a share: a call in flight weighs a tenth of a process until it is answered', () => {
    const p = new Placer('least-loaded');
    const [alpha] = hosts([0.2]);
    const calls = [p.reserve('alpha', CALL_SHARE), p.reserve('alpha', CALL_SHARE), p.reserve('alpha', CALL_SHARE)];
    expect(p.effectiveLoad(alpha!)).toBeCloseTo(0.2 + (3 * CALL_SHARE) / 2);
    for (const done of calls) done();
    expect(p.effectiveLoad(alpha!)).toBe(0.2);
  });

  it('rex.rc placement-policy: default least-loaded, the three values, and a refusal naming the line', async () => {
    expect((await loadConfigFromString('host-name: a\n')).placementPolicy).toBe('least-loaded');
    expect((await loadConfigFromString('host-name: a\nplacement-policy : round-robin\n')).placementPolicy).toBe('round-robin');
    expect((await loadConfigFromString('host-name: a\nplacement-policy: random\n')).placementPolicy).toBe('random');
    await expect(loadConfigFromString('host-name: a\nplacement-policy: fastest\n')).rejects.toThrow(/rex\.rc:2.*"fastest" is not a placement policy; expected least-loaded/s);
  });
});

/** A rexd's figures as the placement reads them: alpha is this host, its peers in rex.rc order. */
function sources(self: number, peers: { name: string; load?: number; reachable?: boolean; cpu?: boolean }[]): PlacementSources {
  // Peers with this machine's CPU: an image from this machine fits them.
  const cpu = advertisedCpuProfile();
  return {
    host: 'alpha',
    measure: () => ({ load: self, cores: 2 }),
    peers: () =>
      peers.map((p) => ({
        name: p.name,
        reachable: p.reachable ?? true,
        ...(p.load !== undefined ? { figure: { host: p.name, load: p.load, loadavg: [0, 0, 0] as [number, number, number], cores: 2, jobs: 0, time: 0 }, receivedAt: Date.now() } : {}),
        ...(p.cpu === false ? {} : { cpu }),
      })),
  };
}

describe('the one placement: EXEC, rfork images and calls (docs/PLACEMENT.md)', () => {
  it('candidates are this host and the reachable peers with a figure, ordered by the policy', () => {
    const src = sources(0.5, [{ name: 'beta', load: 0.1 }, { name: 'gamma', load: 0 , reachable: false }, { name: 'delta' }, { name: 'eps', load: 0.9 }]);
    expect(new Placement(src, 'least-loaded').plan().order).toEqual(['beta', 'alpha', 'eps']);
    const rr = new Placement(src, 'round-robin');
    expect([rr.plan().order, rr.plan().order]).toEqual([
      ['alpha', 'beta', 'eps'],
      ['beta', 'eps', 'alpha'],
    ]);
  });

  // claim: placement.among
  it('among (REX_PLACE_HOSTS) keeps only the named hosts, the origin too, in the policy\'s order; none named reachable leaves nothing', () => {
    const src = sources(0.5, [{ name: 'beta', load: 0.1 }, { name: 'gamma', load: 0 }, { name: 'delta', load: 0.2 }, { name: 'eps', load: 0.3, reachable: false }]);
    expect(new Placement(src, 'least-loaded').plan({ among: ['beta', 'delta', 'eps'] }).order).toEqual(['beta', 'delta']);
    // The origin is a candidate only when named: a client limited to other hosts never runs here by placement.
    expect(new Placement(src, 'least-loaded').plan({ among: ['alpha', 'delta'] }).order).toEqual(['delta', 'alpha']);
    const rr = new Placement(src, 'round-robin');
    expect([0, 1, 2, 3].map(() => rr.plan({ among: ['alpha', 'gamma'] }).order[0])).toEqual(['alpha', 'gamma', 'alpha', 'gamma']);
    expect(new Placement(src).plan({ among: ['eps', 'zeta'] }).order).toEqual([]);
    // An empty list is no limit.
    expect(new Placement(src, 'least-loaded').plan({ among: [] }).order).toEqual(['gamma', 'beta', 'delta', 'alpha']);
  });

  it('offers keeps the hosts that offer the work (a call\'s program), in the policy\'s order', () => {
    const src = sources(0.5, [{ name: 'beta', load: 0.1 }, { name: 'gamma', load: 0.2 }]);
    const asked: string[] = [];
    const plan = new Placement(src, 'least-loaded').plan({
      offers: (c) => {
        asked.push(c.name);
        return c.name !== 'beta';
      },
    });
    expect(plan.order).toEqual(['gamma', 'alpha']);
    expect(asked.sort()).toEqual(['alpha', 'beta', 'gamma']);
    expect(new Placement(src).plan({ offers: () => false }).order).toEqual([]);
  });

  it("an rfork image's needs are read only when a peer is a candidate, and hosts that cannot run it are left out with the reason", () => {
    let reads = 0;
    const needs = () => {
      reads++;
      const own = advertisedCpuProfile();
      return { features: own.features, xcr0: own.xcr0 };
    };
    expect(new Placement(sources(0, []), 'least-loaded').plan({ needs }).order).toEqual(['alpha']);
    expect(reads).toBe(0);
    const plan = new Placement(sources(0.5, [{ name: 'beta', load: 0, cpu: false }, { name: 'gamma', load: 0.1 }]), 'least-loaded').plan({ needs });
    expect(reads).toBe(1);
    expect(plan.order).toEqual(['gamma', 'alpha']);
    expect(plan.unfit).toEqual([{ name: 'beta', missing: [expect.stringMatching(/CPU profile is unknown/)] }]);
  });
});
