import type { Profile, WindowAggregate } from "../core/types.js";

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
