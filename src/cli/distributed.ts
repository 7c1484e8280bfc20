import type { Command } from "commander";
import { TRACE_FORMATS, type TraceFormat } from "../backtest/adapters/index.js";
import { ConfigError, ValidationError } from "../core/errors.js";
import { STAGE_NAMES, type StageName } from "../pipeline/stage-names.js";
import { DEFAULT_CONFIG, DEFAULT_KAFKA_CONFIG, fail, loadFromFlags } from "./common.js";
import { HeldSignals, stopOnSignal } from "./signals.js";

export function registerStage(program: Command): void {
  program
    .command("stage")
    .description(`run one stage of the distributed (Kafka) pipeline as its own process: ${STAGE_NAMES.join(", ")}`)
    .argument("<name>", `the stage: ${STAGE_NAMES.join(" | ")}`)
    .option("-c, --config <file>", "pipeline config (transport.kind: kafka)", DEFAULT_KAFKA_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir (forecast, allocate)")
    .option("--listen <host:port>", "override the config's api.listen (allocate)")
    .option("--metrics-listen <host:port>", "serve /metrics and /healthz here (stages other than allocate)")
    .action(async (name: string, flags: { config: string; dataDir?: string; listen?: string; metricsListen?: string }) => {
      // Caught from here on: a signal while the stage starts stops it once started.
      const signals = new HeldSignals();
      try {
        if (!(STAGE_NAMES as readonly string[]).includes(name)) throw new ConfigError(`unknown stage '${name}'; one of ${STAGE_NAMES.join(", ")}`);
        if (flags.metricsListen !== undefined && !/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(flags.metricsListen)) {
          throw new ConfigError(`--metrics-listen: expected host:port, got ${JSON.stringify(flags.metricsListen)}`);
        }
        const pipeline = loadFromFlags(flags);
        const { startStage } = await import("../pipeline/embedded.js");
        const running = await startStage(pipeline, name as StageName, { metricsListen: flags.metricsListen });
        process.stderr.write(`augur: stage ${name} running on ${running.transport.kind}${running.address ? `, serving ${running.address}` : ""} (node ${pipeline.node})\n`);
        stopOnSignal(signals, () => running.stop(), fail);
      } catch (error) {
        fail(error);
      }
    });
}

export function registerTopics(program: Command): void {
  const topics = program.command("topics").description("manage the Kafka topics of a distributed pipeline");
  topics
    .command("create")
    .description("create the topics (partitions, replication, cleanup policy from the config) and register the Avro schemas with BACKWARD compatibility")
    .option("-c, --config <file>", "pipeline config (transport.kind: kafka)", DEFAULT_KAFKA_CONFIG)
    .option("--no-schemas", "do not register the schemas")
    .action(async (flags: { config: string; schemas: boolean }) => {
      try {
        const pipeline = loadFromFlags(flags);
        const config = pipeline.config.transport;
        if (config.kind !== "kafka") throw new ConfigError(`${pipeline.path}: transport.kind: topics need kafka (got ${config.kind})`);
        const [{ createTransport }, { KafkaTransport }, { createTopics, topicSpecs }] = await Promise.all([
          import("../transport/create.js"),
          import("../transport/kafka/kafka-transport.js"),
          import("../transport/kafka/topics.js"),
        ]);
        const transport = await createTransport(pipeline.config);
        if (!(transport instanceof KafkaTransport)) throw new ConfigError("topics create needs the kafkajs client");
        const admin = transport.admin();
        try {
          await admin.connect();
          const outcomes = await createTopics(admin, topicSpecs(config));
          const schemaIds = flags.schemas ? await transport.serde.registerAll() : {};
          process.stdout.write(`${JSON.stringify({ topics: outcomes, schemaIds }, null, 2)}\n`);
          for (const outcome of outcomes) if (outcome.warning) process.stderr.write(`augur: ${outcome.name} ${outcome.warning}\n`);
        } finally {
          await admin.disconnect();
          await transport.close();
        }
      } catch (error) {
        fail(error);
      }
    });
}

export function registerReplay(program: Command): void {
  program
    .command("replay")
    .description("replay a trace in event time into the pipeline: into augur.samples on Kafka, or through the stages in this process")
    .requiredOption("--trace <path>", "trace file (.csv or .csv.gz) or directory of them")
    .option("--format <format>", `trace format: ${TRACE_FORMATS.join(" | ")}`, "canonical")
    .option("--bus <bus>", "kafka | embedded", "embedded")
    .option("-c, --config <file>", "pipeline config", DEFAULT_CONFIG)
    .option("--data-dir <dir>", "override the config's dataDir (embedded)")
    .option("--speedup <factor>", "event time runs this many times faster than wall time (default: as fast as possible)")
    .option("--batch <n>", "samples per publish", "1000")
    .option("--keep-open", "embedded: leave the last windows open at the end, as a distributed run does")
    .action(async (flags: { trace: string; format: string; bus: string; config: string; dataDir?: string; speedup?: string; batch: string; keepOpen?: boolean }) => {
      try {
        if (!(TRACE_FORMATS as readonly string[]).includes(flags.format)) throw new ConfigError(`--format: one of ${TRACE_FORMATS.join(", ")}, got ${JSON.stringify(flags.format)}`);
        if (flags.bus !== "kafka" && flags.bus !== "embedded") throw new ConfigError(`--bus: kafka or embedded, got ${JSON.stringify(flags.bus)}`);
        const speedup = flags.speedup === undefined ? undefined : Number(flags.speedup);
        if (speedup !== undefined && !(speedup > 0 && Number.isFinite(speedup))) throw new ValidationError(`--speedup: a positive number, got ${JSON.stringify(flags.speedup)}`);
        const batch = Number(flags.batch);
        if (!Number.isInteger(batch) || batch < 1 || batch > 100_000) throw new ValidationError(`--batch: an integer from 1 to 100000, got ${JSON.stringify(flags.batch)}`);
        const pipeline = loadFromFlags(flags);
        const { replayTrace } = await import("../pipeline/replay.js");
        const summary = await replayTrace(pipeline, { trace: flags.trace, format: flags.format as TraceFormat, bus: flags.bus, speedup, batch, flush: !flags.keepOpen });
        process.stdout.write(`${JSON.stringify(summary)}\n`);
      } catch (error) {
        fail(error);
      }
    });
}
