import { concatWith, defer, from, mergeMap, type Observable, type OperatorFunction } from "rxjs";
import type { Sample, WindowAggregate } from "../core/types.js";
import { WindowAggregator, type RejectReason, type WindowingOptions } from "./windows.js";

/** An idle tick: event time has reached `watermarkMs` even if no sample says so (for one pair, when `pair` names it). */
export interface WatermarkTick {
  watermarkMs: number;
  /** pairKey(image, user): only this pair's watermark moves. */
  pair?: string;
}

export type WindowInput = Sample | WatermarkTick;

export type WindowEvent = { kind: "window"; window: WindowAggregate } | { kind: "rejected"; reason: RejectReason; sample: Sample };

function isTick(input: WindowInput): input is WatermarkTick {
  return (input as WatermarkTick).watermarkMs !== undefined;
}

const asWindows = (windows: WindowAggregate[]): WindowEvent[] => windows.map((window) => ({ kind: "window", window }));

/**
 * Event-time windows per (image, user) as an RxJS operator. Each subscription
 * gets its own WindowAggregator; windows still open when the source
 * completes are closed and emitted (end of a replayed trace).
 */
export function windowByPair(options: WindowingOptions): OperatorFunction<WindowInput, WindowEvent> {
  return (source: Observable<WindowInput>) =>
    defer(() => {
      const aggregator = new WindowAggregator(options);
      return source.pipe(
        mergeMap((input): WindowEvent[] => {
          if (isTick(input)) return asWindows(input.pair === undefined ? aggregator.advanceWatermark(input.watermarkMs) : aggregator.advancePairWatermark(input.pair, input.watermarkMs));
          const result = aggregator.add(input);
          const events = asWindows(result.closed);
          if (result.rejected) events.push({ kind: "rejected", reason: result.rejected, sample: input });
          return events;
        }),
        concatWith(defer(() => from(asWindows(aggregator.flush())))),
      );
    });
}
