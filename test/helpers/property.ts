/**
 * How many cases a property test tries, and from which seed. Locally each
 * property runs its stated count from a random seed (fast-check prints the seed
 * and path of a failure: rerun with REX_FC_SEED=SEED to reproduce);
 * `npm run test:long` multiplies the counts (REX_PROPERTY_SCALE).
 */
import fc from 'fast-check';

/** The factor `npm run test:long` sets; 1 otherwise. */
export const PROPERTY_SCALE = Math.max(1, Number(process.env.REX_PROPERTY_SCALE ?? 1) || 1);

/** `n` cases, scaled for the long mode. */
export const runs = (n: number): number => Math.max(1, Math.round(n * PROPERTY_SCALE));

/** Applies REX_FC_SEED (reproduce a failure) to every property of this process. */
export function configureProperties(): void {
  const fixed = process.env.REX_FC_SEED;
  if (fixed !== undefined && fixed !== '') {
    const seed = Number(fixed);
    if (!Number.isInteger(seed)) throw new Error(`REX_FC_SEED=${fixed} is not an integer seed`);
    fc.configureGlobal({ ...fc.readConfigureGlobal(), seed });
  }
}
