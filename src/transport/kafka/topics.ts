import type { Admin } from "kafkajs";
import type { KafkaTransportConfig } from "../../config/pipeline.js";
import { logRetry, withRetry } from "../../core/retry.js";
import { TOPICS } from "../topic.js";

export interface TopicSpec {
  name: string;
  partitions: number;
  replicationFactor: number;
  config: Record<string, string>;
}

/** Cleanup per topic, as in the design's "Topics" table: profiles are compacted (newest per key), the rest expire. */
const COMPACTED: ReadonlySet<string> = new Set([TOPICS.profiles, TOPICS.forecastState]);

export function topicSpecs(config: KafkaTransportConfig): TopicSpec[] {
  const defaults = config.topics;
  return Object.values(TOPICS).map((logical): TopicSpec => {
    const name = config.namespace + logical;
    const override = defaults.overrides[logical] ?? {};
    const compact = COMPACTED.has(logical);
    const retentionMs = Math.round((override.retentionHours ?? defaults.retentionHours) * 3_600_000);
    return {
      name,
      partitions: override.partitions ?? defaults.partitions,
      replicationFactor: override.replicationFactor ?? defaults.replicationFactor,
      config: compact
        ? { "cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000" }
        : { "cleanup.policy": "delete", "retention.ms": String(retentionMs) },
    };
  });
}

export interface TopicOutcome {
  name: string;
  action: "created" | "exists";
  partitions: number;
  /** For an existing topic: how its partition count differs from the spec, if it does. */
  warning?: string;
}

/** Creates missing topics; leaves existing ones alone and says where they differ from the spec. */
/**
 * Creates what is missing and reports what exists. Idempotent, so a broker
 * that is still loading its partitions (a retriable error such as "does not
 * host this topic-partition" right after a start) is simply asked again.
 */
export async function createTopics(admin: Admin, specs: TopicSpec[]): Promise<TopicOutcome[]> {
  return withRetry(() => createTopicsOnce(admin, specs), { initialDelayMs: 500, maxDelayMs: 8_000, attempts: 7, respectRetriable: true, onError: logRetry("creating the topics") });
}

async function createTopicsOnce(admin: Admin, specs: TopicSpec[]): Promise<TopicOutcome[]> {
  const existing = new Set(await admin.listTopics());
  const missing = specs.filter((spec) => !existing.has(spec.name));
  if (missing.length > 0) {
    await admin.createTopics({
      waitForLeaders: true,
      topics: missing.map((spec) => ({
        topic: spec.name,
        numPartitions: spec.partitions,
        replicationFactor: spec.replicationFactor,
        configEntries: Object.entries(spec.config).map(([name, value]) => ({ name, value })),
      })),
    });
  }
  const outcomes: TopicOutcome[] = [];
  const present = specs.filter((spec) => existing.has(spec.name));
  const metadata = present.length > 0 ? await admin.fetchTopicMetadata({ topics: present.map((spec) => spec.name) }) : { topics: [] };
  for (const spec of specs) {
    if (!existing.has(spec.name)) {
      outcomes.push({ name: spec.name, action: "created", partitions: spec.partitions });
      continue;
    }
    const partitions = metadata.topics.find((topic) => topic.name === spec.name)?.partitions.length ?? 0;
    const outcome: TopicOutcome = { name: spec.name, action: "exists", partitions };
    if (partitions !== spec.partitions) outcome.warning = `has ${partitions} partitions, the config asks for ${spec.partitions} (left as is: changing it moves keys between partitions)`;
    outcomes.push(outcome);
  }
  return outcomes;
}
