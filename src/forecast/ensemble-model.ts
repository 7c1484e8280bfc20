import { z } from "zod";
import { RESOURCES, type Profile, type Resource, type WindowAggregate } from "../core/types.js";
import {
  defaultEnsembleOptions,
  EnsembleForecaster,
  histogramOptionsFor,
  OverrunPrice,
  PooledMisses,
  SERVICE_LEVEL,
  type EnsembleState,
  type PooledMissesState,
  type PriceUsageState,
} from "./ensemble.js";
import { foldSketch, savedResources, type ForecastModel, type ModelFactory, type Peers } from "./model.js";
import { DecayingHistogram, type HistogramState } from "./decaying-histogram.js";
import { GlobalLearners, parseGlobalModels, savedGlobalModels } from "./global-learners.js";
import { initTensorflow } from "./global-model.js";

const DAY_MS = 86_400_000;
const NO_PEERS: Peers = () => Number.NaN;

/** A service level: a fraction of steps (windows) allowed above a limit. */
export const missRate = z.number().gt(0).lt(0.5);

export const ensembleModelConfig = z
  .object({
    /** Service level: fraction of windows allowed above the memory limit (an overrun is an OOM kill). */
    memoryMissRate: missRate.default(SERVICE_LEVEL.memory),
    /** Fraction of windows allowed above a rate limit (CPU, network, disk, GPU utilisation). */
    rateMissRate: missRate.default(SERVICE_LEVEL.rate),
    /** The request is this percentile of the last day's samples (never above the limit). */
    requestPercentile: z.number().gt(0).lt(1).default(0.9),
    /** Event time a decision holds (0: every window); see EnsembleOptions.decisionMs. */
    decisionSeconds: z.number().min(0).max(86_400).default(0),
    /**
     * The global model (one network per resource, `augur models load` puts
     * one a backtest learned in the data directory) is offered to every pair
     * as the backtest's augur policy offers it. true: also train it live on
     * examples from every pair this process forecasts, saved in the data
     * directory. Off by default: a pair's profile then depends on its own
     * windows alone, not on the order in which windows of different pairs
     * came in (which examples the model learned from, and when), so a
     * distributed run gives exactly what one process gives (with pairs
     * alone); and live training, which cut slack on two traces of three,
     * changed limits up to 4× as often (README, `augur-live`).
     */
    learnGlobalModel: z.boolean().default(false),
    /**
     * Share one overrun price and one set of overrun rates pooled by age
     * among all pairs this process forecasts, as the backtest's augur policy
     * does (`augur models load` starts them from a backtest's), saved in the
     * data directory; and take the limit of the pair's fallback level (its
     * image, its user, everyone: what its peers ran) as its prior, a
     * candidate a young pair may hold before its own windows say more
     * (with Kafka, as the levels' owners last published them on
     * `augur.profiles`). Off, each pair steers its own overruns to the service
     * level, which it cannot learn from its own few rare events: on a trace's
     * rare overruns (memory's one in 2,000) a pair alone overruns several
     * times as often as asked (`augur backtest --policies augur-live`). On
     * (the default), a pair's limits also depend on the other pairs' windows
     * and on the order they came in, so a distributed run does not give
     * exactly what one process gives; off, they do.
     */
    poolAcrossPairs: z.boolean().default(true),
  })
  .strict();
export type EnsembleModelConfig = z.infer<typeof ensembleModelConfig>;

interface ResourceEntry {
  forecaster: EnsembleForecaster;
  /** Every sample of the last day (from the windows' sketches): the profile's quantiles. */
  usage: DecayingHistogram;
  /** The pair's own overrun price and rates; null where the pairs pool them (the learners hold them). */
  own: { price: OverrunPrice; pool: PooledMisses } | null;
  samples: number;
  nextTs: number;
}

interface EnsembleModelState {
  resources: Partial<
    Record<
      Resource,
      {
        forecaster: EnsembleState;
        usage: HistogramState;
        /**
         * The pair's own price, the mean usage under its floor and its
         * rates: saved by pairs alone only (older states of pooled pairs have
         * them too, unused; a pair that pooled and now stands alone starts
         * them afresh; older states lack priceUsage: the mean starts afresh).
         */
        price?: number | null;
        priceUsage?: PriceUsageState;
        pool?: PooledMissesState;
        samples: number;
        nextTs: number;
      }
    >
  >;
}

/**
 * The backtest's augur policy as a live model: each window is one step whose
 * usage is the window's peak; the limit is the ensemble's limit for the next
 * window. What the backtest shares across pairs, the pairs of a factory
 * share through `learners`: the global model, and (`poolAcrossPairs`) the
 * overrun price and the overrun rates pooled by age, with the peers' limits
 * the stage gives as the prior; off, each pair has its own price and rates
 * and no prior.
 */
class EnsembleModel implements ForecastModel {
  private readonly entries = new Map<Resource, ResourceEntry>();
  /** The peers' limits as given with the window being folded, looked up only when a forecaster refreshes its prior (pooled). */
  private peers: Peers = NO_PEERS;

  constructor(
    private readonly config: EnsembleModelConfig,
    private readonly learners: GlobalLearners,
  ) {}

  private entry(resource: Resource): ResourceEntry {
    let entry = this.entries.get(resource);
    if (!entry) {
      const options = defaultEnsembleOptions(resource, { memory: this.config.memoryMissRate, rate: this.config.rateMissRate, decisionMs: this.config.decisionSeconds * 1000 });
      // Pooled across pairs, the learners'; else the pair's own.
      const own = this.config.poolAcrossPairs ? null : { price: new OverrunPrice(options.targetMissRate, options.priceStep), pool: new PooledMisses(options.missDecay, 1) };
      const { price, pool } = own ?? this.learners.sharedOverruns(resource, options);
      entry = {
        forecaster: new EnsembleForecaster(options, pool, price, histogramOptionsFor(resource), {
          learner: this.learners.of(resource),
          prior: own ? null : () => this.peers(resource),
        }),
        usage: new DecayingHistogram({ ...histogramOptionsFor(resource), halfLifeMs: DAY_MS }),
        own,
        samples: 0,
        nextTs: 0,
      };
      this.entries.set(resource, entry);
    }
    return entry;
  }

  observe(window: WindowAggregate, peers: Peers = NO_PEERS): void {
    this.peers = peers;
    for (const resource of RESOURCES) {
      const stats = window.resources[resource];
      if (!stats || stats.count === 0) continue;
      const entry = this.entry(resource);
      entry.forecaster.limit(window.windowStart); // what this window would have been given
      entry.forecaster.observe(window.windowStart, stats.max);
      this.learners.trainIfDue(resource);
      if (this.config.poolAcrossPairs) this.learners.sharedChanged();
      foldSketch(entry.usage, stats.sketch, window.windowEnd);
      entry.samples += stats.count;
      entry.nextTs = window.windowEnd;
    }
  }

  forecast(resource: Resource): number | null {
    return this.entries.get(resource)?.forecaster.forecast() ?? null;
  }

  predict(): Profile["resources"] {
    const out: Profile["resources"] = {};
    for (const [resource, entry] of this.entries) {
      const limit = entry.forecaster.limit(entry.nextTs);
      if (limit === null) continue;
      const [p50, p90, p95, p99, request] = [0.5, 0.9, 0.95, 0.99, this.config.requestPercentile].map((p) => entry.usage.percentile(p));
      out[resource] = {
        p50: p50!,
        p90: p90!,
        p95: p95!,
        p99: p99!,
        max: entry.forecaster.weekPeak(entry.nextTs),
        request: Math.min(request!, limit),
        limit,
        model: `augur-ensemble:${entry.forecaster.model}`,
        sampleCount: entry.samples,
      };
    }
    return out;
  }

  toState(): EnsembleModelState {
    const resources: EnsembleModelState["resources"] = {};
    for (const [resource, entry] of this.entries) {
      const own = entry.own;
      resources[resource] = {
        forecaster: entry.forecaster.toState(),
        usage: entry.usage.toState(),
        ...(own ? { price: Number.isNaN(own.price.value) ? null : own.price.value, priceUsage: own.price.usageState(), pool: own.pool.toState() } : {}),
        samples: entry.samples,
        nextTs: entry.nextTs,
      };
    }
    return { resources };
  }

  static restore(config: EnsembleModelConfig, learners: GlobalLearners, state: unknown): EnsembleModel {
    const model = new EnsembleModel(config, learners);
    type Saved = NonNullable<EnsembleModelState["resources"][Resource]>;
    for (const [resource, saved] of savedResources<Saved>(state, "ensemble")) {
      if (saved.price !== undefined && saved.price !== null && !(typeof saved.price === "number" && Number.isFinite(saved.price) && saved.price > 0)) {
        throw new RangeError(`${resource}: the overrun price must be a positive number or null`);
      }
      if (!(Number.isSafeInteger(saved.samples) && saved.samples >= 0)) throw new RangeError(`${resource}: samples must be a count`);
      if (!(typeof saved.nextTs === "number" && Number.isFinite(saved.nextTs))) throw new RangeError(`${resource}: nextTs must be a time`);
      const entry = model.entry(resource);
      entry.forecaster.restore(saved.forecaster);
      entry.usage = DecayingHistogram.fromState({ ...histogramOptionsFor(resource), halfLifeMs: DAY_MS }, saved.usage);
      const own = entry.own;
      if (own && saved.pool !== undefined) {
        own.price.value = saved.price ?? Number.NaN;
        if (saved.priceUsage !== undefined) own.price.restoreUsage(saved.priceUsage);
        own.pool.restore(saved.pool);
      }
      entry.samples = saved.samples;
      entry.nextTs = saved.nextTs;
    }
    return model;
  }
}

/** The model's name in config files and in the store. */
export const ENSEMBLE_MODEL = "augur-ensemble";

export function createEnsembleModelFactory(config: EnsembleModelConfig): ModelFactory {
  const fresh = () => new GlobalLearners({ learn: config.learnGlobalModel });
  // Replaced, not emptied, by a reset: models made before it keep the old one (the stage drops them all).
  let learners = fresh();
  return {
    name: ENSEMBLE_MODEL,
    stateVersion: 6,
    readsPeers: config.poolAcrossPairs,
    create: () => new EnsembleModel(config, learners),
    restore: (state) => EnsembleModel.restore(config, learners, state),
    shared: {
      get generation() {
        return learners.generation;
      },
      toState: () => learners.export(),
      restore: (state) => learners.load(parseGlobalModels(state) ?? savedGlobalModels({})),
      reset: () => void (learners = fresh()),
      prepare: async () => void (config.learnGlobalModel && (await initTensorflow())),
    },
  };
}
