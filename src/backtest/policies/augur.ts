import { deflateRawSync, inflateRawSync } from "node:zlib";
import type { Resource } from "../../core/types.js";
import { userFactor } from "../../core/user-factor.js";
import { DecayingHistogram } from "../../forecast/decaying-histogram.js";
import { defaultEnsembleOptions, EnsembleForecaster, histogramOptionsFor, type EnsembleOptions, type EnsembleState } from "../../forecast/ensemble.js";
import { COLD_START_MARGIN, ColdStartChooser } from "../../forecast/cold-start.js";
import { GlobalLearners, parseGlobalModels, type GlobalModels } from "../../forecast/global-learners.js";
import type { BacktestPolicy, PairRef } from "../policy.js";

const DAY = 24 * 3_600_000;

/** A fallback level: the block peaks of the pairs under it, and which pair fed it (NO_PAIR, one id, or MANY_PAIRS). */
interface Level {
  usage: DecayingHistogram;
  sole: number;
}
const NO_PAIR = -1;
const MANY_PAIRS = -2;
/** Event time a user's factor is kept before it is computed again. */
const USER_FACTOR_REFRESH_MS = 3_600_000;

export interface AugurPolicyOptions {
  optionsFor?: (resource: Resource) => EnsembleOptions;
  /** Learn the global model from the replay (default true). */
  learn?: boolean;
  /** Global models saved by an earlier run (`exportModels`), per resource. */
  models?: GlobalModels;
  /** Event time a limit decision holds (with the default options); default every step. */
  decisionMs?: number;
  /** Pairs whose forecasters stay in memory before idle ones are put away (default KEEP_PAIRS). */
  keepPairs?: number;
  /** Event time without a sample after which a pair may be put away (default IDLE_MS). */
  idleMs?: number;
  /** Told how many pairs each sweep put away. */
  onPutAway?: (pairs: number) => void;
  /** Fractions of steps allowed above the memory and rate limits (with the default options); default augur's. */
  serviceLevel?: { memory: number; rate: number };
}

/**
 * Beyond this many pairs in memory, a pair idle for IDLE_MS of event time is
 * put away: its forecasters' saved states, deflated (0.9–2.9 KB a resource
 * against ~10 KB live), restored exactly when it runs again. A trace of
 * hundreds of thousands of short-lived pairs then holds the running ones
 * and the put-away states, not every pair's whole state.
 */
const KEEP_PAIRS = 50_000;
const IDLE_MS = 3_600_000;

/**
 * `augur`: per (image, user) and resource an EnsembleForecaster; pairs with
 * no history start from the (image, *) level scaled by the user's factor,
 * then (*, user), then (*, *)
 * (a quantile of what those ran, chosen by cost over all pairs' first
 * steps), then the trace's limit or the default. Overrun rates are pooled over all pairs, so a
 * young pair borrows evidence from its peers.
 */
export function augurPolicy(options: AugurPolicyOptions = {}): BacktestPolicy {
  // One options object per resource, shared by every pair's forecaster.
  const given = options.optionsFor ?? ((resource: Resource) => defaultEnsembleOptions(resource, { decisionMs: options.decisionMs, memory: options.serviceLevel?.memory, rate: options.serviceLevel?.rate }));
  const ensembleOptions = new Map<Resource, EnsembleOptions>();
  const optionsFor = (resource: Resource): EnsembleOptions => {
    let found = ensembleOptions.get(resource);
    if (!found) ensembleOptions.set(resource, (found = given(resource)));
    return found;
  };
  const learners = new GlobalLearners({ learn: options.learn, models: options.models });
  const forecasters = new Map<Resource, Array<EnsembleForecaster | undefined>>();
  /** Every pair's overrun price and pooled rates, per resource (the learners hold them, as a live stage's do). */
  const overruns = (resource: Resource) => learners.sharedOverruns(resource, optionsFor(resource));
  /** Usage (block peaks) under each fallback level: cold-start limits for pairs with no history of their own. */
  const levels = new Map<string, Level>();

  /** The (image, *), (*, user) and (*, *) usage of a pair, resolved once per pair and resource. */
  const levelsOf = new Map<Resource, Level[][]>();
  const pairLevels = (pair: PairRef, resource: Resource): Level[] => {
    let byPair = levelsOf.get(resource);
    if (!byPair) levelsOf.set(resource, (byPair = []));
    let found = byPair[pair.id];
    if (!found) {
      byPair[pair.id] = found = [`i:${pair.image}`, `u:${pair.user}`, "*"].map((key) => {
        const id = `${resource}|${key}`;
        let level = levels.get(id);
        if (!level) levels.set(id, (level = { usage: new DecayingHistogram({ ...histogramOptionsFor(resource), halfLifeMs: DAY }), sole: NO_PAIR }));
        return level;
      });
    }
    return found;
  };

  /** Per resource, per user id: the ids of the user's pairs, and the user's factor as last computed. */
  const pairsOfUser = new Map<Resource, Array<number[] | undefined>>();
  const factors = new Map<Resource, Array<{ at: number; value: number } | undefined>>();
  /**
   * How this user's pairs compare with their images over all users (P90 of
   * their own block peaks over the image's, geometric mean, clamped: the rule
   * of the live allocation engine); recomputed at most once per event-time hour.
   */
  const userFactorOf = (pair: PairRef, resource: Resource, ts: number): number => {
    let byUser = factors.get(resource);
    if (!byUser) factors.set(resource, (byUser = []));
    const cached = byUser[pair.userId];
    if (cached && ts - cached.at < USER_FACTOR_REFRESH_MS && ts >= cached.at) return cached.value;
    const ratios: number[] = [];
    const byPair = forecasters.get(resource)!;
    const byPairLevels = levelsOf.get(resource)!;
    const awayOf = putAway.get(resource);
    for (const id of pairsOfUser.get(resource)?.[pair.userId] ?? []) {
      const own = byPair[id];
      const away = own ? undefined : awayOf?.[id];
      const image = byPairLevels[id]?.[0]?.usage;
      const observed = own ? own.observed : (away?.observed ?? 0);
      if (id === pair.id || observed === 0 || !image || image.isEmpty()) continue;
      ratios.push((own ? own.usageQuantile(0.9) : away!.p90) / image.percentile(0.9));
    }
    const value = userFactor(ratios);
    byUser[pair.userId] = { at: ts, value };
    return value;
  };

  /**
   * The first fallback level with usage from pairs other than this one, and
   * its scale: (image, *) by the user's factor, (*, user) and (*, *) as
   * they are. Null when no level has any.
   */
  const peersOf = (pair: PairRef, resource: Resource, ts: number): { usage: DecayingHistogram; scale: number } | null => {
    const levels = pairLevels(pair, resource);
    for (let l = 0; l < levels.length; l++) {
      const { usage, sole } = levels[l]!;
      if (usage.isEmpty() || sole === pair.id) continue;
      return { usage, scale: COLD_START_MARGIN * (l === 0 ? userFactorOf(pair, resource, ts) : 1) };
    }
    return null;
  };

  /**
   * What the pair's peers ran: a high quantile (the service level's) of
   * their level × 1.15 (NaN when no level has any): the forecaster's prior
   * once the pair has a history of its own.
   */
  const quantiles = new Map<Resource, number>();
  const peerLevel = (pair: PairRef, resource: Resource, ts: number): number => {
    let quantile = quantiles.get(resource);
    if (quantile === undefined) quantiles.set(resource, (quantile = 1 - optionsFor(resource).targetMissRate));
    const peers = peersOf(pair, resource, ts);
    return peers ? peers.usage.percentile(quantile) * peers.scale : Number.NaN;
  };

  /**
   * A pair with no history starts at the quantile of its peers' level its
   * resource's chooser picks (`ColdStartChooser`); the limits every quantile
   * would have set are kept until the pair's first step scores them.
   */
  const coldStarts = new Map<Resource, { chooser: ColdStartChooser; starts: Array<{ ts: number; limits: Float64Array } | undefined> }>();
  const coldStart = (pair: PairRef, resource: Resource, ts: number): number => {
    const peers = peersOf(pair, resource, ts);
    if (!peers) return Number.NaN;
    let cold = coldStarts.get(resource);
    if (!cold) coldStarts.set(resource, (cold = { chooser: new ColdStartChooser(optionsFor(resource).targetMissRate), starts: [] }));
    const { chooser } = cold;
    const start = (cold.starts[pair.id] ??= { ts, limits: new Float64Array(chooser.quantiles.length) });
    start.ts = ts;
    peers.usage.percentiles(chooser.quantiles, start.limits);
    for (let i = 0; i < start.limits.length; i++) start.limits[i] = start.limits[i]! * peers.scale;
    return start.limits[chooser.choose(overruns(resource).price.value)]!;
  };

  /**
   * Pairs put away, per resource: the forecaster's saved state (deflated
   * JSON) and what the user's factor reads of it (its observations and its
   * usage P90, which no later time changes while nothing is added).
   */
  const putAway = new Map<Resource, Array<{ state: Buffer; observed: number; p90: number } | undefined>>();
  /** Pairs with a forecaster in memory, and the event time each was last asked about. */
  const live = new Set<number>();
  const lastSeen: number[] = [];
  const keepPairs = options.keepPairs ?? KEEP_PAIRS;
  const idleMs = options.idleMs ?? IDLE_MS;
  let sweepAbove = keepPairs;
  /** Puts away every pair idle for idleMs; if few were, sweeps again only after a tenth more pairs. */
  const sweep = (ts: number) => {
    let count = 0;
    for (const id of live) {
      if (!(ts - lastSeen[id]! >= idleMs)) continue;
      for (const [resource, byPair] of forecasters) {
        const f = byPair[id];
        if (!f) continue;
        let away = putAway.get(resource);
        if (!away) putAway.set(resource, (away = []));
        const p90 = f.observed > 0 ? f.usageQuantile(0.9) : 0;
        // Copied out of zlib's 16 KB output chunk, which the slice would otherwise keep alive.
        away[id] = { state: Buffer.from(deflateRawSync(JSON.stringify(f.toState()), { level: 1 })), observed: f.observed, p90 };
        byPair[id] = undefined;
      }
      live.delete(id);
      count++;
    }
    sweepAbove = Math.max(keepPairs, live.size + Math.ceil(keepPairs / 10));
    options.onPutAway?.(count);
  };

  const forecaster = (pair: PairRef, resource: Resource, ts: number): EnsembleForecaster => {
    lastSeen[pair.id] = ts;
    let byPair = forecasters.get(resource);
    if (!byPair) forecasters.set(resource, (byPair = []));
    let f = byPair[pair.id];
    if (!f) {
      const away = putAway.get(resource)?.[pair.id];
      let byUser = pairsOfUser.get(resource);
      if (!byUser) pairsOfUser.set(resource, (byUser = []));
      if (!away) (byUser[pair.userId] ??= []).push(pair.id);
      const opts = optionsFor(resource);
      const { pool, price } = overruns(resource);
      // The fallback levels learn each block's peak as the pair's forecaster folds it in.
      const levels = pairLevels(pair, resource);
      const onBlock = (steps: number, ts: number, bucket: number) => {
        for (let l = 0; l < levels.length; l++) {
          const level = levels[l]!;
          level.usage.addAt(bucket, steps, ts);
          if (level.sole === NO_PAIR) level.sole = pair.id;
          else if (level.sole !== pair.id) level.sole = MANY_PAIRS;
        }
      };
      const prior = (ts: number) => peerLevel(pair, resource, ts);
      byPair[pair.id] = f = new EnsembleForecaster(opts, pool, price, histogramOptionsFor(resource), { learner: learners.of(resource), onBlock, prior });
      if (away) {
        f.restore(JSON.parse(inflateRawSync(away.state).toString("utf8")) as EnsembleState);
        putAway.get(resource)![pair.id] = undefined;
      }
      if (!live.has(pair.id)) {
        live.add(pair.id);
        if (live.size > sweepAbove) sweep(ts);
      }
    }
    return f;
  };

  return {
    name: "augur",
    endOfTraining() {
      learners.trainWhatCan();
    },
    exportModels() {
      // With the models, each resource's overrun price and pooled rates: where a live stage that pools them starts (`augur models load`).
      return learners.export();
    },
    limit(pair, resource, ts, fallback) {
      const own = forecaster(pair, resource, ts).limit(ts);
      if (own !== null) return own;
      const level = coldStart(pair, resource, ts);
      return Number.isNaN(level) ? fallback : level;
    },
    observe(pair, resource, ts, usage, _workload, limit) {
      forecaster(pair, resource, ts).observe(ts, usage);
      const cold = coldStarts.get(resource);
      const start = cold?.starts[pair.id];
      if (cold && start) {
        if (start.ts === ts) {
          // A first step (of each workload the pair started with): scored for the chooser, and an
          // overrun of it steers the price like any other decided step.
          cold.chooser.score(start.limits, usage);
          overruns(resource).price.update(usage > limit);
        } else cold.starts[pair.id] = undefined;
      }
      learners.trainIfDue(resource);
    },
    forecast: (pair, resource) => forecasters.get(resource)?.[pair.id]?.forecast() ?? null,
  };
}

/** Checks what `exportModels` wrote (and a user may have edited) before it is trusted; the models in it. */
export function augurModels(saved: unknown): GlobalModels | undefined {
  return parseGlobalModels(saved)?.models;
}
