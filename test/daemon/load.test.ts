import { describe, expect, it } from 'vitest';
import { LoadMeter } from '../../src/daemon/load.js';

/** A meter with a fake clock and a fixed kernel sample, so the arithmetic can be checked exactly. */
function meter(loadavg1: number, cores: number) {
  let now = 1_000_000;
  const m = new LoadMeter('alpha', () => now, () => ({ loadavg: [loadavg1, loadavg1 / 2, loadavg1 / 4], cores }));
  return { m, advance: (ms: number) => (now += ms) };
}

describe('rload', () => {
  it('is the 1-minute load average per core when no REX work runs', () => {
    const { m } = meter(3, 4);
    expect(m.measure()).toMatchObject({ host: 'alpha', load: 0.75, loadavg: [3, 1.5, 0.75], cores: 4, jobs: 0 });
  });

  it('counts work placed a moment ago in full, before the load average can show it', () => {
    const { m } = meter(0, 2);
    m.jobStarted();
    m.jobStarted();
    expect(m.measure().load).toBeCloseTo(1, 10); // two fresh jobs on two cores
    expect(m.measure().jobs).toBe(2);
  });

  it('hands a job over to the load average as it ages (e^(-t/60s) left unseen)', () => {
    const { m, advance } = meter(0, 1);
    m.jobStarted();
    advance(60_000);
    expect(m.measure().load).toBeCloseTo(Math.exp(-1), 10);
    advance(240_000);
    expect(m.measure().load).toBeCloseTo(Math.exp(-5), 10);
  });

  it('stops counting a job when it ends', () => {
    const { m } = meter(0.5, 1);
    const done = m.jobStarted();
    expect(m.measure().load).toBeCloseTo(1.5, 10);
    done();
    expect(m.measure()).toMatchObject({ load: 0.5, jobs: 0 });
  });

  it('reads the real kernel figures by default', () => {
    const f = new LoadMeter('here').measure();
    expect(f.cores).toBeGreaterThanOrEqual(1);
    expect(f.loadavg.every((x) => x >= 0)).toBe(true);
    expect(f.memAvailable).toBeGreaterThan(0);
  });
});
