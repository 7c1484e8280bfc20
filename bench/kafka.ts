// End-to-end throughput through a real Kafka broker: samples published as
// Avro (Confluent wire format, schema in the registry) into augur.samples and
// consumed, decoded and windowed by the aggregate stage, per Kafka client,
// beside the broker's own producer throughput measured in the same run with
// Kafka's ProducerPerformance tool from the same jars. One JSON line.
// Needs the services (scripts/with-services.sh starts them).
import { spawnSync } from "node:child_process";
import { AggregateStage } from "../src/aggregate/stage.js";
import { kafkaTransportConfig } from "../src/config/pipeline.js";
import { pairKey } from "../src/core/keys.js";
import { Metrics } from "../src/core/metrics.js";
import { emptySample } from "../src/core/sample.js";
import type { Sample } from "../src/core/types.js";
import { AvroSerde } from "../src/transport/kafka/avro-serde.js";
import { KafkaTransport } from "../src/transport/kafka/kafka-transport.js";
import { loadRdkafka, RdkafkaTransport } from "../src/transport/kafka/rdkafka-transport.js";
import { ConfluentSchemaRegistry } from "../src/transport/kafka/registry.js";
import { createTopics, topicSpecs } from "../src/transport/kafka/topics.js";
import { TOPICS } from "../src/transport/topic.js";

const BROKERS = process.env.AUGUR_KAFKA_BROKERS ?? "127.0.0.1:9092";
const REGISTRY = process.env.AUGUR_REGISTRY_URL ?? "http://127.0.0.1:8081/apis/ccompat/v7";
const LIBS = process.env.AUGUR_KAFKA_LIBS;
const COUNT = Number(process.env.AUGUR_BENCH_KAFKA_SAMPLES ?? 100_000);
const PAIRS = 200;
// Recent event time: Kafka deletes records older than the topics' retention (by record time).
const T0 = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 86_400_000;

function samples(): Sample[] {
  const out: Sample[] = [];
  for (let i = 0; i < COUNT; i++) {
    const pair = i % PAIRS;
    const sample = emptySample({ ts: T0 + Math.floor(i / PAIRS) * 1000, workload: `w${pair}`, image: `image-${pair % 20}`, user: `user-${pair}`, host: "h", source: "bench" });
    sample.cpuCores = 0.1 + ((i * 7919) % 1000) / 1000;
    sample.memoryWorkingSetBytes = 1e8 + ((i * 104729) % 1000) * 1e5;
    out.push(sample);
  }
  return out;
}

async function endToEnd(client: "kafkajs" | "node-rdkafka"): Promise<{ samples_per_s: number; publish_samples_per_s: number; encoded_bytes_per_sample: number }> {
  const namespace = `bench${Date.now().toString(36)}.`;
  const config = kafkaTransportConfig.parse({ kind: "kafka", client, brokers: [BROKERS], namespace, schemaRegistry: REGISTRY, maxBatch: 2000 });
  const metrics = new Metrics();
  const serde = new AvroSerde(new ConfluentSchemaRegistry(REGISTRY), namespace);
  const options = { brokers: config.brokers, clientId: "augur-bench", namespace, maxBatch: config.maxBatch, sessionTimeoutMs: 10_000, alignMs: 0 };
  const transport = client === "kafkajs" ? new KafkaTransport(options, serde, metrics) : new RdkafkaTransport(options, serde, metrics);
  const admin = transport.admin();
  await admin.connect();
  await createTopics(admin, topicSpecs(config));
  await admin.disconnect();
  await serde.registerAll();
  const stage = new AggregateStage(transport, { kind: "tumbling", sizeMs: 60_000, slideMs: 60_000, allowedLatenessMs: 0, sketchAccuracy: 0.01, latePolicy: "drop", duplicatePolicy: "drop", idleWatermarkMs: 0 }, metrics);
  await stage.start();
  const data = samples();
  const bytes = (await serde.encode(TOPICS.samples, data[0])).length;
  const topic = transport.topic<Sample>(TOPICS.samples);
  const start = performance.now();
  for (let i = 0; i < data.length; i += 2000) {
    await topic.publish(data.slice(i, i + 2000).map((value) => ({ key: pairKey(value.image, value.user), value, timestamp: value.ts })));
  }
  const published = performance.now();
  for (;;) {
    const consumed = (await metrics.recordsIn.get()).values.find((v) => v.labels.stage === "aggregate")?.value ?? 0;
    if (consumed >= data.length) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const elapsed = performance.now() - start;
  await stage.stop();
  await transport.close();
  return { samples_per_s: Math.round(data.length / (elapsed / 1000)), publish_samples_per_s: Math.round(data.length / ((published - start) / 1000)), encoded_bytes_per_sample: bytes };
}

function producerPerformance(recordSize: number): { records_per_s: number; raw: string } | { error: string } {
  if (!LIBS) return { error: "AUGUR_KAFKA_LIBS is not set (scripts/services.sh env)" };
  const topic = `bench-pp-${Date.now().toString(36)}`;
  const create = spawnSync("java", ["-cp", `${LIBS}/*`, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS, "--create", "--topic", topic, "--partitions", "4", "--replication-factor", "1"], { encoding: "utf8" });
  if (create.status !== 0) return { error: `TopicCommand: ${create.stderr.slice(-500)}` };
  const run = spawnSync(
    "java",
    ["-cp", `${LIBS}/*`, "org.apache.kafka.tools.ProducerPerformance", "--topic", topic, "--num-records", String(COUNT), "--record-size", String(recordSize), "--throughput", "-1",
      "--producer-props", `bootstrap.servers=${BROKERS}`, "acks=all", "enable.idempotence=true"],
    { encoding: "utf8" },
  );
  const last = run.stdout.trim().split("\n").at(-1) ?? "";
  const match = /([\d.]+) records\/sec/.exec(last);
  spawnSync("java", ["-cp", `${LIBS}/*`, "org.apache.kafka.tools.TopicCommand", "--bootstrap-server", BROKERS, "--delete", "--topic", topic]);
  if (!match) return { error: `ProducerPerformance: ${run.stderr.slice(-500)}` };
  return { records_per_s: Math.round(Number(match[1])), raw: last };
}

const kafkajs = await endToEnd("kafkajs");
let rdkafka: Awaited<ReturnType<typeof endToEnd>> & { librdkafka: string } | { error: string };
try {
  const version = loadRdkafka().librdkafkaVersion;
  rdkafka = { ...(await endToEnd("node-rdkafka")), librdkafka: version };
} catch (error) {
  rdkafka = { error: (error as Error).message };
}
const reference = producerPerformance(kafkajs.encoded_bytes_per_sample);
console.log(
  JSON.stringify({
    bench: "kafka-end-to-end",
    samples: COUNT,
    kafkajs,
    "node-rdkafka": rdkafka,
    reference: { tool: "org.apache.kafka.tools.ProducerPerformance (acks=all, idempotent, same record size)", ...reference },
    ratio: "records_per_s" in reference ? +(kafkajs.samples_per_s / reference.records_per_s).toFixed(4) : null,
    ratio_rdkafka: "records_per_s" in reference && "samples_per_s" in rdkafka ? +(rdkafka.samples_per_s / reference.records_per_s).toFixed(4) : null,
  }),
);
