import type { Resource } from "../core/types.js";
import type { BlockMeans } from "./blocks.js";

export const ANOMALY_TYPES = ["memory_leak", "cpu_runaway", "spike", "miner", "network_burst", "never_seen"] as const;
export type AnomalyType = (typeof ANOMALY_TYPES)[number];
export type Severity = "info" | "warning" | "critical";

/** What a workload's history says is normal for one resource (anomalous steps left out). */
export interface Baseline {
  /** Steps with a value folded in. */
  steps: number;
  /** Largest value seen. */
  max: number;
  /** Steps at or below the idle level (a tenth of capacity; CPU and GPUs). */
  idleSteps: number;
}

/** One workload at one step, as the detectors see it. */
export interface DetectorView {
  /** Event time of this step and of the previous ones kept (oldest first, this step last). */
  ts: readonly number[];
  /** Recent values per resource, aligned with `ts` (NaN: not measured). */
  recent(resource: Resource): readonly number[];
  baseline(resource: Resource): Baseline;
  /** What the workload may use, where known: CPU cores, memory bytes. */
  cpuCapacity: number | null;
  memoryLimit: number | null;
  /** The (image, user) profile's expected maximum, where a live profile exists. */
  profileMax(resource: Resource): number | null;
  /** Block means of the longer past, for the resources that keep them (memory, CPU, GPUs); null for others. */
  blocks(resource: Resource): BlockMeans | null;
}

export interface Finding {
  resource: Resource;
  observed: number;
  expected: number;
  score: number;
  severity: Severity;
  /** Index into `ts` of the step where the anomaly began (0 = oldest kept). */
  startIndex: number;
  /** Where the evidence began before the steps kept (a trend over hours): the event's start, in place of `startIndex`'s. */
  startTs?: number;
  message: string;
}

/** A detector looks at one workload's recent steps and its baseline; pure, no clock, no I/O. */
export interface Detector {
  readonly type: AnomalyType;
  check(view: DetectorView): Finding | null;
}

/** Resources whose overuse is a runaway or mining: CPU, and GPUs. */
export const COMPUTE: readonly Resource[] = ["cpu", "gpu_util"];

/** The first finding of `check` over the compute resources (CPU, then GPUs). */
export function firstOverCompute(check: (resource: Resource) => Finding | null): Finding | null {
  for (const resource of COMPUTE) {
    const found = check(resource);
    if (found) return found;
  }
  return null;
}

/** GPUs a workload may use when nothing says: at least one, or as many as it ever used. */
export function gpuCapacity(mostUsed: number): number {
  return Math.max(1, Math.ceil(mostUsed - 1e-9));
}

/**
 * What a workload may use of a compute resource: its CPU capacity where the
 * trace or cgroup says, its GPUs (at least one, or as many as it ever used).
 */
export function capacityOf(view: DetectorView, resource: Resource): number | null {
  if (resource === "cpu") return view.cpuCapacity;
  const used = view.baseline(resource);
  return used.steps === 0 ? null : gpuCapacity(used.max);
}

/** The level a value must clear to be "far above" what this workload (or its profile) has done. */
export function expectedMax(view: DetectorView, resource: Resource): number {
  const own = view.baseline(resource).max;
  const profile = view.profileMax(resource);
  return profile === null ? own : Math.max(own, profile);
}

/** The last `n` values of a resource (fewer if not kept yet). */
export function last(view: DetectorView, resource: Resource, n: number): number[] {
  const values = view.recent(resource);
  return values.slice(Math.max(0, values.length - n)) as number[];
}
