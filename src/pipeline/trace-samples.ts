import { CursorHeap } from "../backtest/replay.js";
import type { Trace, WorkloadSeries } from "../backtest/trace.js";
import { emptySample } from "../core/sample.js";
import { RESOURCES, setSampleValue, type Sample } from "../core/types.js";

/**
 * A trace's rows as Samples, merged across workloads in event time (rows at
 * the same timestamp in trace order). What `augur replay` publishes into
 * `augur.samples`.
 */
export function* traceSamples(trace: Trace, host = "replay"): Generator<Sample> {
  const heap = new CursorHeap<{ series: WorkloadSeries; index: number }>();
  for (const series of trace.workloads) if (series.ts.length > 0) heap.push({ series, index: 0 });
  while (heap.size > 0) {
    const cursor = heap.pop();
    const { series, index } = cursor;
    const sample = emptySample({ ts: series.ts[index]!, workload: series.workload, image: series.image, user: series.user, host, source: "replay" });
    for (const resource of RESOURCES) {
      const value = series.values[resource]?.[index];
      if (value !== undefined && !Number.isNaN(value)) setSampleValue(sample, resource, value);
    }
    const cpuLimit = series.limits.cpu?.[index];
    if (cpuLimit !== undefined && !Number.isNaN(cpuLimit)) sample.cpuLimitCores = cpuLimit;
    const memLimit = series.limits.mem?.[index];
    if (memLimit !== undefined && !Number.isNaN(memLimit)) sample.memoryLimitBytes = memLimit;
    yield sample;
    if (index + 1 < series.ts.length) heap.push({ series, index: index + 1 });
  }
}
