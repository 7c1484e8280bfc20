// The user factor of the allocation hierarchy: a pair that has no history of
// its own starts from its image's profile over all users, scaled by how this
// user's runs compare with everyone's runs of the same images. One rule for
// the live allocation engine and the backtest's augur policy.

/** Default bounds of the factor: a user is taken to need between a quarter and four times the image's usual amount. */
export const USER_FACTOR_BOUNDS: Readonly<{ min: number; max: number }> = { min: 0.25, max: 4 };

/**
 * The geometric mean of `ratios` (the user's level over all users' level, per
 * image the user ran), clamped to the bounds; 1 without a usable ratio.
 * Ratios that are not finite and positive are skipped.
 */
export function userFactor(ratios: readonly number[], bounds: Readonly<{ min: number; max: number }> = USER_FACTOR_BOUNDS): number {
  let logs = 0;
  let count = 0;
  for (const ratio of ratios) {
    if (!(ratio > 0 && Number.isFinite(ratio))) continue;
    logs += Math.log(ratio);
    count++;
  }
  if (count === 0) return 1;
  return Math.min(bounds.max, Math.max(bounds.min, Math.exp(logs / count)));
}
