import { QuantileSketch } from "../core/sketch.js";
import { RESOURCES, type Profile, type Resource, type SketchState, type WindowAggregate } from "../core/types.js";
import type { DecayingHistogram } from "./decaying-histogram.js";

/**
 * A forecaster for one profile key. It folds in windows in event time and
 * predicts the next horizon per resource. Models are pure: no I/O, no wall
 * clock; their whole state round-trips through `toState` / `restore`.
 */
export interface ForecastModel {
  observe(window: WindowAggregate): void;
  predict(): Profile["resources"];
  toState(): unknown;
}

/** A named kind of model: what config files call it, and how to build or restore one. */
export interface ModelFactory {
  readonly name: string;
  /** Bumped when the state layout changes; older states are discarded, not misread. */
  readonly stateVersion: number;
  create(): ForecastModel;
  restore(state: unknown): ForecastModel;
}

/** Reads a saved `{ resources: { <resource>: T } }` state, refusing unknown resources and non-objects. */
export function savedResources<T>(state: unknown, kind: string): Array<[Resource, T]> {
  const parsed = state as { resources?: Record<string, T | undefined> };
  if (typeof parsed !== "object" || parsed === null || typeof parsed.resources !== "object" || parsed.resources === null) {
    throw new RangeError(`not a ${kind} model state`);
  }
  return Object.entries(parsed.resources).map(([name, saved]) => {
    if (!(RESOURCES as readonly string[]).includes(name) || !saved) throw new RangeError(`unknown resource ${name} in model state`);
    return [name as Resource, saved];
  });
}

/** Adds every sample a window's sketch holds (bucket value, count) to a histogram at event time `ts`. */
export function foldSketch(histogram: DecayingHistogram, sketch: SketchState, ts: number): void {
  QuantileSketch.fromState(sketch).forEachBucket((value, weight) => histogram.add(value, weight, ts));
}
