import type { Metrics } from "../core/metrics.js";
import type { PipelineConfig } from "../config/pipeline.js";
import { EmbeddedTransport } from "./embedded/embedded-transport.js";
import type { Transport } from "./topic.js";

/**
 * The transport a pipeline file names. Stages only ever see the Transport
 * interface. The Kafka clients and the Avro serde are loaded only for a
 * pipeline on Kafka (an embedded one starts without them).
 */
export async function createTransport(config: PipelineConfig, metrics?: Metrics): Promise<Transport> {
  const transport = config.transport;
  if (transport.kind === "embedded") return new EmbeddedTransport({ partitions: transport.partitions, bufferRecords: transport.bufferRecords, metrics });
  const [{ AvroSerde }, { ConfluentSchemaRegistry }] = await Promise.all([import("./kafka/avro-serde.js"), import("./kafka/registry.js")]);
  const serde = new AvroSerde(new ConfluentSchemaRegistry(transport.schemaRegistry), transport.namespace);
  const options = { brokers: transport.brokers, clientId: transport.clientId, namespace: transport.namespace, maxBatch: transport.maxBatch, sessionTimeoutMs: transport.sessionTimeoutMs, alignMs: transport.alignSeconds * 1000, logLevel: transport.logLevel };
  // node-rdkafka is optional: where it is not installed, choosing it is a config error that says so.
  if (transport.client === "node-rdkafka") return new (await import("./kafka/rdkafka-transport.js")).RdkafkaTransport(options, serde, metrics);
  return new (await import("./kafka/kafka-transport.js")).KafkaTransport(options, serde, metrics);
}
