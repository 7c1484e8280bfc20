// Google Autopilot's moving-window recommenders (Rzadca et al., EuroSys 2020,
// §3.2.2), rebuilt from ../shared/ANCHORS.md §2.2 and §7.2.
import type { Resource } from "../../core/types.js";
import { DecayingHistogram } from "../../forecast/decaying-histogram.js";
import { PairStates, PEAK_LIKE, type BacktestPolicy } from "../policy.js";
import { vpaHistogramOptions } from "./vpa.js";

const HOUR = 3_600_000;

export const AUTOPILOT = {
  windowMs: 5 * 60_000, // §3.2.1: signals aggregated into 5-minute windows
  cpuHalfLifeMs: 12 * HOUR, // §3.2.2: t½ = 12 h for CPU
  memoryHalfLifeMs: 48 * HOUR, // §3.2.2: t½ = 48 h for memory
  cpuPercentile: 0.95, // serving, latency-sensitive: S_p95
  memoryPercentile: 0.98, // OOM tolerance "low", the default for large jobs: S_p98
  margin: 0.15, // "10–15%"; ANCHORS §7.2 uses 1.15
  holdWindows: 12, // post-processing: max recommendation over the last hour
} as const;

/**
 * Load-adjusted histogram h[k] = b[k] · Σ w[τ] s[t−τ][k] (§2.2): every
 * window's counts are added with decay, each bucket's weight multiplied by
 * its value, so the percentile is over signal area. Buckets reuse VPA's
 * exponential scheme (ANCHORS §7.2 allows it); b[k] is the bucket's upper edge.
 */
class AutopilotState {
  readonly histogram: DecayingHistogram;
  private windowIndex = -Infinity;
  private windowValues: number[] = [];
  private readonly recent: number[] = [];

  constructor(readonly resource: Resource) {
    const halfLife = PEAK_LIKE.has(resource) ? AUTOPILOT.memoryHalfLifeMs : AUTOPILOT.cpuHalfLifeMs;
    this.histogram = new DecayingHistogram(vpaHistogramOptions(resource, halfLife));
  }

  private loadWeight(value: number): number {
    const bucket = this.histogram.findBucket(value);
    return Math.max(this.histogram.bucketStart(bucket + 1), 1e-12);
  }

  /** Closes the open window (if `ts` is past it): folds it in and records a recommendation. */
  advance(ts: number): void {
    const index = Math.floor(ts / AUTOPILOT.windowMs);
    if (index <= this.windowIndex) return;
    if (this.windowValues.length > 0) {
      const end = (this.windowIndex + 1) * AUTOPILOT.windowMs;
      if (PEAK_LIKE.has(this.resource)) {
        const peak = Math.max(...this.windowValues); // memory: only the window's peak
        this.histogram.add(peak, this.loadWeight(peak), end);
      } else {
        for (const value of this.windowValues) this.histogram.add(value, this.loadWeight(value), end); // CPU: every sample
      }
      const percentile = PEAK_LIKE.has(this.resource) ? AUTOPILOT.memoryPercentile : AUTOPILOT.cpuPercentile;
      this.recent.push(this.histogram.percentile(percentile) * (1 + AUTOPILOT.margin));
      if (this.recent.length > AUTOPILOT.holdWindows) this.recent.shift();
    }
    this.windowIndex = index;
    this.windowValues = [];
  }

  add(ts: number, usage: number): void {
    this.advance(ts);
    this.windowValues.push(usage);
  }

  limit(): number | null {
    return this.recent.length === 0 ? null : Math.max(...this.recent);
  }

  /** The newest window's percentile, before the margin and the hour's maximum. */
  estimate(): number | null {
    return this.recent.length === 0 ? null : this.recent[this.recent.length - 1]! / (1 + AUTOPILOT.margin);
  }
}

/** `autopilot`: CPU S_p95 (t½ 12 h), memory S_p98 (t½ 48 h), × 1.15, max over the last hour. */
export function autopilotPolicy(): BacktestPolicy {
  const states = new PairStates<AutopilotState>((resource) => new AutopilotState(resource));
  return {
    name: "autopilot",
    limit(pair, resource, ts, fallback) {
      const state = states.get(pair, resource);
      state.advance(ts);
      return state.limit() ?? fallback;
    },
    observe(pair, resource, ts, usage) {
      states.get(pair, resource).add(ts, usage);
    },
    forecast: (pair, resource) => states.peek(pair, resource)?.estimate() ?? null,
  };
}
