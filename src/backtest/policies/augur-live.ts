// `augur-live`: what the live pipeline's forecast model would have set, step
// by step. The trace's rows become samples, the aggregate stage's windowing
// (`WindowAggregator`, the default window, no lateness) closes windows per
// (image, user) in event time, and each closed window goes to the pair's
// model from the forecast stage's registry (`augur-ensemble` with the live
// defaults: the overrun price and pooled rates shared by all pairs, the
// global model as loaded), exactly as the stage folds it. The limit for a
// step is the pair's profile limit from the windows closed before it;
// `--load-models` gives it what `augur models load` would (the global models
// and the calibration an earlier augur run learned). Each window also goes
// to the pair's fallback levels (image, user, everyone; the pipeline's
// default fallback model), as the stage folds them whether pairs pool or
// not. Pooled, their limits before the window are the pair's prior, as the
// stage gives them. A pair with no window closed yet gets what the
// allocation engine gives a new run (`AllocationEngine.resolve`): the limit
// of the first of its image's level (× the user's factor, the engine's: from
// the user's pairs and image levels that have folded `minWindows` windows),
// its user's and everyone's that has folded the engine's `minWindows`
// (default 3) windows; the trace's limit or the default where none has, or
// where that level predicts nothing for the resource.
import { DEFAULT_SKETCH_ACCURACY, DEFAULT_WINDOW_SECONDS, WindowAggregator } from "../../aggregate/windows.js";
import { allocationConfig } from "../../allocate/config.js";
import { ANY, pairKey, profileLevels } from "../../core/keys.js";
import { emptySample } from "../../core/sample.js";
import { setSampleValue, type Profile, type Resource, type Sample, type WindowAggregate } from "../../core/types.js";
import { ENSEMBLE_MODEL } from "../../forecast/ensemble-model.js";
import { fedByOthers, NO_PAIRS, peerLimit, predicted, userFactorOf, type ForecastModel, type Limits, type ModelFactory, type PeerLevel, type PerResource } from "../../forecast/model.js";
import { createModelFactory, DEFAULT_FALLBACK_MODEL } from "../../forecast/registry.js";
import type { BacktestPolicy } from "../policy.js";

export interface AugurLiveOptions {
  /** Fractions of steps allowed above the memory and rate limits (the live config's memoryMissRate and rateMissRate). */
  serviceLevel?: { memory: number; rate: number };
  /** Event time a limit decision holds (the live config's decisionSeconds × 1000). */
  decisionMs?: number;
  /** The live config's learnGlobalModel and poolAcrossPairs (default their defaults). */
  learnGlobalModel?: boolean;
  poolAcrossPairs?: boolean;
  /**
   * What `augur models load` would put in the data directory: the augur
   * policy's part of an earlier run's `--save-models` (global models and
   * calibration), checked as the stage checks it.
   */
  saved?: unknown;
}

/** A fallback level: its model, the pairs whose windows it folded, and its limits and p90s, predicted when first read after a fold. */
class LiveLevel implements PeerLevel {
  readonly model: ForecastModel;
  readonly contributors = new Set<string>();
  /** Windows folded: the level's profile's `windows`. */
  windows = 0;
  private cached: { limits: Limits; p90: PerResource } | undefined;
  private stale = false;

  constructor(factory: ModelFactory) {
    this.model = factory.create();
  }

  private prediction(): { limits: Limits; p90: PerResource } | undefined {
    if (this.stale) {
      const resources = this.model.predict();
      this.cached = { limits: predicted(resources, "limit"), p90: predicted(resources, "p90") };
      this.stale = false;
    }
    return this.cached;
  }

  get limits(): Limits | undefined {
    return this.prediction()?.limits;
  }

  get p90(): PerResource | undefined {
    return this.prediction()?.p90;
  }

  fold(window: WindowAggregate, pair: string): void {
    this.model.observe(window);
    this.contributors.add(pair);
    this.windows++;
    this.stale = true;
  }
}

interface LivePair {
  model: ForecastModel;
  /** Its fallback levels (image, user, everyone). */
  levels: LiveLevel[];
  /** The model's prediction after its last window, made then as the stage makes it (pooled, later it could differ). */
  prediction: Profile["resources"];
  /** Windows folded: its profile's `windows`. */
  windows: number;
}

export function augurLivePolicy(options: AugurLiveOptions = {}): BacktestPolicy {
  const factory = createModelFactory(ENSEMBLE_MODEL, {
    ...(options.serviceLevel ? { memoryMissRate: options.serviceLevel.memory, rateMissRate: options.serviceLevel.rate } : {}),
    decisionSeconds: (options.decisionMs ?? 0) / 1000,
    ...(options.learnGlobalModel === undefined ? {} : { learnGlobalModel: options.learnGlobalModel }),
    ...(options.poolAcrossPairs === undefined ? {} : { poolAcrossPairs: options.poolAcrossPairs }),
  });
  if (options.saved !== undefined) factory.shared!.restore(options.saved);
  const sizeMs = DEFAULT_WINDOW_SECONDS * 1000;
  const aggregator = new WindowAggregator({ kind: "tumbling", sizeMs, slideMs: sizeMs, allowedLatenessMs: 0, sketchAccuracy: DEFAULT_SKETCH_ACCURACY });
  const pairs = new Map<string, LivePair>();
  // The peers' prior: only where pairs pool (the model reads it only then).
  const pooled = options.poolAcrossPairs ?? true;
  const fallbackFactory = createModelFactory(DEFAULT_FALLBACK_MODEL, {});
  const levels = new Map<string, LiveLevel>();
  const levelsOf = (image: string, user: string): LiveLevel[] =>
    profileLevels(image, user)
      .slice(1)
      .map((level) => {
        const id = pairKey(level.image, level.user);
        let found = levels.get(id);
        if (!found) levels.set(id, (found = new LiveLevel(fallbackFactory)));
        return found;
      });
  const { minWindows } = allocationConfig.parse({});
  /**
   * Per user its pairs' p90s by image, as their last windows left them (the user factor that scales the image's
   * level): every pair for the prior (as the stage's), those of `minWindows` windows for a new run (as the engine's).
   */
  const users = new Map<string, Map<string, PerResource>>();
  const settledUsers = new Map<string, Map<string, PerResource>>();
  /**
   * An image's level's p90s. For a new run too: the engine also leaves out image levels of fewer than minWindows
   * windows, but a settled pair's image level has folded at least the pair's own.
   */
  const imageP90 = (image: string) => levels.get(pairKey(image, ANY))?.p90;
  const priorFactorOf = (image: string, user: string) => {
    const pairsOfUser = users.get(user) ?? NO_PAIRS;
    return (resource: Resource) => userFactorOf(pairsOfUser, imageP90, image, resource);
  };
  /** A new run's limit as the allocation engine resolves it: the first level with minWindows windows (NaN: none, or no limit for the resource there). */
  const coldStart = (image: string, user: string, resource: Resource): number => {
    const fallbacks = levelsOf(image, user);
    for (let l = 0; l < fallbacks.length; l++) {
      const level = fallbacks[l]!;
      if (level.windows < minWindows) continue;
      const limit = level.limits?.[resource];
      if (limit === undefined || !(limit > 0 && limit < Infinity)) return Number.NaN;
      return l === 0 ? limit * userFactorOf(settledUsers.get(user) ?? NO_PAIRS, imageP90, image, resource) : limit;
    }
    return Number.NaN;
  };
  /** Per workload, its sample of the step being observed (one resource at a time). */
  const pending = new Map<number, Sample>();
  let now = -Infinity;

  const fold = (closed: WindowAggregate[]) => {
    for (const window of closed) {
      const key = pairKey(window.image, window.user);
      let pair = pairs.get(key);
      if (!pair) pairs.set(key, (pair = { model: factory.create(), levels: levelsOf(window.image, window.user), prediction: {}, windows: 0 }));
      const { levels: fallbacks } = pair;
      // As the stage folds: the pair first (pooled, with its peers as they were before this window, the image's
      // level scaled by the user's factor), then its levels.
      let peers: PeerLevel[] | null = null;
      const userFactor = priorFactorOf(window.image, window.user);
      const peersOf = () => fallbacks.flatMap((level, l): PeerLevel[] => (!fedByOthers(level.contributors.size, level.contributors.has(key)) ? [] : l > 0 ? [level] : [{ get limits() { return level.limits; }, userFactor }]));
      pair.model.observe(window, pooled ? (resource) => peerLimit((peers ??= peersOf()), resource) : undefined);
      pair.prediction = pair.model.predict();
      pair.windows++;
      const p90 = predicted(pair.prediction, "p90");
      users.set(window.user, (users.get(window.user) ?? new Map<string, PerResource>()).set(window.image, p90));
      if (pair.windows >= minWindows) settledUsers.set(window.user, (settledUsers.get(window.user) ?? new Map<string, PerResource>()).set(window.image, p90));
      for (const level of fallbacks) level.fold(window, key);
    }
  };
  /** Every sample of earlier steps in, every window that ends by `ts` closed and folded. */
  const advance = (ts: number) => {
    if (ts <= now) return;
    now = ts;
    for (const sample of pending.values()) fold(aggregator.add(sample).closed);
    pending.clear();
    fold(aggregator.advanceWatermark(ts));
  };

  return {
    name: "augur-live",
    limit(pair, resource, ts, fallback) {
      advance(ts);
      const live = pairs.get(pairKey(pair.image, pair.user));
      if (!live) {
        const level = coldStart(pair.image, pair.user, resource);
        return Number.isNaN(level) ? fallback : level;
      }
      return live.prediction[resource]?.limit ?? fallback;
    },
    forecast(pair, resource) {
      // The model is as its last prediction left it: its forecast is the one that prediction's limit was made from.
      const live = pairs.get(pairKey(pair.image, pair.user));
      return live?.prediction[resource] ? (live.model.forecast?.(resource) ?? null) : null;
    },
    observe(pair, resource, ts, usage, workload) {
      let sample = pending.get(workload);
      if (sample && sample.ts !== ts) {
        fold(aggregator.add(sample).closed);
        sample = undefined;
      }
      if (!sample) pending.set(workload, (sample = emptySample({ ts, workload: String(workload), image: pair.image, user: pair.user, host: "backtest", source: "backtest" })));
      setSampleValue(sample, resource, usage);
    },
  };
}
