import { csvCell, type Trace, type WorkloadSeries } from "../backtest/trace.js";
import { RESOURCES, type Resource } from "../core/types.js";
import { ANOMALY_TYPES, gpuCapacity, type AnomalyType } from "./detector.js";
import type { Label } from "./offline.js";
import { seededRandom } from "../core/random.js";

export interface InjectOptions {
  seed: number;
  /** Share of eligible workloads that get one anomaly. */
  rate: number;
  /** Steps of untouched history before an anomaly may start (the detector's warm-up, twice over). */
  minHistorySteps: number;
  /** Only these types. */
  types: readonly AnomalyType[];
  /** Earlier steps of the same workloads (what `augur detect --history` learns from): magnitudes are relative to them too. */
  history?: Trace;
}


/** Steps a slow leak's ramp lasts. */
const SLOW_LEAK_STEPS = { min: 72, max: 144 };
/** A stuck thread spins for 3–6 hours of 5-minute steps. */
const THREAD_RUNAWAY_STEPS = { min: 36, max: 72 };

interface History {
  cpuMax: number;
  idleShare: number;
  gpuMax: number;
  gpuIdleShare: number;
  gpuMeasured: boolean;
  memMax: number;
  netTxMax: number;
  quiet: Resource | null;
  capacity: number | null;
  memoryLimit: number | null;
}

function history(series: WorkloadSeries, end: number, earlier?: WorkloadSeries): History {
  const column = (resource: Resource) => series.values[resource];
  const maxOf = (resource: Resource) => {
    const values = column(resource);
    let max = 0;
    if (values) for (let i = 0; i < end; i++) if (values[i]! > max) max = values[i]!;
    const before = earlier?.values[resource];
    if (before) for (let i = 0; i < before.length; i++) if (before[i]! > max) max = before[i]!;
    return max;
  };
  const capacities = series.limits.cpu;
  let capacity: number | null = null;
  if (capacities) for (let i = end - 1; i >= 0 && capacity === null; i--) if (capacities[i]! > 0) capacity = capacities[i]!;
  let memoryLimit: number | null = null;
  if (series.limits.mem) for (let i = end - 1; i >= 0 && memoryLimit === null; i--) if (series.limits.mem[i]! > 0) memoryLimit = series.limits.mem[i]!;
  let idle = 0;
  let measured = 0;
  if (capacity !== null) {
    for (const [values, upTo] of [[column("cpu"), end], [earlier?.values.cpu, earlier?.ts.length ?? 0]] as const) {
      if (!values) continue;
      for (let i = 0; i < upTo; i++) {
        if (Number.isNaN(values[i]!)) continue;
        measured++;
        if (values[i]! <= capacity * 0.1) idle++;
      }
    }
  }
  // GPUs: capacity is at least one, or as many as it ever used (as the detectors assume).
  const gpuMax = maxOf("gpu_util");
  const gpuLimit = gpuCapacity(gpuMax);
  let gpuIdle = 0;
  let gpuMeasured = 0;
  for (const [values, upTo] of [[column("gpu_util"), end], [earlier?.values.gpu_util, earlier?.ts.length ?? 0]] as const) {
    if (!values) continue;
    for (let i = 0; i < upTo; i++) {
      if (Number.isNaN(values[i]!)) continue;
      gpuMeasured++;
      if (values[i]! <= 0.1 * gpuLimit) gpuIdle++;
    }
  }
  const quiet = (["gpu_util", "net_tx", "disk_write"] as Resource[]).find((resource) => maxOf(resource) <= (resource === "gpu_util" ? 0.01 : 1024)) ?? null;
  return {
    gpuMax,
    gpuIdleShare: gpuMeasured === 0 ? 0 : gpuIdle / gpuMeasured,
    gpuMeasured: gpuMeasured > 0 && gpuMax > 0.01,
    cpuMax: maxOf("cpu"),
    idleShare: measured === 0 ? 0 : idle / measured, memMax: maxOf("mem"), netTxMax: maxOf("net_tx"), quiet, capacity, memoryLimit };
}

const cpuMinerEligible = (h: History) => h.capacity !== null && h.idleShare >= 0.95 && h.cpuMax <= 0.5 * h.capacity;
const gpuMinerEligible = (h: History) => h.gpuMeasured && h.gpuIdleShare >= 0.95 && h.gpuMax <= 0.5 * gpuCapacity(h.gpuMax);
const cpuRunawayEligible = (h: History) => h.capacity !== null && h.idleShare < 0.85 && h.cpuMax > 0 && h.cpuMax <= 0.45 * h.capacity;
const gpuRunawayEligible = (h: History) => h.gpuMeasured && h.gpuIdleShare < 0.85 && h.gpuMax <= 0.45 * gpuCapacity(h.gpuMax);
/** A stuck thread's cores: one, half the machine at most. */
const threadCores = (capacity: number) => Math.min(1, 0.5 * capacity);
/**
 * A stuck thread: a workload of two cores or more whose busiest step leaves
 * room for one more core, and that is not so idle that a core more reads as
 * a miner holding back to a third of the machine or more.
 */
const threadRunawayEligible = (h: History) =>
  h.capacity !== null && h.capacity >= 2 && h.cpuMax > 0 && h.cpuMax + threadCores(h.capacity) <= h.capacity && !(h.idleShare >= 0.85 && threadCores(h.capacity) >= 0.3 * h.capacity);

function eligible(h: History): AnomalyType[] {
  const out: AnomalyType[] = [];
  if (cpuMinerEligible(h) || gpuMinerEligible(h)) out.push("miner");
  if (cpuRunawayEligible(h) || gpuRunawayEligible(h) || threadRunawayEligible(h)) out.push("cpu_runaway");
  if (h.memMax > 0 && (h.memoryLimit === null || h.memMax * 2 < h.memoryLimit)) out.push("memory_leak");
  if ((h.capacity !== null && h.cpuMax > 0 && h.cpuMax <= 0.3 * h.capacity) || (h.memMax > 0 && (h.memoryLimit === null || h.memMax * 3.5 < h.memoryLimit))) out.push("spike");
  if (h.netTxMax >= 1024) out.push("network_burst");
  if (h.quiet !== null) out.push("never_seen");
  return out;
}

/** Makes a column writable (creating it, NaN-filled, when the trace has none). */
function column(series: WorkloadSeries, resource: Resource): Float64Array {
  let values = series.values[resource];
  if (!values) series.values[resource] = values = new Float64Array(series.ts.length).fill(Number.NaN);
  return values;
}

/**
 * Injects one labelled anomaly into a share of a trace's workloads, in
 * place, and returns the labels. Each workload gets a type it can show
 * (a miner needs an idle workload with a known CPU capacity, a runaway
 * headroom above its history, never-seen a resource it never used), the
 * rarest type so far among those. Magnitudes are relative to the
 * workload's own history before the anomaly.
 */
export function injectAnomalies(trace: Trace, options: InjectOptions): Label[] {
  const random = seededRandom(options.seed); // the same seed gives the same anomalies
  const counts = new Map<AnomalyType, number>(ANOMALY_TYPES.map((type) => [type, 0]));
  const labels: Label[] = [];
  const earlier = new Map((options.history?.workloads ?? []).map((series) => [series.workload, series]));
  const durations: Record<AnomalyType, number> = { miner: 12, cpu_runaway: 12, memory_leak: 24, spike: 1, network_burst: 3, never_seen: 6 };
  for (const series of trace.workloads) {
    const n = series.ts.length;
    const longest = SLOW_LEAK_STEPS.max + 2;
    if (n < options.minHistorySteps + longest + 1 || random() >= options.rate) continue;
    const start = options.minHistorySteps + Math.floor(random() * (n - options.minHistorySteps - longest));
    const h = history(series, start, earlier.get(series.workload));
    const candidates = eligible(h).filter((type) => options.types.includes(type));
    if (candidates.length === 0) continue;
    const fewest = Math.min(...candidates.map((type) => counts.get(type)!));
    const rarest = candidates.filter((type) => counts.get(type) === fewest);
    const type = rarest[Math.floor(random() * rarest.length)]!;
    let end = start + durations[type] - 1;
    const between = (low: number, high: number) => low + random() * (high - low);
    switch (type) {
      case "miner": {
        const onCpu = cpuMinerEligible(h);
        const values = column(series, onCpu ? "cpu" : "gpu_util");
        const capacity = onCpu ? h.capacity! : gpuCapacity(h.gpuMax);
        const tx = series.values.net_tx;
        // Half the miners take the whole machine; half hold back (35–60% of it, and well above
        // anything the workload ran) where the workload's history leaves room for that.
        const lowest = Math.max(0.35, (2.5 * (onCpu ? h.cpuMax : h.gpuMax)) / capacity);
        const held = random() < 0.5 && lowest < 0.6;
        const [low, high] = held ? [lowest, 0.6] : [0.9, 1];
        for (let i = start; i <= end; i++) {
          values[i] = capacity * between(low, high);
          if (tx && !Number.isNaN(tx[i]!)) tx[i] = tx[i]! * 1.5;
        }
        break;
      }
      case "cpu_runaway": {
        // The type keeps its schema name; on a GPU-only trace the runaway is the GPU's.
        const onCpu = cpuRunawayEligible(h) || !gpuRunawayEligible(h);
        const values = column(series, onCpu ? "cpu" : "gpu_util");
        const capacity = onCpu ? h.capacity! : gpuCapacity(h.gpuMax);
        // Half take the machine (every thread spinning) where its history leaves room to see that; the
        // rest are one stuck thread: the workload as it was, plus a core (half the capacity at most)
        // for 3–6 hours — often below what it ever peaked at.
        const thread = onCpu && threadRunawayEligible(h) && (!cpuRunawayEligible(h) || random() >= 0.5);
        if (!thread) {
          for (let i = start; i <= end; i++) values[i] = capacity * between(0.85, 1);
        } else {
          end = start + Math.round(between(THREAD_RUNAWAY_STEPS.min, THREAD_RUNAWAY_STEPS.max)) - 1;
          const cores = threadCores(capacity);
          for (let i = start; i <= end; i++) values[i] = Math.min(capacity, (Number.isNaN(values[i]!) ? h.cpuMax / 2 : values[i]!) + cores * between(0.95, 1));
        }
        break;
      }
      case "memory_leak": {
        const mem = column(series, "mem");
        const base = Number.isNaN(mem[start - 1]!) ? h.memMax : mem[start - 1]!;
        // Half the leaks are fast (past 1.4 × the most-ever in three steps, then on), half slow: the
        // working set as it was, noise and all, plus a ramp that adds 0.8–1.5 × the most-ever over
        // 72–144 steps (6–12 hours of 5-minute steps).
        const slow = random() < 0.5;
        const rise = between(0.8, 1.5) * h.memMax;
        if (slow) end = start + Math.round(between(SLOW_LEAK_STEPS.min, SLOW_LEAK_STEPS.max)) - 1;
        const slope = slow ? rise / (end - start + 1) : Math.max((1.4 * h.memMax - base) / 3, 0.02 * h.memMax);
        for (let k = 1; start + k - 1 <= end; k++) {
          const i = start + k - 1;
          const value = (slow ? (Number.isNaN(mem[i]!) ? base : mem[i]!) : base) + slope * k;
          if (h.memoryLimit !== null && value >= h.memoryLimit) {
            end = i - 1; // it would be OOM-killed here
            break;
          }
          mem[i] = value;
        }
        break;
      }
      case "spike": {
        if (h.capacity !== null && h.cpuMax > 0 && h.cpuMax <= 0.3 * h.capacity) column(series, "cpu")[start] = Math.min(h.capacity, Math.max(3 * h.cpuMax, 0.5 * h.capacity));
        else column(series, "mem")[start] = 3.5 * h.memMax;
        break;
      }
      case "network_burst": {
        const tx = column(series, "net_tx");
        for (let i = start; i <= end; i++) tx[i] = Math.max(6 * h.netTxMax, h.netTxMax + 4 * 2 ** 20);
        break;
      }
      case "never_seen": {
        const resource = h.quiet!;
        const values = column(series, resource);
        for (let i = start; i <= end; i++) values[i] = resource === "gpu_util" ? 1 : 2 * 2 ** 20;
        if (resource === "gpu_util") for (let i = start; i <= end; i++) column(series, "gpu_mem")[i] = 8 * 2 ** 30;
        break;
      }
    }
    if (end < start) continue;
    counts.set(type, counts.get(type)! + 1);
    labels.push({ workload: series.workload, type, startTs: series.ts[start]!, endTs: series.ts[end]! });
  }
  return labels;
}

export function labelLines(labels: Label[]): string[] {
  return ["workload,type,start_ts,end_ts", ...labels.map((label) => [csvCell(label.workload), label.type, label.startTs, label.endTs].join(","))];
}
