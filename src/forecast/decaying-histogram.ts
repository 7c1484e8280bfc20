// The decaying exponential histogram of the Kubernetes VPA recommender
// (vertical-pod-autoscaler/pkg/recommender/util/{histogram,decaying_histogram}.go),
// with the constants and percentile semantics of ../shared/ANCHORS.md §1.3–1.4.

export interface HistogramOptions {
  /** Largest value tracked; bigger ones land in the last bucket. VPA: 1000 cores, 1e12 bytes. */
  maxValue: number;
  /** Width of the first bucket. VPA: 0.01 core (CPU), 1e7 bytes (memory). */
  firstBucketSize: number;
  /** Bucket growth ratio. VPA DefaultHistogramBucketSizeGrowth = 0.05 → 1.05. */
  ratio: number;
  /** Weights below this count as empty. VPA: 0.001 × minSampleWeight(0.1) = 1e-4. */
  epsilon: number;
  /** Decay half-life in ms. VPA DefaultCPU/MemoryHistogramDecayHalfLife = 24 h. */
  halfLifeMs: number;
}

/** VPA util/decaying_histogram.go maxDecayExponent. */
const MAX_DECAY_EXPONENT = 100;

export interface HistogramState {
  referenceMs: number;
  /** Sparse buckets: [index, weight]. */
  buckets: Array<[number, number]>;
  /**
   * The running total as accumulated (its rounding depends on the order of
   * the adds, which a sum of the buckets would not reproduce): a restored
   * histogram gives exactly the same percentiles. Older states lack it.
   */
  totalWeight?: number;
}

/** The weights of a histogram that holds nothing yet (never written: the first add allocates). */
const NO_WEIGHTS = new Float64Array(0);
/** Buckets a histogram's window takes at least when it is allocated or grows. */
const MIN_GROWTH = 8;

/** What histograms of the same options share: the options and the bucket scheme they imply. */
interface Layout {
  options: Readonly<HistogramOptions>;
  numBuckets: number;
  logRatio: number;
  /** Each bucket's lower edge, as `bucketStart` computes it (filled on first use). */
  starts: Float64Array | null;
  /**
   * The decay factor last computed by a histogram of this layout, for the
   * time and reference it was computed for: in a replay the keys add at the
   * same times from the same reference, and the power is one of the larger
   * costs of an add.
   */
  factorAt: number;
  factorReference: number;
  factor: number;
}
/** One layout per distinct options: a replay holds hundreds of thousands of histograms of a few kinds. */
const LAYOUTS = new Map<string, Layout>();
const MAX_LAYOUTS = 1_000;

function layoutOf(options: HistogramOptions): Layout {
  const { maxValue, firstBucketSize, ratio, epsilon, halfLifeMs } = options;
  const key = `${maxValue}|${firstBucketSize}|${ratio}|${epsilon}|${halfLifeMs}`;
  let layout = LAYOUTS.get(key);
  if (layout) return layout;
  if (!(ratio > 1) || !(firstBucketSize > 0) || !(maxValue > firstBucketSize) || !(halfLifeMs > 0)) {
    throw new RangeError("histogram needs ratio > 1, firstBucketSize > 0, maxValue > firstBucketSize, halfLife > 0");
  }
  // numBuckets = ceil(log_ratio(maxValue*(ratio-1)/first + 1)) + 1 (ANCHORS §1.3)
  const logRatio = Math.log(ratio);
  const numBuckets = Math.ceil(Math.log((maxValue * (ratio - 1)) / firstBucketSize + 1) / logRatio) + 1;
  layout = { options: Object.freeze({ maxValue, firstBucketSize, ratio, epsilon, halfLifeMs }), numBuckets, logRatio, starts: null, factorAt: Number.NaN, factorReference: Number.NaN, factor: 1 };
  if (LAYOUTS.size < MAX_LAYOUTS) LAYOUTS.set(key, layout);
  return layout;
}

/** The lower edge of a bucket: first × (ratio^bucket − 1) / (ratio − 1) (ANCHORS §1.3), 0 for the first. */
function edgeOf({ firstBucketSize, ratio }: HistogramOptions, bucket: number): number {
  if (bucket === 0) return 0;
  return (firstBucketSize * (Math.pow(ratio, bucket) - 1)) / (ratio - 1);
}

function bucketStarts(layout: Layout): Float64Array {
  return Float64Array.from({ length: layout.numBuckets }, (_, bucket) => edgeOf(layout.options, bucket));
}

export class DecayingHistogram {
  /**
   * The weights of buckets offset … offset + weights.length − 1 (every other
   * bucket is empty). The window grows to take the buckets a series uses:
   * one key's usage spans a few dozen of the hundreds of buckets, and a
   * replay of many short-lived keys holds hundreds of thousands of histograms.
   */
  private weights: Float64Array = NO_WEIGHTS;
  private offset = 0;
  private referenceMs = 0;
  private totalWeight = 0;
  private minBucket: number;
  private maxBucket: number;
  private readonly layout: Layout;
  /** The decay factor of the last add's time (many adds share a timestamp in a replay). */
  private factorAt = Number.NaN;
  private factor = 1;

  constructor(options: HistogramOptions) {
    this.layout = layoutOf(options);
    this.minBucket = this.layout.numBuckets - 1;
    this.maxBucket = 0;
  }

  get options(): Readonly<HistogramOptions> {
    return this.layout.options;
  }

  get numBuckets(): number {
    return this.layout.numBuckets;
  }

  bucketStart(bucket: number): number {
    const starts = (this.layout.starts ??= bucketStarts(this.layout));
    return bucket >= 0 && bucket < starts.length ? starts[bucket]! : edgeOf(this.options, bucket);
  }

  findBucket(value: number): number {
    const { firstBucketSize, ratio } = this.options;
    if (value < firstBucketSize) return 0;
    const bucket = Math.floor(Math.log((value * (ratio - 1)) / firstBucketSize + 1) / this.layout.logRatio);
    return Math.min(bucket, this.numBuckets - 1);
  }

  isEmpty(): boolean {
    return this.totalWeight < this.options.epsilon;
  }

  /** Adds value with weight at event time `timeMs`; newer samples weigh exponentially more. */
  add(value: number, weight: number, timeMs: number): void {
    this.addAt(this.findBucket(value), weight, timeMs);
  }

  /** `add` of a value whose bucket is known: `findBucket` of a histogram with the same buckets (one search for several histograms). */
  addAt(bucket: number, weight: number, timeMs: number): void {
    if (timeMs !== this.factorAt && (timeMs - this.referenceMs) / this.options.halfLifeMs > MAX_DECAY_EXPONENT) this.shiftReference(timeMs);
    const decayed = weight * this.decayFactor(timeMs);
    if (!(decayed > 0) || !Number.isFinite(decayed)) return;
    this.addToBucket(bucket, decayed);
  }

  /** Removes weight earlier added at the same (value, time): VPA's peak replacement. */
  subtract(value: number, weight: number, timeMs: number): void {
    const decayed = weight * this.decayFactor(timeMs);
    const at = this.findBucket(value) - this.offset;
    if (at >= 0 && at < this.weights.length) {
      const weights = this.weights;
      const taken = Math.min(weights[at]!, decayed);
      weights[at] = weights[at]! - taken;
      this.totalWeight -= taken;
      if (weights[at]! < this.options.epsilon) {
        this.totalWeight -= weights[at]!;
        weights[at] = 0;
      }
    }
    this.updateMinAndMax();
  }

  /** 2^((t − reference) / half-life), kept for the last time asked (by this histogram, or by one of its layout from the same reference). */
  private decayFactor(timeMs: number): number {
    if (timeMs !== this.factorAt) {
      const layout = this.layout;
      if (timeMs !== layout.factorAt || this.referenceMs !== layout.factorReference) {
        layout.factor = Math.pow(2, (timeMs - this.referenceMs) / layout.options.halfLifeMs);
        layout.factorAt = timeMs;
        layout.factorReference = this.referenceMs;
      }
      this.factor = layout.factor;
      this.factorAt = timeMs;
    }
    return this.factor;
  }

  private addToBucket(bucket: number, weight: number): void {
    let at = bucket - this.offset;
    if (at < 0 || at >= this.weights.length) at = this.widen(bucket);
    const weights = this.weights;
    weights[at] = weights[at]! + weight;
    this.totalWeight += weight;
    if (bucket < this.minBucket && weights[at]! >= this.options.epsilon) this.minBucket = bucket;
    if (bucket > this.maxBucket && weights[at]! >= this.options.epsilon) this.maxBucket = bucket;
  }

  /** Grows the window to take `bucket` (by half its length at least, within the buckets); returns its index. */
  private widen(bucket: number): number {
    const { offset, weights } = this;
    const length = weights.length;
    const growth = Math.max(MIN_GROWTH, length >> 1);
    const low = length === 0 ? Math.max(0, bucket - MIN_GROWTH) : bucket < offset ? Math.max(0, Math.min(bucket, offset - growth)) : offset;
    const high = length === 0 ? Math.min(this.numBuckets, bucket + MIN_GROWTH + 1) : bucket >= offset + length ? Math.min(this.numBuckets, Math.max(bucket + 1, offset + length + growth)) : offset + length;
    const wider = new Float64Array(high - low);
    if (length > 0) wider.set(weights, offset - low);
    this.weights = wider;
    this.offset = low;
    return bucket - low;
  }

  /** VPA: shift the reference to round(t, halfLife) and rescale every weight. */
  private shiftReference(timeMs: number): void {
    const halfLife = this.options.halfLifeMs;
    const newReference = Math.round(timeMs / halfLife) * halfLife;
    this.factorAt = Number.NaN;
    const factor = Math.pow(2, Math.round((this.referenceMs - newReference) / halfLife));
    this.referenceMs = newReference;
    this.totalWeight = 0;
    const weights = this.weights;
    for (let i = 0; i < weights.length; i++) {
      const scaled = weights[i]! * factor;
      weights[i] = scaled < this.options.epsilon ? 0 : scaled;
      this.totalWeight += weights[i]!;
    }
    this.updateMinAndMax();
  }

  private updateMinAndMax(): void {
    this.minBucket = this.numBuckets - 1;
    this.maxBucket = 0;
    const weights = this.weights;
    for (let i = 0; i < weights.length; i++) {
      if (weights[i]! >= this.options.epsilon) {
        const b = i + this.offset;
        if (b < this.minBucket) this.minBucket = b;
        this.maxBucket = b;
      }
    }
  }

  /** VPA percentile: the upper edge of the first bucket whose cumulative weight reaches p × total. */
  percentile(p: number): number {
    if (this.isEmpty()) return 0;
    const threshold = p * this.totalWeight;
    // Every bucket from the lowest to the highest holding weight is in the window.
    const { weights, offset } = this;
    let sum = 0;
    let bucket = this.minBucket;
    for (; bucket < this.maxBucket; bucket++) {
      sum += weights[bucket - offset]!;
      if (sum >= threshold) break;
    }
    return bucket < this.numBuckets - 1 ? this.bucketStart(bucket + 1) : this.bucketStart(bucket);
  }

  /** Several percentiles (ascending `ps`) in one walk; same semantics as `percentile`. */
  percentiles(ps: readonly number[], out: Float64Array, offset = 0): void {
    if (this.isEmpty()) {
      out.fill(0, offset, offset + ps.length);
      return;
    }
    const weights = this.weights;
    const first = this.offset;
    let sum = 0;
    let bucket = this.minBucket;
    for (let i = 0; i < ps.length; i++) {
      const threshold = ps[i]! * this.totalWeight;
      for (; bucket < this.maxBucket; bucket++) {
        const weight = weights[bucket - first]!;
        if (sum + weight >= threshold) break;
        sum += weight;
      }
      out[offset + i] = bucket < this.numBuckets - 1 ? this.bucketStart(bucket + 1) : this.bucketStart(bucket);
    }
  }

  toState(): HistogramState {
    const buckets: Array<[number, number]> = [];
    this.weights.forEach((weight, index) => {
      if (weight >= this.options.epsilon) buckets.push([index + this.offset, weight]);
    });
    return { referenceMs: this.referenceMs, buckets, totalWeight: this.totalWeight };
  }

  static fromState(options: HistogramOptions, state: HistogramState): DecayingHistogram {
    const histogram = new DecayingHistogram(options);
    histogram.referenceMs = state.referenceMs;
    for (const [index, weight] of state.buckets) {
      if (!Number.isInteger(index) || index < 0 || index >= histogram.numBuckets || !(weight >= 0)) {
        throw new RangeError(`histogram state has an invalid bucket [${index}, ${weight}]`);
      }
      histogram.addToBucket(index, weight);
    }
    if (state.totalWeight !== undefined) {
      if (!(Number.isFinite(state.totalWeight) && state.totalWeight >= 0)) throw new RangeError(`histogram state has an invalid total weight ${state.totalWeight}`);
      // Accumulated in another order, the two differ in the last bits (and by the buckets too light to be saved); more is a corrupt state.
      const tolerance = 1e-9 * Math.max(1, histogram.totalWeight) + histogram.numBuckets * histogram.options.epsilon;
      if (Math.abs(state.totalWeight - histogram.totalWeight) > tolerance) throw new RangeError("histogram state's total weight does not match its buckets");
      histogram.totalWeight = state.totalWeight;
    }
    return histogram;
  }
}
