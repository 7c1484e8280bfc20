// Domain types shared by every stage. Field names match the Avro schemas in
// `schemas/*.avsc` one to one, so a value can be serialised without mapping.

/** Resources augur measures and predicts. Units are in the names of Sample fields. */
export const RESOURCES = [
  "cpu", // cores
  "mem", // bytes (working set)
  "net_rx", // bytes per second
  "net_tx", // bytes per second
  "disk_read", // bytes per second
  "disk_write", // bytes per second
  "gpu_util", // GPUs in use (0..n)
  "gpu_mem", // bytes
] as const;
export type Resource = (typeof RESOURCES)[number];

/** Resources whose shortfall kills the workload (OOM): each step counts by its peak, like VPA's memory. */
export const PEAK_LIKE: ReadonlySet<Resource> = new Set<Resource>(["mem", "gpu_mem"]);

export function isResource(name: string): name is Resource {
  return (RESOURCES as readonly string[]).includes(name);
}

/** One measurement of one running workload at one instant (event time `ts`). */
export interface Sample {
  /** Event time, milliseconds since the Unix epoch. */
  ts: number;
  /** Id of one running instance (container, cgroup, process). */
  workload: string;
  image: string;
  user: string;
  host: string;
  /** Which collector produced it (cgroup, proc, gpu, replay). */
  source: string;
  cpuCores: number | null;
  memoryWorkingSetBytes: number | null;
  memoryRssBytes: number | null;
  netRxBytesPerSecond: number | null;
  netTxBytesPerSecond: number | null;
  diskReadBytesPerSecond: number | null;
  diskWriteBytesPerSecond: number | null;
  gpuUtilization: number | null;
  gpuMemoryBytes: number | null;
  /** OOM kills observed since the previous sample of this workload. */
  oomKills: number;
  /** CFS periods in which the workload was throttled since the previous sample. */
  cpuThrottledPeriods: number;
  /** Seconds the workload was throttled since the previous sample. */
  cpuThrottledSeconds: number;
  cpuLimitCores: number | null;
  memoryLimitBytes: number | null;
}

/** Maps each resource to the Sample field that carries it. */
export const SAMPLE_FIELD: Record<Resource, keyof Sample> = {
  cpu: "cpuCores",
  mem: "memoryWorkingSetBytes",
  net_rx: "netRxBytesPerSecond",
  net_tx: "netTxBytesPerSecond",
  disk_read: "diskReadBytesPerSecond",
  disk_write: "diskWriteBytesPerSecond",
  gpu_util: "gpuUtilization",
  gpu_mem: "gpuMemoryBytes",
};

export function sampleValue(sample: Sample, resource: Resource): number | null {
  const value = sample[SAMPLE_FIELD[resource]];
  return typeof value === "number" ? value : null;
}

/** Sets a resource's value in a sample (its field by SAMPLE_FIELD). */
export function setSampleValue(sample: Sample, resource: Resource, value: number): void {
  (sample as unknown as Record<string, number | null>)[SAMPLE_FIELD[resource]] = value;
}

/** Serialised form of a mergeable quantile sketch (see core/sketch.ts). */
export interface SketchState {
  relativeAccuracy: number;
  /** Smallest value tracked apart from zero; anything below counts as zero. */
  minIndexedValue: number;
  zeroCount: number;
  /** Bucket index → count, as parallel arrays (Avro has no int-keyed maps). */
  indexes: number[];
  counts: number[];
}

export interface ResourceWindowStats {
  count: number;
  mean: number;
  min: number;
  max: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  sketch: SketchState;
}

/** Samples of one (image, user) in one event-time window. */
export interface WindowAggregate {
  image: string;
  user: string;
  /** Inclusive start and exclusive end of the window, epoch ms. */
  windowStart: number;
  windowEnd: number;
  sampleCount: number;
  /** Distinct workloads that reported in the window. */
  workloadCount: number;
  resources: Partial<Record<Resource, ResourceWindowStats>>;
  oomKills: number;
  cpuThrottledPeriods: number;
  cpuThrottledSeconds: number;
  /** Largest memory limit seen in the window, if any workload had one. */
  memoryLimitBytes: number | null;
  cpuLimitCores: number | null;
}

export type ProfileLevel = "exact" | "image" | "user" | "global";

export interface ResourcePrediction {
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
  /** What to reserve (scheduling request) and what to cap at (limit). */
  request: number;
  limit: number;
  model: string;
  /** Total weight of samples that support the prediction. */
  sampleCount: number;
}

export interface Profile {
  image: string;
  user: string;
  level: ProfileLevel;
  /** Event time (ms) of the newest window folded into it; increases monotonically. */
  version: number;
  /** Event time of the first window. */
  firstSeen: number;
  windows: number;
  resources: Partial<Record<Resource, ResourcePrediction>>;
  oomKills: number;
}

export interface ResourceAmounts {
  cpu?: number; // cores
  memory?: number; // bytes
  gpus?: number;
  netEgress?: number; // bytes per second
}

export interface AllocationRequest {
  requestId: string;
  image: string;
  user: string;
  /** Explicit amounts that override the prediction for this run. */
  request: ResourceAmounts;
  priorityClass: string | null;
  /** Event time of the request. */
  ts: number;
}

export type AllocationLevel = ProfileLevel | "default" | "explicit";

export interface AllocatedResource {
  request: number;
  limit: number;
}

export interface AllocationDecision {
  requestId: string;
  image: string;
  user: string;
  ok: boolean;
  /** Machine-readable reason: "ok", "capacity", "invalid-request". */
  reason: string;
  message: string;
  node: string;
  level: AllocationLevel;
  profileVersion: number | null;
  cpu: AllocatedResource | null;
  memory: AllocatedResource | null;
  gpus: number;
  netEgressBytesPerSecond: number | null;
  /** Product of the image, user and class multipliers that were applied. */
  priorityMultiplier: number;
  /** True when a scaler hook was asked for capacity during this decision. */
  scaled: boolean;
  ts: number;
}

export interface ActuationResult {
  node: string;
  workload: string;
  connector: string;
  action: string;
  ok: boolean;
  dryRun: boolean;
  reason: string;
  /** JSON of what was applied (settings and values). */
  details: string;
  ts: number;
}

export type AnomalyType = "memory_leak" | "cpu_runaway" | "spike" | "miner" | "network_burst" | "never_seen" | "unknown";

export interface Anomaly {
  workload: string;
  image: string;
  user: string;
  host: string;
  type: AnomalyType;
  severity: "info" | "warning" | "critical";
  score: number;
  resource: Resource;
  observed: number;
  expected: number;
  startTs: number;
  detectedTs: number;
  message: string;
}
