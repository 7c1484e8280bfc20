// augur's forecaster for one (image, user) and one resource. Candidates are
// "the peak of the last W, times a margin m", for windows from one step to a
// week and margins from 0% to 100%: the short ones track a workload's
// current phase, the long ones are the envelope VPA and Autopilot keep. Each
// step every candidate is scored against the usage (full feedback, in the
// spirit of Autopilot's ML recommender, ANCHORS §2.3): its slack is measured,
// its overrun rate estimated over a long memory with a prior pooled over all
// keys. A key uses the candidate with the least slack + price × overrun
// rate. The price is one per resource, steered so that the pooled overrun
// rate meets the target: keys whose usage is big and spiky spend the overrun
// budget where it saves the most slack, steady keys get tight limits.
// Pure: no I/O, no wall clock; event time comes with every call.
import { DecayingHistogram, type HistogramOptions, type HistogramState } from "./decaying-histogram.js";
import { fromJsonNumbers, isNumberArray, SEASONAL_LAGS_HOURS, SeasonalProfile, toJsonNumbers, type SeasonalState } from "./seasonal.js";
import { PEAK_LIKE, type Resource } from "../core/types.js";
import { BUCKETS } from "./percentile-model.js";
import { GLOBAL_FEATURES, GLOBAL_LEVELS, type ExampleReservoir, type GlobalQuantileModel } from "./global-model.js";

/** The global model shared by every key of a resource, and the examples it learns from. */
export interface GlobalLearner {
  model: GlobalQuantileModel | null;
  reservoir: ExampleReservoir;
  /** Every how many observations of a key one example is kept. */
  sampleEvery: number;
}

/** Bumped whenever the layout of EnsembleState changes. */
export const ENSEMBLE_STATE_VERSION = 6;

export interface EnsembleState {
  version: number;
  candidates: number;
  /** The peak windows' shared deque. */
  peaks: { ts: number[]; values: number[] };
  histograms: HistogramState[];
  seasonal: SeasonalState;
  /** Per source, decayed over the steps it was scored on: its level, the usage, its movement, its last value, the steps, the scales. */
  sources: { level: number[]; usage: number[]; movement: number[]; previous: Array<number | null>; steps: number[]; missScale: number[]; excessScale: number[]; weight: number[] };
  /** Per candidate, divided by its source's scale: overruns, and usage above the limit. */
  misses: number[];
  excess: number[];
  chosen: number;
  observations: number;
  bumpFloor: number;
  bumpUntil: number | null;
  /** Steps observed since the last decision, not yet folded in. */
  pending: { ts: number[]; values: number[] };
  /** The decision in force: every source as held, and when it was made; null before the first. */
  decision: { held: Array<number | null>; at: number } | null;
  /** The decaying percentiles and the prior as last computed, and the steps since (they are refreshed every few steps). */
  percentiles: { since: number; values: number[]; prior: number | null };
  /**
   * Blocks folded in since the first decision (one in `sampleEvery` gives
   * the global model an example), and the global model's features at the
   * last decision with the scale they are in (null where there are none):
   * a restored key samples the same examples as one never stopped. Older
   * states lack them (sampling starts afresh).
   */
  global?: { blocks: number; features: Array<number | null> | null; scale: number };
}

export interface EnsembleOptions {
  /** Pooled fraction of steps allowed above the limit (the service level). */
  targetMissRate: number;
  /** Per-step decay of the slack average (short memory: slack is frequent). */
  slackDecay: number;
  /** Per-step decay of overrun counts (long memory: overruns are rare). */
  missDecay: number;
  /** Weight, in steps, of the pooled overrun rate in a key's estimate. */
  priorSteps: number;
  /** A candidate must be this much cheaper to replace the current one. */
  switchMargin: number;
  /** Charge per unit of limit movement, against slack: limits that jump around cost more. */
  changeWeight: number;
  /** After a miss, the limit stays at least usage × (1 + bump) for bumpMs (OOM / heavy throttling feedback). */
  missBump: number;
  missBumpMs: number;
  /** Smallest limit in the resource's unit. */
  absoluteFloor: number;
  /** Step of the overrun-price controller (log scale, per overrun). */
  priceStep: number;
  /**
   * Event time a decision holds: the steps observed since the last decision
   * are folded into the key's state as one block, every candidate is scored
   * on them, the choice made and the limits computed, once per this period
   * (the limit still rises at once after an overrun). 0 decides every step.
   */
  decisionMs: number;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
/** Look-back windows of the peak candidates (event time). */
export const WINDOWS_MS = [1, 15, 60, 240, 1440, 10080].map((minutes) => minutes * MINUTE);
/** Half-lives and percentiles of the decaying-histogram candidates (the VPA family). */
export const HALF_LIVES_MS = [24 * HOUR, 168 * HOUR];
export const PERCENTILES = [0.9, 0.95, 0.98, 0.99, 0.999] as const;
/** Margins every source is tried with. */
export const MARGINS = [1, 1.1, 1.25, 1.5, 2] as const;
const PERCENTILE_SOURCES = HALF_LIVES_MS.length * PERCENTILES.length;
const SEASONAL_AT = WINDOWS_MS.length + PERCENTILE_SOURCES;
const GLOBAL_AT = SEASONAL_AT + SEASONAL_LAGS_HOURS.length;
/**
 * Sources: peaks over windows, decaying percentiles, seasonal peaks (a day and
 * a week ago, when detected), the learned global model's quantiles (once
 * trained), then the prior: what the key's peers ran (its cold-start level,
 * where the caller gives one).
 */
const PRIOR_AT = GLOBAL_AT + GLOBAL_LEVELS.length;
const SOURCES = PRIOR_AT + 1;
const CANDIDATES = SOURCES * MARGINS.length;
const REFRESH_PERCENTILES_EVERY = 8;
/** The global model's history feature reaches 1 at a week of one-minute observations. */
const LOG_HISTORY_SCALE = Math.log1p(7 * 24 * 60);
/** The decaying percentiles the global model sees: P90 and P99 of each half-life. */
const FEATURE_PERCENTILES = [0, 3, PERCENTILES.length, PERCENTILES.length + 3];
/** Steps a block holds at most: a key observed but never asked for a limit decides anyway. */
const MAX_BLOCK = 4096;
/** The longest peak window with the widest margin: where a key with no prior starts. */
const CAUTIOUS = WINDOWS_MS.length * MARGINS.length - 1;
/** The prior as it is: where a key with one starts while no key of its age has been scored (the limit it had before its first step). */
const PRIOR = PRIOR_AT * MARGINS.length;

/** Time of day and of week on the unit circle, kept for the last timestamp asked (keys share timestamps in a replay). */
const timeOfDayAndWeek = new Float32Array(4);
let timeFeaturesAt = Number.NaN;
function timeFeatures(ts: number): Float32Array {
  if (ts !== timeFeaturesAt) {
    const hour = ((ts / HOUR) % 24) / 24;
    const week = ((ts / (24 * HOUR) + 4) % 7) / 7; // 1970-01-01 was a Thursday
    timeOfDayAndWeek[0] = Math.sin(2 * Math.PI * hour);
    timeOfDayAndWeek[1] = Math.cos(2 * Math.PI * hour);
    timeOfDayAndWeek[2] = Math.sin(2 * Math.PI * week);
    timeOfDayAndWeek[3] = Math.cos(2 * Math.PI * week);
    timeFeaturesAt = ts;
  }
  return timeOfDayAndWeek;
}

function duration(ms: number): string {
  const minutes = ms / MINUTE;
  return minutes >= 1440 ? `${minutes / 1440}d` : minutes >= 60 ? `${minutes / 60}h` : `${minutes}m`;
}

export function candidateName(index: number): string {
  const source = Math.floor(index / MARGINS.length);
  const margin = MARGINS[index % MARGINS.length];
  if (source < WINDOWS_MS.length) return `peak${duration(WINDOWS_MS[source]!)}×${margin}`;
  const p = source - WINDOWS_MS.length;
  if (source === PRIOR_AT) return `prior×${margin}`;
  if (source >= GLOBAL_AT) return `global-p${GLOBAL_LEVELS[source - GLOBAL_AT]! * 100}×${margin}`;
  if (source >= SEASONAL_AT) return `seasonal${SEASONAL_LAGS_HOURS[source - SEASONAL_AT]}h×${margin}`;
  return `p${PERCENTILES[p % PERCENTILES.length]! * 100}/${duration(HALF_LIVES_MS[Math.floor(p / PERCENTILES.length)]!)}×${margin}`;
}

/**
 * The peak over several sliding event-time windows of one series: one
 * monotonic deque (values decreasing, times increasing) shared by every
 * window, each window with its own head. Amortised O(1) per push and per
 * window; gives exactly what one deque per window would.
 */
export class PeakWindows {
  private ts: number[] = [];
  private values: number[] = [];
  private readonly heads: number[];
  constructor(readonly windowsMs: readonly number[]) {
    this.heads = windowsMs.map(() => 0);
  }

  push(ts: number, value: number): void {
    const values = this.values;
    while (values.length > 0 && values[values.length - 1]! <= value) {
      values.pop();
      this.ts.pop();
    }
    const heads = this.heads;
    let first = values.length;
    for (let w = 0; w < heads.length; w++) {
      if (heads[w]! > values.length) heads[w] = values.length;
      if (heads[w]! < first) first = heads[w]!;
    }
    if (first > 1024 && first * 2 > values.length) {
      // Entries behind every head are out of every window.
      this.ts = this.ts.slice(first);
      this.values = this.values.slice(first);
      for (let w = 0; w < heads.length; w++) heads[w] = heads[w]! - first;
    }
    this.ts.push(ts);
    this.values.push(value);
  }

  /**
   * Max of the values in the last window w of data: timestamps in
   * (newest − w, newest], the newest being the latest value pushed (at most
   * `now`); 0 if none. Windows end at the newest value, not at `now`: a
   * decision comes one step after the value it follows, and a window as
   * long as the step, ending at the decision, would never hold a value.
   */
  max(w: number, now: number): number {
    const ts = this.ts;
    const newest = ts.length > 0 ? Math.min(ts[ts.length - 1]!, now) : now;
    const oldest = newest - this.windowsMs[w]!;
    let head = this.heads[w]!;
    while (head < ts.length && ts[head]! <= oldest) head++;
    this.heads[w] = head;
    return head < ts.length ? this.values[head]! : 0;
  }

  /** The entries some window may still need. */
  toState(): { ts: number[]; values: number[] } {
    const first = Math.min(...this.heads);
    return { ts: this.ts.slice(first), values: this.values.slice(first) };
  }

  static fromState(windowsMs: readonly number[], state: { ts: number[]; values: number[] }): PeakWindows {
    if (!state || !Array.isArray(state.ts) || !Array.isArray(state.values) || state.ts.length !== state.values.length) throw new RangeError("peak window state has mismatched arrays");
    if (!isNumberArray(state.ts) || !isNumberArray(state.values)) throw new RangeError("peak window state holds non-numbers");
    const peaks = new PeakWindows(windowsMs);
    peaks.ts = [...state.ts];
    peaks.values = [...state.values];
    return peaks;
  }
}

/** The overrun price starts at this many units of the first usage seen. */
const PRICE_PER_USAGE = 100;
/**
 * The overrun price's floor: overruns at the target rate cost at least this
 * share of the mean usage per step (the floor is this × mean usage ÷ target
 * rate), so a key runs at the service level only where that saves more.
 */
const FLOOR_SHARE = 0.05;
/** Per-observation decay of the mean usage under the price's floor (a memory of about 100,000 observations). */
const USAGE_MEAN_DECAY = 0.99999;

/**
 * The controller's own target never falls below this share of the service
 * level, however many overruns no candidate could have avoided: past it the
 * price would wind up without bound on misses it cannot prevent.
 */
const MIN_STEERED_SHARE = 0.5;

/** The mean usage under an overrun price's floor (its decayed sum and weight), and the decayed rate of overruns past every candidate's reach. */
export interface PriceUsageState {
  sum: number;
  weight: number;
  /** Older states lack it (the rate starts afresh). */
  unreachable?: number;
}

/**
 * The price of one overrun, shared by every key of a resource, steered to
 * the target miss rate. The target is a ceiling, not a goal: the price never
 * falls below FLOOR_SHARE of the mean usage ÷ the target (16.7 times the
 * mean usage at a target of 0.3%), so where overruns would buy little slack
 * (usage that is noisy rather than high) keys keep fewer of them than the
 * target allows. Cheap overruns cost more than they look:
 * each one raises the limit for an hour (the bump) and sends the key after
 * tighter candidates that overrun again.
 *
 * Overruns past every candidate's reach (a burst above any limit the key's
 * history offered) do not move the price: no choice could have avoided them.
 * They still count against the service level: their rate (decayed like the
 * mean usage) is taken off the rate the price steers to, down to half the
 * target, so the overruns of both kinds together meet the target.
 */
export class OverrunPrice {
  value = Number.NaN;
  private usageSum = 0;
  private usageWeight = 0;
  /** Decayed count of overruns past reach, over the same weight as the mean usage. */
  private unreachableSum = 0;
  constructor(
    readonly targetMissRate: number,
    readonly step: number,
  ) {}
  /** Takes a usage: the first one sets the starting price, all enter the mean under the floor. */
  see(usage: number): void {
    if (!(usage >= 0 && usage < Infinity)) return;
    this.usageSum = this.usageSum * USAGE_MEAN_DECAY + usage;
    this.usageWeight = this.usageWeight * USAGE_MEAN_DECAY + 1;
    this.unreachableSum *= USAGE_MEAN_DECAY;
    if (Number.isNaN(this.value) && usage > 0) this.value = usage * PRICE_PER_USAGE;
  }
  /** The rate the price steers the avoidable overruns to: the target less the unavoidable ones' rate, at least half the target. */
  steeredRate(): number {
    const unreachable = this.usageWeight > 0 ? this.unreachableSum / this.usageWeight : 0;
    return Math.max(this.targetMissRate - unreachable, this.targetMissRate * MIN_STEERED_SHARE);
  }
  /** Takes the outcome of a step scored against a limit: no overrun, an overrun a candidate could have avoided, or one past every candidate's reach. */
  update(missed: boolean, reachable = true): void {
    if (Number.isNaN(this.value)) return;
    if (missed && !reachable) {
      this.unreachableSum += 1;
      return;
    }
    this.value *= Math.exp(this.step * ((missed ? 1 : 0) - this.steeredRate()));
    const floor = this.usageWeight > 0 ? (FLOOR_SHARE * this.usageSum) / this.usageWeight / this.targetMissRate : 0;
    if (this.value < floor) this.value = floor;
  }

  usageState(): PriceUsageState {
    return { sum: this.usageSum, weight: this.usageWeight, unreachable: this.unreachableSum };
  }

  restoreUsage(state: PriceUsageState): void {
    if (!(state && isNumberArray([state.sum, state.weight, state.unreachable ?? 0], { min: 0 }))) {
      throw new RangeError("the overrun price's usage must be a finite sum, weight and count of overruns past reach, each ≥ 0");
    }
    this.usageSum = state.sum;
    this.usageWeight = state.weight;
    this.unreachableSum = state.unreachable ?? 0;
  }
}

/**
 * Decayed sums are kept divided by a per-source scale that takes the decay
 * (so a step decays a source's candidates with one multiplication); when the
 * scale gets this small it is folded back into them.
 */
const RENORMALISE_BELOW = 1e-150;

export interface PooledMissesState {
  misses: number[];
  steps: number[];
  scale: number[];
}

function finiteArray(values: unknown, length: number, what: string, positive = false): number[] {
  if (!isNumberArray(values, { length, positive })) {
    throw new RangeError(`${what} must be ${length} finite${positive ? " positive" : ""} numbers`);
  }
  return values as number[];
}

/** Ages of keys pooled apart: observations 1, 2–3, 4–7, …, 1024–2047, and 2048 or more. */
export const AGE_CLASSES = 12;

/**
 * Overrun rate of each candidate over all keys of an age (a class of
 * observation counts, doubling): the prior of a key's own estimate. A key
 * of three steps overruns "twice its peak so far" far more often than a key
 * of three weeks; pooled together, young keys would borrow the rates of old
 * ones. Overruns are per candidate; steps (and the decay scale) per source,
 * since every margin of a source is scored on the same steps.
 */
export class PooledMisses {
  /** Per age class, per candidate, divided by its source's scale. */
  readonly misses: Float64Array;
  /** Per age class, per source. */
  readonly steps: Float64Array;
  readonly scale: Float64Array;
  constructor(
    readonly decay: number,
    /** AGE_CLASSES, or 1 where every key is pooled with itself alone (the live model). */
    readonly classes: number = AGE_CLASSES,
  ) {
    if (!(Number.isInteger(classes) && classes >= 1 && classes <= AGE_CLASSES)) throw new RangeError(`pooled overruns take 1 to ${AGE_CLASSES} age classes`);
    this.misses = new Float64Array(classes * CANDIDATES);
    this.steps = new Float64Array(classes * SOURCES);
    this.scale = new Float64Array(classes * SOURCES).fill(1);
  }

  /** The age class of a key with this many observations. */
  ageOf(observations: number): number {
    return Math.min(this.classes - 1, 31 - Math.clz32(Math.max(1, observations)));
  }

  /** Decays source s of an age class by `keep`, adds `fresh` steps; returns the scale overruns are divided by. */
  advance(age: number, s: number, keep: number, fresh: number): number {
    const k = age * SOURCES + s;
    let scale = this.scale[k]! * keep;
    if (scale < RENORMALISE_BELOW) {
      const first = age * CANDIDATES + s * MARGINS.length;
      for (let c = first; c < first + MARGINS.length; c++) this.misses[c] = this.misses[c]! * scale;
      scale = 1;
    }
    this.scale[k] = scale;
    this.steps[k] = keep * this.steps[k]! + fresh;
    return scale;
  }

  toState(): PooledMissesState {
    return { misses: [...this.misses], steps: [...this.steps], scale: [...this.scale] };
  }

  restore(state: PooledMissesState): void {
    if (typeof state !== "object" || state === null) throw new RangeError("pooled overruns state is not an object");
    this.misses.set(finiteArray(state.misses, this.classes * CANDIDATES, "pooled overruns"));
    this.steps.set(finiteArray(state.steps, this.classes * SOURCES, "pooled steps"));
    this.scale.set(finiteArray(state.scale, this.classes * SOURCES, "pooled scales", true));
  }
}

// A key's record of each source: the source as held by the decision in
// force (at least the floor; NaN: none), then, decayed over the steps it was
// scored on (see `score`), its level, the usage, its movement, its last held
// value, the steps, the scales of the overruns and of the excess, the weight
// the short-memory averages have gathered, then per margin the overruns and
// the usage above the limit (each divided by its scale).
const HELD = 0;
const LEVEL = 1;
const USAGE = 2;
const MOVEMENT = 3;
const PREVIOUS = 4;
const STEPS = 5;
const MISS_SCALE = 6;
const EXCESS_SCALE = 7;
/**
 * Σ of the weights the slack-memory averages (level, usage, movement,
 * excess) gave their steps: 1 − slackDecay^steps. They start at 0, so a
 * source scored on few steps has them all that much too small; divided by
 * this they are means. Without it a source that appeared late (a model just
 * trained, a period just detected) or a young key's would look nearly free
 * of slack.
 */
const WEIGHT = 8;
const MISSES = 9;
const EXCESS = MISSES + MARGINS.length;
const STRIDE = EXCESS + MARGINS.length;

function newScores(): Float64Array {
  const scores = new Float64Array(SOURCES * STRIDE);
  for (let at = 0; at < scores.length; at += STRIDE) {
    scores[at + HELD] = Number.NaN;
    scores[at + PREVIOUS] = Number.NaN;
    scores[at + MISS_SCALE] = 1;
    scores[at + EXCESS_SCALE] = 1;
  }
  return scores;
}

/** What a key's forecaster is linked to beyond its own data. */
export interface EnsembleLinks {
  /** The global model shared by every key of the resource. */
  learner?: GlobalLearner | null;
  /**
   * Told each block folded in: its steps, its last step's time, and its
   * peak's bucket in histograms of the forecaster's `histogramOptions`.
   */
  onBlock?: ((steps: number, ts: number, bucket: number) => void) | null;
  /**
   * The key's prior at a time: the level its peers ran at (the hierarchy's
   * cold-start limit), NaN where there is none. Asked when the percentiles
   * are refreshed; a key keeps it as a candidate (and starts from it until
   * keys of its age have been scored), so a key that lives a few steps is
   * not left to what those few steps say.
   */
  prior?: ((ts: number) => number) | null;
}

export class EnsembleForecaster {
  private peaks = new PeakWindows(WINDOWS_MS);
  private readonly features = new Float32Array(GLOBAL_FEATURES);
  private readonly predicted = new Float64Array(GLOBAL_LEVELS.length);
  private featuresReady = false;
  private scale = 1;
  private histograms: DecayingHistogram[];
  private seasonal = new SeasonalProfile();
  /** Every source as last computed (NaN: a seasonal period not detected, a model not trained). */
  private readonly sources = new Float64Array(SOURCES);
  private sincePercentiles = REFRESH_PERCENTILES_EVERY;
  /**
   * Per source, one record of STRIDE numbers (see HELD … EXCESS): how the
   * decision in force holds it and how it has scored. One array, walked in
   * order every step: with thousands of keys the state of a key is rarely in
   * cache, and one contiguous block costs far fewer misses than a dozen.
   */
  private readonly scores = newScores();
  private chosen = CAUTIOUS;
  private observations = 0;
  private bumpFloor = 0;
  private bumpUntil = -Infinity;
  private previousLimit = Number.NaN;
  /** The steps since the last decision (event time and usage), folded in and scored at the next one. */
  private blockTs = new Float64Array(16);
  private block = new Float64Array(16);
  private prefix = new Float64Array(17);
  private blockLength = 0;
  /** Whether `held` holds a decision (false until the first), and when it was made. */
  private decided = false;
  private decidedAt = -Infinity;
  private blocks = 0;
  /**
   * The highest limit any candidate drawn from the key's own history
   * holds under the decision in force. A usage above it is a miss no choice
   * of the key's own could have avoided (a container starting from nothing,
   * a jump past every peak on record): it does not steer the overrun price,
   * which otherwise winds up without bound on them. It still counts against
   * every candidate it overran: that is what lets the prior, which may have
   * covered it, win a young key over candidates that only look clean. The
   * prior is left out of the reach: the peers' level, often far above a
   * key's own, would make every such jump steer the price (on the Alibaba
   * trace: GPU-memory slack from 0.380 to 0.407).
   */
  private reach = -Infinity;

  private readonly learner: GlobalLearner | null;
  private readonly onBlock: ((steps: number, ts: number, bucket: number) => void) | null;
  private readonly prior: ((ts: number) => number) | null;

  constructor(
    readonly options: EnsembleOptions,
    private readonly pool: PooledMisses,
    private readonly price: OverrunPrice,
    private readonly histogramOptions: Omit<HistogramOptions, "halfLifeMs">,
    links: EnsembleLinks = {},
  ) {
    if (!(options.decisionMs >= 0 && Number.isFinite(options.decisionMs))) throw new RangeError("decisionMs must be a finite duration ≥ 0");
    this.histograms = HALF_LIVES_MS.map((halfLifeMs) => new DecayingHistogram({ ...histogramOptions, halfLifeMs }));
    this.learner = links.learner ?? null;
    this.onBlock = links.onBlock ?? null;
    this.prior = links.prior ?? null;
    this.sources[PRIOR_AT] = Number.NaN;
  }

  /**
   * Features of the learned global model (recent peaks and percentiles in
   * units of the week's peak, time of day and week, the key's history) and
   * its predictions.
   * A key whose week has been idle (its peak at most the floor, as when a
   * container starts from zero) has no scale: no features, no example and no
   * prediction. A ratio to nothing is meaningless, and such examples (every
   * start of a new key: next peak ÷ the floor, hundreds or more) taught the
   * model quantiles that put limits at many times a key's known peak.
   */
  private globalSources(ts: number, floor: number): void {
    this.sources.fill(Number.NaN, GLOBAL_AT, GLOBAL_AT + GLOBAL_LEVELS.length);
    const learner = this.learner;
    if (!learner) return;
    const scale = this.sources[WINDOWS_MS.length - 1]!;
    if (!(scale > floor)) {
      this.featuresReady = false;
      return;
    }
    this.scale = scale;
    const f = this.features;
    for (let w = 0; w < WINDOWS_MS.length; w++) f[w] = Math.min(this.sources[w]! / scale, 50);
    const at = WINDOWS_MS.length;
    for (let i = 0; i < FEATURE_PERCENTILES.length; i++) f[at + i] = Math.min(this.sources[at + FEATURE_PERCENTILES[i]!]! / scale, 50);
    f.set(timeFeatures(ts), at + 4);
    // A young key's windows all hold the same few steps and look as steady as
    // an old one's; its next peak does not (a starting container ramps up).
    f[at + 8] = Math.min(1, Math.log1p(this.observations) / LOG_HISTORY_SCALE);
    this.featuresReady = true;
    if (!learner.model) return;
    learner.model.predict(f, this.predicted);
    for (let q = 0; q < GLOBAL_LEVELS.length; q++) this.sources[GLOBAL_AT + q] = this.predicted[q]! * scale;
  }

  /** A quantile of the usage folded in so far (block peaks, a day's half-life); 0 before any. */
  usageQuantile(q: number): number {
    return this.histograms[0]!.percentile(q);
  }

  /** The peak of the last week. */
  weekPeak(ts: number): number {
    let peak = this.peaks.max(WINDOWS_MS.length - 1, ts);
    for (let i = 0; i < this.blockLength; i++) if (this.block[i]! > peak) peak = this.block[i]!;
    return peak;
  }

  /** Everything this key has learned (not the shared pool and price), as JSON-safe data. */
  toState(): EnsembleState {
    return {
      version: ENSEMBLE_STATE_VERSION,
      candidates: CANDIDATES,
      peaks: this.peaks.toState(),
      histograms: this.histograms.map((h) => h.toState()),
      seasonal: this.seasonal.toState(),
      sources: {
        level: this.perSource(LEVEL),
        usage: this.perSource(USAGE),
        movement: this.perSource(MOVEMENT),
        previous: toJsonNumbers(this.perSource(PREVIOUS)),
        steps: this.perSource(STEPS),
        missScale: this.perSource(MISS_SCALE),
        excessScale: this.perSource(EXCESS_SCALE),
        weight: this.perSource(WEIGHT),
      },
      misses: this.perCandidate(MISSES),
      excess: this.perCandidate(EXCESS),
      chosen: this.chosen,
      observations: this.observations,
      bumpFloor: this.bumpFloor,
      bumpUntil: Number.isFinite(this.bumpUntil) ? this.bumpUntil : null,
      pending: { ts: [...this.blockTs.subarray(0, this.blockLength)], values: [...this.block.subarray(0, this.blockLength)] },
      decision: this.decided ? { held: toJsonNumbers(this.perSource(HELD)), at: this.decidedAt } : null,
      percentiles: { since: this.sincePercentiles, values: [...this.sources.subarray(WINDOWS_MS.length, SEASONAL_AT)], prior: toJsonNumbers([this.sources[PRIOR_AT]!])[0] ?? null },
      global: { blocks: this.blocks, features: this.featuresReady ? toJsonNumbers(this.features) : null, scale: this.scale },
    };
  }

  /** Restores a key; a state of another layout version is refused (the caller starts afresh). */
  restore(state: EnsembleState): void {
    if (state.version !== ENSEMBLE_STATE_VERSION || state.candidates !== CANDIDATES) throw new RangeError(`ensemble state version ${state.version} is not ${ENSEMBLE_STATE_VERSION}`);
    if (!Array.isArray(state.histograms) || state.histograms.length !== HALF_LIVES_MS.length) throw new RangeError("ensemble state has the wrong shape");
    const sources = state.sources;
    if (typeof sources !== "object" || sources === null) throw new RangeError("ensemble state has no per-source scores");
    const previous = sources.previous;
    if (!isNumberArray(previous, { length: SOURCES, nullable: true })) {
      throw new RangeError("ensemble state's previous sources are malformed");
    }
    const perSource = {
      level: finiteArray(sources.level, SOURCES, "ensemble state's source levels"),
      usage: finiteArray(sources.usage, SOURCES, "ensemble state's usage levels"),
      movement: finiteArray(sources.movement, SOURCES, "ensemble state's movements"),
      steps: finiteArray(sources.steps, SOURCES, "ensemble state's steps"),
      missScale: finiteArray(sources.missScale, SOURCES, "ensemble state's overrun scales", true),
      excessScale: finiteArray(sources.excessScale, SOURCES, "ensemble state's excess scales", true),
      weight: finiteArray(sources.weight, SOURCES, "ensemble state's slack weights"),
    };
    if (perSource.weight.some((w) => w < 0 || w > 1)) throw new RangeError("ensemble state's slack weights must be in [0, 1]");
    const misses = finiteArray(state.misses, CANDIDATES, "ensemble state's overruns");
    const excess = finiteArray(state.excess, CANDIDATES, "ensemble state's excess");
    if (!Number.isInteger(state.chosen) || state.chosen < 0 || state.chosen >= CANDIDATES) throw new RangeError("ensemble state chose no candidate");
    if (!(Number.isSafeInteger(state.observations) && state.observations >= 0)) throw new RangeError("ensemble state's observations must be a count");
    if (!(typeof state.bumpFloor === "number" && Number.isFinite(state.bumpFloor) && state.bumpFloor >= 0)) throw new RangeError("ensemble state's bump floor must be a finite number ≥ 0");
    if (state.bumpUntil !== null && !(typeof state.bumpUntil === "number" && Number.isFinite(state.bumpUntil))) throw new RangeError("ensemble state's bump end must be a time or null");
    const pending = state.pending;
    if (!pending || !Array.isArray(pending.ts) || !Array.isArray(pending.values) || pending.ts.length !== pending.values.length) throw new RangeError("ensemble state has no valid pending block");
    if (!isNumberArray(pending.ts) || !isNumberArray(pending.values)) throw new RangeError("ensemble state's pending block holds non-numbers");
    const decision = state.decision;
    if (decision !== null && (typeof decision !== "object" || !isNumberArray(decision.held, { length: SOURCES, nullable: true, min: 0 }) || !Number.isFinite(decision.at))) {
      throw new RangeError("ensemble state has a malformed decision");
    }
    const percentiles = state.percentiles;
    if (
      !percentiles ||
      !(Number.isInteger(percentiles.since) && percentiles.since >= 0) ||
      !isNumberArray(percentiles.values, { length: PERCENTILE_SOURCES, min: 0 }) ||
      !isNumberArray([percentiles.prior], { nullable: true, min: 0 })
    ) {
      throw new RangeError("ensemble state has malformed percentiles");
    }
    const global = state.global;
    if (
      global !== undefined &&
      (typeof global !== "object" ||
        global === null ||
        !(Number.isSafeInteger(global.blocks) && global.blocks >= 0) ||
        !(typeof global.scale === "number" && global.scale > 0 && Number.isFinite(global.scale)) ||
        (global.features !== null && !isNumberArray(global.features, { length: GLOBAL_FEATURES, nullable: true })))
    ) {
      throw new RangeError("ensemble state's global-model features are malformed");
    }
    this.peaks = PeakWindows.fromState(WINDOWS_MS, state.peaks);
    this.histograms = state.histograms.map((h, i) => DecayingHistogram.fromState({ ...this.histogramOptions, halfLifeMs: HALF_LIVES_MS[i]! }, h));
    this.seasonal = SeasonalProfile.fromState(state.seasonal);
    this.setPerSource(LEVEL, perSource.level);
    this.setPerSource(USAGE, perSource.usage);
    this.setPerSource(MOVEMENT, perSource.movement);
    this.setPerSource(PREVIOUS, fromJsonNumbers(previous));
    this.setPerSource(STEPS, perSource.steps);
    this.setPerSource(MISS_SCALE, perSource.missScale);
    this.setPerSource(EXCESS_SCALE, perSource.excessScale);
    this.setPerSource(WEIGHT, perSource.weight);
    this.setPerCandidate(MISSES, misses);
    this.setPerCandidate(EXCESS, excess);
    this.chosen = state.chosen;
    this.observations = state.observations;
    this.bumpFloor = state.bumpFloor;
    this.bumpUntil = state.bumpUntil ?? -Infinity;
    this.sincePercentiles = percentiles.since;
    this.sources.set(percentiles.values, WINDOWS_MS.length);
    this.sources[PRIOR_AT] = percentiles.prior ?? Number.NaN;
    this.decided = decision !== null;
    this.decidedAt = decision?.at ?? -Infinity;
    this.setPerSource(HELD, decision ? fromJsonNumbers(decision.held) : new Array<number>(SOURCES).fill(Number.NaN));
    this.reach = this.highestLimit();
    this.blocks = global?.blocks ?? 0;
    this.featuresReady = global?.features != null;
    if (global?.features) this.features.set(fromJsonNumbers(global.features));
    this.scale = global?.scale ?? 1;
    this.blockLength = 0;
    for (let i = 0; i < pending.ts.length; i++) this.append(pending.ts[i]!, pending.values[i]!);
  }

  private perSource(field: number): number[] {
    return Array.from({ length: SOURCES }, (_, s) => this.scores[s * STRIDE + field]!);
  }

  private setPerSource(field: number, values: readonly number[]): void {
    for (let s = 0; s < SOURCES; s++) this.scores[s * STRIDE + field] = values[s]!;
  }

  private perCandidate(field: number): number[] {
    return Array.from({ length: CANDIDATES }, (_, c) => this.scores[Math.floor(c / MARGINS.length) * STRIDE + field + (c % MARGINS.length)]!);
  }

  private setPerCandidate(field: number, values: readonly number[]): void {
    for (let c = 0; c < CANDIDATES; c++) this.scores[Math.floor(c / MARGINS.length) * STRIDE + field + (c % MARGINS.length)] = values[c]!;
  }

  get observed(): number {
    return this.observations;
  }

  get model(): string {
    return candidateName(this.chosen);
  }

  /** The limit for the step at `ts`, or null while nothing is known (cold start). */
  limit(ts: number): number | null {
    if (this.observations === 0) return null;
    if (!this.decided || ts - this.decidedAt >= this.options.decisionMs || this.blockLength >= MAX_BLOCK) this.decide(ts);
    const chosen = this.chosen;
    let limit = this.scores[((chosen / MARGINS.length) | 0) * STRIDE + HELD]! * MARGINS[chosen % MARGINS.length]!;
    if (ts < this.bumpUntil && this.bumpFloor > limit) limit = this.bumpFloor;
    this.previousLimit = limit;
    return limit;
  }

  /**
   * What the chosen candidate forecasts for the step `limit` was last asked
   * for: its source (a window's peak, a decaying percentile, a seasonal peak,
   * the global model's quantile, the peers' level) before its margin and any
   * bump after an overrun; null before the first decision.
   */
  forecast(): number | null {
    return this.decided ? this.scores[((this.chosen / MARGINS.length) | 0) * STRIDE + HELD]! : null;
  }

  /** The highest limit any candidate of the key's own history holds under the decision in force (−∞ before one). */
  private highestLimit(): number {
    let highest = -Infinity;
    for (let at = HELD; at < PRIOR_AT * STRIDE; at += STRIDE) if (this.scores[at]! > highest) highest = this.scores[at]!;
    return highest * MARGINS[MARGINS.length - 1]!;
  }

  /**
   * Folds the steps since the last decision into the key's state, scores
   * every candidate on them, chooses, and computes every source for the
   * steps from `ts`.
   */
  private decide(ts: number): void {
    const n = this.blockLength;
    if (n > 0) {
      this.fold(n);
      if (this.decided) this.score(n);
    }
    this.blockLength = 0;
    const sources = this.sources;
    for (let w = 0; w < WINDOWS_MS.length; w++) sources[w] = this.peaks.max(w, ts);
    if (this.sincePercentiles >= REFRESH_PERCENTILES_EVERY) {
      for (let h = 0; h < this.histograms.length; h++) this.histograms[h]!.percentiles(PERCENTILES, sources, WINDOWS_MS.length + h * PERCENTILES.length);
      if (this.prior) sources[PRIOR_AT] = this.prior(ts);
      this.sincePercentiles = 0;
    }
    for (let lag = 0; lag < SEASONAL_LAGS_HOURS.length; lag++) sources[SEASONAL_AT + lag] = this.seasonal.peakAround(ts, lag);
    const floor = this.options.absoluteFloor;
    const learner = this.learner;
    // The features are needed to predict, or for the example the next fold keeps.
    if (learner && (learner.model || !this.featuresReady || this.blocks % learner.sampleEvery === 0)) this.globalSources(ts, floor);
    else sources.fill(Number.NaN, GLOBAL_AT, GLOBAL_AT + GLOBAL_LEVELS.length);
    const scores = this.scores;
    for (let s = 0; s < SOURCES; s++) {
      const source = sources[s]!;
      scores[s * STRIDE + HELD] = source !== source ? Number.NaN : source > floor ? source : floor;
    }
    this.reach = this.highestLimit();
    if (!this.decided) this.chooseFirst();
    if (Number.isNaN(scores[((this.chosen / MARGINS.length) | 0) * STRIDE + HELD]!)) this.chosen = CAUTIOUS; // its seasonal period faded
    this.decided = true;
    this.decidedAt = ts;
  }

  /**
   * The block's peak enters the peak windows and the decaying histograms
   * (weighted by its steps: the limit held through the block had to cover
   * it), every step enters the seasonal profile, and one example in
   * `sampleEvery` blocks goes to the global model: the features at the last
   * decision and the block's peak in units of the key's scale.
   */
  private fold(n: number): void {
    let peak = this.block[0]!;
    for (let i = 0; i < n; i++) {
      const value = this.block[i]!;
      if (value > peak) peak = value;
      this.seasonal.push(this.blockTs[i]!, value);
    }
    const last = this.blockTs[n - 1]!;
    this.peaks.push(last, peak);
    const bucket = this.histograms[0]!.findBucket(peak);
    for (let h = 0; h < this.histograms.length; h++) this.histograms[h]!.addAt(bucket, n, last);
    this.onBlock?.(n, last, bucket);
    this.sincePercentiles += n;
    const learner = this.learner;
    if (learner && this.featuresReady && this.decided && this.blocks++ % learner.sampleEvery === 0) {
      learner.reservoir.add(this.features, Math.min(peak / this.scale, 100));
    }
  }

  /**
   * Full feedback over the block of n steps just ended, every candidate
   * (s, m) having held its limit L = held[s] × m through it. With the
   * block's usage u sorted, its overruns are the usages above L and its
   * slack per step Σ_{u ≤ L}(L − u) / n = L − mean(u) + Σ_{u > L}(u − L) / n.
   * So slack, movement and step counts are kept per source (the margin
   * multiplies them), and only the overruns, rare, per candidate: a step
   * costs O(sources) plus one update per candidate that overran. Averages
   * decay per step, so a block of n steps weighs as n steps. Then the key
   * takes the candidate with the least slack + price × overrun rate +
   * changeWeight × movement.
   */
  private score(n: number): void {
    const block = this.block;
    for (let i = 1; i < n; i++) {
      const value = block[i]!;
      let j = i - 1;
      while (j >= 0 && block[j]! > value) {
        block[j + 1] = block[j]!;
        j--;
      }
      block[j + 1] = value;
    }
    const prefix = this.prefix;
    for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i]! + block[i]!;
    const total = prefix[n]!;
    const mean = total / n;
    const { slackDecay, missDecay } = this.options;
    const pool = this.pool;
    const slackKeep = slackDecay ** n;
    const missKeep = missDecay ** n;
    const poolKeep = pool.decay ** n;
    // Σ decay^i for i < n: the weight n fresh steps add to a decayed count.
    const missSteps = missDecay === 1 ? n : (1 - missKeep) / (1 - missDecay);
    const poolSteps = pool.decay === 1 ? n : (1 - poolKeep) / (1 - pool.decay);
    const fresh = 1 - slackKeep;
    const freshPerStep = fresh / n;
    const moveWeight = 1 - slackDecay;
    const scores = this.scores;
    const poolMisses = pool.misses;
    // The pool of the key's age when the decision scored was made.
    const age = pool.ageOf(this.observations - n);
    const ageCandidates = age * CANDIDATES;
    for (let s = 0, at = 0; s < SOURCES; s++, at += STRIDE) {
      const source = scores[at + HELD]!;
      if (source !== source) continue; // NaN: a seasonal source without a detected period
      scores[at + LEVEL] = slackKeep * scores[at + LEVEL]! + fresh * source;
      scores[at + USAGE] = slackKeep * scores[at + USAGE]! + fresh * mean;
      scores[at + WEIGHT] = slackKeep * scores[at + WEIGHT]! + fresh;
      const before = scores[at + PREVIOUS]!;
      if (before === before) scores[at + MOVEMENT] = slackKeep * scores[at + MOVEMENT]! + moveWeight * Math.abs(source - before);
      scores[at + PREVIOUS] = source;
      scores[at + STEPS] = missKeep * scores[at + STEPS]! + missSteps;
      let ownScale = scores[at + MISS_SCALE]! * missKeep;
      if (ownScale < RENORMALISE_BELOW) {
        for (let m = 0; m < MARGINS.length; m++) scores[at + MISSES + m] = scores[at + MISSES + m]! * ownScale;
        ownScale = 1;
      }
      scores[at + MISS_SCALE] = ownScale;
      let excessScale = scores[at + EXCESS_SCALE]! * slackKeep;
      if (excessScale < RENORMALISE_BELOW) {
        for (let m = 0; m < MARGINS.length; m++) scores[at + EXCESS + m] = scores[at + EXCESS + m]! * excessScale;
        excessScale = 1;
      }
      scores[at + EXCESS_SCALE] = excessScale;
      const poolScale = pool.advance(age, s, poolKeep, poolSteps);
      // Margins ascend: each one's overruns are a suffix of the previous one's.
      let low = 0;
      for (let m = 0; m < MARGINS.length; m++) {
        const limit = source * MARGINS[m]!;
        let high = n;
        while (low < high) {
          const mid = (low + high) >> 1;
          if (block[mid]! <= limit) low = mid + 1;
          else high = mid;
        }
        const above = n - low;
        if (above === 0) break;
        scores[at + EXCESS + m] = scores[at + EXCESS + m]! + (freshPerStep * (total - prefix[low]! - above * limit)) / excessScale;
        scores[at + MISSES + m] = scores[at + MISSES + m]! + above / ownScale;
        const c = ageCandidates + s * MARGINS.length + m;
        poolMisses[c] = poolMisses[c]! + above / poolScale;
      }
    }
    this.choose();
  }

  /**
   * The first decision of a key, with no score of its own: the candidate of
   * least slack (its limit less the newest usage) + price × the overrun
   * rate keys of this age had, among the sources such keys were scored on.
   * Until some were, the prior if there is one, else the cautious start.
   */
  private chooseFirst(): void {
    const pool = this.pool;
    const age = pool.ageOf(this.observations);
    const price = this.price.value;
    const usage = this.sources[0]!; // the shortest window ends at the newest value
    const scores = this.scores;
    let best = -1;
    let bestCost = Infinity;
    for (let s = 0, at = 0; s < SOURCES; s++, at += STRIDE) {
      const held = scores[at + HELD]!;
      const steps = pool.steps[age * SOURCES + s]!;
      if (held !== held || !(steps > 0)) continue;
      const perStep = pool.scale[age * SOURCES + s]! / steps;
      for (let m = 0; m < MARGINS.length; m++) {
        const c = s * MARGINS.length + m;
        const cost = MARGINS[m]! * held - usage + price * pool.misses[age * CANDIDATES + c]! * perStep;
        if (cost < bestCost) {
          bestCost = cost;
          best = c;
        }
      }
    }
    this.chosen = best >= 0 ? best : scores[PRIOR_AT * STRIDE + HELD]! > this.options.absoluteFloor ? PRIOR : CAUTIOUS;
  }

  /** The candidate of least cost, if it beats the one in use by the switch margin. */
  private choose(): void {
    const { priorSteps, targetMissRate, changeWeight, switchMargin } = this.options;
    const price = this.price.value;
    const scores = this.scores;
    const pool = this.pool;
    const poolMisses = pool.misses;
    // The pool of the key's age now, when the choice takes effect.
    const age = pool.ageOf(this.observations);
    const ageSources = age * SOURCES;
    const ageCandidates = age * CANDIDATES;
    const chosen = this.chosen;
    let best = chosen;
    let bestCost = Infinity;
    let chosenCost = Infinity;
    const chosenSource = (chosen / MARGINS.length) | 0;
    // A cost is m × perMargin − usage plus terms ≥ 0, and margins ascend: once
    // that part reaches the best cost so far, no larger margin of the source
    // can beat it (the chosen candidate's source is always costed in full).
    for (let s = 0, at = 0; s < SOURCES; s++, at += STRIDE) {
      const held = scores[at + HELD]!;
      const weight = scores[at + WEIGHT]!;
      if (held !== held || !(weight > 0)) continue; // none, or never scored: its slack is unknown
      const perMargin = (scores[at + LEVEL]! + changeWeight * scores[at + MOVEMENT]!) / weight;
      const usage = scores[at + USAGE]! / weight;
      if (MARGINS[0] * perMargin - usage >= bestCost && s !== chosenSource) continue;
      const missWeight = price / (scores[at + STEPS]! + priorSteps);
      const ownScale = scores[at + MISS_SCALE]!;
      const excessScale = scores[at + EXCESS_SCALE]! / weight;
      // The pooled rate of keys of this age, itself starting from the rate of the age before
      // (the service level for the youngest) with the weight of priorSteps: a class
      // the keys have just entered is not left to its first few hundred steps.
      const pooledSteps = pool.steps[ageSources + s]!;
      const pooledScale = pool.scale[ageSources + s]! / (pooledSteps + priorSteps);
      const youngerSteps = age > 0 ? pool.steps[ageSources - SOURCES + s]! : 0;
      const youngerScale = youngerSteps > 0 ? pool.scale[ageSources - SOURCES + s]! / youngerSteps : 0;
      const youngerWeight = priorSteps / (pooledSteps + priorSteps);
      for (let m = 0, c = s * MARGINS.length; m < MARGINS.length; m++, c++) {
        const growing = MARGINS[m]! * perMargin - usage;
        if (growing >= bestCost && s !== chosenSource) break;
        const younger = youngerSteps > 0 ? poolMisses[ageCandidates - CANDIDATES + c]! * youngerScale : targetMissRate;
        const prior = poolMisses[ageCandidates + c]! * pooledScale + youngerWeight * younger;
        const cost = growing + excessScale * scores[at + EXCESS + m]! + missWeight * (ownScale * scores[at + MISSES + m]! + priorSteps * prior);
        if (cost < bestCost) {
          bestCost = cost;
          best = c;
        }
        if (c === chosen) chosenCost = cost;
      }
    }
    if (bestCost < chosenCost * (1 - switchMargin)) this.chosen = best;
  }

  private append(ts: number, usage: number): void {
    if (this.blockLength === this.block.length) {
      const grow = (array: Float64Array, size: number) => {
        const bigger = new Float64Array(size);
        bigger.set(array);
        return bigger;
      };
      this.block = grow(this.block, this.block.length * 2);
      this.blockTs = grow(this.blockTs, this.block.length);
      this.prefix = new Float64Array(this.block.length + 1);
    }
    this.blockTs[this.blockLength] = ts;
    this.block[this.blockLength++] = usage;
  }

  /** Takes the usage of a step (scored at the next decision against the limits asked for it). */
  observe(ts: number, usage: number): void {
    this.price.see(usage);
    if (!Number.isNaN(this.previousLimit)) {
      const missed = usage > this.previousLimit;
      this.price.update(missed, usage <= this.reach);
      if (missed) {
        this.bumpFloor = usage * (1 + this.options.missBump);
        this.bumpUntil = ts + this.options.missBumpMs;
      }
    }
    this.previousLimit = Number.NaN;
    this.append(ts, usage);
    this.observations++;
    if (!this.decided) {
      // Nothing to score before the first decision: fold the step in at once.
      this.fold(this.blockLength);
      this.blockLength = 0;
    } else if (this.blockLength >= MAX_BLOCK) this.decide(ts);
  }
}

const HOUR_MS = 3_600_000;

/**
 * augur's default service level: the fraction of steps allowed above the
 * memory limit (an overrun is an OOM kill: one in 2,000) and above a rate
 * limit (an overrun is throttling: one in 300).
 */
export const SERVICE_LEVEL: Readonly<{ memory: number; rate: number }> = { memory: 0.0005, rate: 0.003 };

/**
 * Defaults of augur's policy. The miss rates are the service level: memory
 * (an overrun is an OOM kill) one step in 2,000, rates (an overrun is
 * throttling) one in 300. They are the knobs a user turns; the rest are
 * structural (how fast to forget, how much evidence is enough).
 */
export function defaultEnsembleOptions(resource: Resource, settings: { memory?: number; rate?: number; decisionMs?: number } = {}): EnsembleOptions {
  const peak = PEAK_LIKE.has(resource);
  return {
    targetMissRate: peak ? (settings.memory ?? SERVICE_LEVEL.memory) : (settings.rate ?? SERVICE_LEVEL.rate),
    slackDecay: 0.95, // slack is measured every step: a short memory follows phases
    missDecay: 0.9995, // overruns are rare: a memory of ~2,000 steps
    priorSteps: 2000, // until a key has that much evidence of its own, the pooled rate weighs in
    switchMargin: 0.05,
    changeWeight: 4, // a limit that moves by x costs like 4x of slack: steadier limits, about the same slack
    missBump: peak ? 0.2 : 0.1,
    missBumpMs: HOUR_MS,
    absoluteFloor: BUCKETS[resource].firstBucketSize / 10,
    priceStep: 0.05,
    // Every step by default: on the traces here holding limits for even a few
    // steps costs slack (GPU memory on the Alibaba trace: 0.41 → 0.45 at 2
    // minutes); longer periods change limits less often and replay faster.
    decisionMs: settings.decisionMs ?? 0,
  };
}

/** Buckets of the percentile candidates: ten times finer than VPA's, 2% growth. */
export function histogramOptionsFor(resource: Resource): Readonly<Omit<HistogramOptions, "halfLifeMs">> {
  let options = HISTOGRAM_OPTIONS.get(resource);
  if (!options) {
    const { firstBucketSize, maxValue } = BUCKETS[resource];
    HISTOGRAM_OPTIONS.set(resource, (options = Object.freeze({ firstBucketSize: firstBucketSize / 10, maxValue, ratio: 1.02, epsilon: 1e-6 })));
  }
  return options;
}
/** One per resource, shared by every key's forecaster. */
const HISTOGRAM_OPTIONS = new Map<Resource, Readonly<Omit<HistogramOptions, "halfLifeMs">>>();
