/**
 * This host's load figure (rload): the 1-minute load average plus the REX work
 * that the average cannot show yet, per core. See docs/PROTOCOL.md 4.5 and
 * docs/PLACEMENT.md.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';

/** A load figure as LOAD messages carry it. */
export interface LoadFigure {
  host: string;
  load: number;
  loadavg: [number, number, number];
  cores: number;
  jobs: number;
  /** ms since the epoch when measured. */
  time: number;
  memAvailable?: number;
}

/** The kernel's load average is a 60 s exponential average (for the 1-minute figure). */
const LOADAVG1_TAU_MS = 60_000;

/** Counts REX work running here and turns it, with the load average, into rload. */
export class LoadMeter {
  private running = new Map<number, number>(); // job id -> start time (ms)
  private nextId = 1;

  constructor(
    private readonly host: string,
    private readonly now: () => number = Date.now,
    private readonly sample: () => { loadavg: number[]; cores: number } = () => ({ loadavg: loadavg(), cores: availableParallelism() }),
  ) {}

  /** Records that REX work started here; call the returned function when it ends. */
  jobStarted(): () => void {
    const id = this.nextId++;
    this.running.set(id, this.now());
    return () => void this.running.delete(id);
  }

  /** REX work running now. */
  get jobs(): number {
    return this.running.size;
  }

  /**
   * The figure now. A job that has run for t ms already shows in the 1-minute
   * average as (1 - e^(-t/60s)) of a process; the rest, e^(-t/60s), is added so
   * that work placed a moment ago counts at once and two placements in a row do
   * not both pick the same "idle" host.
   */
  measure(): LoadFigure {
    const { loadavg: la, cores } = this.sample();
    const t = this.now();
    let unseen = 0;
    for (const start of this.running.values()) unseen += Math.exp(-(t - start) / LOADAVG1_TAU_MS);
    const c = Math.max(1, cores);
    const fig: LoadFigure = {
      host: this.host,
      load: ((la[0] ?? 0) + unseen) / c,
      loadavg: [la[0] ?? 0, la[1] ?? 0, la[2] ?? 0],
      cores: c,
      jobs: this.running.size,
      time: t,
    };
    const mem = memAvailable();
    if (mem !== undefined) fig.memAvailable = mem;
    return fig;
  }
}

function memAvailable(): number | undefined {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}
