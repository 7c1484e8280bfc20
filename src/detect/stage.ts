import { z } from "zod";
import { postJson } from "../core/http.js";
import { pairKey } from "../core/keys.js";
import { errorMessage } from "../core/errors.js";
import type { Metrics } from "../core/metrics.js";
import { RESOURCES, sampleValue, type Profile, type Resource, type Sample } from "../core/types.js";
import type { ProfileStore } from "../store/profile-store.js";
import { TOPICS, type Consumer, type Transport } from "../transport/topic.js";
import { detectConfig, WorkloadMonitor, type AnomalyEvent } from "./monitor.js";
import { remediationConfig } from "./remediate.js";

const sinkConfig = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("log") }).strict(),
  z
    .object({
      kind: z.literal("webhook"),
      url: z.string().url().refine((url) => /^https?:\/\//.test(url), "http or https"),
      timeoutSeconds: z.number().positive().max(120).default(5),
      /** Bearer token, read from this environment variable when set. */
      tokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional(),
    })
    .strict(),
]);

export const detectStageConfig = z
  .object({
    /** Off by default: `augur run` detects only when asked to. */
    enabled: z.boolean().default(false),
    monitor: detectConfig.default({}),
    /** Besides `augur.anomalies`: where events go. */
    sinks: z.array(sinkConfig).default([{ kind: "log" }]),
    /** What each node does about the anomalies of its own workloads (`RemediateStage`). */
    remediation: remediationConfig.default({}),
    /** Workloads tracked at once; the least recently seen are forgotten beyond this. */
    maxWorkloads: z.number().int().min(1).max(10_000_000).default(100_000),
  })
  .strict();
export type DetectStageConfig = z.infer<typeof detectStageConfig>;

/**
 * The detect stage: every sample of `augur.samples` is a step of its
 * workload's monitor (its own recent behaviour and baseline, and the
 * `(image, user)` profile's maximum where the store has one). Anomalies go
 * to `augur.anomalies` and to the configured sinks; each node's
 * `RemediateStage` reads them from there and acts on its own workloads.
 */
export class DetectStage {
  private consumer: Consumer | null = null;
  private readonly monitors = new Map<string, WorkloadMonitor>();
  /** Profiles read for the batch being handled: one store read per pair per batch, not one per detector and resource. */
  private batchProfiles = new Map<string, Profile | null>();

  constructor(
    private readonly transport: Transport,
    private readonly config: DetectStageConfig,
    private readonly metrics: Metrics,
  ) {}

  private profileOf(image: string, user: string, store: ProfileStore | null): Profile | null {
    if (!store) return null;
    const key = pairKey(image, user);
    let profile = this.batchProfiles.get(key);
    if (profile === undefined) this.batchProfiles.set(key, (profile = store.getProfile(image, user)));
    return profile;
  }

  private monitor(sample: Sample, store: ProfileStore | null): WorkloadMonitor {
    let monitor = this.monitors.get(sample.workload);
    if (monitor) {
      // Most recently seen last: the map's order is the eviction order.
      this.monitors.delete(sample.workload);
      this.monitors.set(sample.workload, monitor);
      return monitor;
    }
    const profileMax = (resource: Resource) => this.profileOf(sample.image, sample.user, store)?.resources[resource]?.max ?? null;
    monitor = new WorkloadMonitor({ workload: sample.workload, image: sample.image, user: sample.user, host: sample.host }, this.config.monitor, undefined, profileMax);
    this.monitors.set(sample.workload, monitor);
    if (this.monitors.size > this.config.maxWorkloads) this.monitors.delete(this.monitors.keys().next().value!);
    return monitor;
  }

  async start(store: ProfileStore | null): Promise<void> {
    this.consumer = await this.transport.consume<Sample>(TOPICS.samples, { group: "augur-detect" }, async (batch) => {
      this.metrics.recordsIn.inc({ stage: "detect" }, batch.length);
      this.batchProfiles = new Map();
      const events: AnomalyEvent[] = [];
      for (const record of batch) {
        const sample = record.value;
        const values: Partial<Record<Resource, number>> = {};
        for (const resource of RESOURCES) {
          const value = sampleValue(sample, resource);
          if (value !== null) values[resource] = value;
        }
        events.push(...this.monitor(sample, store).observe({ ts: sample.ts, values, cpuCapacity: sample.cpuLimitCores, memoryLimit: sample.memoryLimitBytes }));
      }
      if (events.length === 0) return;
      this.metrics.recordsOut.inc({ stage: "detect" }, events.length);
      await this.transport.topic<AnomalyEvent>(TOPICS.anomalies).publish(events.map((event) => ({ key: pairKey(event.image, event.user), value: event, timestamp: event.detectedTs })));
      for (const event of events) await this.toSinks(event);
    });
  }

  private async toSinks(event: AnomalyEvent): Promise<void> {
    for (const sink of this.config.sinks) {
      if (sink.kind === "log") {
        process.stderr.write(`augur: anomaly ${JSON.stringify(event)}\n`);
        continue;
      }
      try {
        await postJson(sink.url, event, { timeoutMs: sink.timeoutSeconds * 1000, token: sink.tokenEnv ? process.env[sink.tokenEnv] : undefined, what: "anomaly webhook" });
      } catch (error) {
        this.metrics.stageErrors.inc({ stage: "detect" });
        console.error(`augur: ${errorMessage(error)}`);
      }
    }
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
    this.consumer = null;
  }
}
