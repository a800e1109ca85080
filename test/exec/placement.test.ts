import { describe, expect, it } from 'vitest';
import { loadConfigFromString } from './config-helper.js';
import { Placer, type Candidate } from '../../src/exec/placement.js';

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

  it('rex.rc placement-policy: default least-loaded, the three values, and a refusal naming the line', async () => {
    expect((await loadConfigFromString('host-name: a\n')).placementPolicy).toBe('least-loaded');
    expect((await loadConfigFromString('host-name: a\nplacement-policy : round-robin\n')).placementPolicy).toBe('round-robin');
    expect((await loadConfigFromString('host-name: a\nplacement-policy: random\n')).placementPolicy).toBe('random');
    await expect(loadConfigFromString('host-name: a\nplacement-policy: fastest\n')).rejects.toThrow(/rex\.rc:2.*"fastest" is not a placement policy; expected least-loaded/s);
  });
});
