import { z } from "zod";
import type { Resource } from "../core/types.js";
import { BlockMeans } from "./blocks.js";
import { gpuCapacity, type AnomalyType, type Baseline, type Detector, type DetectorView, type Severity } from "./detector.js";
import { createDetectors } from "./registry.js";

export const detectConfig = z
  .object({
    /** Steps of a workload's own history before it is judged (two days of 5-minute steps: a day misses what runs every other day). */
    warmupSteps: z.number().int().min(1).max(1_000_000).default(576),
    /** Steps the detectors look back over; the baseline learns a step only this much later, unless it was anomalous. */
    recentSteps: z.number().int().min(6).max(1000).default(12),
    /** An episode ends after this many steps without a finding of its type. */
    clearSteps: z.number().int().min(1).max(10_000).default(3),
    /** An episode this long is the workload's new normal: its steps are learned. */
    adaptSteps: z.number().int().min(1).max(1_000_000).default(288),
    /** Fleet-wide changes: this share of an image's workloads (at least 3) on the same resource within this many steps is the image's, not an anomaly. */
    fleetShare: z.number().gt(0).max(1).default(0.015),
    fleetWindowSteps: z.number().int().min(1).max(10_000).default(12),
  })
  .strict();
export type DetectConfig = z.infer<typeof detectConfig>;

const RESOURCES: Resource[] = ["cpu", "mem", "net_rx", "net_tx", "disk_read", "disk_write", "gpu_util", "gpu_mem"];
/** Steps per block of the slow view (an hour of 5-minute steps) and blocks kept (two days). */
const BLOCK_STEPS = 12;
const BLOCKS_KEPT = 48;
/** Resources whose hourly means the detectors judge trends and sustained levels on. */
const BLOCK_RESOURCES: readonly Resource[] = ["mem", "cpu", "gpu_util"];

/** One anomaly as it leaves the detector: the fields of the Anomaly schema. */
export interface AnomalyEvent {
  workload: string;
  image: string;
  user: string;
  host: string;
  type: AnomalyType;
  severity: Severity;
  score: number;
  resource: string;
  observed: number;
  expected: number;
  startTs: number;
  detectedTs: number;
  message: string;
}

export interface StepInput {
  ts: number;
  values: Partial<Record<Resource, number>>;
  cpuCapacity?: number | null;
  memoryLimit?: number | null;
}

interface Episode {
  startedAt: number;
  lastHit: number;
  resource: Resource;
  /** Largest value of its resource while it was open. */
  peak: number;
}

/**
 * One workload's detector state: its recent steps, a baseline per resource
 * learned from its own non-anomalous history (delayed by `recentSteps`, so
 * the first steps of an excursion are never learned before they are judged),
 * and its open anomaly episodes (one event each; a finding of a type whose
 * episode closed less than `recentSteps` ago reopens it without an event). Pure: the caller feeds
 * steps in event time.
 */
export class WorkloadMonitor {
  private readonly ts: number[] = [];
  private readonly values = new Map<Resource, number[]>();
  private readonly anomalous = new Map<Resource, boolean[]>();
  private readonly baselines = new Map<Resource, Baseline>();
  /**
   * Hourly (12-step) means over the last two days, and the highest before:
   * of the working set (slow leaks), of CPU and GPUs (a stuck thread, below
   * the peaks a workload has had).
   */
  private readonly blocks = new Map<Resource, BlockMeans>(BLOCK_RESOURCES.map((resource) => [resource, new BlockMeans(BLOCK_STEPS, BLOCKS_KEPT)]));
  private readonly episodes = new Map<AnomalyType, Episode>();
  /** Step at which the last episode of each type closed. */
  private readonly closed = new Map<AnomalyType, { at: number; peak: number }>();
  private steps = 0;
  private cpuCapacity: number | null = null;
  private memoryLimit: number | null = null;

  constructor(
    readonly identity: { workload: string; image: string; user: string; host: string },
    private readonly config: DetectConfig,
    private readonly detectors: Detector[] = createDetectors(),
    private readonly profileMax: (resource: Resource) => number | null = () => null,
  ) {
    for (const resource of RESOURCES) {
      this.values.set(resource, []);
      this.anomalous.set(resource, []);
      this.baselines.set(resource, { steps: 0, max: 0, idleSteps: 0 });
    }
  }

  private learn(index: number): void {
    for (const resource of RESOURCES) {
      if (this.anomalous.get(resource)![index]) continue;
      const value = this.values.get(resource)![index]!;
      if (Number.isNaN(value)) continue;
      const baseline = this.baselines.get(resource)!;
      baseline.steps++;
      if (value > baseline.max) baseline.max = value;
      if (resource === "cpu" && this.cpuCapacity !== null && value <= this.cpuCapacity * 0.1) baseline.idleSteps++;
      if (resource === "gpu_util" && value <= 0.1 * gpuCapacity(baseline.max)) baseline.idleSteps++;
    }
  }

  observe(step: StepInput): AnomalyEvent[] {
    if (step.cpuCapacity !== undefined && step.cpuCapacity !== null && step.cpuCapacity > 0) this.cpuCapacity = step.cpuCapacity;
    if (step.memoryLimit !== undefined && step.memoryLimit !== null && step.memoryLimit > 0) this.memoryLimit = step.memoryLimit;
    this.ts.push(step.ts);
    for (const resource of RESOURCES) {
      const value = step.values[resource];
      this.values.get(resource)!.push(value === undefined || !Number.isFinite(value) ? Number.NaN : value);
      this.anomalous.get(resource)!.push(false);
    }
    for (const [resource, blocks] of this.blocks) blocks.push(step.ts, step.values[resource] ?? Number.NaN);
    this.steps++;
    const keep = this.config.recentSteps;
    // The step that falls out of the look-back window is learned (unless it was anomalous).
    if (this.ts.length > keep) {
      this.learn(0);
      this.ts.shift();
      for (const resource of RESOURCES) {
        this.values.get(resource)!.shift();
        this.anomalous.get(resource)!.shift();
      }
    }
    if (this.steps <= this.config.warmupSteps) return [];

    const view: DetectorView = {
      ts: this.ts,
      recent: (resource) => this.values.get(resource)!,
      baseline: (resource) => this.baselines.get(resource)!,
      cpuCapacity: this.cpuCapacity,
      memoryLimit: this.memoryLimit,
      profileMax: this.profileMax,
      blocks: (resource) => this.blocks.get(resource) ?? null,
    };
    const events: AnomalyEvent[] = [];
    const now = this.ts.length - 1;
    const hitTypes = new Set<AnomalyType>();
    const claimed = new Set<Resource>();
    for (const detector of this.detectors) {
      const finding = detector.check(view);
      if (!finding || claimed.has(finding.resource)) continue;
      claimed.add(finding.resource);
      hitTypes.add(detector.type);
      const flags = this.anomalous.get(finding.resource)!;
      for (let i = Math.max(0, finding.startIndex); i <= now; i++) flags[i] = true;
      const open = this.episodes.get(detector.type);
      if (open) {
        open.lastHit = this.steps;
        continue;
      }
      // An episode that closed less than a look-back ago is still in view: its return continues it, unreported.
      const recent = this.closed.get(detector.type);
      if (recent && this.steps - recent.at < this.config.recentSteps) {
        this.episodes.set(detector.type, { startedAt: this.steps, lastHit: this.steps, resource: finding.resource, peak: Math.max(recent.peak, finding.observed) });
        continue;
      }
      this.episodes.set(detector.type, { startedAt: this.steps, lastHit: this.steps, resource: finding.resource, peak: finding.observed });
      events.push({
        ...this.identity,
        type: detector.type,
        severity: finding.severity,
        score: finding.score,
        resource: finding.resource,
        observed: finding.observed,
        expected: finding.expected,
        startTs: finding.startTs ?? this.ts[Math.max(0, finding.startIndex)]!,
        detectedTs: this.ts[now]!,
        message: finding.message,
      });
    }
    for (const [type, episode] of this.episodes) {
      const value = this.values.get(episode.resource)![now]!;
      if (value > episode.peak) episode.peak = value;
      const long = this.steps - episode.startedAt >= this.config.adaptSteps;
      if (!hitTypes.has(type) && this.steps - episode.lastHit >= this.config.clearSteps) {
        // Reported once, then known: what it reached is part of the workload's history from now on.
        const baseline = this.baselines.get(episode.resource)!;
        if (episode.peak > baseline.max) baseline.max = episode.peak;
        this.episodes.delete(type);
        this.closed.set(type, { at: this.steps, peak: episode.peak });
      } else if (!long) this.anomalous.get(episode.resource)![now] = true; // an open episode's steps are not learned…
      // …unless it has lasted long enough to be the new normal.
    }
    return events;
  }
}
