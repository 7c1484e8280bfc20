import { concatWith, defer, from, mergeMap, type Observable, type OperatorFunction } from "rxjs";
import type { Sample, WindowAggregate } from "../core/types.js";
import { WindowAggregator, type RejectReason, type WindowingOptions } from "./windows.js";

/**
 * An idle tick: event time has reached `watermarkMs` even if no sample says
 * so: for every pair, for one pair when `pair` names it, or for the pairs of
 * a lane when only `lane` does.
 */
export interface WatermarkTick {
  watermarkMs: number;
  /** pairKey(image, user): only this pair's watermark moves. */
  pair?: string;
  /** The lane (partition) its samples come from; without `pair`, that lane's floor moves. */
  lane?: number;
}

/** A sample and the lane (partition) it was read from. */
export interface LaneSample {
  sample: Sample;
  lane: number;
}

export type WindowInput = Sample | LaneSample | WatermarkTick;

export type WindowEvent = { kind: "window"; window: WindowAggregate } | { kind: "rejected"; reason: RejectReason; sample: Sample };

function isTick(input: WindowInput): input is WatermarkTick {
  return (input as WatermarkTick).watermarkMs !== undefined;
}

function isLaneSample(input: Sample | LaneSample): input is LaneSample {
  return (input as LaneSample).lane !== undefined && (input as LaneSample).sample !== undefined;
}

function tick(aggregator: WindowAggregator, { watermarkMs, pair, lane }: WatermarkTick): WindowAggregate[] {
  if (pair !== undefined) return aggregator.advancePairWatermark(pair, watermarkMs, lane);
  if (lane !== undefined) return aggregator.advanceLaneFloor(lane, watermarkMs);
  return aggregator.advanceWatermark(watermarkMs);
}

const asWindows = (windows: WindowAggregate[]): WindowEvent[] => windows.map((window) => ({ kind: "window", window }));

/**
 * Event-time windows per (image, user) as an RxJS operator. Each subscription
 * gets its own WindowAggregator; windows still open when the source
 * completes are closed and emitted (end of a replayed trace). `created` is
 * told each subscription's aggregator (to report what it holds).
 */
export function windowByPair(options: WindowingOptions, created?: (aggregator: WindowAggregator) => void): OperatorFunction<WindowInput, WindowEvent> {
  return (source: Observable<WindowInput>) =>
    defer(() => {
      const aggregator = new WindowAggregator(options);
      created?.(aggregator);
      return source.pipe(
        mergeMap((input): WindowEvent[] => {
          if (isTick(input)) return asWindows(tick(aggregator, input));
          const { sample, lane } = isLaneSample(input) ? input : { sample: input, lane: undefined };
          const result = aggregator.add(sample, lane);
          const events = asWindows(result.closed);
          if (result.rejected) events.push({ kind: "rejected", reason: result.rejected, sample });
          return events;
        }),
        concatWith(defer(() => from(asWindows(aggregator.flush())))),
      );
    });
}
