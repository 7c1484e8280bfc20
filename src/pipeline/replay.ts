import { loadUsableTrace, type TraceFormat } from "../backtest/adapters/index.js";
import type { Trace } from "../backtest/trace.js";
import type { LoadedPipeline } from "../config/pipeline.js";
import { ConfigError } from "../core/errors.js";
import { pairKey } from "../core/keys.js";
import { Metrics } from "../core/metrics.js";
import type { Sample } from "../core/types.js";
import { ProfileStore } from "../store/profile-store.js";
import { createTransport } from "../transport/create.js";
import { EmbeddedTransport } from "../transport/embedded/embedded-transport.js";
import { TOPICS, type OutgoingRecord, type Transport } from "../transport/topic.js";
import { aggregateStage, forecastStage } from "./embedded.js";
import { traceSamples } from "./trace-samples.js";

export interface ReplayOptions {
  trace: string;
  format: TraceFormat;
  /** kafka: publish into augur.samples for the stages running elsewhere. embedded: run aggregate and forecast here. */
  bus: "kafka" | "embedded";
  /** Event time over wall time; undefined or 0: as fast as possible. */
  speedup?: number;
  /** Samples per publish call. */
  batch?: number;
  /** Embedded only: close the last open windows at the end (default). Off, it matches a distributed run whose last windows wait for more samples. */
  flush?: boolean;
  onProgress?: (done: number, total: number) => void;
}

export interface ReplaySummary {
  trace: string;
  bus: "kafka" | "embedded";
  samples: number;
  rejectedRows: number;
  elapsedMs: number;
  samplesPerSecond: number;
  /** Embedded only: profiles in the data directory afterwards. */
  profiles?: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function publishSamples(transport: Transport, samples: Iterable<Sample>, total: number, options: ReplayOptions): Promise<number> {
  const topic = transport.topic<Sample>(TOPICS.samples);
  const batchSize = options.batch ?? 1_000;
  const speedup = options.speedup && options.speedup > 0 ? options.speedup : null;
  let pending: Array<OutgoingRecord<Sample>> = [];
  let done = 0;
  let firstTs: number | null = null;
  const wallStart = Date.now();
  for (const sample of samples) {
    if (speedup !== null) {
      firstTs ??= sample.ts;
      const due = wallStart + (sample.ts - firstTs) / speedup;
      const wait = due - Date.now();
      if (wait > 0) {
        if (pending.length > 0) {
          await topic.publish(pending);
          pending = [];
        }
        await sleep(wait);
      }
    }
    pending.push({ key: pairKey(sample.image, sample.user), value: sample, timestamp: sample.ts });
    done++;
    if (pending.length >= batchSize) {
      await topic.publish(pending);
      pending = [];
      options.onProgress?.(done, total);
    }
  }
  if (pending.length > 0) await topic.publish(pending);
  options.onProgress?.(done, total);
  return done;
}

/**
 * Kafka deletes records by their timestamps, which augur sets to event time:
 * a trace older than the samples topic's retention would be deleted at the
 * broker's next retention check, before the stages read it. Refused, with
 * what to change.
 */
export function checkRetention(topics: { retentionHours: number; overrides: Record<string, { retentionHours?: number }> }, trace: Trace, nowMs: number): void {
  let oldest = Infinity;
  for (const workload of trace.workloads) for (const ts of workload.ts) if (ts < oldest) oldest = ts;
  if (!Number.isFinite(oldest)) return;
  const ageHours = (nowMs - oldest) / 3_600_000;
  // Topics whose records carry the trace's event time and are deleted by age.
  for (const topic of [TOPICS.samples, TOPICS.windows, TOPICS.forecastLevels, TOPICS.anomalies]) {
    const hours = topics.overrides[topic]?.retentionHours ?? topics.retentionHours;
    if (ageHours > hours) {
      throw new ConfigError(
        `the trace starts ${Math.ceil(ageHours)} hours ago, beyond the ${hours} hours that ${topic} keeps records (Kafka deletes by record time, here event time): ` +
          `set transport.topics.retentionHours (or overrides.${topic}.retentionHours) above ${Math.ceil(ageHours)} before augur topics create`,
      );
    }
  }
}

/**
 * Publishes a trace's samples into a running pipeline's `augur.samples`, in
 * event time (`augur run --replay`): the stages, the detector and the
 * dashboard see them as they would a collector's.
 */
export async function publishTrace(transport: Transport, options: Pick<ReplayOptions, "trace" | "format" | "speedup" | "batch" | "onProgress">): Promise<{ samples: number; rejectedRows: number }> {
  const trace = await loadUsableTrace(options.trace, options.format);
  const samples = await publishSamples(transport, traceSamples(trace), trace.rows, { ...options, bus: "embedded" });
  return { samples, rejectedRows: trace.rejected.length };
}

/**
 * Replays a trace in event time. On Kafka it publishes into `augur.samples`
 * (keyed image|user, record timestamp = event time) for the stages that run
 * as their own processes; embedded, it runs the aggregate and forecast
 * stages in this process into the config's data directory.
 */
export async function replayTrace(pipeline: LoadedPipeline, options: ReplayOptions): Promise<ReplaySummary> {
  const trace = await loadUsableTrace(options.trace, options.format);
  const total = trace.rows;
  const started = Date.now();
  const summary = (samples: number, profiles?: number): ReplaySummary => {
    const elapsedMs = Date.now() - started;
    return { trace: trace.name, bus: options.bus, samples, rejectedRows: trace.rejected.length, elapsedMs, samplesPerSecond: Math.round(samples / Math.max(elapsedMs / 1000, 1e-3)), ...(profiles === undefined ? {} : { profiles }) };
  };

  if (options.bus === "kafka") {
    if (pipeline.config.transport.kind !== "kafka") throw new ConfigError(`${pipeline.path}: --bus kafka needs transport.kind: kafka`);
    checkRetention(pipeline.config.transport.topics, trace, Date.now());
    const transport = await createTransport(pipeline.config);
    try {
      const samples = await publishSamples(transport, traceSamples(trace), total, options);
      return summary(samples);
    } finally {
      await transport.close();
    }
  }

  const { config } = pipeline;
  const metrics = new Metrics();
  const transport = new EmbeddedTransport({ partitions: config.transport.kind === "embedded" ? config.transport.partitions : 4, bufferRecords: 50_000 });
  const store = new ProfileStore(pipeline.dataDir);
  const aggregate = aggregateStage(pipeline, transport, metrics, { idleWatermarkMs: 0 }); // event time only
  const forecast = forecastStage(pipeline, transport, store, metrics);
  try {
    await forecast.start();
    await aggregate.start();
    const samples = await publishSamples(transport, traceSamples(trace), total, options);
    await transport.drain();
    await aggregate.stop({ flush: options.flush !== false });
    await transport.drain();
    await forecast.stop();
    return summary(samples, store.countProfiles());
  } finally {
    await aggregate.stop();
    await forecast.stop();
    await transport.close();
    store.close();
  }
}
