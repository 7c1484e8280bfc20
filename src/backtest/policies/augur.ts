import type { Resource } from "../../core/types.js";
import { DecayingHistogram } from "../../forecast/decaying-histogram.js";
import { defaultEnsembleOptions, EnsembleForecaster, histogramOptionsFor, OverrunPrice, PooledMisses, type EnsembleOptions } from "../../forecast/ensemble.js";
import { BUCKETS } from "../../forecast/percentile-model.js";
import { PEAK_LIKE, type BacktestPolicy, type PairRef } from "../policy.js";

const DAY = 24 * 3_600_000;

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
