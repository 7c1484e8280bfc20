import { Subject, type Subscription } from "rxjs";
import { ValidationError } from "../core/errors.js";
import { pairKey } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import { validateSample } from "../core/sample.js";
import type { Sample, WindowAggregate } from "../core/types.js";
import { sendToDeadLetter } from "../transport/dead-letter.js";
import { TOPICS, type Consumer, type TopicRecord, type Transport } from "../transport/topic.js";
import { windowByPair, type WindowEvent, type WindowInput } from "./operators.js";
import type { WindowAggregator, WindowingOptions } from "./windows.js";

export interface AggregateStageOptions extends WindowingOptions {
  /** What happens to a sample for a window that has closed. */
  latePolicy: "drop" | "dead-letter";
  /** What happens to a second sample of a workload at the same timestamp. */
  duplicatePolicy: "drop" | "dead-letter";
  /**
   * Live runs only: when no sample arrived for this long (wall time), move the
   * watermark as far as wall time says, so quiet pairs' windows still close;
   * and a pair with no sample in this much of its partition's event time
   * (its workloads ended while others go on) follows that partition's
   * watermark. 0 turns both off (replays, where event time alone rules).
   */
  idleWatermarkMs: number;
}

const STAGE = "aggregate";

/**
 * Samples → WindowAggregates per (image, user), in event time. Bad samples
 * go to the dead letter with the reason; late and duplicate ones follow the
 * configured policy. The windowing itself is the RxJS `windowByPair` operator,
 * driven synchronously so each consumed batch's windows are published before
 * the batch counts as consumed.
 */
export class AggregateStage {
  private readonly inputs = new Subject<WindowInput>();
  private readonly subscription: Subscription;
  private emitted: WindowEvent[] = [];
  private aggregator: WindowAggregator | null = null;
  private consumer: Consumer | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastRecordWallMs = Date.now();
  private maxEventTs = -Infinity;
  private chain: Promise<void> = Promise.resolve();
  /**
   * Per (image, user): partition, and per slide step the offset of the first
   * sample still in an open window. What a restart must re-read.
   */
  private readonly open = new Map<string, { partition: number; steps: Map<number, number>; lastTs: number }>();
  /** Per partition: the newest event time read, and that of the last look for quiet pairs. */
  private readonly partitionTime = new Map<number, { newest: number; looked: number }>();
  /**
   * Per partition, the newest offset this process has taken in (folded into
   * the windows or sent to the dead letter). A record at or before it comes
   * again (a rebalance that gives the partition back from its last commit,
   * which open windows hold back; a batch read again): its effect is already
   * here, and taking it again would dead-letter it as late, or count it twice.
   */
  private readonly takenUpTo = new Map<number, number>();

  constructor(
    private readonly transport: Transport,
    private readonly options: AggregateStageOptions,
    private readonly metrics: Metrics,
  ) {
    this.subscription = this.inputs.pipe(windowByPair(options, (aggregator) => (this.aggregator = aggregator))).subscribe((event) => this.emitted.push(event));
  }

  async start(): Promise<void> {
    const onRevoke = (partition: number) => void this.serialised(async () => this.revoke(partition));
    this.consumer = await this.transport.consume<unknown>(TOPICS.samples, { group: "augur-aggregate", onRevoke }, (batch) =>
      this.serialised(() => this.handle(batch)).then(() => ({ resumeFrom: this.resumeFrom(batch[0]!.partition) })),
    );
    if (this.options.idleWatermarkMs > 0) {
      this.idleTimer = setInterval(() => void this.serialised(() => this.idleTick()), Math.min(this.options.idleWatermarkMs, 1000));
      this.idleTimer.unref();
    }
  }

  /** Partitions are consumed concurrently; the windowing state is one, so calls take turns. */
  private serialised(task: () => Promise<void>): Promise<void> {
    const next = this.chain.then(task);
    this.chain = next.catch(() => undefined);
    return next;
  }

  private async idleTick(): Promise<void> {
    const idleFor = Date.now() - this.lastRecordWallMs;
    if (idleFor < this.options.idleWatermarkMs || this.maxEventTs === -Infinity) return;
    // Edge of the pipeline: wall time stands in for event time while nothing arrives.
    this.inputs.next({ watermarkMs: this.maxEventTs + idleFor - this.options.allowedLatenessMs });
    await this.publish();
  }

  async handle(batch: Array<TopicRecord<unknown>>): Promise<void> {
    this.lastRecordWallMs = Date.now();
    for (const record of batch) {
      this.metrics.recordsIn.inc({ stage: STAGE });
      if (record.offset <= (this.takenUpTo.get(record.partition) ?? -1)) {
        this.metrics.rejectedSamples.inc({ reason: "redelivered" });
        continue;
      }
      let sample: Sample;
      try {
        sample = validateSample(record.value);
      } catch (error) {
        await sendToDeadLetter(this.transport, STAGE, record, error, this.metrics);
        this.takenUpTo.set(record.partition, record.offset);
        continue;
      }
      if (sample.ts > this.maxEventTs) this.maxEventTs = sample.ts;
      this.inputs.next({ sample, lane: record.partition });
      // Only a sample in a window holds the partition's offset back: a late or duplicate one opens none.
      if (!this.emitted.some((event) => event.kind === "rejected" && event.sample === sample)) this.track(sample, record);
      // Taken in once what it closed is published (a failed publish keeps the windows, and the record comes again).
      await this.publish(record);
      this.takenUpTo.set(record.partition, record.offset);
    }
    await this.closeQuietPairs(batch[0]!.partition);
  }

  /**
   * A pair whose newest sample is `idleWatermarkMs` behind the newest of its
   * partition (all its workloads ended, or its host stopped sending) would
   * keep its last windows open, and with them the partition's committed
   * offset, for as long as other pairs keep the stream busy: the stream-wide
   * idle tick never comes. Such a pair follows its partition's watermark (the
   * newest event time there less the allowed lateness). Looked for at most
   * every quarter of `idleWatermarkMs` of the partition's event time.
   *
   * Every pair of the partition is then at least `idleWatermarkMs` behind
   * that watermark (a busy one is ahead of it, a quiet one has just been moved
   * past it): that is the partition's floor, and pairs the floor has passed
   * are forgotten, so a busy stream where pairs come and go holds only the
   * pairs of the last `idleWatermarkMs`.
   */
  private async closeQuietPairs(partition: number): Promise<void> {
    const { idleWatermarkMs, allowedLatenessMs } = this.options;
    const time = this.partitionTime.get(partition);
    if (idleWatermarkMs <= 0 || !time || time.newest - time.looked < idleWatermarkMs / 4) return;
    time.looked = time.newest;
    for (const [key, entry] of this.open) {
      if (entry.partition === partition && entry.lastTs <= time.newest - idleWatermarkMs) this.inputs.next({ pair: key, lane: partition, watermarkMs: time.newest - allowedLatenessMs });
    }
    this.inputs.next({ lane: partition, watermarkMs: time.newest - idleWatermarkMs - allowedLatenessMs });
    await this.publish();
  }

  private reportHeld(): void {
    if (!this.aggregator) return;
    const { openWindows, pairs, workloads } = this.aggregator.held();
    this.metrics.windowState.set({ kind: "open_windows" }, openWindows);
    this.metrics.windowState.set({ kind: "pairs" }, pairs);
    this.metrics.windowState.set({ kind: "workloads" }, workloads);
  }

  private async publish(origin?: TopicRecord<unknown>): Promise<void> {
    this.reportHeld();
    const events = this.emitted;
    this.emitted = [];
    const windows: WindowAggregate[] = [];
    for (const event of events) {
      if (event.kind === "window") {
        windows.push(event.window);
        continue;
      }
      this.metrics.rejectedSamples.inc({ reason: event.reason });
      const policy = event.reason === "late" ? this.options.latePolicy : this.options.duplicatePolicy;
      if (policy === "dead-letter" && origin) {
        const message = event.reason === "late" ? "sample arrived after its window closed" : "duplicate sample (same workload and timestamp)";
        await sendToDeadLetter(this.transport, STAGE, origin, new ValidationError(message, event.sample), this.metrics);
      }
    }
    if (windows.length === 0) return;
    try {
      await this.transport.topic<WindowAggregate>(TOPICS.windows).publish(
        windows.map((window) => ({ key: pairKey(window.image, window.user), value: window, timestamp: window.windowEnd })),
      );
    } catch (error) {
      // Not published: keep the windows for the next attempt, and keep their samples uncommitted.
      this.emitted = [...windows.map((window): WindowEvent => ({ kind: "window", window })), ...this.emitted];
      throw error;
    }
    for (const window of windows) this.closed(window);
    this.metrics.recordsOut.inc({ stage: STAGE }, windows.length);
  }

  private track(sample: Sample, record: TopicRecord<unknown>): void {
    const key = pairKey(sample.image, sample.user);
    let entry = this.open.get(key);
    if (!entry) {
      entry = { partition: record.partition, steps: new Map(), lastTs: sample.ts };
      this.open.set(key, entry);
    }
    entry.lastTs = Math.max(entry.lastTs, sample.ts);
    const time = this.partitionTime.get(record.partition);
    if (!time) this.partitionTime.set(record.partition, { newest: sample.ts, looked: sample.ts });
    else time.newest = Math.max(time.newest, sample.ts);
    const step = Math.floor(sample.ts / this.options.slideMs);
    if (!entry.steps.has(step)) entry.steps.set(step, record.offset);
  }

  /** A window [start, end) closed: samples before start + slide are in no open window of this pair. */
  private closed(window: WindowAggregate): void {
    const key = pairKey(window.image, window.user);
    const entry = this.open.get(key);
    if (!entry) return;
    const done = Math.floor(window.windowStart / this.options.slideMs) + 1;
    for (const step of entry.steps.keys()) if (step < done) entry.steps.delete(step);
    if (entry.steps.size === 0) this.open.delete(key);
  }

  /**
   * The offset a restart must re-read `partition` from: the first sample in a
   * window not yet published. Undefined when every sample read is in a
   * published window.
   */
  resumeFrom(partition: number): number | undefined {
    let first = Infinity;
    for (const entry of this.open.values()) {
      if (entry.partition !== partition) continue;
      for (const offset of entry.steps.values()) if (offset < first) first = offset;
    }
    return Number.isFinite(first) ? first : undefined;
  }

  /**
   * A rebalance gave `partition` to another member, which reads it again from
   * the last commit (held back to the first sample of a window not yet
   * published) and publishes its windows: what this process kept of it is
   * dropped, so none of those windows is published twice, late, from here.
   */
  revoke(partition: number): void {
    const pairs = new Set<string>();
    for (const [key, entry] of this.open) {
      if (entry.partition !== partition) continue;
      pairs.add(key);
      this.open.delete(key);
    }
    // Windows of its pairs kept from a publish that failed.
    this.emitted = this.emitted.filter((event) => event.kind !== "window" || !pairs.has(pairKey(event.window.image, event.window.user)));
    this.aggregator?.dropLane(partition);
    this.partitionTime.delete(partition);
    this.takenUpTo.delete(partition);
    this.reportHeld();
  }

  /** Closes every open window and publishes it (end of a replay, shutdown). */
  async flush(): Promise<void> {
    await this.serialised(async () => {
      this.inputs.complete();
      await this.publish();
    });
  }

  async stop(options: { flush?: boolean } = {}): Promise<void> {
    if (this.idleTimer) clearInterval(this.idleTimer);
    await this.consumer?.stop();
    this.consumer = null;
    if (options.flush) await this.flush();
    this.subscription.unsubscribe();
  }
}
