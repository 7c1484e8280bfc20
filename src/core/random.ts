/**
 * A small seedable generator of numbers in [0, 1) (mulberry32: 32-bit state,
 * period 2^32): the same seed gives the same sequence, for injected anomalies
 * and synthetic data. (The textbook LCG written in doubles, seed × 1103515245,
 * loses bits and falls into a cycle of about 10,000 draws.)
 */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
