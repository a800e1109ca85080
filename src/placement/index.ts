/**
 * Where work goes (docs/PLACEMENT.md): the one placement of rexd, used by EXEC,
 * rfork images and remote calls alike. It orders the candidate hosts, best
 * first, by the rex.rc placement policy, so that the caller can fall back to
 * the next when a host refuses or cannot be reached; an rfork image's
 * candidates are first narrowed to the hosts whose CPU can run it. The
 * figures come from the peer table rexd keeps fresh (no round trip per
 * placement).
 */

import type { PlacementPolicy } from '../config/types.js';
import { missingFor, type CpuNeeds, type CpuProfile } from '../cpu/profile.js';
import { advertisedCpuProfile } from '../cpu/wire.js';
import type { LoadFigure } from '../daemon/load.js';
import type { PeerState } from '../daemon/peers.js';

export type { PlacementPolicy };

export { PLACE_HOSTS_ENV, parsePlaceHosts } from './hosts.js';

/** The policies, for validation and messages. */
export const PLACEMENT_POLICIES: readonly PlacementPolicy[] = ['least-loaded', 'round-robin', 'random'];

/** One host as the placer sees it. */
export interface Candidate {
  name: string;
  self: boolean;
  /** rload from the host's last figure (load average plus unseen REX work, per core). */
  load: number;
  cores: number;
  /** Local clock time (ms) when that figure was received; the origin's own figure is live. */
  figureAt: number;
  /** The host's advertised CPU profile; absent when its rexd sent none (it then takes no rfork image). */
  cpu?: Pick<CpuProfile, 'features' | 'xcr0'>;
}

/** Why `c` cannot run an image with `needs` (one phrase per missing item), or [] when it can. */
export function cpuShortfall(needs: CpuNeeds, c: Pick<Candidate, 'cpu'>): string[] {
  if (!c.cpu) return ['its CPU profile is unknown (its rexd advertises none; upgrade it)'];
  return missingFor(needs, c.cpu);
}

/** The refusal for a host that cannot run the image: "beta cannot run this image: no AVX512F (used by the origin)". */
export function cannotRunMessage(host: string, missing: readonly string[]): string {
  const known = missing.filter((m) => m.startsWith('no '));
  const other = missing.filter((m) => !m.startsWith('no '));
  return `${host} cannot run this image: ${[...(known.length ? [`${known.join(', ')} (used by the origin)`] : []), ...other].join('; ')}`;
}

/**
 * The candidates that can run an image with `needs`, in the same order, and
 * for each other one why not.
 */
export function cpuCandidates<C extends Pick<Candidate, 'name' | 'cpu'>>(candidates: readonly C[], needs: CpuNeeds): { fit: C[]; unfit: { name: string; missing: string[] }[] } {
  const fit: C[] = [];
  const unfit: { name: string; missing: string[] }[] = [];
  for (const c of candidates) {
    const missing = cpuShortfall(needs, c);
    if (missing.length === 0) fit.push(c);
    else unfit.push({ name: c.name, missing });
  }
  return { fit, unfit };
}

/**
 * Chooses hosts. It remembers what it placed since each host's last figure, so
 * that a burst of placements spreads out before the next load poll shows them.
 */
export class Placer {
  /** Our jobs on each peer: when they started and (once the origin saw EXIT) ended. */
  private jobs = new Map<string, { start: number; end?: number }[]>();
  /** Jobs chosen for a host that have not started yet (no figure, not even the origin's meter, shows them). */
  private inflight = new Map<string, number>();
  private rr = 0;

  constructor(
    private policy: PlacementPolicy = 'least-loaded',
    private readonly now: () => number = Date.now,
    private readonly rand: () => number = Math.random,
  ) {}

  /** Changes the policy (rex.rc reload). */
  setPolicy(p: PlacementPolicy): void {
    this.policy = p;
  }

  /**
   * Records that one of our jobs started on `host`; call the returned function
   * when it ends. The placer uses this to correct the host's last figure.
   */
  placed(host: string): () => void {
    const list = this.jobs.get(host) ?? [];
    const job: { start: number; end?: number } = { start: this.now() };
    list.push(job);
    // Ended jobs matter only until the next figure; a minute is far longer than any poll interval.
    const cut = this.now() - 60_000;
    this.jobs.set(
      host,
      list.filter((j) => j.end === undefined || j.end >= cut),
    );
    return () => {
      job.end ??= this.now();
    };
  }

  /**
   * Holds a place on `host` that no figure shows yet: an EXEC from the
   * decision until its program has started (concurrent EXECs are decided
   * before any of them has started), a call until it is answered. `share` is
   * the work's weight in processes. Call the returned function when the place
   * is no longer needed (started, answered, or refused).
   */
  reserve(host: string, share = 1): () => void {
    this.inflight.set(host, (this.inflight.get(host) ?? 0) + share);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const left = (this.inflight.get(host) ?? share) - share;
      // Shares are fractions: what rounding leaves behind is nothing.
      if (left < 1e-9) this.inflight.delete(host);
      else this.inflight.set(host, left);
    };
  }

  /**
   * The load a host would show now. The origin's meter is live. A peer's
   * figure is up to one poll old: our jobs that started since are added, and
   * our jobs it counted that have ended since are taken off again (short jobs
   * would otherwise make a peer look busy until its next figure).
   */
  effectiveLoad(c: Candidate): number {
    const pending = this.inflight.get(c.name) ?? 0;
    let delta = pending;
    if (!c.self) {
      for (const j of this.jobs.get(c.name) ?? []) {
        if (j.start >= c.figureAt && j.end === undefined) delta++;
        else if (j.start < c.figureAt && j.end !== undefined && j.end >= c.figureAt) delta--;
      }
    }
    return Math.max(0, c.load + delta / Math.max(1, c.cores));
  }

  /** Candidates in the order to try them; `candidates` is in rex.rc order, the origin first. */
  order(candidates: readonly Candidate[]): string[] {
    if (candidates.length === 0) return [];
    switch (this.policy) {
      case 'round-robin': {
        const start = this.rr++ % candidates.length;
        return [...candidates.slice(start), ...candidates.slice(0, start)].map((c) => c.name);
      }
      case 'random': {
        const a = candidates.map((c) => c.name);
        for (let i = a.length - 1; i > 0; i--) {
          const j = Math.floor(this.rand() * (i + 1));
          [a[i], a[j]] = [a[j]!, a[i]!];
        }
        return a;
      }
      default: {
        // Ties go to the earlier candidate: the origin first (no network), then rex.rc order.
        return candidates
          .map((c, i) => ({ c, i, l: this.effectiveLoad(c) }))
          .sort((x, y) => x.l - y.l || x.i - y.i)
          .map((x) => x.c.name);
      }
    }
  }
}

/** What the placement reads its figures from: this host's live meter and the peers rexd polls. */
export interface PlacementSources {
  /** This host's REX name. */
  host: string;
  /** This host's figure now (the origin's meter is live). */
  measure(): Pick<LoadFigure, 'load' | 'cores'>;
  /** The peers' states in rex.rc order. */
  peers(): Iterable<Pick<PeerState, 'name' | 'reachable' | 'figure' | 'receivedAt' | 'cpu'>>;
}

/** The hosts to try for one piece of work, best first, and those left out because their CPU cannot run it. */
export interface Plan {
  order: string[];
  unfit: { name: string; missing: string[] }[];
}

/**
 * A call in flight counts as a tenth of a process on its host until it is
 * answered: it runs in a controller already started, and is usually short;
 * still, a burst of calls spreads out before the next load figure shows it.
 */
export const CALL_SHARE = 0.1;

/**
 * The placement of one rexd: the candidates from its figures, the policy's
 * order, and the CPU-compatibility filter for rfork images. EXEC, rfork and
 * calls all place through it, so that one policy, one record of work placed a
 * moment ago and one CPU check apply to all of them.
 */
export class Placement extends Placer {
  constructor(
    private readonly sources: PlacementSources,
    policy: PlacementPolicy = 'least-loaded',
    now: () => number = Date.now,
    rand: () => number = Math.random,
  ) {
    super(policy, now, rand);
  }

  /** Hosts that can be asked now: this one, and reachable peers with a figure, in rex.rc order. */
  candidates(): Candidate[] {
    const fig = this.sources.measure();
    const out: Candidate[] = [{ name: this.sources.host, self: true, load: fig.load, cores: fig.cores, figureAt: Date.now(), cpu: advertisedCpuProfile() }];
    for (const s of this.sources.peers()) {
      if (!s.reachable || !s.figure || s.receivedAt === undefined) continue;
      out.push({ name: s.name, self: false, load: s.figure.load, cores: s.figure.cores, figureAt: s.receivedAt, ...(s.cpu ? { cpu: s.cpu } : {}) });
    }
    return out;
  }

  /**
   * The order to try hosts in for one piece of work. `offers` keeps only the
   * hosts that offer it (a call's program); `needs`, an rfork image's CPU
   * needs, is read only when a peer is a candidate (the origin can always run
   * its own image), and keeps only the hosts that can run it. Synchronous, so
   * that the caller can reserve its host before another placement is decided
   * (requests that arrive together are served in one turn of the event loop).
   */
  plan(opts: { offers?: (c: Candidate) => boolean; needs?: () => CpuNeeds; among?: readonly string[] } = {}): Plan {
    let candidates = this.candidates();
    if (opts.among && opts.among.length > 0) {
      const among = new Set(opts.among);
      candidates = candidates.filter((c) => among.has(c.name));
    }
    if (opts.offers) candidates = candidates.filter(opts.offers);
    let unfit: Plan['unfit'] = [];
    if (opts.needs && candidates.some((c) => !c.self)) ({ fit: candidates, unfit } = cpuCandidates(candidates, opts.needs()));
    return { order: this.order(candidates), unfit };
  }
}
