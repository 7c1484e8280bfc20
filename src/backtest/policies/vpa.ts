// The Kubernetes VPA recommender and updater, rebuilt from ../shared/ANCHORS.md
// §1 and §7.1 (vertical-pod-autoscaler/pkg/recommender: model/, logic/, util/).
import type { Resource } from "../../core/types.js";
import { DecayingHistogram, type HistogramOptions } from "../../forecast/decaying-histogram.js";
import { BUCKETS } from "../../forecast/percentile-model.js";
import { PairStates, PEAK_LIKE, type BacktestPolicy, type PairRef } from "../policy.js";

const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const MIB = 1024 * 1024;

/** Constants of ANCHORS §1.2, with where they come from upstream. */
export const VPA = {
  safetyMarginFraction: 0.15, // config.go recommendation-margin-fraction
  targetPercentile: 0.9, // config.go target-cpu-percentile / target-memory-percentile
  lowerBoundPercentile: 0.5, // config.go recommendation-lower-bound-*-percentile
  upperBoundPercentile: 0.95, // config.go recommendation-upper-bound-*-percentile
  minCpuCores: 0.025, // pod-recommendation-min-cpu-millicores = 25
  minMemoryBytes: 250 * MIB, // pod-recommendation-min-memory-mb = 250
  halfLifeMs: DAY, // model/aggregations_config.go DefaultCPU/MemoryHistogramDecayHalfLife
  memoryAggregationIntervalMs: DAY, // DefaultMemoryAggregationInterval
  bucketGrowth: 0.05, // DefaultHistogramBucketSizeGrowth
  epsilon: 1e-4, // 0.001 × minSampleWeight
  cpuSampleWeight: 0.1, // minSampleWeight
  oomBumpUpRatio: 1.2, // DefaultOOMBumpUpRatio
  oomMinBumpUpBytes: 100 * MIB, // DefaultOOMMinBumpUp
  updaterMinAgeMs: 12 * HOUR, // updater: pods older than 12 h are updated on a 10% change
  updaterMinChangeFraction: 0.1,
  confidenceSamplesPerDay: 1440, // one sample a minute (recommender-interval)
} as const;

export function vpaHistogramOptions(resource: Resource, halfLifeMs: number = VPA.halfLifeMs): HistogramOptions {
  return { ...BUCKETS[resource], ratio: 1 + VPA.bucketGrowth, epsilon: VPA.epsilon, halfLifeMs };
}

/** VPA's floors apply to CPU and memory only; it has no notion of the other resources. */
function minimumFor(resource: Resource): number {
  return resource === "cpu" ? VPA.minCpuCores : resource === "mem" ? VPA.minMemoryBytes : 0;
}

/** VPA rounds to whole millicores and bytes by truncation. */
function truncate(resource: Resource, value: number): number {
  return resource === "cpu" ? Math.floor(value * 1000) / 1000 : PEAK_LIKE.has(resource) ? Math.floor(value) : value;
}

interface ContainerPeak {
  windowEnd: number;
  peak: number;
  lastSample: number;
}

class VpaState {
  readonly histogram: DecayingHistogram;
  readonly containers = new Map<number, ContainerPeak>();
  firstSample = Infinity;
  lastSample = -Infinity;
  samples = 0;
  /** What the updater last applied, and when the pair was first seen. */
  applied: number | null = null;
  started: number | null = null;

  constructor(
    readonly resource: Resource,
    halfLifeMs: number,
  ) {
    this.histogram = new DecayingHistogram(vpaHistogramOptions(resource, halfLifeMs));
  }

  /** ContainerState.addCPUSample: weight 0.1 at the sample time; drops non-increasing timestamps. */
  addRateSample(ts: number, usage: number, workload: number): void {
    const container = this.containers.get(workload) ?? { windowEnd: -Infinity, peak: 0, lastSample: -Infinity };
    this.containers.set(workload, container);
    if (ts <= container.lastSample) return;
    container.lastSample = ts;
    this.histogram.add(usage, VPA.cpuSampleWeight, ts);
    this.count(ts);
  }

  /** ContainerState.addMemorySample: one peak per container per 24 h interval, at the interval end, weight 1. */
  addPeakSample(ts: number, usage: number, workload: number): void {
    let container = this.containers.get(workload);
    if (!container) this.containers.set(workload, (container = { windowEnd: -Infinity, peak: 0, lastSample: -Infinity }));
    if (ts < container.windowEnd) {
      if (usage > container.peak) {
        this.histogram.subtract(container.peak, 1, container.windowEnd);
        this.histogram.add(usage, 1, container.windowEnd);
        container.peak = usage;
      }
    } else {
      const interval = VPA.memoryAggregationIntervalMs;
      container.windowEnd =
        container.windowEnd === -Infinity ? ts + interval : container.windowEnd + Math.floor((ts - container.windowEnd) / interval) * interval + interval;
      container.peak = usage;
      this.histogram.add(usage, 1, container.windowEnd);
    }
    this.count(ts);
  }

  /** ContainerState.RecordOOM: memoryNeeded = max(used + 100 MiB, used × 1.2), replacing the interval's peak. */
  recordOom(ts: number, workload: number, request: number): void {
    const container = this.containers.get(workload);
    const used = Math.max(request, container?.peak ?? 0);
    const needed = Math.max(used + VPA.oomMinBumpUpBytes, used * VPA.oomBumpUpRatio);
    this.addPeakSample(ts, needed, workload);
  }

  private count(ts: number): void {
    this.samples++;
    if (ts < this.firstSample) this.firstSample = ts;
    if (ts > this.lastSample) this.lastSample = ts;
  }

  /** The target's percentile of the histogram before the margin and the floors (null while empty). */
  estimate(): number | null {
    return this.histogram.isEmpty() ? null : this.histogram.percentile(VPA.targetPercentile);
  }

  /** logic/recommender.go: target, lower and upper bound with the confidence multipliers. */
  recommendation(): { target: number; lower: number; upper: number } | null {
    if (this.histogram.isEmpty()) return null;
    const min = minimumFor(this.resource);
    const margin = 1 + VPA.safetyMarginFraction;
    const confidence = Math.min((this.lastSample - this.firstSample) / DAY, this.samples / VPA.confidenceSamplesPerDay);
    const target = Math.max(min, this.histogram.percentile(VPA.targetPercentile) * margin);
    const lower = Math.max(min, this.histogram.percentile(VPA.lowerBoundPercentile) * margin * Math.pow(1 + 0.001 / confidence, -2));
    const upper = Math.max(min, this.histogram.percentile(VPA.upperBoundPercentile) * margin * (1 + 1 / confidence));
    return { target: truncate(this.resource, target), lower, upper: Number.isFinite(upper) ? upper : Infinity };
  }
}

/**
 * `vpa`: the recommender's target (P90 of the decaying histogram, upper
 * bucket edge, × 1.15, floors 25 m / 250 MiB) applied through the updater's
 * rule: the allocation changes when it leaves [lower, upper], or when the
 * pair is 12 h old and the target moved by 10% or more. A memory overrun is
 * an OOM and feeds RecordOOM. Half-life and percentiles follow ANCHORS §1.2.
 */
export function vpaPolicy(options: { halfLifeMs?: number } = {}): BacktestPolicy {
  const states = new PairStates<VpaState>((resource) => new VpaState(resource, options.halfLifeMs ?? VPA.halfLifeMs));
  return {
    name: "vpa",
    limit(pair: PairRef, resource: Resource, ts: number, fallback: number): number {
      const state = states.get(pair, resource);
      state.started ??= ts;
      const recommendation = state.recommendation();
      if (!recommendation) return state.applied ?? fallback;
      const current = state.applied;
      const outside = current === null || current < recommendation.lower || current > recommendation.upper;
      const old = ts - state.started >= VPA.updaterMinAgeMs;
      const moved = current !== null && Math.abs(recommendation.target - current) / current >= VPA.updaterMinChangeFraction;
      if (outside || (old && moved)) state.applied = recommendation.target;
      return state.applied!;
    },
    observe(pair, resource, ts, usage, workload, limitUsed) {
      const state = states.get(pair, resource);
      if (PEAK_LIKE.has(resource)) {
        if (usage > limitUsed) state.recordOom(ts, workload, state.applied ?? 0);
        else state.addPeakSample(ts, usage, workload);
      } else {
        state.addRateSample(ts, usage, workload);
      }
    },
    forecast: (pair, resource) => states.peek(pair, resource)?.estimate() ?? null,
  };
}
