// Robust statistics for the detectors: pure functions over plain arrays.

export function median(values: ArrayLike<number>): number {
  const sorted = Array.from(values).sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  return n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
}

/** Median absolute deviation (unscaled). */
export function mad(values: ArrayLike<number>, center = median(values)): number {
  return median(Array.from(values, (v) => Math.abs(v - center)));
}

/** Theil–Sen slope: the median of the slopes between every pair of points (robust to outliers). */
export function theilSen(ys: ArrayLike<number>, xs?: ArrayLike<number>): number {
  const slopes: number[] = [];
  for (let i = 0; i < ys.length; i++) {
    for (let j = i + 1; j < ys.length; j++) {
      const dx = xs ? xs[j]! - xs[i]! : j - i;
      if (dx !== 0) slopes.push((ys[j]! - ys[i]!) / dx);
    }
  }
  return median(slopes);
}

/** Standard normal upper tail, P(Z > z) (Abramowitz–Stegun 26.2.17, error < 7.5e-8). */
export function normalTail(z: number): number {
  if (z < 0) return 1 - normalTail(-z);
  const t = 1 / (1 + 0.2316419 * z);
  const density = Math.exp((-z * z) / 2) / Math.sqrt(2 * Math.PI);
  return density * t * (0.31938153 + t * (-0.356563782 + t * (1.781477937 + t * (-1.821255978 + t * 1.330274429))));
}

/**
 * Mann–Kendall trend test: S (concordant minus discordant pairs), its
 * variance with the tie correction, the continuity-corrected Z, and the
 * one-sided p-value for an upward trend.
 */
export function mannKendall(ys: ArrayLike<number>): { s: number; z: number; pUp: number } {
  const n = ys.length;
  let s = 0;
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) s += Math.sign(ys[j]! - ys[i]!);
  const ties = new Map<number, number>();
  for (let i = 0; i < n; i++) ties.set(ys[i]!, (ties.get(ys[i]!) ?? 0) + 1);
  let tieTerm = 0;
  for (const t of ties.values()) if (t > 1) tieTerm += t * (t - 1) * (2 * t + 5);
  const variance = (n * (n - 1) * (2 * n + 5) - tieTerm) / 18;
  const z = variance <= 0 ? 0 : s > 0 ? (s - 1) / Math.sqrt(variance) : s < 0 ? (s + 1) / Math.sqrt(variance) : 0;
  return { s, z, pUp: normalTail(z) };
}
