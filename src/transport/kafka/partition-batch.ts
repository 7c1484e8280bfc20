// What both Kafka clients do with the records of one partition: decode,
// dead-letter what cannot be decoded, hand the rest to the stage in chunks,
// and commit only as far as the stage says its effects are durable.
import { AugurError } from "../../core/errors.js";
import type { Metrics } from "../../core/metrics.js";
import { sendToDeadLetter } from "../dead-letter.js";
import type { BatchHandler, TopicRecord, Transport } from "../topic.js";

/** One fetched message, as either client gives it, reduced to what augur reads. */
export interface RawMessage {
  offset: number;
  key: string;
  value: Buffer | null;
  timestamp: number;
  headers: Record<string, string>;
}

export interface PartitionBatchContext {
  transport: Transport;
  /** Decodes a value of `topic`; a DecodeError sends the record to the dead letter, other errors fail the batch. */
  decode(topic: string, bytes: Buffer | null): Promise<unknown>;
  /** The logical topic (without namespace) and the consumer group (the stage name for dead letters). */
  topic: string;
  group: string;
  handler: BatchHandler<unknown>;
  maxBatch: number;
  /** Per partition: the handler's last `resumeFrom`, which commits must not pass. */
  hold: Map<number, number>;
  metrics?: Metrics;
  /** Commits `offset` (the next one to read) for the partition. */
  commit(partition: number, offset: number): Promise<void>;
  /** After a chunk was handled and committed (kafkajs resolves offsets and heartbeats here). */
  afterChunk?(partition: number, lastOffset: number): Promise<void>;
  /** False once the consumer stops or loses the partition: the rest of the batch is left for the next owner. */
  active(): boolean;
  /** The partition's end (high watermark) as of this fetch, where known, for the lag metric. */
  highWatermark?: number;
}

export async function handlePartitionBatch(ctx: PartitionBatchContext, partition: number, messages: RawMessage[]): Promise<void> {
  let chunk: Array<TopicRecord<unknown>> = [];
  const flush = async () => {
    if (chunk.length === 0) return;
    const records = chunk;
    chunk = [];
    const result = await ctx.handler(records);
    const last = records[records.length - 1]!.offset;
    // The handler may keep records whose effects are not yet durable (open windows):
    // then only the offsets before them count as consumed.
    const held = result && typeof result.resumeFrom === "number" ? Math.min(result.resumeFrom, last + 1) : undefined;
    if (held === undefined || held > last) ctx.hold.delete(partition);
    else ctx.hold.set(partition, held);
    await ctx.commit(partition, held ?? last + 1);
    // Records behind the partition's end as of this fetch (as kafka-consumer-groups reports lag).
    if (ctx.highWatermark !== undefined) ctx.metrics?.consumerLag.set({ topic: ctx.topic, group: ctx.group, partition: String(partition) }, Math.max(0, ctx.highWatermark - (last + 1)));
    await ctx.afterChunk?.(partition, last);
  };
  for (const message of messages) {
    if (!ctx.active()) break;
    let value: unknown;
    try {
      value = await ctx.decode(ctx.topic, message.value);
    } catch (error) {
      if (!(error instanceof AugurError) || error.retriable) throw error; // registry away: retry the batch
      await flush();
      const raw = message.value ?? Buffer.alloc(0);
      await sendToDeadLetter(ctx.transport, ctx.group, { topic: ctx.topic, key: message.key, value: raw, timestamp: message.timestamp, raw }, error, ctx.metrics);
      await ctx.commit(partition, Math.min(ctx.hold.get(partition) ?? Infinity, message.offset + 1));
      await ctx.afterChunk?.(partition, message.offset);
      continue;
    }
    chunk.push({ topic: ctx.topic, partition, offset: message.offset, key: message.key, value, timestamp: message.timestamp, headers: message.headers, raw: message.value ?? undefined });
    if (chunk.length >= ctx.maxBatch) await flush();
  }
  if (ctx.active()) await flush();
}

/**
 * Event-time alignment across the partitions one consumer holds: a partition
 * whose records run more than `alignMs` ahead of the slowest partition that
 * still has records is paused until the others catch up, so stages that
 * merge partitions (fallback-level models) see time move forward together.
 */
export class EventTimeAligner {
  private readonly progress = new Map<number, { ts: number; atEnd: boolean }>();
  private readonly paused = new Set<number>();

  constructor(
    private readonly alignMs: number,
    private readonly pause: (partition: number) => void,
    private readonly resume: (partition: number) => void,
    /** A paused partition resumes once its lead is within this share of alignMs (1: as soon as it is not ahead). */
    private readonly resumeWithin = 1,
  ) {}

  observe(partition: number, ts: number, atEnd: boolean): void {
    if (!(this.alignMs > 0) || !Number.isFinite(ts)) return;
    this.progress.set(partition, { ts, atEnd });
    let slowest = Infinity;
    for (const state of this.progress.values()) if (!state.atEnd && state.ts < slowest) slowest = state.ts;
    for (const [p, state] of this.progress) {
      const lead = state.atEnd ? 0 : state.ts - slowest;
      if (lead > this.alignMs && !this.paused.has(p)) {
        this.paused.add(p);
        this.pause(p);
      } else if (lead <= this.alignMs * this.resumeWithin && this.paused.has(p)) {
        this.paused.delete(p);
        this.resume(p);
      }
    }
  }

  /** A new assignment: what alignment paused is resumed, and what the old one knew is forgotten. */
  reset(): void {
    for (const p of this.paused) this.resume(p);
    this.paused.clear();
    this.progress.clear();
  }
}
