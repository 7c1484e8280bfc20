import { Subject, type Subscription } from "rxjs";
import { ValidationError } from "../core/errors.js";
import { pairKey } from "../core/keys.js";
import type { Metrics } from "../core/metrics.js";
import { validateSample } from "../core/sample.js";
import type { Sample, WindowAggregate } from "../core/types.js";
import { sendToDeadLetter } from "../transport/dead-letter.js";
import { TOPICS, type Consumer, type TopicRecord, type Transport } from "../transport/topic.js";
import { windowByPair, type WindowEvent, type WindowInput } from "./operators.js";
import type { WindowingOptions } from "./windows.js";

export interface AggregateStageOptions extends WindowingOptions {
  /** What happens to a sample for a window that has closed. */
  latePolicy: "drop" | "dead-letter";
  /** What happens to a second sample of a workload at the same timestamp. */
  duplicatePolicy: "drop" | "dead-letter";
  /**
   * Live runs only: when no sample arrived for this long (wall time), move the
   * watermark as far as wall time says, so quiet pairs' windows still close.
   * 0 turns it off (replays, where event time alone rules).
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
  private consumer: Consumer | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private lastRecordWallMs = Date.now();
  private maxEventTs = -Infinity;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly transport: Transport,
    private readonly options: AggregateStageOptions,
    private readonly metrics: Metrics,
  ) {
    this.subscription = this.inputs.pipe(windowByPair(options)).subscribe((event) => this.emitted.push(event));
  }

  async start(): Promise<void> {
    this.consumer = await this.transport.consume<unknown>(TOPICS.samples, { group: "augur-aggregate" }, (batch) => this.serialised(() => this.handle(batch)));
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
      let sample: Sample;
      try {
        sample = validateSample(record.value);
      } catch (error) {
        await sendToDeadLetter(this.transport, STAGE, record, error, this.metrics);
        continue;
      }
      if (sample.ts > this.maxEventTs) this.maxEventTs = sample.ts;
      this.inputs.next(sample);
      await this.publish(record);
    }
  }

  private async publish(origin?: TopicRecord<unknown>): Promise<void> {
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
    await this.transport.topic<WindowAggregate>(TOPICS.windows).publish(
      windows.map((window) => ({ key: pairKey(window.image, window.user), value: window, timestamp: window.windowEnd })),
    );
    this.metrics.recordsOut.inc({ stage: STAGE }, windows.length);
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
