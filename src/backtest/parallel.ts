// A backtest's replay on several cores. Every policy scores every resource
// on its own state (per pair and per resource: its forecasters, histograms,
// overrun price and global model), so the replay splits into one shard per
// (policy, resource), each the same replay (`replay`) with that policy alone
// on that resource, run by a pool of worker threads. The trace is copied
// once into shared memory, not once per worker. Results are the ones a
// replay of all of them together gives (a test holds them equal).
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { ValidationError } from "../core/errors.js";
import type { Resource } from "../core/types.js";
import type { PolicyContext } from "./policies/index.js";
import type { ReplayResult, SeriesPoint } from "./replay.js";
import type { Trace, WorkloadSeries } from "./trace.js";

/** One shard: a policy (by name, built in the worker from the context) on one resource. */
export interface Shard {
  policy: string;
  resource: Resource;
}

/** What the main thread sends a worker for each shard. */
export interface ShardTask {
  shard: Shard;
  trace: Trace;
  train?: Trace;
  context: Omit<PolicyContext, "resources">;
  sampleWorkloads: number;
  exportModels: boolean;
}

/** What a worker sends back: progress while it replays, then the shard's result (or why it failed). */
export type ShardMessage =
  | { kind: "progress"; done: number; total: number }
  | { kind: "done"; replayed: ReplayResult; models?: unknown }
  | { kind: "failed"; message: string; invalid: boolean };

export interface ParallelReplay {
  replayed: ReplayResult;
  /** Per policy, per resource: what its shard's policy exported (`--save-models`). */
  models: Record<string, Partial<Record<Resource, unknown>>>;
}

/** Relative cost of a policy's shard: the costliest go first, so that no core is left with one at the end. */
const COST: Record<string, number> = { "augur-live": 4, augur: 3, vpa: 1, autopilot: 1, static: 0 };

/** How many workers a replay of `shards` shards uses: `requested`, or one per core, never more than there are shards. */
export function workerCount(shards: number, requested?: number): number {
  return Math.max(1, Math.min(shards, requested ?? availableParallelism()));
}

/** The trace with every series' arrays in one shared buffer: workers read it without a copy each (a trace shared already is returned as it is). */
export function shareTrace(trace: Trace): Trace {
  if (trace.workloads.every((series) => series.ts.buffer instanceof SharedArrayBuffer)) return trace;
  let length = 0;
  const arrays = (series: WorkloadSeries) => [series.ts, ...Object.values(series.values), ...Object.values(series.limits)];
  for (const series of trace.workloads) for (const array of arrays(series)) length += array?.length ?? 0;
  const buffer = new SharedArrayBuffer(length * Float64Array.BYTES_PER_ELEMENT);
  let offset = 0;
  const share = (array: Float64Array): Float64Array => {
    const shared = new Float64Array(buffer, offset * Float64Array.BYTES_PER_ELEMENT, array.length);
    shared.set(array);
    offset += array.length;
    return shared;
  };
  const mapValues = <K extends string>(record: Partial<Record<K, Float64Array>>) =>
    Object.fromEntries(Object.entries(record).flatMap(([key, array]) => (array === undefined ? [] : [[key, share(array as Float64Array)]]))) as Partial<Record<K, Float64Array>>;
  return {
    ...trace,
    workloads: trace.workloads.map((series) => ({ ...series, ts: share(series.ts), values: mapValues(series.values), limits: mapValues(series.limits) })),
  };
}

/**
 * Replays `trace` (after `train`) through every (policy, resource) shard on
 * `workers` threads and merges what they scored as one replay of them all
 * would have: scores per policy and resource, the sample count, the sampled
 * workloads' series with every policy's limits and forecasts.
 */
export async function replayInParallel(options: {
  trace: Trace;
  train?: Trace;
  policies: readonly string[];
  resources: readonly Resource[];
  context: Omit<PolicyContext, "resources">;
  workers: number;
  exportModels: boolean;
  sampleWorkloads?: number;
  onProgress?: (done: number, total: number) => void;
}): Promise<ParallelReplay> {
  const trace = shareTrace(options.trace);
  const train = options.train ? shareTrace(options.train) : undefined;
  const shards: Shard[] = options.policies.flatMap((policy) => options.resources.map((resource) => ({ policy, resource })));
  const queue = [...shards].sort((a, b) => (COST[b.policy] ?? 1) - (COST[a.policy] ?? 1));
  const results = new Map<Shard, { replayed: ReplayResult; models?: unknown }>();
  const progress = new Map<Shard, number>();
  const perShard = trace.rows + (train?.rows ?? 0);
  // Progress in rows of the trace: the shards' mean.
  const report = () => options.onProgress?.(Math.round([...progress.values()].reduce((sum, done) => sum + done, 0) / shards.length), perShard);

  const run = (worker: Worker, shard: Shard) =>
    new Promise<void>((resolve, reject) => {
      const onMessage = (message: ShardMessage) => {
        if (message.kind === "progress") {
          progress.set(shard, message.done);
          report();
          return;
        }
        worker.off("message", onMessage);
        worker.off("error", onError);
        worker.off("exit", onExit);
        if (message.kind === "failed") {
          const text = `${shard.policy} on ${shard.resource}: ${message.message}`;
          reject(message.invalid ? new ValidationError(text) : new Error(text));
        } else {
          results.set(shard, { replayed: message.replayed, models: message.models });
          progress.set(shard, perShard);
          report();
          resolve();
        }
      };
      const onError = (error: Error) => reject(error);
      const onExit = (code: number) => reject(new Error(`the worker replaying ${shard.policy} on ${shard.resource} exited with ${code}`));
      worker.on("message", onMessage);
      worker.once("error", onError);
      worker.once("exit", onExit);
      const task: ShardTask = { shard, trace, train, context: options.context, sampleWorkloads: options.sampleWorkloads ?? 3, exportModels: options.exportModels };
      worker.postMessage(task);
    });

  const workers = Array.from({ length: workerCount(shards.length, options.workers) }, () => new Worker(new URL("./replay-worker.js", import.meta.url)));
  try {
    await Promise.all(
      workers.map(async (worker) => {
        for (let shard = queue.shift(); shard; shard = queue.shift()) await run(worker, shard);
      }),
    );
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()));
  }
  return merge(shards, results, options.resources);
}

/** One replay's result from the shards': each policy's scores per resource, samples counted once per resource, series joined. */
function merge(shards: readonly Shard[], results: Map<Shard, { replayed: ReplayResult; models?: unknown }>, resources: readonly Resource[]): ParallelReplay {
  const scores: ReplayResult["scores"] = {};
  const models: ParallelReplay["models"] = {};
  const samples = new Map<Resource, number>();
  const series = new Map<string, { workload: string; resource: Resource; points: SeriesPoint[] }>();
  let workloads = 0;
  for (const shard of shards) {
    const { replayed, models: exported } = results.get(shard)!;
    workloads = replayed.workloads;
    (scores[shard.policy] ??= {})[shard.resource] = replayed.scores[shard.policy]![shard.resource];
    if (exported !== undefined) (models[shard.policy] ??= {})[shard.resource] = exported;
    samples.set(shard.resource, replayed.samples);
    for (const kept of replayed.series) {
      const key = `${kept.workload}|${kept.resource}`;
      const joined = series.get(key);
      if (!joined) series.set(key, { ...kept, points: kept.points.map((point) => ({ ...point, limits: { ...point.limits }, ...(point.forecasts ? { forecasts: { ...point.forecasts } } : {}) })) });
      else {
        kept.points.forEach((point, i) => {
          const into = joined.points[i]!;
          Object.assign(into.limits, point.limits);
          if (point.forecasts) into.forecasts = { ...into.forecasts, ...point.forecasts };
        });
      }
    }
  }
  const order = (resource: Resource) => resources.indexOf(resource);
  return {
    replayed: {
      samples: [...samples.values()].reduce((sum, n) => sum + n, 0),
      workloads,
      scores,
      series: [...series.values()].sort((a, b) => (a.points[0]?.ts ?? 0) - (b.points[0]?.ts ?? 0) || a.workload.localeCompare(b.workload) || order(a.resource) - order(b.resource)),
    },
    models,
  };
}
