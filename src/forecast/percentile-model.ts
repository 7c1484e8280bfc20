import { z } from "zod";
import { PEAK_LIKE, RESOURCES, type Profile, type Resource, type WindowAggregate } from "../core/types.js";
import { DecayingHistogram, type HistogramOptions, type HistogramState } from "./decaying-histogram.js";
import { foldSketch, savedResources, type ForecastModel, type ModelFactory } from "./model.js";

const HOUR_MS = 3_600_000;
const MIB = 1024 * 1024;

export const percentileModelConfig = z
  .object({
    /** Decay half-life. VPA DefaultCPU/MemoryHistogramDecayHalfLife: 24 h (ANCHORS §1.2). */
    halfLifeHours: z.number().positive().max(24 * 365).default(24),
    /** Percentile recommended as request. VPA target-cpu/memory-percentile: 0.9. */
    requestPercentile: z.number().gt(0).lt(1).default(0.9),
    /** Percentile recommended as limit. VPA recommendation-upper-bound percentile: 0.95; we cap at p99. */
    limitPercentile: z.number().gt(0).max(1).default(0.99),
    /** VPA recommendation-margin-fraction: 0.15. */
    marginFraction: z.number().min(0).max(10).default(0.15),
    /** VPA DefaultOOMBumpUpRatio (1.2) and DefaultOOMMinBumpUp (100 MiB). */
    oomBumpUpRatio: z.number().min(1).max(10).default(1.2),
    oomMinBumpUpBytes: z.number().min(0).default(100 * MIB),
    /**
     * Bucket growth. VPA uses 0.05 with a 0.01-core / 1e7-byte first bucket,
     * which at 100 MB is a 15% step; augur defaults to 0.02 and buckets ten
     * times finer (`bucketScale` 0.1), a 3% step there. The VPA baseline sets 0.05 and 1.
     */
    bucketGrowth: z.number().gt(0).max(1).default(0.02),
    bucketScale: z.number().gt(0).max(1).default(0.1),
  })
  .strict();
export type PercentileModelConfig = z.infer<typeof percentileModelConfig>;

/**
 * Bucket schemes. CPU and memory are VPA's (ANCHORS §1.3: first bucket 0.01
 * core / 1e7 bytes, max 1000 cores / 1e12 bytes, ratio 1.05); the other
 * resources reuse the same growth with a first bucket of similar relative size.
 */
export const BUCKETS: Record<Resource, Pick<HistogramOptions, "firstBucketSize" | "maxValue">> = {
  cpu: { firstBucketSize: 0.01, maxValue: 1000 },
  mem: { firstBucketSize: 1e7, maxValue: 1e12 },
  net_rx: { firstBucketSize: 1e3, maxValue: 1e12 },
  net_tx: { firstBucketSize: 1e3, maxValue: 1e12 },
  disk_read: { firstBucketSize: 1e3, maxValue: 1e12 },
  disk_write: { firstBucketSize: 1e3, maxValue: 1e12 },
  gpu_util: { firstBucketSize: 0.01, maxValue: 1000 },
  gpu_mem: { firstBucketSize: 1e7, maxValue: 1e12 },
};


interface ResourceState {
  histogram: HistogramState;
  max: number;
  samples: number;
}

interface PercentileState {
  resources: Partial<Record<Resource, ResourceState>>;
}

class PercentileModel implements ForecastModel {
  private readonly histograms = new Map<Resource, DecayingHistogram>();
  private readonly maxSeen = new Map<Resource, number>();
  private readonly samples = new Map<Resource, number>();

  constructor(private readonly config: PercentileModelConfig) {}

  private histogram(resource: Resource): DecayingHistogram {
    let histogram = this.histograms.get(resource);
    if (!histogram) this.histograms.set(resource, (histogram = new DecayingHistogram(histogramOptions(resource, this.config))));
    return histogram;
  }

  observe(window: WindowAggregate): void {
    for (const resource of RESOURCES) {
      const stats = window.resources[resource];
      if (!stats || stats.count === 0) continue;
      const histogram = this.histogram(resource);
      // Like VPA: memory-like resources contribute each window's peak, rates every sample.
      if (PEAK_LIKE.has(resource)) {
        histogram.add(stats.max, 1, window.windowEnd);
      } else {
        foldSketch(histogram, stats.sketch, window.windowEnd); // every sample of the window
      }
      this.maxSeen.set(resource, Math.max(this.maxSeen.get(resource) ?? 0, stats.max));
      this.samples.set(resource, (this.samples.get(resource) ?? 0) + stats.count);
    }
    const memory = window.resources.mem;
    if (window.oomKills > 0 && memory) {
      // VPA RecordOOM (ANCHORS §1.6): max(peak + 100 MiB, peak × 1.2).
      const needed = Math.max(memory.max + this.config.oomMinBumpUpBytes, memory.max * this.config.oomBumpUpRatio);
      this.histogram("mem").add(needed, 1, window.windowEnd);
      this.maxSeen.set("mem", Math.max(this.maxSeen.get("mem") ?? 0, needed));
    }
  }

  predict(): Profile["resources"] {
    const out: Profile["resources"] = {};
    const margin = 1 + this.config.marginFraction;
    for (const [resource, histogram] of this.histograms) {
      if (histogram.isEmpty()) continue;
      const p50 = histogram.percentile(0.5);
      const p90 = histogram.percentile(0.9);
      const p95 = histogram.percentile(0.95);
      const p99 = histogram.percentile(0.99);
      const request = histogram.percentile(this.config.requestPercentile) * margin;
      const limit = Math.max(request, histogram.percentile(this.config.limitPercentile) * margin);
      out[resource] = {
        p50,
        p90,
        p95,
        p99,
        max: this.maxSeen.get(resource) ?? p99,
        request,
        limit,
        model: "decaying-percentile",
        sampleCount: this.samples.get(resource) ?? 0,
      };
    }
    return out;
  }

  toState(): PercentileState {
    const resources: PercentileState["resources"] = {};
    for (const [resource, histogram] of this.histograms) {
      resources[resource] = { histogram: histogram.toState(), max: this.maxSeen.get(resource) ?? 0, samples: this.samples.get(resource) ?? 0 };
    }
    return { resources };
  }

  static restore(config: PercentileModelConfig, state: unknown): PercentileModel {
    const model = new PercentileModel(config);
    for (const [resource, resourceState] of savedResources<ResourceState>(state, "percentile")) {
      model.histograms.set(resource, DecayingHistogram.fromState(histogramOptions(resource, config), resourceState.histogram));
      model.maxSeen.set(resource, resourceState.max);
      model.samples.set(resource, resourceState.samples);
    }
    return model;
  }
}

function histogramOptions(resource: Resource, config: PercentileModelConfig): HistogramOptions {
  const { firstBucketSize, maxValue } = BUCKETS[resource];
  return {
    firstBucketSize: firstBucketSize * config.bucketScale,
    maxValue,
    ratio: 1 + config.bucketGrowth,
    epsilon: 1e-4,
    halfLifeMs: config.halfLifeHours * HOUR_MS,
  };
}

export function createPercentileModelFactory(config: PercentileModelConfig): ModelFactory {
  return {
    name: "decaying-percentile",
    stateVersion: 1,
    create: () => new PercentileModel(config),
    restore: (state) => PercentileModel.restore(config, state),
  };
}
