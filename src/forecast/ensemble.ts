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
import { fromJsonNumbers, SEASONAL_LAGS_HOURS, SeasonalProfile, toJsonNumbers, type SeasonalState } from "./seasonal.js";
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
export const ENSEMBLE_STATE_VERSION = 3;

export interface EnsembleState {
  version: number;
  candidates: number;
  windows: Array<{ ts: number[]; values: number[] }>;
  histograms: HistogramState[];
  seasonal: SeasonalState;
  slack: number[];
  misses: number[];
  steps: number[];
  movement: number[];
  candidateLimits: Array<number | null>;
  chosen: number;
  observations: number;
  bumpFloor: number;
  bumpUntil: number | null;
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
 * a week ago, when detected), then the learned global model's quantiles (once trained).
 */
const SOURCES = GLOBAL_AT + GLOBAL_LEVELS.length;
const CANDIDATES = SOURCES * MARGINS.length;
const REFRESH_PERCENTILES_EVERY = 8;
/** The longest peak window with the widest margin: where a key starts. */
const CAUTIOUS = WINDOWS_MS.length * MARGINS.length - 1;

function duration(ms: number): string {
  const minutes = ms / MINUTE;
  return minutes >= 1440 ? `${minutes / 1440}d` : minutes >= 60 ? `${minutes / 60}h` : `${minutes}m`;
}

export function candidateName(index: number): string {
  const source = Math.floor(index / MARGINS.length);
  const margin = MARGINS[index % MARGINS.length];
  if (source < WINDOWS_MS.length) return `peak${duration(WINDOWS_MS[source]!)}×${margin}`;
  const p = source - WINDOWS_MS.length;
  if (source >= GLOBAL_AT) return `global-p${GLOBAL_LEVELS[source - GLOBAL_AT]! * 100}×${margin}`;
  if (source >= SEASONAL_AT) return `seasonal${SEASONAL_LAGS_HOURS[source - SEASONAL_AT]}h×${margin}`;
  return `p${PERCENTILES[p % PERCENTILES.length]! * 100}/${duration(HALF_LIVES_MS[Math.floor(p / PERCENTILES.length)]!)}×${margin}`;
}

/** Max over a sliding event-time window: a monotonic deque, amortised O(1). */
export class WindowMax {
  private ts: number[] = [];
  private values: number[] = [];
  private head = 0;
  constructor(readonly windowMs: number) {}
  push(ts: number, value: number): void {
    while (this.values.length > this.head && this.values[this.values.length - 1]! <= value) {
      this.values.pop();
      this.ts.pop();
    }
    this.ts.push(ts);
    this.values.push(value);
  }
  toState(): { ts: number[]; values: number[] } {
    return { ts: this.ts.slice(this.head), values: this.values.slice(this.head) };
  }

  static fromState(windowMs: number, state: { ts: number[]; values: number[] }): WindowMax {
    if (state.ts.length !== state.values.length) throw new RangeError("window state has mismatched arrays");
    const window = new WindowMax(windowMs);
    window.ts = [...state.ts];
    window.values = [...state.values];
    return window;
  }

  /** Max of values with timestamps in (now − window, now]; 0 if none. */
  max(now: number): number {
    while (this.head < this.ts.length && this.ts[this.head]! <= now - this.windowMs) this.head++;
    if (this.head > 1024 && this.head * 2 > this.ts.length) {
      this.ts = this.ts.slice(this.head);
      this.values = this.values.slice(this.head);
      this.head = 0;
    }
    return this.head < this.values.length ? this.values[this.head]! : 0;
  }
}

/** The price of one overrun, shared by every key of a resource, steered to the target miss rate. */
export class OverrunPrice {
  value = Number.NaN;
  constructor(
    readonly targetMissRate: number,
    readonly step: number,
  ) {}
  /** The first usage seen sets the starting price: a hundred units of it. */
  seed(usage: number): void {
    if (Number.isNaN(this.value) && usage > 0) this.value = usage * 100;
  }
  update(missed: boolean): void {
    if (Number.isNaN(this.value)) return;
    this.value *= Math.exp(this.step * ((missed ? 1 : 0) - this.targetMissRate));
  }
}

/** Overrun rate of each candidate over all keys: the prior of a key's own estimate. */
export class PooledMisses {
  readonly misses = new Float64Array(CANDIDATES);
  readonly steps = new Float64Array(CANDIDATES);
  constructor(readonly decay: number) {}
  rate(c: number, fallback: number): number {
    return this.steps[c]! > 0 ? this.misses[c]! / this.steps[c]! : fallback;
  }
}

export class EnsembleForecaster {
  private windows = WINDOWS_MS.map((ms) => new WindowMax(ms));
  private readonly features = new Float32Array(GLOBAL_FEATURES);
  private readonly predicted = new Float64Array(GLOBAL_LEVELS.length);
  private featuresReady = false;
  private scale = 1;
  private histograms: DecayingHistogram[];
  private seasonal = new SeasonalProfile();
  private readonly sources = new Float64Array(SOURCES);
  private sincePercentiles = REFRESH_PERCENTILES_EVERY;
  private readonly limits = new Float64Array(CANDIDATES).fill(Number.NaN);
  private readonly slack = new Float64Array(CANDIDATES);
  private readonly misses = new Float64Array(CANDIDATES);
  private readonly steps = new Float64Array(CANDIDATES);
  /** How much each candidate's limit moves from step to step (decayed), and its last limit. */
  private readonly movement = new Float64Array(CANDIDATES);
  private readonly candidateLimits = new Float64Array(CANDIDATES).fill(Number.NaN);
  private chosen = CAUTIOUS;
  private observations = 0;
  private bumpFloor = 0;
  private bumpUntil = -Infinity;
  private previousLimit = Number.NaN;

  constructor(
    readonly options: EnsembleOptions,
    private readonly pool: PooledMisses,
    private readonly price: OverrunPrice,
    private readonly histogramOptions: Omit<HistogramOptions, "halfLifeMs">,
    private readonly learner: GlobalLearner | null = null,
  ) {
    this.histograms = HALF_LIVES_MS.map((halfLifeMs) => new DecayingHistogram({ ...histogramOptions, halfLifeMs }));
  }

  /**
   * Features of the learned global model (recent peaks and percentiles in
   * units of the week's peak, time of day and week) and its predictions.
   */
  private globalSources(ts: number, floor: number): void {
    this.sources.fill(Number.NaN, GLOBAL_AT, GLOBAL_AT + GLOBAL_LEVELS.length);
    const learner = this.learner;
    if (!learner) return;
    const scale = Math.max(this.sources[WINDOWS_MS.length - 1]!, floor);
    this.scale = scale;
    const f = this.features;
    for (let w = 0; w < WINDOWS_MS.length; w++) f[w] = Math.min(this.sources[w]! / scale, 50);
    const at = WINDOWS_MS.length;
    [0, 3, PERCENTILES.length, PERCENTILES.length + 3].forEach((p, i) => (f[at + i] = Math.min(this.sources[at + p]! / scale, 50)));
    const hour = ((ts / HOUR) % 24) / 24;
    const week = ((ts / (24 * HOUR) + 4) % 7) / 7; // 1970-01-01 was a Thursday
    f[at + 4] = Math.sin(2 * Math.PI * hour);
    f[at + 5] = Math.cos(2 * Math.PI * hour);
    f[at + 6] = Math.sin(2 * Math.PI * week);
    f[at + 7] = Math.cos(2 * Math.PI * week);
    this.featuresReady = true;
    if (!learner.model) return;
    learner.model.predict(f, this.predicted);
    for (let q = 0; q < GLOBAL_LEVELS.length; q++) this.sources[GLOBAL_AT + q] = this.predicted[q]! * scale;
  }

  /** The peak of the last week. */
  weekPeak(ts: number): number {
    return this.windows[this.windows.length - 1]!.max(ts);
  }

  /** Everything this key has learned (not the shared pool and price), as JSON-safe data. */
  toState(): EnsembleState {
    return {
      version: ENSEMBLE_STATE_VERSION,
      candidates: CANDIDATES,
      windows: this.windows.map((w) => w.toState()),
      histograms: this.histograms.map((h) => h.toState()),
      seasonal: this.seasonal.toState(),
      slack: [...this.slack],
      misses: [...this.misses],
      steps: [...this.steps],
      movement: [...this.movement],
      candidateLimits: toJsonNumbers(this.candidateLimits),
      chosen: this.chosen,
      observations: this.observations,
      bumpFloor: this.bumpFloor,
      bumpUntil: Number.isFinite(this.bumpUntil) ? this.bumpUntil : null,
    };
  }

  /** Restores a key; a state of another layout version is refused (the caller starts afresh). */
  restore(state: EnsembleState): void {
    if (state.version !== ENSEMBLE_STATE_VERSION || state.candidates !== CANDIDATES) throw new RangeError(`ensemble state version ${state.version} is not ${ENSEMBLE_STATE_VERSION}`);
    if (state.windows.length !== WINDOWS_MS.length || state.histograms.length !== HALF_LIVES_MS.length) throw new RangeError("ensemble state has the wrong shape");
    for (const array of [state.slack, state.misses, state.steps, state.movement, state.candidateLimits]) {
      if (array.length !== CANDIDATES) throw new RangeError("ensemble state has the wrong shape");
    }
    if (!Number.isInteger(state.chosen) || state.chosen < 0 || state.chosen >= CANDIDATES) throw new RangeError("ensemble state chose no candidate");
    this.windows = state.windows.map((w, i) => WindowMax.fromState(WINDOWS_MS[i]!, w));
    this.histograms = state.histograms.map((h, i) => DecayingHistogram.fromState({ ...this.histogramOptions, halfLifeMs: HALF_LIVES_MS[i]! }, h));
    this.seasonal = SeasonalProfile.fromState(state.seasonal);
    this.slack.set(state.slack);
    this.misses.set(state.misses);
    this.steps.set(state.steps);
    this.movement.set(state.movement);
    this.candidateLimits.set(fromJsonNumbers(state.candidateLimits));
    this.chosen = state.chosen;
    this.observations = state.observations;
    this.bumpFloor = state.bumpFloor;
    this.bumpUntil = state.bumpUntil ?? -Infinity;
    this.sincePercentiles = REFRESH_PERCENTILES_EVERY;
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
    for (let w = 0; w < WINDOWS_MS.length; w++) this.sources[w] = this.windows[w]!.max(ts);
    if (this.sincePercentiles >= REFRESH_PERCENTILES_EVERY) {
      this.histograms.forEach((histogram, h) => histogram.percentiles(PERCENTILES, this.sources, WINDOWS_MS.length + h * PERCENTILES.length));
      this.sincePercentiles = 0;
    }
    for (let lag = 0; lag < SEASONAL_LAGS_HOURS.length; lag++) this.sources[SEASONAL_AT + lag] = this.seasonal.peakAround(ts, lag);
    const floor = this.options.absoluteFloor;
    this.globalSources(ts, floor);
    for (let c = 0; c < CANDIDATES; c++) {
      const source = this.sources[Math.floor(c / MARGINS.length)]!;
      this.limits[c] = Number.isNaN(source) ? Number.NaN : Math.max(floor, source * MARGINS[c % MARGINS.length]!);
    }
    if (Number.isNaN(this.limits[this.chosen]!)) this.chosen = CAUTIOUS; // its seasonal period faded
    let limit = this.limits[this.chosen]!;
    if (ts < this.bumpUntil) limit = Math.max(limit, this.bumpFloor);
    this.previousLimit = limit;
    return limit;
  }

  /** Folds in the usage of the step whose limit was asked last. */
  observe(ts: number, usage: number): void {
    this.price.seed(usage);
    if (!Number.isNaN(this.previousLimit)) {
      const { slackDecay, missDecay, priorSteps, targetMissRate } = this.options;
      const price = this.price.value;
      let best = this.chosen;
      let bestCost = Infinity;
      let chosenCost = Infinity;
      for (let c = 0; c < CANDIDATES; c++) {
        const limit = this.limits[c]!;
        if (Number.isNaN(limit)) continue; // a seasonal source without a detected period
        const missed = usage > limit ? 1 : 0;
        this.slack[c] = slackDecay * this.slack[c]! + (1 - slackDecay) * (limit - usage > 0 ? limit - usage : 0);
        this.misses[c] = missDecay * this.misses[c]! + missed;
        this.steps[c] = missDecay * this.steps[c]! + 1;
        this.pool.misses[c] = this.pool.decay * this.pool.misses[c]! + missed;
        this.pool.steps[c] = this.pool.decay * this.pool.steps[c]! + 1;
        const prior = this.pool.rate(c, targetMissRate);
        const missRate = (this.misses[c]! + priorSteps * prior) / (this.steps[c]! + priorSteps);
        const previous = this.candidateLimits[c]!;
        if (!Number.isNaN(previous)) this.movement[c] = slackDecay * this.movement[c]! + (1 - slackDecay) * Math.abs(limit - previous);
        this.candidateLimits[c] = limit;
        const cost = this.slack[c]! + price * missRate + this.options.changeWeight * this.movement[c]!;
        if (cost < bestCost) {
          bestCost = cost;
          best = c;
        }
        if (c === this.chosen) chosenCost = cost;
      }
      if (bestCost < chosenCost * (1 - this.options.switchMargin)) this.chosen = best;
      const missed = usage > this.previousLimit;
      this.price.update(missed);
      if (missed) {
        this.bumpFloor = usage * (1 + this.options.missBump);
        this.bumpUntil = ts + this.options.missBumpMs;
      }
    }
    if (this.learner && this.featuresReady && this.observations % this.learner.sampleEvery === 0) {
      this.learner.reservoir.add(this.features, Math.min(usage / this.scale, 100));
    }
    this.featuresReady = false;
    this.previousLimit = Number.NaN;
    for (const window of this.windows) window.push(ts, usage);
    for (const histogram of this.histograms) histogram.add(usage, 1, ts);
    this.seasonal.push(ts, usage);
    this.sincePercentiles++;
    this.observations++;
  }
}

const HOUR_MS = 3_600_000;

/**
 * Defaults of augur's policy. The miss rates are the service level: memory
 * (an overrun is an OOM kill) one step in 2,000, rates (an overrun is
 * throttling) one in 300. They are the knobs a user turns; the rest are
 * structural (how fast to forget, how much evidence is enough).
 */
export function defaultEnsembleOptions(resource: Resource, missRates: { memory?: number; rate?: number } = {}): EnsembleOptions {
  const peak = PEAK_LIKE.has(resource);
  return {
    targetMissRate: peak ? (missRates.memory ?? 0.0005) : (missRates.rate ?? 0.003),
    slackDecay: 0.95, // slack is measured every step: a short memory follows phases
    missDecay: 0.9995, // overruns are rare: a memory of ~2,000 steps
    priorSteps: 2000, // until a key has that much evidence of its own, the pooled rate weighs in
    switchMargin: 0.05,
    changeWeight: 4, // a limit that moves by x costs like 4x of slack: steadier limits, about the same slack
    missBump: peak ? 0.2 : 0.1,
    missBumpMs: HOUR_MS,
    absoluteFloor: BUCKETS[resource].firstBucketSize / 10,
    priceStep: 0.05,
  };
}

/** Buckets of the percentile candidates: ten times finer than VPA's, 2% growth. */
export function histogramOptionsFor(resource: Resource): Omit<HistogramOptions, "halfLifeMs"> {
  const { firstBucketSize, maxValue } = BUCKETS[resource];
  return { firstBucketSize: firstBucketSize / 10, maxValue, ratio: 1.02, epsilon: 1e-6 };
}
