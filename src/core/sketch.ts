import type { SketchState } from "./types.js";

/**
 * A mergeable quantile sketch with a relative-accuracy guarantee, after
 * DDSketch (Masson, Rim, Lee, VLDB 2019): values fall into logarithmic
 * buckets of ratio γ = (1+α)/(1−α), so any quantile is returned within a
 * factor (1 ± α) of a value of the true rank. Two sketches with the same α
 * merge exactly by adding bucket counts, which lets windows combine.
 * Values are non-negative here (usage); those below `minIndexedValue`
 * count as zero.
 */
export class QuantileSketch {
  private readonly gamma: number;
  private readonly logGamma: number;
  private readonly buckets = new Map<number, number>();
  private zeroCount = 0;
  private total = 0;

  constructor(
    readonly relativeAccuracy = 0.01,
    readonly minIndexedValue = 1e-9,
  ) {
    if (!(relativeAccuracy > 0 && relativeAccuracy < 1)) {
      throw new RangeError(`relativeAccuracy must be in (0, 1), got ${relativeAccuracy}`);
    }
    this.gamma = (1 + relativeAccuracy) / (1 - relativeAccuracy);
    this.logGamma = Math.log(this.gamma);
  }

  get count(): number {
    return this.total;
  }

  add(value: number, weight = 1): void {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`sketch values must be finite and >= 0, got ${value}`);
    if (!(weight > 0) || !Number.isFinite(weight)) throw new RangeError(`sketch weights must be finite and > 0, got ${weight}`);
    this.total += weight;
    if (value < this.minIndexedValue) {
      this.zeroCount += weight;
      return;
    }
    const index = Math.ceil(Math.log(value) / this.logGamma);
    this.buckets.set(index, (this.buckets.get(index) ?? 0) + weight);
  }

  merge(other: QuantileSketch): void {
    if (other.relativeAccuracy !== this.relativeAccuracy || other.minIndexedValue !== this.minIndexedValue) {
      throw new RangeError("cannot merge sketches with different parameters");
    }
    this.zeroCount += other.zeroCount;
    this.total += other.total;
    for (const [index, count] of other.buckets) this.buckets.set(index, (this.buckets.get(index) ?? 0) + count);
  }

  /** The representative value of a bucket: within α of every value in it. */
  private bucketValue(index: number): number {
    return (2 * Math.pow(this.gamma, index)) / (this.gamma + 1);
  }

  /** Value at quantile q in [0, 1]; 0 for an empty sketch. */
  quantile(q: number): number {
    if (this.total === 0) return 0;
    const clamped = Math.min(1, Math.max(0, q));
    const rank = clamped * (this.total - 1);
    if (rank < this.zeroCount) return 0;
    let cumulative = this.zeroCount;
    const indexes = [...this.buckets.keys()].sort((a, b) => a - b);
    for (const index of indexes) {
      cumulative += this.buckets.get(index)!;
      if (cumulative > rank) return this.bucketValue(index);
    }
    return this.bucketValue(indexes[indexes.length - 1]!);
  }

  /** Calls `visit` with each bucket's representative value and weight, ascending. */
  forEachBucket(visit: (value: number, weight: number) => void): void {
    if (this.zeroCount > 0) visit(0, this.zeroCount);
    for (const index of [...this.buckets.keys()].sort((a, b) => a - b)) visit(this.bucketValue(index), this.buckets.get(index)!);
  }

  toState(): SketchState {
    const indexes = [...this.buckets.keys()].sort((a, b) => a - b);
    return {
      relativeAccuracy: this.relativeAccuracy,
      minIndexedValue: this.minIndexedValue,
      zeroCount: this.zeroCount,
      indexes,
      counts: indexes.map((i) => this.buckets.get(i)!),
    };
  }

  static fromState(state: SketchState): QuantileSketch {
    if (state.indexes.length !== state.counts.length) throw new RangeError("sketch state has mismatched indexes and counts");
    const sketch = new QuantileSketch(state.relativeAccuracy, state.minIndexedValue);
    if (!(state.zeroCount >= 0)) throw new RangeError("sketch zeroCount must be >= 0");
    sketch.zeroCount = state.zeroCount;
    sketch.total = state.zeroCount;
    state.indexes.forEach((index, i) => {
      const count = state.counts[i]!;
      if (!Number.isInteger(index) || !(count > 0) || !Number.isFinite(count)) throw new RangeError("sketch state has an invalid bucket");
      sketch.buckets.set(index, (sketch.buckets.get(index) ?? 0) + count);
      sketch.total += count;
    });
    return sketch;
  }
}
