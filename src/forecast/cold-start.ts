// How a key with no history of its own starts: at a quantile of what its
// peers ran, × a margin, the quantile chosen by the cost every other limit
// decision pays (measured slack + the overrun price × the overrun rate),
// scored on the first steps of the keys that started before it.

/** The margin over the peers' quantile (VPA's safety margin, as the fallback levels always had). */
export const COLD_START_MARGIN = 1.15;

/** Quantiles of the peers' level a cold start may take (the service level's own is added). */
const QUANTILES = [0.5, 0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 1];

/** Per scored first step: a memory of about a thousand keys' starts. */
const DECAY = 0.999;

/**
 * Until this many keys' starts (decayed) have been scored, a quantile's
 * overrun rate leans on its prior (1 − q, at least the service level: a new
 * key lands above that share of its peers' peaks, less the margin's help).
 */
const PRIOR_STARTS = 100;

/**
 * The cold-start quantile of one resource, chosen over all keys. With no
 * start scored it is the service level's (1 − target): the fixed rule the
 * fallback levels had. Where new keys land far below their peers' high
 * quantiles (keys that each run at their own level) a lower one saves the
 * slack of every first step at a price in overruns the cost accounts for.
 */
export class ColdStartChooser {
  /** Ascending; `quantiles[serviceIndex]` is 1 − target. */
  readonly quantiles: readonly number[];
  private readonly serviceIndex: number;
  private readonly priors: Float64Array;
  private readonly slack: Float64Array;
  private readonly misses: Float64Array;
  /** Decayed count of first steps scored. */
  private weight = 0;

  constructor(readonly targetMissRate: number) {
    if (!(targetMissRate > 0 && targetMissRate < 1)) throw new RangeError("a cold start's target miss rate must be in (0, 1)");
    const service = 1 - targetMissRate;
    this.quantiles = [...new Set([...QUANTILES, service])].sort((a, b) => a - b);
    this.serviceIndex = this.quantiles.indexOf(service);
    this.priors = Float64Array.from(this.quantiles, (q) => Math.max(1 - q, targetMissRate));
    this.slack = new Float64Array(this.quantiles.length);
    this.misses = new Float64Array(this.quantiles.length);
  }

  /** The index of the quantile a new key takes at this overrun price (the service level's until a start was scored). */
  choose(price: number): number {
    const weight = this.weight;
    if (!(weight > 0) || !(price >= 0)) return this.serviceIndex;
    let best = this.serviceIndex;
    let bestCost = Infinity;
    for (let i = 0; i < this.quantiles.length; i++) {
      const rate = (this.misses[i]! + PRIOR_STARTS * this.priors[i]!) / (weight + PRIOR_STARTS);
      const cost = this.slack[i]! / weight + price * rate;
      if (cost < bestCost) {
        bestCost = cost;
        best = i;
      }
    }
    return best;
  }

  /**
   * Scores a key's first step: `limits[i]` is the limit quantile i would
   * have set (the peers' quantile × margin × the user's factor).
   */
  score(limits: Float64Array, usage: number): void {
    if (!(usage >= 0 && usage < Infinity) || limits.length !== this.quantiles.length) return;
    const slack = this.slack;
    const misses = this.misses;
    for (let i = 0; i < slack.length; i++) {
      const limit = limits[i]!;
      slack[i] = slack[i]! * DECAY + (limit > usage ? limit - usage : 0);
      misses[i] = misses[i]! * DECAY + (usage > limit ? 1 : 0);
    }
    this.weight = this.weight * DECAY + 1;
  }
}
