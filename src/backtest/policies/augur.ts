import type { Resource } from "../../core/types.js";
import { DecayingHistogram } from "../../forecast/decaying-histogram.js";
import { EnsembleForecaster, OverrunPrice, PooledMisses, type EnsembleOptions } from "../../forecast/ensemble.js";
import { BUCKETS } from "../../forecast/percentile-model.js";
import { PEAK_LIKE, type BacktestPolicy, type PairRef } from "../policy.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/**
 * Defaults of augur's policy. The miss rates are the policy's service
 * level: memory (an overrun is an OOM kill) one step in 2,000, rates (an
 * overrun is throttling) one in 300. They are the knobs a user turns; the
 * rest are structural (how fast to forget, how much evidence is enough).
 */
export function defaultEnsembleOptions(resource: Resource): EnsembleOptions {
  const peak = PEAK_LIKE.has(resource);
  return {
    targetMissRate: peak ? 0.0005 : 0.003,
    slackDecay: 0.95, // slack is measured every step: a short memory follows phases
    missDecay: 0.9995, // overruns are rare: a memory of ~2,000 steps
    priorSteps: 2000, // until a key has that much evidence of its own, the pooled rate weighs in
    switchMargin: 0.05,
    missBump: peak ? 0.2 : 0.1,
    missBumpMs: HOUR,
    absoluteFloor: BUCKETS[resource].firstBucketSize / 10,
    priceStep: 0.05,
  };
}

/** Buckets of the percentile candidates: ten times finer than VPA's, 2% growth. */
function histogramOptionsFor(resource: Resource) {
  const { firstBucketSize, maxValue } = BUCKETS[resource];
  return { firstBucketSize: firstBucketSize / 10, maxValue, ratio: 1.02, epsilon: 1e-6 };
}

/** Usage of everything under one fallback level: cold-start limits for pairs with no history of their own. */
class LevelUsage {
  readonly histogram: DecayingHistogram;
  constructor(resource: Resource) {
    this.histogram = new DecayingHistogram({ ...histogramOptionsFor(resource), halfLifeMs: DAY });
  }
}

/**
 * `augur`: per (image, user) and resource an EnsembleForecaster; pairs with
 * no history start from the (image, *) level, then (*, user), then (*, *)
 * (a high quantile of what those ran, with the same service level), then
 * the trace's limit or the default. Overrun rates are pooled over all pairs, so a
 * young pair borrows evidence from its peers.
 */
export function augurPolicy(options: { optionsFor?: (resource: Resource) => EnsembleOptions } = {}): BacktestPolicy {
  const optionsFor = options.optionsFor ?? defaultEnsembleOptions;
  const forecasters = new Map<Resource, Array<EnsembleForecaster | undefined>>();
  const pools = new Map<Resource, PooledMisses>();
  const prices = new Map<Resource, OverrunPrice>();
  const levels = new Map<string, LevelUsage>();

  /** The (image, *), (*, user) and (*, *) usage of a pair, resolved once per pair and resource. */
  const levelsOf = new Map<Resource, LevelUsage[][]>();
  const pairLevels = (pair: PairRef, resource: Resource): LevelUsage[] => {
    let byPair = levelsOf.get(resource);
    if (!byPair) levelsOf.set(resource, (byPair = []));
    let found = byPair[pair.id];
    if (!found) {
      byPair[pair.id] = found = [`i:${pair.image}`, `u:${pair.user}`, "*"].map((key) => {
        const id = `${resource}|${key}`;
        let usage = levels.get(id);
        if (!usage) levels.set(id, (usage = new LevelUsage(resource)));
        return usage;
      });
    }
    return found;
  };

  const forecaster = (pair: PairRef, resource: Resource): EnsembleForecaster => {
    let byPair = forecasters.get(resource);
    if (!byPair) forecasters.set(resource, (byPair = []));
    let f = byPair[pair.id];
    if (!f) {
      const opts = optionsFor(resource);
      let pool = pools.get(resource);
      if (!pool) pools.set(resource, (pool = new PooledMisses(opts.missDecay)));
      let price = prices.get(resource);
      if (!price) prices.set(resource, (price = new OverrunPrice(opts.targetMissRate, opts.priceStep)));
      byPair[pair.id] = f = new EnsembleForecaster(opts, pool, price, histogramOptionsFor(resource));
    }
    return f;
  };

  return {
    name: "augur",
    limit(pair, resource, ts, fallback) {
      const own = forecaster(pair, resource).limit(ts);
      if (own !== null) return own;
      const quantile = 1 - optionsFor(resource).targetMissRate;
      for (const usage of pairLevels(pair, resource)) if (!usage.histogram.isEmpty()) return usage.histogram.percentile(quantile) * 1.15;
      return fallback;
    },
    observe(pair, resource, ts, usage) {
      forecaster(pair, resource).observe(ts, usage);
      for (const level of pairLevels(pair, resource)) level.histogram.add(usage, 1, ts);
    },
  };
}
