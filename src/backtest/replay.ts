import type { Resource } from "../core/types.js";
import { COLD_START_MS, ScoreAccumulator, type ResourceScore } from "./metrics.js";
import { PEAK_LIKE, type BacktestPolicy, type PairRef } from "./policy.js";
import type { Trace, WorkloadSeries } from "./trace.js";

/** What a policy with no data gets when the trace says no limit (cores, bytes, GPUs, bytes/s). */
export const DEFAULT_LIMITS: Record<Resource, number> = {
  cpu: 1,
  mem: 4 * 2 ** 30,
  net_rx: 125e6,
  net_tx: 125e6,
  disk_read: 200e6,
  disk_write: 200e6,
  gpu_util: 1,
  gpu_mem: 80e9,
};

export interface SeriesPoint {
  ts: number;
  usage: number;
  limits: Record<string, number>;
  /** What each policy with a forecast (`BacktestPolicy.forecast`) expected at the step; absent where none had one. */
  forecasts?: Record<string, number>;
}

export interface ReplayResult {
  samples: number;
  workloads: number;
  scores: Record<string, Partial<Record<Resource, ResourceScore>>>;
  /** For the report: a few workloads' usage and limits over time. */
  series: Array<{ workload: string; resource: Resource; points: SeriesPoint[] }>;
}

export interface ReplayOptions {
  policies: BacktestPolicy[];
  resources: readonly Resource[];
  defaults?: Partial<Record<Resource, number>>;
  /** Replayed first, observed but not scored. */
  train?: Trace;
  /** Workloads whose series are kept for the report. */
  sampleWorkloads?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Cursor {
  series: WorkloadSeries;
  index: number;
  workload: number;
  pair: PairRef;
  scored: boolean;
}

/**
 * A binary min-heap of cursors by their next timestamp: merges sorted series
 * in event time. Each cursor's timestamp is read once, when it is pushed, and
 * kept beside it: sifting compares numbers in one array instead of following
 * cursor → series → timestamps for every comparison.
 */
export class CursorHeap<C extends { series: WorkloadSeries; index: number } = Cursor> {
  private readonly items: C[] = [];
  private readonly keys: number[] = [];
  get size(): number {
    return this.items.length;
  }
  push(cursor: C): void {
    const { items, keys } = this;
    const key = cursor.series.ts[cursor.index]!;
    let i = items.length;
    items.push(cursor);
    keys.push(key);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (keys[parent]! <= key) break;
      items[i] = items[parent]!;
      keys[i] = keys[parent]!;
      i = parent;
    }
    items[i] = cursor;
    keys[i] = key;
  }
  peekTs(): number {
    return this.keys[0]!;
  }
  pop(): C {
    const { items, keys } = this;
    const top = items[0]!;
    const last = items.pop()!;
    const lastKey = keys.pop()!;
    const size = items.length;
    if (size > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= size) break;
        const r = l + 1;
        const child = r < size && keys[r]! < keys[l]! ? r : l;
        if (keys[child]! >= lastKey) break;
        items[i] = items[child]!;
        keys[i] = keys[child]!;
        i = child;
      }
      items[i] = last;
      keys[i] = lastKey;
    }
    return top;
  }
}

/** The policies' forecasts for a step whose limits they just set; undefined where none has one. */
function forecastsOf(policies: readonly BacktestPolicy[], pair: PairRef, resource: Resource, ts: number): Record<string, number> | undefined {
  let forecasts: Record<string, number> | undefined;
  for (const policy of policies) {
    const forecast = policy.forecast?.(pair, resource, ts);
    if (forecast !== undefined && forecast !== null && Number.isFinite(forecast)) (forecasts ??= {})[policy.name] = forecast;
  }
  return forecasts;
}

/**
 * Replays traces in event time through the policies. Rows that share a
 * timestamp are decided together before any of them is observed, so no
 * policy sees a step's usage before setting that step's limit.
 */
export function replay(trace: Trace, options: ReplayOptions): ReplayResult {
  const pairs = new Map<string, PairRef>();
  const images = new Map<string, number>();
  const users = new Map<string, number>();
  const pairOf = (image: string, user: string): PairRef => {
    const key = `${image}|${user}`;
    let pair = pairs.get(key);
    if (!pair) {
      if (!images.has(image)) images.set(image, images.size);
      if (!users.has(user)) users.set(user, users.size);
      pairs.set(key, (pair = { id: pairs.size, image, user, imageId: images.get(image)!, userId: users.get(user)! }));
    }
    return pair;
  };
  const defaults = { ...DEFAULT_LIMITS, ...options.defaults };
  const workloadIds = new Map<string, number>();
  const firstSeen: number[] = [];
  const { policies, resources } = options;
  const accumulators = policies.map(() => resources.map((r) => new ScoreAccumulator(PEAK_LIKE.has(r))));
  const sampleCount = options.sampleWorkloads ?? 3;
  const kept = new Map<string, { workload: string; resource: Resource; points: SeriesPoint[] }>();
  const sampled = new Set(
    [...trace.workloads]
      .sort((a, b) => b.ts.length - a.ts.length)
      .slice(0, sampleCount)
      .map((w) => w.workload),
  );

  const phases: Array<{ trace: Trace; scored: boolean }> = [];
  if (options.train) phases.push({ trace: options.train, scored: false });
  phases.push({ trace, scored: true });
  const total = phases.reduce((sum, phase) => sum + phase.trace.rows, 0);
  let done = 0;
  let samples = 0;

  const limitsBuffer: number[][] = [];
  /** Per cursor of the group and resource, the policies' forecasts (sample workloads only). */
  const forecastsBuffer: Array<Array<Record<string, number> | undefined> | undefined> = [];
  for (const phase of phases) {
    const heap = new CursorHeap();
    for (const series of phase.trace.workloads) {
      if (series.ts.length === 0) continue;
      let id = workloadIds.get(series.workload);
      if (id === undefined) {
        workloadIds.set(series.workload, (id = workloadIds.size));
        firstSeen[id] = series.ts[0]!;
      }
      heap.push({ series, index: 0, workload: id, pair: pairOf(series.image, series.user), scored: phase.scored });
    }
    if (phase.scored && options.train) for (const policy of policies) policy.endOfTraining?.();
    const group: Cursor[] = [];
    while (heap.size > 0) {
      const ts = heap.peekTs();
      group.length = 0;
      while (heap.size > 0 && heap.peekTs() === ts) group.push(heap.pop());
      // Decide every limit of this instant first…
      for (let g = 0; g < group.length; g++) {
        const cursor = group[g]!;
        const row = cursor.index;
        const limits = (limitsBuffer[g] ??= []);
        // A sample workload's step: its forecasts are kept for the report (its limits are read below).
        const forecasts: Array<Record<string, number> | undefined> | undefined = cursor.scored && sampled.has(cursor.series.workload) ? [] : undefined;
        forecastsBuffer[g] = forecasts;
        for (let r = 0; r < resources.length; r++) {
          const resource = resources[r]!;
          const usage = cursor.series.values[resource]?.[row];
          if (usage === undefined || Number.isNaN(usage)) continue;
          const traceLimit = resource === "cpu" ? cursor.series.limits.cpu?.[row] : resource === "mem" ? cursor.series.limits.mem?.[row] : undefined;
          const fallback = traceLimit !== undefined && !Number.isNaN(traceLimit) && traceLimit > 0 ? traceLimit : defaults[resource];
          for (let p = 0; p < policies.length; p++) limits[r * policies.length + p] = policies[p]!.limit(cursor.pair, resource, ts, fallback);
          if (forecasts) forecasts[r] = forecastsOf(policies, cursor.pair, resource, ts);
        }
      }
      // …then score and observe.
      for (let g = 0; g < group.length; g++) {
        const cursor = group[g]!;
        const row = cursor.index;
        const limits = limitsBuffer[g]!;
        const cold = ts - firstSeen[cursor.workload]! < COLD_START_MS;
        const sampleThis = forecastsBuffer[g] !== undefined;
        for (let r = 0; r < resources.length; r++) {
          const resource = resources[r]!;
          const usage = cursor.series.values[resource]?.[row];
          if (usage === undefined || Number.isNaN(usage)) continue;
          samples++;
          for (let p = 0; p < policies.length; p++) {
            const limit = limits[r * policies.length + p]!;
            if (cursor.scored) accumulators[p]![r]!.add(cursor.workload, ts, usage, limit, cold);
            policies[p]!.observe(cursor.pair, resource, ts, usage, cursor.workload, limit);
          }
          if (sampleThis) {
            const key = `${cursor.series.workload}|${resource}`;
            let series = kept.get(key);
            if (!series) kept.set(key, (series = { workload: cursor.series.workload, resource, points: [] }));
            const forecasts = forecastsBuffer[g]![r];
            series.points.push({ ts, usage, limits: Object.fromEntries(policies.map((policy, p) => [policy.name, limits[r * policies.length + p]!])), ...(forecasts ? { forecasts } : {}) });
          }
        }
        cursor.index++;
        if (cursor.index < cursor.series.ts.length) heap.push(cursor);
      }
      done += group.length;
      if (options.onProgress && (done & 0x3fff) < group.length) options.onProgress(done, total);
    }
  }
  options.onProgress?.(total, total);

  const result: ReplayResult["scores"] = {};
  policies.forEach((policy, p) => {
    result[policy.name] = {};
    resources.forEach((resource, r) => (result[policy.name]![resource] = accumulators[p]![r]!.result()));
  });
  return { samples, workloads: workloadIds.size, scores: result, series: [...kept.values()] };
}
