// The Kafka transport on node-rdkafka (librdkafka), an optional dependency:
// the same topics, wire format, commits and dead letters as the kafkajs
// transport, selected with `transport.client: node-rdkafka`. Topic
// administration and changelog reads stay on kafkajs (no native calls there).
import { createRequire } from "node:module";
import { ConfigError, errorMessage } from "../../core/errors.js";
import type { Metrics } from "../../core/metrics.js";
import { logRetry, withRetry } from "../../core/retry.js";
import { revokedPartitions, type BatchHandler, type ConsumeOptions } from "../topic.js";
import type { AvroSerde } from "./avro-serde.js";
import { KafkaTransport, type EncodedMessage, type KafkaTransportOptions, type TransportConsumer } from "./kafka-transport.js";
import { EventTimeAligner, handlePartitionBatch, type RawMessage } from "./partition-batch.js";

// The parts of node-rdkafka's API used here, declared locally so that augur
// builds where the optional package could not be installed.
interface RdError extends Error {
  code: number;
}
interface RdTopicPartition {
  topic: string;
  partition: number;
}
interface RdMessage extends RdTopicPartition {
  offset: number;
  value: Buffer | null;
  key?: Buffer | string | null;
  timestamp?: number;
  headers?: Array<Record<string, string | Buffer>>;
}
interface RdClient {
  connect(options: object, cb: (err: RdError | null) => void): void;
  disconnect(cb: (err: RdError | null) => void): void;
  on(event: string, listener: (...args: never[]) => void): void;
}
interface RdProducer extends RdClient {
  setPollInterval(ms: number): void;
  poll(): void;
  produce(topic: string, partition: number | null, value: Buffer, key: string, timestamp: number, headers: Array<Record<string, string>>, cb: (err: RdError | null) => void): void;
  flush(timeout: number, cb: (err: RdError | null) => void): void;
}
interface RdConsumer extends RdClient {
  subscribe(topics: string[]): void;
  assign(assignments: RdTopicPartition[]): void;
  unassign(): void;
  consume(count: number, cb: (err: RdError | null, messages: RdMessage[]) => void): void;
  commitSync(offset: RdTopicPartition & { offset: number }): void;
  seek(offset: RdTopicPartition & { offset: number }, timeoutMs: number, cb: (err: RdError | null) => void): void;
  commit(offset: RdTopicPartition & { offset: number }): void;
  pause(partitions: RdTopicPartition[]): void;
  resume(partitions: RdTopicPartition[]): void;
  setDefaultConsumeTimeout(ms: number): void;
  getWatermarkOffsets(topic: string, partition: number): { highOffset: number; lowOffset: number };
}
interface RdModule {
  HighLevelProducer: new (conf: Record<string, unknown>, topicConf?: Record<string, unknown>) => RdProducer;
  KafkaConsumer: new (conf: Record<string, unknown>, topicConf: Record<string, unknown>) => RdConsumer;
  CODES: { ERRORS: Record<string, number> };
  librdkafkaVersion: string;
}

/** node-rdkafka, or why it cannot be used here. */
export function loadRdkafka(): RdModule {
  try {
    return createRequire(import.meta.url)("node-rdkafka") as RdModule;
  } catch (error) {
    throw new ConfigError(`transport.client: node-rdkafka is not installed (an optional dependency that builds librdkafka at npm install; install it with 'npm install node-rdkafka'): ${errorMessage(error)}`);
  }
}

const call = (fn: (cb: (err: RdError | null) => void) => void) =>
  new Promise<void>((resolve, reject) => fn((err) => (err ? reject(err) : resolve())));

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function headerText(headers: RdMessage["headers"]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const header of headers ?? []) for (const [name, value] of Object.entries(header)) out[name] = Buffer.isBuffer(value) ? value.toString("utf8") : String(value);
  return out;
}

export class RdkafkaTransport extends KafkaTransport {
  private readonly rd: RdModule;
  private rdProducer: RdProducer | null = null;
  private rdConnecting: Promise<RdProducer> | null = null;
  /** Deliveries awaited, and the timer that polls for their reports while there are any. */
  private pending = 0;
  private poller: NodeJS.Timeout | null = null;

  constructor(options: KafkaTransportOptions, serde: AvroSerde, metrics?: Metrics) {
    super(options, serde, metrics);
    this.rd = loadRdkafka();
  }

  /** librdkafka settings both producers and consumers share. */
  common(): Record<string, unknown> {
    return { "metadata.broker.list": this.options.brokers.join(","), "client.id": this.options.clientId, "socket.keepalive.enable": true, "reconnect.backoff.max.ms": 5_000 };
  }

  get librdkafkaVersion(): string {
    return this.rd.librdkafkaVersion;
  }

  private async connectedRdProducer(): Promise<RdProducer> {
    if (this.rdProducer) return this.rdProducer;
    this.rdConnecting ??= (async () => {
      const producer = new this.rd.HighLevelProducer({
        ...this.common(),
        "enable.idempotence": true, // acks=all, ordered retries without duplicates
        "linger.ms": 1, // stages await each publish: batching comes from the records queued at once
        "message.timeout.ms": 300_000, // librdkafka retries a message this long (a broker restart) before failing it
        // Java's and kafkajs's partitioner: the same key lands on the same partition whoever produced it.
        partitioner: "murmur2_random",
      });
      producer.on("event.error", (error: RdError) => console.error(`augur: node-rdkafka producer: ${error.message}`));
      await call((cb) => producer.connect({ timeout: 10_000 }, cb));
      this.rdProducer = producer;
      return producer;
    })();
    try {
      return await this.rdConnecting;
    } finally {
      this.rdConnecting = null;
    }
  }

  protected override async send(physicalTopic: string, messages: EncodedMessage[]): Promise<void> {
    const producer = await this.connectedRdProducer();
    const QUEUE_FULL = this.rd.CODES.ERRORS.ERR__QUEUE_FULL;
    const delivered: Array<Promise<void>> = [];
    for (const message of messages) {
      const headers = Object.entries(message.headers ?? {}).map(([name, value]) => ({ [name]: value }));
      for (;;) {
        try {
          delivered.push(call((cb) => producer.produce(physicalTopic, null, message.value, message.key, message.timestamp, headers, cb)));
          break;
        } catch (error) {
          if ((error as RdError).code !== QUEUE_FULL) throw error;
          await sleep(20); // librdkafka's queue is full: let deliveries drain
        }
      }
    }
    // Delivery reports come from polling: every 2 ms while any is awaited (a stage waits for
    // them before it commits), not at all when the producer is idle.
    this.pending += delivered.length;
    this.poller ??= setInterval(() => producer.poll(), 2);
    try {
      await Promise.all(delivered);
    } finally {
      this.pending -= delivered.length;
      if (this.pending === 0 && this.poller) {
        clearInterval(this.poller);
        this.poller = null;
      }
    }
  }

  protected override newConsumer(topic: string, options: ConsumeOptions, handler: BatchHandler<unknown>): TransportConsumer {
    return new RdkafkaTransportConsumer(this, this.rd, topic, options, handler, this.options, this.metrics);
  }

  protected override async disconnectProducer(): Promise<void> {
    const producer = this.rdProducer;
    this.rdProducer = null;
    if (!producer) return;
    await call((cb) => producer.flush(10_000, cb)).catch(() => undefined);
    await call((cb) => producer.disconnect(cb)).catch(() => undefined);
  }
}

class RdkafkaTransportConsumer implements TransportConsumer {
  private consumer: RdConsumer | null = null;
  private stopping = false;
  private loop: Promise<void> | null = null;
  private readonly hold = new Map<number, number>();
  /** Partitions this member owns now, and those whose state `onAssign` restored since it got them. */
  private owned = new Set<number>();
  /** The partitions of the last assignment, kept through the revocation before the next (for `onRevoke`). */
  private lastAssigned = new Set<number>();
  private readonly assigned = new Set<number>();
  private readonly aligner: EventTimeAligner;
  private readonly physicalTopic: string;

  constructor(
    private readonly transport: RdkafkaTransport,
    private readonly rd: RdModule,
    private readonly topic: string,
    private readonly options: ConsumeOptions,
    private readonly handler: BatchHandler<unknown>,
    private readonly transportOptions: KafkaTransportOptions,
    private readonly metrics?: Metrics,
  ) {
    this.physicalTopic = transport.physical(topic);
    const at = (partition: number) => [{ topic: this.physicalTopic, partition }];
    this.aligner = new EventTimeAligner(
      transportOptions.alignMs ?? 0,
      (p) => this.consumer!.pause(at(p)),
      (p) => this.consumer!.resume(at(p)),
      // Hysteresis: librdkafka drops what it prefetched for a paused partition, so flapping
      // between pause and resume made a replay crawl; resume only within half the lead.
      0.5,
    );
  }

  async start(): Promise<void> {
    const { ERR__ASSIGN_PARTITIONS, ERR__REVOKE_PARTITIONS } = this.rd.CODES.ERRORS;
    const consumer = new this.rd.KafkaConsumer(
      {
        ...this.transport.common(),
        "group.id": this.transport.physical(this.options.group),
        "enable.auto.commit": false,
        "enable.auto.offset.store": false,
        "session.timeout.ms": this.transportOptions.sessionTimeoutMs,
        "heartbeat.interval.ms": Math.max(500, Math.floor(this.transportOptions.sessionTimeoutMs / 10)),
        rebalance_cb: (error: RdError, assignment: RdTopicPartition[]) => {
          // A new assignment: forget what the old one knew; records of lost partitions still in hand are dropped.
          this.aligner.reset();
          this.assigned.clear();
          this.hold.clear();
          if (error.code === ERR__ASSIGN_PARTITIONS) {
            this.owned = new Set(assignment.map((tp) => tp.partition));
            // Every rebalance revokes all before it assigns: what was lost is what the new assignment lacks.
            for (const partition of revokedPartitions(this.lastAssigned, this.owned)) this.options.onRevoke?.(partition);
            this.lastAssigned = this.owned;
            consumer.assign(assignment);
          } else if (error.code === ERR__REVOKE_PARTITIONS) {
            this.owned = new Set();
            consumer.unassign();
          } else console.error(`augur: node-rdkafka rebalance of ${this.options.group}: ${error.message}`);
        },
      },
      { "auto.offset.reset": this.options.from === "latest" ? "latest" : "earliest" },
    );
    consumer.on("event.error", (error: RdError) => console.error(`augur: node-rdkafka consumer ${this.options.group}: ${error.message}`));
    this.consumer = consumer;
    await withRetry(() => call((cb) => consumer.connect({ timeout: 10_000 }, cb)), {
      initialDelayMs: 500,
      maxDelayMs: 5_000,
      attempts: 30,
      shouldStop: () => this.stopping,
      onError: logRetry(`connect ${this.options.group} to ${this.topic}`),
    });
    consumer.setDefaultConsumeTimeout(200);
    consumer.subscribe([this.physicalTopic]);
    this.loop = this.run();
  }

  private fetch(count: number): Promise<RdMessage[]> {
    return new Promise((resolve, reject) => this.consumer!.consume(count, (err, messages) => (err ? reject(err) : resolve(messages))));
  }

  /**
   * Fetch, split by partition (order kept within each), handle. A batch that
   * fails while its partition is still this member's (its restore or a commit
   * failed with the broker away, say) is read again from its first record not
   * handled: librdkafka's position is already past the whole batch.
   */
  private async run(): Promise<void> {
    const maxBatch = this.options.maxBatch ?? this.transportOptions.maxBatch;
    while (!this.stopping) {
      let messages: RdMessage[];
      try {
        messages = await this.fetch(maxBatch);
        // librdkafka waits up to the timeout for each next message: short while records flow,
        // so a batch returns once the local queue is drained; longer when idle, so it does not spin.
        this.consumer!.setDefaultConsumeTimeout(messages.length > 0 ? 5 : 200);
      } catch (error) {
        console.error(`augur: node-rdkafka fetch for ${this.options.group}: ${errorMessage(error)}`);
        await sleep(500);
        continue;
      }
      const byPartition = new Map<number, RdMessage[]>();
      for (const message of messages) {
        if (!byPartition.has(message.partition)) byPartition.set(message.partition, []);
        byPartition.get(message.partition)!.push(message);
      }
      for (const [partition, batch] of byPartition) {
        if (this.stopping) break;
        if (!this.owned.has(partition)) continue;
        const owned = this.owned;
        const progress = { next: batch[0]!.offset };
        try {
          await this.handle(partition, batch, progress);
        } catch (error) {
          if (this.stopping) continue;
          if (!this.holds(partition, owned)) {
            // The partition went to another member mid-batch: the new owner reads from the last commit.
            console.error(`augur: ${this.options.group} on ${this.topic}[${partition}]: ${errorMessage(error)}; left to the partition's next owner`);
            continue;
          }
          console.error(`augur: ${this.options.group} on ${this.topic}[${partition}]: ${errorMessage(error)}; reading it again from offset ${progress.next}`);
          await this.rewind(partition, progress.next, owned);
        }
      }
    }
  }

  /**
   * Moves the partition's fetch position back to `offset`, waiting until no
   * record fetched for the old position can come out (librdkafka drops them);
   * retried while the partition stays this member's, then a pause before the
   * next fetch, so that a failure that lasts does not spin.
   */
  private async rewind(partition: number, offset: number, owned: Set<number>): Promise<void> {
    try {
      await withRetry(() => call((cb) => this.consumer!.seek({ topic: this.physicalTopic, partition, offset }, 10_000, cb)), {
        initialDelayMs: 250,
        maxDelayMs: 5_000,
        attempts: Infinity,
        shouldStop: () => !this.holds(partition, owned),
        onError: logRetry(`moving ${this.options.group} on ${this.topic}[${partition}] back to offset ${offset}`),
      });
      await sleep(500);
    } catch {
      // Given up only once the partition is no longer this member's: its next owner reads from the last commit.
    }
  }

  /** Whether the consumer runs and the partition is still this member's under the assignment `owned` (no rebalance since). */
  private holds(partition: number, owned: Set<number>): boolean {
    return !this.stopping && this.owned === owned && owned.has(partition);
  }

  /** Handles one partition's records in order; `progress.next`: the first record not yet handled and committed. */
  private async handle(partition: number, batch: RdMessage[], progress: { next: number }): Promise<void> {
    if (this.options.onAssign && !this.assigned.has(partition)) {
      await this.options.onAssign(partition);
      this.assigned.add(partition);
    }
    let highWatermark: number | undefined;
    try {
      highWatermark = this.consumer!.getWatermarkOffsets(this.physicalTopic, partition).highOffset;
    } catch {
      highWatermark = undefined; // not known yet
    }
    const owned = this.owned;
    const active = () => this.holds(partition, owned);
    const messages: RawMessage[] = batch.map((message) => ({
      offset: message.offset,
      key: message.key === null || message.key === undefined ? "" : Buffer.isBuffer(message.key) ? message.key.toString("utf8") : String(message.key),
      value: message.value,
      timestamp: message.timestamp ?? 0,
      headers: headerText(message.headers),
    }));
    await handlePartitionBatch(
      {
        transport: this.transport,
        // A registry that is away, or a handler that fails (a store that cannot write, a broker
        // that is away), is retried here, on the same records: a seek back could let records
        // already fetched behind them through first, out of order.
        decode: (topic, bytes) => this.retried(`decoding for ${this.options.group}`, active, () => this.transport.decode(topic, bytes), true),
        topic: this.topic,
        group: this.options.group,
        handler: (records) => this.retried(`handler of group ${this.options.group} on ${this.topic}[${partition}]`, active, () => this.handler(records), false),
        maxBatch: this.options.maxBatch ?? this.transportOptions.maxBatch,
        hold: this.hold,
        metrics: this.metrics,
        highWatermark,
        afterChunk: async (_partition, lastOffset) => {
          progress.next = lastOffset + 1;
        },
        commit: async (p, offset) => {
          try {
            this.consumer!.commit({ topic: this.physicalTopic, partition: p, offset });
          } catch (error) {
            // Lost in a rebalance: the next owner reads from the last commit (records are idempotent downstream).
            if (this.owned === owned && this.owned.has(p)) throw error;
          }
        },
        active,
      },
      partition,
      messages,
    );
    const last = batch.at(-1)!;
    if (highWatermark !== undefined) this.aligner.observe(partition, last.timestamp ?? Number.NaN, highWatermark - 1 <= last.offset);
  }

  /** Runs `attempt` until it succeeds or the partition is no longer this member's; `onlyRetriable`: other errors are thrown at once. */
  private retried<T>(what: string, active: () => boolean, attempt: () => Promise<T>, onlyRetriable: boolean): Promise<T> {
    return withRetry(attempt, {
      initialDelayMs: 250,
      maxDelayMs: 5_000,
      attempts: Infinity,
      shouldStop: () => !active(),
      respectRetriable: onlyRetriable,
      onError: logRetry(what),
    });
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    await this.loop?.catch(() => undefined);
    const consumer = this.consumer;
    if (!consumer) return;
    await call((cb) => consumer.disconnect(cb)).catch((error: unknown) => console.error(`augur: stopping consumer ${this.options.group}: ${errorMessage(error)}`));
  }
}
