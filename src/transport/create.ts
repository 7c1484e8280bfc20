import type { Metrics } from "../core/metrics.js";
import type { PipelineConfig } from "../config/pipeline.js";
import { EmbeddedTransport } from "./embedded/embedded-transport.js";
import { AvroSerde } from "./kafka/avro-serde.js";
import { KafkaTransport } from "./kafka/kafka-transport.js";
import { RdkafkaTransport } from "./kafka/rdkafka-transport.js";
import { ConfluentSchemaRegistry } from "./kafka/registry.js";
import type { Transport } from "./topic.js";

/** The transport a pipeline file names. Stages only ever see the Transport interface. */
export async function createTransport(config: PipelineConfig, metrics?: Metrics): Promise<Transport> {
  const transport = config.transport;
  if (transport.kind === "embedded") return new EmbeddedTransport({ partitions: transport.partitions, bufferRecords: transport.bufferRecords, metrics });
  const serde = new AvroSerde(new ConfluentSchemaRegistry(transport.schemaRegistry), transport.namespace);
  const options = { brokers: transport.brokers, clientId: transport.clientId, namespace: transport.namespace, maxBatch: transport.maxBatch, sessionTimeoutMs: transport.sessionTimeoutMs, alignMs: transport.alignSeconds * 1000, logLevel: transport.logLevel };
  // node-rdkafka is optional: where it is not installed, choosing it is a config error that says so.
  if (transport.client === "node-rdkafka") return new RdkafkaTransport(options, serde, metrics);
  return new KafkaTransport(options, serde, metrics);
}
