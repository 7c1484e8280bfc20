import { hostname } from "node:os";
import { dirname, isAbsolute, resolve } from "node:path";
import { z } from "zod";
import { actuateConfig, actuatorConfig, type ActuatorConfig } from "../actuate/config.js";
import { DEFAULT_SKETCH_ACCURACY, DEFAULT_WINDOW_SECONDS } from "../aggregate/windows.js";
import { allocationConfig } from "../allocate/config.js";
import { detectStageConfig } from "../detect/stage.js";
import { admissionConfig } from "../api/admission.js";
import { dashboardConfig } from "../dashboard/feed.js";
import { hostCollectorConfig, type HostCollectorConfig } from "../collect/host-collector.js";
import { ConfigError } from "../core/errors.js";
import { validateId } from "../core/keys.js";
import { DEFAULT_FALLBACK_MODEL, MODEL_NAMES, MODEL_REGISTRY } from "../forecast/registry.js";
import { loadYamlConfig, validateConfig, parseYaml, readConfigFile } from "./load.js";

const listen = z
  .string()
  .regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/, "host:port, e.g. 127.0.0.1:7070")
  .refine((value) => Number(value.slice(value.lastIndexOf(":") + 1)) <= 65535, "port must be <= 65535");

const brokerAddress = z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/, "host:port, e.g. 127.0.0.1:9092");
const httpUrl = z
  .string()
  .url()
  .refine((value) => /^https?:\/\//.test(value), "an http:// or https:// URL");

const topicSettings = z
  .object({
    partitions: z.number().int().min(1).max(10_000).optional(),
    replicationFactor: z.number().int().min(1).max(16).optional(),
    /** Retention of delete-policy topics; compacted topics keep the newest record per key. */
    retentionHours: z.number().positive().max(24 * 365 * 100).optional(),
  })
  .strict();

export const kafkaTransportConfig = z
  .object({
    kind: z.literal("kafka"),
    /** kafkajs (pure JavaScript, the default) or node-rdkafka (librdkafka; optional dependency). */
    client: z.enum(["kafkajs", "node-rdkafka"]).default("kafkajs"),
    brokers: z.array(brokerAddress).min(1).default(["127.0.0.1:9092"]),
    clientId: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/, "letters, digits, '.', '_' and '-'").default("augur"),
    /** Prepended to topic names, consumer groups and schema subjects, so several pipelines can share a cluster. */
    namespace: z.string().regex(/^[A-Za-z0-9._-]{0,100}$/, "letters, digits, '.', '_' and '-'").default(""),
    /** A Confluent-compatible Schema Registry (Apicurio: http://host:8080/apis/ccompat/v7). */
    schemaRegistry: httpUrl.default("http://127.0.0.1:8081/apis/ccompat/v7"),
    maxBatch: z.number().int().min(1).max(100_000).default(500),
    sessionTimeoutMs: z.number().int().min(6_000).max(300_000).default(10_000),
    /** Event-time alignment across partitions (ms): a partition this far ahead of the slowest waits. 0: off. */
    alignSeconds: z.number().min(0).max(86_400 * 7).default(300),
    /**
     * The forecast stage keeps a changelog of its model state
     * (augur.forecast-state) and restores a partition's keys when it is
     * assigned, so forecast processes hand partitions over on a rebalance.
     * Off: run one forecast process per pipeline.
     */
    changelog: z.boolean().default(true),
    /** kafkajs's own log (stderr); augur itself logs every retry, failed batch and consumer restart. */
    logLevel: z.enum(["nothing", "error", "warn", "info", "debug"]).default("nothing"),
    topics: z
      .object({
        partitions: z.number().int().min(1).max(10_000).default(4),
        replicationFactor: z.number().int().min(1).max(16).default(1),
        retentionHours: z.number().positive().max(24 * 365 * 100).default(168),
        /** Per topic, by name (augur.samples, …). */
        overrides: z.record(z.string().regex(/^augur\.[a-z-]+$/, "an augur topic name"), topicSettings).default({}),
      })
      .strict()
      .default({}),
  })
  .strict();

export type KafkaTransportConfig = z.infer<typeof kafkaTransportConfig>;

export const historyConfig = z
  .object({
    kind: z.literal("influxdb"),
    /** InfluxDB v2 write API (VictoriaMetrics accepts the same at its root URL). */
    url: httpUrl.default("http://127.0.0.1:8428"),
    org: z.string().min(1).max(200).default("augur"),
    bucket: z.string().min(1).max(200).default("augur"),
    /** Token for InfluxDB, read from this environment variable when set. */
    tokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default("AUGUR_INFLUX_TOKEN"),
    measurement: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default("augur_window"),
    /**
     * How `augur history export` reads windows back: VictoriaMetrics' export
     * API (`victoriametrics`), or Flux over InfluxDB 2.x's `/api/v2/query`
     * (`flux`, with `org`, `bucket` and the token). Writes are the same either way.
     */
    query: z.enum(["victoriametrics", "flux"]).default("victoriametrics"),
    /** Points buffered before a write; a stage flushes after each consumed batch anyway. */
    batchSize: z.number().int().min(1).max(100_000).default(5_000),
  })
  .strict();

export type HistoryConfig = z.infer<typeof historyConfig>;

export const pipelineConfig = z
  .object({
    name: z.string().min(1).max(64).default("local"),
    /** This node's name in allocations; `auto` is the host name. */
    node: z.string().min(1).max(253).default("auto"),
    /** Durable state (profiles, model state, allocations). Relative paths are relative to the config file. */
    dataDir: z.string().min(1).default("../.augur/data"),
    transport: z
      .discriminatedUnion("kind", [
        z
          .object({
            kind: z.literal("embedded"),
            partitions: z.number().int().min(1).max(256).default(4),
            bufferRecords: z.number().int().min(1).max(10_000_000).default(10_000),
          })
          .strict(),
        kafkaTransportConfig,
      ])
      .default({ kind: "embedded" }),
    /** Where windows are kept for training, backtests and dashboards (the history stage). */
    history: historyConfig.optional(),
    collect: z
      .object({
        /** Collector connector configs (connectors/*.yaml), relative to this file. */
        connectors: z.array(z.string().min(1)).default([]),
      })
      .strict()
      .default({}),
    aggregate: z
      .object({
        window: z
          .object({
            kind: z.enum(["tumbling", "sliding"]).default("tumbling"),
            sizeSeconds: z.number().positive().max(86400 * 7).default(DEFAULT_WINDOW_SECONDS),
            /** Sliding windows only; tumbling windows slide by their size. */
            slideSeconds: z.number().positive().optional(),
          })
          .strict()
          .default({}),
        allowedLatenessSeconds: z.number().min(0).max(86400).default(10),
        latePolicy: z.enum(["drop", "dead-letter"]).default("dead-letter"),
        duplicatePolicy: z.enum(["drop", "dead-letter"]).default("drop"),
        /** Live runs: close quiet windows after this much wall time without samples (0: never). */
        idleWatermarkSeconds: z.number().min(0).max(86400).default(30),
        sketchAccuracy: z.number().gt(0).lt(0.5).default(DEFAULT_SKETCH_ACCURACY),
      })
      .strict()
      .default({}),
    forecast: z
      .object({
        model: z.enum(MODEL_NAMES).default("augur-ensemble"),
        /** Options of the chosen model (see its config schema). */
        options: z.record(z.string(), z.unknown()).default({}),
        /**
         * Model of the fallback levels (image,*), (*,user), (*,*). They merge the
         * windows of many pairs; the decaying histogram does not care in which
         * order those arrive, so every run of the same windows gives the same profile.
         */
        fallbackModel: z.enum(MODEL_NAMES).default(DEFAULT_FALLBACK_MODEL),
        cacheKeys: z.number().int().min(1).max(10_000_000).default(2_000),
      })
      .strict()
      .default({}),
    allocate: allocationConfig.default({}),
    /** Anomaly detection per workload, its sinks and the remediation policy. */
    detect: detectStageConfig.default({}),
    /** Connectors that apply allocations and remediation, the guard rails, and the launcher. */
    actuate: actuateConfig.default({}),
    /** The web dashboard served with the HTTP API. */
    dashboard: dashboardConfig.default({}),
    api: z
      .object({
        listen: listen.default("127.0.0.1:7070"),
        /** Writes need `Authorization: Bearer <token>`. Read from this environment variable if set… */
        tokenEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).default("AUGUR_TOKEN"),
        /** …else from this file (relative to the config), else a random one is written to <dataDir>/api-token. */
        tokenFile: z.string().min(1).optional(),
        bodyLimitBytes: z.number().int().min(1024).max(16 << 20).default(1 << 20),
        /** The Kubernetes mutating admission webhook at POST /v1/admission. */
        admission: admissionConfig.default({}),
      })
      .strict()
      .default({}),
  })
  .strict()
  .superRefine((config, ctx) => {
    const { window } = config.aggregate;
    if (window.kind === "tumbling" && window.slideSeconds !== undefined && window.slideSeconds !== window.sizeSeconds) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["aggregate", "window", "slideSeconds"], message: "tumbling windows slide by their size; use kind: sliding" });
    }
    if (window.slideSeconds !== undefined && window.slideSeconds > window.sizeSeconds) {
      ctx.addIssue({ code: z.ZodIssueCode.custom, path: ["aggregate", "window", "slideSeconds"], message: "slide must not exceed the window size" });
    }
  });

export type PipelineConfig = z.infer<typeof pipelineConfig>;

export interface LoadedPipeline {
  path: string;
  config: PipelineConfig;
  node: string;
  dataDir: string;
  collectors: HostCollectorConfig[];
  actuators: ActuatorConfig[];
}

function relativeTo(base: string, path: string): string {
  return isAbsolute(path) ? path : resolve(dirname(base), path);
}

/** Reads a pipeline file and the connector files it names; every error is a ConfigError. */
export function loadPipeline(path: string, overrides: { dataDir?: string; listen?: string; reports?: string } = {}): LoadedPipeline {
  const raw = parseYaml(readConfigFile(path), path);
  if (raw !== null && raw !== undefined && (typeof raw !== "object" || Array.isArray(raw))) throw new ConfigError(`${path}: expected a mapping at the top level`);
  const merged = { ...((raw as Record<string, unknown>) ?? {}) };
  if (overrides.listen) merged.api = { ...((merged.api as object) ?? {}), listen: overrides.listen };
  const config = validateConfig(pipelineConfig, merged, path);
  // The chosen model's own options, checked here so a typo is a config error at start-up.
  config.forecast.options = validateConfig(MODEL_REGISTRY[config.forecast.model].config, config.forecast.options, `${path}: forecast.options`);
  const node = config.node === "auto" ? hostname() : config.node;
  try {
    validateId("node", node);
  } catch (error) {
    throw new ConfigError(`${path}: node: ${(error as Error).message}`);
  }
  if (overrides.reports) config.dashboard.reports = resolve(overrides.reports);
  else if (config.dashboard.reports) config.dashboard.reports = relativeTo(path, config.dashboard.reports);
  const collectors = config.collect.connectors.map((file) => loadYamlConfig(hostCollectorConfig, relativeTo(path, file)));
  const actuators = config.actuate.connectors.map((file) => loadYamlConfig(actuatorConfig, relativeTo(path, file)));
  const kinds = actuators.map((actuator) => actuator.kind);
  const twice = kinds.find((kind, index) => kinds.indexOf(kind) !== index);
  if (twice) throw new ConfigError(`${path}: actuate.connectors: more than one ${twice} connector`);
  return {
    path,
    config,
    node,
    dataDir: overrides.dataDir ? resolve(overrides.dataDir) : relativeTo(path, config.dataDir),
    collectors,
    actuators,
  };
}
