import type { Metrics } from "../../core/metrics.js";
import { logRetry, withRetry } from "../../core/retry.js";
import type { BatchHandler, ConsumeOptions, Consumer, OutgoingRecord, Topic, TopicRecord, Transport } from "../topic.js";

export interface EmbeddedTransportOptions {
  /** Partitions per topic; records of one key always go to the same one. */
  partitions: number;
  /** Records a partition holds unconsumed before publishers wait. */
  bufferRecords: number;
  /** Where consumer lag is reported (augur_consumer_lag_records). */
  metrics?: Metrics;
}

/** FNV-1a: a stable key → partition mapping within this process. */
export function partitionFor(key: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    hash ^= key.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return (hash >>> 0) % partitions;
}

/** A one-shot signal that many waiters can await. */
class Signal {
  private waiters: Array<() => void> = [];
  wait(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  fire(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }
}

class Partition<T> {
  /** Offset of log[0]. */
  base = 0;
  log: Array<TopicRecord<T>> = [];
  readonly positions = new Map<string, number>(); // group → next offset
  readonly appended = new Signal();
  readonly consumed = new Signal();

  constructor(
    readonly topic: string,
    readonly index: number,
  ) {}

  get end(): number {
    return this.base + this.log.length;
  }

  lag(): number {
    if (this.positions.size === 0) return 0;
    return this.end - Math.min(...this.positions.values());
  }

  /** Drops records every group has consumed; without groups keeps the newest `retain`. */
  trim(retain: number): void {
    const keepFrom = this.positions.size > 0 ? Math.min(...this.positions.values()) : Math.max(this.base, this.end - retain);
    const drop = keepFrom - this.base;
    if (drop > 0) {
      this.log = this.log.slice(drop);
      this.base = keepFrom;
    }
  }
}

class EmbeddedTopic<T> implements Topic<T> {
  readonly partitions: Array<Partition<T>>;
  constructor(
    readonly name: string,
    private readonly options: EmbeddedTransportOptions,
    private readonly isClosed: () => boolean,
  ) {
    this.partitions = Array.from({ length: options.partitions }, (_, i) => new Partition<T>(name, i));
  }

  async publish(records: Array<OutgoingRecord<T>>): Promise<void> {
    for (const record of records) {
      const partition = this.partitions[partitionFor(record.key, this.partitions.length)]!;
      // Backpressure: wait while the slowest group is a full buffer behind.
      while (partition.lag() >= this.options.bufferRecords && !this.isClosed()) await partition.consumed.wait();
      if (this.isClosed()) throw new Error(`transport closed; cannot publish to ${this.name}`);
      partition.log.push({
        topic: this.name,
        partition: partition.index,
        offset: partition.end,
        key: record.key,
        value: record.value,
        timestamp: record.timestamp,
        headers: record.headers ?? {},
      });
      partition.trim(this.options.bufferRecords);
      partition.appended.fire();
    }
  }
}

/**
 * In-process topics: partitioned, ordered per key, bounded (publishers wait
 * for the slowest consumer group), with per-group positions that advance
 * only when a handler's promise resolves. Nothing survives the process; the
 * durable state of a pipeline lives in its stores.
 */
export class EmbeddedTransport implements Transport {
  readonly kind = "embedded";
  private readonly topics = new Map<string, EmbeddedTopic<unknown>>();
  private readonly consumers = new Set<EmbeddedConsumer>();
  private closed = false;

  constructor(readonly options: EmbeddedTransportOptions = { partitions: 4, bufferRecords: 10_000 }) {
    if (!Number.isInteger(options.partitions) || options.partitions < 1) throw new RangeError("partitions must be an integer >= 1");
    if (!Number.isInteger(options.bufferRecords) || options.bufferRecords < 1) throw new RangeError("bufferRecords must be an integer >= 1");
  }

  topic<T>(name: string): Topic<T> {
    return this.topicImpl<T>(name);
  }

  private topicImpl<T>(name: string): EmbeddedTopic<T> {
    let topic = this.topics.get(name);
    if (!topic) this.topics.set(name, (topic = new EmbeddedTopic<unknown>(name, this.options, () => this.closed)));
    return topic as EmbeddedTopic<T>;
  }

  async consume<T>(topicName: string, options: ConsumeOptions, handler: BatchHandler<T>): Promise<Consumer> {
    if (this.closed) throw new Error("transport closed");
    const topic = this.topicImpl<T>(topicName);
    const consumer = new EmbeddedConsumer(topic.partitions as Array<Partition<unknown>>, options, handler as BatchHandler<unknown>, this.options.metrics);
    this.consumers.add(consumer);
    consumer.start();
    return {
      stop: async () => {
        await consumer.stop();
        this.consumers.delete(consumer);
      },
    };
  }

  /** Records published but not yet consumed by every group, over all topics. */
  pending(): number {
    let total = 0;
    for (const topic of this.topics.values()) for (const partition of topic.partitions) total += partition.lag();
    return total;
  }

  /** Resolves once every consumer group has handled everything published so far. */
  async drain(): Promise<void> {
    while (this.pending() > 0 && !this.closed) await new Promise((resolve) => setTimeout(resolve, 2));
  }

  async close(): Promise<void> {
    await Promise.all([...this.consumers].map((consumer) => consumer.stop()));
    this.consumers.clear();
    this.closed = true;
    for (const topic of this.topics.values()) {
      for (const partition of topic.partitions) {
        partition.appended.fire();
        partition.consumed.fire();
      }
    }
  }
}

class EmbeddedConsumer {
  private stopping = false;
  private loops: Array<Promise<void>> = [];

  constructor(
    private readonly partitions: Array<Partition<unknown>>,
    private readonly options: ConsumeOptions,
    private readonly handler: BatchHandler<unknown>,
    private readonly metrics?: Metrics,
  ) {
    for (const partition of partitions) {
      if (partition.positions.has(options.group)) throw new Error(`group ${options.group} already consumes ${partition.topic}`);
      partition.positions.set(options.group, options.from === "latest" ? partition.end : partition.base);
    }
  }

  start(): void {
    this.loops = this.partitions.map((partition) => this.run(partition));
  }

  private async run(partition: Partition<unknown>): Promise<void> {
    const group = this.options.group;
    const maxBatch = this.options.maxBatch ?? 500;
    while (!this.stopping) {
      const position = partition.positions.get(group)!;
      if (position >= partition.end) {
        await Promise.race([partition.appended.wait(), this.stopped]);
        continue;
      }
      const from = position - partition.base;
      const batch = partition.log.slice(from, from + maxBatch);
      // A handler that throws has not taken the batch: retry it (at least once
      // delivery). Stages dead-letter bad records themselves, so what gets
      // here is a transient failure such as a store that cannot write.
      try {
        await withRetry(() => this.handler(batch), {
          initialDelayMs: 50,
          maxDelayMs: 5_000,
          attempts: Infinity,
          shouldStop: () => this.stopping,
          onError: logRetry(`handler of group ${group} on ${partition.topic}[${partition.index}]`),
        });
      } catch {
        return; // stopping: the batch stays unconsumed
      }
      partition.positions.set(group, position + batch.length);
      this.metrics?.consumerLag.set({ topic: partition.topic, group, partition: String(partition.index) }, partition.end - (position + batch.length));
      partition.trim(Number.MAX_SAFE_INTEGER);
      partition.consumed.fire();
      // Let I/O in between batches: a saturated pipeline (a full-speed replay) must not
      // starve the HTTP API, timers or signal handlers, which only run between macrotasks.
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private wake!: () => void;
  private readonly stopped = new Promise<void>((resolve) => (this.wake = resolve));

  async stop(): Promise<void> {
    this.stopping = true;
    this.wake();
    await Promise.allSettled(this.loops);
    for (const partition of this.partitions) {
      partition.positions.delete(this.options.group);
      partition.consumed.fire();
    }
  }
}
