import { Kafka, Partitioners, logLevel, type Admin, type logCreator, type Consumer as KafkaConsumer, type EachBatchPayload, type IHeaders, type Message, type Producer } from "kafkajs";
import { AugurError, DecodeError, TransientError, errorMessage } from "../../core/errors.js";
import type { Metrics } from "../../core/metrics.js";
import { logRetry, withRetry } from "../../core/retry.js";
import { TOPICS, revokedPartitions, type BatchHandler, type ConsumeOptions, type Consumer, type DeadLetter, type OutgoingRecord, type Topic, type TopicRecord, type Transport } from "../topic.js";
import { encodeDeadLetter, type AvroSerde } from "./avro-serde.js";
import { EventTimeAligner, handlePartitionBatch, type RawMessage } from "./partition-batch.js";

export interface KafkaTransportOptions {
  brokers: string[];
  /** Prepended to every topic name and consumer group id, so pipelines can share a cluster. */
  namespace?: string;
  clientId: string;
  /** Largest number of records handed to a handler at once. */
  maxBatch: number;
  sessionTimeoutMs: number;
  /**
   * Event-time alignment: a partition whose records run this far (ms) ahead
   * of the slowest partition that still has records is paused until the
   * others catch up, so stages that merge partitions (fallback-level models)
   * see time move forward together. 0 turns it off.
   */
  alignMs?: number;
  /** kafkajs's own log level (errors only by default: augur logs what it retries). */
  logLevel?: "nothing" | "error" | "warn" | "info" | "debug";
}

/** A record ready for the wire: value encoded, timestamp in epoch ms. */
export interface EncodedMessage {
  key: string;
  value: Buffer;
  timestamp: number;
  headers?: Record<string, string>;
}

/** One topic's consumer of a client. */
export interface TransportConsumer {
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** How long reading a changelog partition may take before the batch is retried. */
const READ_PARTITION_TIMEOUT_MS = 60_000;

const LOG_LEVELS = { nothing: logLevel.NOTHING, error: logLevel.ERROR, warn: logLevel.WARN, info: logLevel.INFO, debug: logLevel.DEBUG } as const;

/** kafkajs's log, every level on stderr (stdout carries the commands' results), one JSON object per line. */
const stderrLog: logCreator = () => ({ namespace, label, log }) => {
  const { message, ...extra } = log;
  process.stderr.write(`${JSON.stringify({ level: label, time: new Date().toISOString(), logger: `kafkajs ${namespace}`, message, ...extra })}\n`);
};

function headerText(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (value === undefined) continue;
    out[name] = Array.isArray(value) ? value.map(String).join(",") : Buffer.isBuffer(value) ? value.toString("utf8") : String(value);
  }
  return out;
}

/**
 * Topics on Apache Kafka through kafkajs. Values are Avro in the Confluent
 * wire format (AvroSerde); keys are UTF-8. The producer is idempotent with
 * acks from all in-sync replicas; consumers commit a partition's offset only
 * after the handler resolved (or only as far as the handler says its effects
 * are durable), so a crash re-delivers and never skips. Records that cannot
 * be decoded go to `augur.dead-letter` with their raw bytes and the reason
 * in headers; the consumer goes on.
 */
export class KafkaTransport implements Transport {
  readonly kind = "kafka";
  private readonly kafka: Kafka;
  private producer: Producer | null = null;
  private connecting: Promise<Producer> | null = null;
  /** Consumers running, with the group each ephemeral one is to delete when it stops (null: none). */
  private readonly consumers = new Map<TransportConsumer, string | null>();
  protected closed = false;

  constructor(
    protected readonly options: KafkaTransportOptions,
    readonly serde: AvroSerde,
    protected readonly metrics?: Metrics,
  ) {
    this.kafka = new Kafka({
      clientId: options.clientId,
      brokers: options.brokers,
      logLevel: LOG_LEVELS[options.logLevel ?? "nothing"],
      logCreator: stderrLog,
      retry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 8 },
    });
  }

  /** The Kafka topic (or group id) behind a logical name. */
  physical(name: string): string {
    return (this.options.namespace ?? "") + name;
  }

  admin(): Admin {
    return this.kafka.admin();
  }

  private async connectedProducer(): Promise<Producer> {
    if (this.producer) return this.producer;
    this.connecting ??= (async () => {
      const producer = this.kafka.producer({
        idempotent: true,
        maxInFlightRequests: 1,
        createPartitioner: Partitioners.DefaultPartitioner, // murmur2, as Java clients: same key, same partition
        retry: { initialRetryTime: 200, maxRetryTime: 5_000, retries: 8 },
      });
      await producer.connect();
      this.producer = producer;
      return producer;
    })();
    try {
      return await this.connecting;
    } finally {
      this.connecting = null;
    }
  }

  topic<T>(name: string): Topic<T> {
    return {
      name,
      publish: (records: Array<OutgoingRecord<T>>) => this.publish(name, records as Array<OutgoingRecord<unknown>>),
    };
  }

  private async encode(topic: string, value: unknown): Promise<Buffer> {
    if (topic === TOPICS.deadLetter) return encodeDeadLetter(value as DeadLetter);
    if (topic === TOPICS.forecastState) return Buffer.from(JSON.stringify(value)); // internal changelog
    return this.serde.encode(topic, value);
  }

  /** Decodes a record of `topic` (Avro, or JSON for the internal changelog). */
  async decode(topic: string, bytes: Buffer | null): Promise<unknown> {
    if (topic === TOPICS.forecastState) {
      if (!bytes) throw new DecodeError("changelog record has no value");
      try {
        return JSON.parse(bytes.toString("utf8"));
      } catch (error) {
        throw new DecodeError(`changelog record is not JSON: ${errorMessage(error)}`);
      }
    }
    return this.serde.decode(topic, bytes);
  }

  /**
   * Reads one partition to its end, within READ_PARTITION_TIMEOUT_MS as a
   * whole (connecting included): a broker that is away makes it a transient
   * error, and the batch that asked is retried.
   */
  async readPartition<T>(topic: string, partition: number): Promise<Array<TopicRecord<T>>> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new TransientError(`reading ${this.physical(topic)}[${partition}] took longer than ${READ_PARTITION_TIMEOUT_MS} ms`)), READ_PARTITION_TIMEOUT_MS);
    });
    const reading = this.readPartitionUnbounded<T>(topic, partition);
    reading.catch(() => undefined); // settled later if the timeout won
    try {
      return await Promise.race([reading, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private async readPartitionUnbounded<T>(topic: string, partition: number): Promise<Array<TopicRecord<T>>> {
    const physical = this.physical(topic);
    const admin = this.kafka.admin();
    await admin.connect();
    try {
      const offsets = await admin.fetchTopicOffsets(physical);
      const bounds = offsets.find((entry) => entry.partition === partition);
      if (!bounds || Number(bounds.high) <= Number(bounds.low)) return [];
      const end = Number(bounds.high);
      const groupId = this.physical(`augur-restore-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`);
      const reader = this.kafka.consumer({ groupId, sessionTimeout: 6_000, heartbeatInterval: 600 });
      const records: Array<TopicRecord<T>> = [];
      await reader.connect();
      try {
        await reader.subscribe({ topic: physical, fromBeginning: true });
        let seen = -1;
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(
            () => reject(new TransientError(`reading ${physical}[${partition}] to offset ${end} stalled at offset ${seen} after ${READ_PARTITION_TIMEOUT_MS} ms`)),
            READ_PARTITION_TIMEOUT_MS,
          );
          const done = () => {
            clearTimeout(timer);
            resolve();
          };
          reader
            .run({
              autoCommit: false,
              eachBatch: async ({ batch }) => {
                if (batch.partition !== partition) return;
                for (const message of batch.messages) {
                  if (Number(message.offset) >= end) break;
                  seen = Number(message.offset);
                  const value = (await this.decode(topic, message.value)) as T;
                  records.push({ topic, partition, offset: Number(message.offset), key: message.key?.toString("utf8") ?? "", value, timestamp: Number(message.timestamp), headers: headerText(message.headers) });
                }
                if (seen >= end - 1 || Number(batch.lastOffset()) >= end - 1) done();
              },
            })
            .catch((error: unknown) => {
              clearTimeout(timer);
              reject(error);
            });
        });
      } finally {
        await reader.disconnect();
        await admin.deleteGroups([groupId]).catch(() => undefined);
      }
      return records;
    } finally {
      await admin.disconnect();
    }
  }

  private async publish(topic: string, records: Array<OutgoingRecord<unknown>>): Promise<void> {
    if (records.length === 0) return;
    if (this.closed) throw new Error("transport is closed");
    // Encoding may need the registry (first record of a topic): a registry that does not
    // answer is waited for; a value that does not fit its schema is thrown at once.
    const messages = await withRetry(
      async () => {
        const encoded: EncodedMessage[] = [];
        for (const record of records) {
          encoded.push({ key: record.key, value: await this.encode(topic, record.value), timestamp: Math.trunc(record.timestamp), headers: record.headers });
        }
        return encoded;
      },
      { initialDelayMs: 250, maxDelayMs: 5_000, attempts: Infinity, respectRetriable: true, shouldStop: () => this.closed, onError: logRetry(`encode for ${topic}`) },
    );
    // A broker that is away (restart, leader election) makes publishers wait, not fail:
    // the idempotent producer keeps retried batches free of duplicates.
    await withRetry(() => this.send(this.physical(topic), messages), {
      initialDelayMs: 250,
      maxDelayMs: 5_000,
      attempts: Infinity,
      respectRetriable: false,
      shouldStop: () => this.closed,
      onError: logRetry(`publish to ${topic}`),
    });
  }

  /** Sends encoded records to a Kafka topic with acks from all in-sync replicas; resolves once all are acknowledged. */
  protected async send(physicalTopic: string, messages: EncodedMessage[]): Promise<void> {
    const producer = await this.connectedProducer();
    await producer.send({
      topic: physicalTopic,
      acks: -1,
      messages: messages.map((m): Message => ({ key: m.key, value: m.value, timestamp: String(m.timestamp), headers: m.headers })),
    });
  }

  /** The client's consumer for one topic and group. */
  protected newConsumer(topic: string, options: ConsumeOptions, handler: BatchHandler<unknown>): TransportConsumer {
    return new KafkaTransportConsumer(this, this.kafka, topic, options, handler, this.options, this.metrics);
  }

  protected async disconnectProducer(): Promise<void> {
    await this.producer?.disconnect();
    this.producer = null;
  }

  async consume<T>(topic: string, options: ConsumeOptions, handler: BatchHandler<T>): Promise<Consumer> {
    const consumer = this.newConsumer(topic, options, handler as BatchHandler<unknown>);
    this.consumers.set(consumer, options.ephemeral ? this.physical(options.group) : null);
    await consumer.start();
    return { stop: () => this.retire(consumer) };
  }

  /** Stops a consumer; an ephemeral one's group is deleted (a failure to is reported, not thrown: the group only lingers). */
  private async retire(consumer: TransportConsumer): Promise<void> {
    if (!this.consumers.has(consumer)) return;
    const group = this.consumers.get(consumer)!;
    this.consumers.delete(consumer);
    await consumer.stop();
    if (group === null) return;
    const admin = this.kafka.admin();
    try {
      await admin.connect();
      await admin.deleteGroups([group]);
    } catch (error) {
      console.error(`augur: deleting consumer group ${group}: ${errorMessage(error)}; it stays until the broker expires it`);
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers.keys()].map((consumer) => this.retire(consumer)));
    this.closed = true;
    await this.disconnectProducer();
  }
}

class KafkaTransportConsumer implements TransportConsumer {
  private consumer: KafkaConsumer | null = null;
  private stopping = false;
  /** Per partition: the handler's last `resumeFrom`, which commits must not pass. */
  private readonly hold = new Map<number, number>();
  private readonly aligner: EventTimeAligner;
  /** Partitions whose state `onAssign` restored since the last (re)join. */
  private readonly assigned = new Set<number>();
  /** The partitions of the last assignment (for `onRevoke`). */
  private owned = new Set<number>();
  /** Consecutive replacements of a crashed consumer (backoff); reset by a batch handled. */
  private replacements = 0;

  constructor(
    private readonly transport: KafkaTransport,
    private readonly kafka: Kafka,
    private readonly topic: string,
    private readonly options: ConsumeOptions,
    private readonly handler: BatchHandler<unknown>,
    private readonly transportOptions: KafkaTransportOptions,
    private readonly metrics?: Metrics,
  ) {
    const partitions = (p: number) => [{ topic: this.transport.physical(this.topic), partitions: [p] }];
    this.aligner = new EventTimeAligner(
      transportOptions.alignMs ?? 0,
      (p) => this.consumer!.pause(partitions(p)),
      (p) => this.consumer!.resume(partitions(p)),
    );
  }

  async start(): Promise<void> {
    const consumer = this.kafka.consumer({
      groupId: this.transport.physical(this.options.group),
      sessionTimeout: this.transportOptions.sessionTimeoutMs,
      heartbeatInterval: Math.max(500, Math.floor(this.transportOptions.sessionTimeoutMs / 10)),
      // Rejoin after any failure, the broker's restarts included.
      retry: { initialRetryTime: 300, maxRetryTime: 5_000, retries: 10, restartOnFailure: async () => !this.stopping },
    });
    this.consumer = consumer;
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      // kafkajs restarts a consumer after retriable errors only. Others (an
      // UNKNOWN_MEMBER_ID answered while a fresh broker's group coordinator
      // settles, for one) leave it stopped in a process that looks alive: start
      // a new one, which resumes from the committed offsets.
      const restart = payload.restart && !this.stopping;
      console.error(`augur: consumer ${this.options.group} on ${this.topic} failed: ${errorMessage(payload.error)}; ${restart ? "kafkajs restarts it" : this.stopping ? "stopping" : "starting a new one"}`);
      this.metrics?.stageErrors.inc({ stage: this.options.group });
      if (!payload.restart && !this.stopping) this.replace(consumer);
    });
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      // New assignment: forget what the old one knew (kafkajs keeps partitions paused across a rebalance).
      this.aligner.reset();
      this.assigned.clear();
      const owned = new Set(payload.memberAssignment[this.transport.physical(this.topic)] ?? []);
      for (const partition of revokedPartitions(this.owned, owned)) this.options.onRevoke?.(partition);
      this.owned = owned;
    });
    await withRetry(
      async () => {
        await consumer.connect();
        await consumer.subscribe({ topic: this.transport.physical(this.topic), fromBeginning: this.options.from !== "latest" });
      },
      { initialDelayMs: 500, maxDelayMs: 5_000, attempts: 30, shouldStop: () => this.stopping, onError: logRetry(`subscribe ${this.options.group} to ${this.topic}`) },
    );
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: 1,
      eachBatch: (payload) => this.eachBatch(payload),
    });
  }

  private async eachBatch(payload: EachBatchPayload): Promise<void> {
    try {
      await this.handleBatch(payload);
      this.replacements = 0;
    } catch (error) {
      // kafkajs fetches the batch again (and, past its retries, restarts the consumer).
      console.error(`augur: ${this.options.group}: batch of ${this.topic}[${payload.batch.partition}] failed, fetching it again: ${errorMessage(error)}`);
      throw error;
    }
  }

  private async handleBatch({ batch, resolveOffset, heartbeat, commitOffsetsIfNecessary, isRunning, isStale }: EachBatchPayload): Promise<void> {
    if (this.options.onAssign && !this.assigned.has(batch.partition)) {
      // Restoring may take longer than the session: keep the membership alive meanwhile.
      const beat = setInterval(() => void heartbeat().catch(() => undefined), Math.max(500, Math.floor(this.transportOptions.sessionTimeoutMs / 5)));
      try {
        await this.options.onAssign(batch.partition);
      } finally {
        clearInterval(beat);
      }
      this.assigned.add(batch.partition);
    }
    const messages: RawMessage[] = batch.messages.map((message) => ({
      offset: Number(message.offset),
      key: message.key ? message.key.toString("utf8") : "",
      value: message.value,
      timestamp: Number(message.timestamp),
      headers: headerText(message.headers),
    }));
    await handlePartitionBatch(
      {
        transport: this.transport,
        decode: (topic, bytes) => this.transport.decode(topic, bytes),
        topic: this.topic,
        group: this.options.group,
        handler: this.handler,
        maxBatch: this.options.maxBatch ?? this.transportOptions.maxBatch,
        hold: this.hold,
        metrics: this.metrics,
        highWatermark: Number(batch.highWatermark),
        commit: (partition, offset) => this.consumer!.commitOffsets([{ topic: batch.topic, partition, offset: String(offset) }]),
        afterChunk: async (_partition, last) => {
          resolveOffset(String(last));
          await heartbeat();
        },
        active: () => isRunning() && !isStale(),
      },
      batch.partition,
      messages,
    );
    await commitOffsetsIfNecessary();
    const last = batch.messages.at(-1);
    if (last) this.aligner.observe(batch.partition, Number(last.timestamp), Number(batch.highWatermark) - 1 <= Number(last.offset));
  }

  /** Replaces a consumer kafkajs gave up on with a new one, after a backoff; retried until it runs or the consumer stops. */
  private replace(crashed: KafkaConsumer): void {
    const delay = Math.min(30_000, 1_000 * 2 ** Math.min(this.replacements++, 5));
    setTimeout(() => {
      void (async () => {
        await crashed.disconnect().catch(() => undefined);
        if (this.stopping || this.consumer !== crashed) return;
        this.aligner.reset();
        this.assigned.clear();
        this.hold.clear(); // the new consumer starts from the committed offsets
        try {
          await this.start();
        } catch (error) {
          console.error(`augur: starting a new consumer ${this.options.group} on ${this.topic} failed: ${errorMessage(error)}`);
          if (!this.stopping && this.consumer) this.replace(this.consumer);
        }
      })();
    }, delay);
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    try {
      await this.consumer?.disconnect();
    } catch (error) {
      console.error(`augur: stopping consumer ${this.options.group}: ${errorMessage(error)}`);
    }
  }
}
