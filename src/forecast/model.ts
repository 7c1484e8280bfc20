import { QuantileSketch } from "../core/sketch.js";
import { RESOURCES, type Profile, type Resource, type SketchState, type WindowAggregate } from "../core/types.js";
import { userFactor } from "../core/user-factor.js";
import type { DecayingHistogram } from "./decaying-histogram.js";

/**
 * A forecaster for one profile key. It folds in windows in event time and
 * predicts the next horizon per resource. Models are pure: no I/O, no wall
 * clock; their whole state round-trips through `toState` / `restore`.
 */
export interface ForecastModel {
  /**
   * `peers`, given to exact pairs only: the limit the pair's fallback levels
   * (its image, its user, everyone: per resource the first with windows of
   * other pairs) set before this window, asked while the window is folded
   * and its prediction made, and only if the model wants it; a model may
   * take it as its prior (a young pair is not left to what its few windows
   * say).
   */
  observe(window: WindowAggregate, peers?: Peers): void;
  predict(): Profile["resources"];
  toState(): unknown;
  /**
   * What the model expects of the resource's usage for the step its last
   * prediction is for, before the margin that makes the limit (null where
   * it has none); for reports, changing nothing. Optional.
   */
  forecast?(resource: Resource): number | null;
}

/**
 * What a factory's models share and learn together (a model learned from
 * every key's windows, overruns pooled over all keys): the forecast stage
 * saves it with the keys' states whenever `generation` moved, and restores
 * it before the first window.
 */
export interface SharedModelState {
  /** Moves each time the shared state changes. */
  readonly generation: number;
  toState(): unknown;
  /** Replaces the state with a saved copy; throws on one it cannot read. */
  restore(state: unknown): void;
  /**
   * Forgets everything, as a new process starts (before any `restore`):
   * models made before it are not to be used after it.
   */
  reset?(): void;
  /** Made ready before the first window (a training backend). */
  prepare?(): Promise<void>;
}

/** A number per resource: a profile's limits or its p90s. */
export type PerResource = Partial<Record<Resource, number>>;
/** A profile's limits, per resource. */
export type Limits = PerResource;
/** A user with no pairs: `userFactorOf`'s pairs where none are known (factor 1). */
export const NO_PAIRS: ReadonlyMap<string, PerResource> = new Map();

/** The limit a pair's peers ran at for a resource, NaN where there is none (see `ForecastModel.observe`). */
export type Peers = (resource: Resource) => number;

/** A fallback level as a pair's prior reads it: its profile's limits (read only when needed). */
export interface PeerLevel {
  readonly limits: Limits | undefined;
  /**
   * Where the level is the pair's image over all users: the pair's user's
   * factor for a resource (`userFactorOf`), which scales the level's limit,
   * as the allocation hierarchy scales it for a pair with no history.
   */
  readonly userFactor?: (resource: Resource) => number;
}

/**
 * The pair's peer limit for a resource from its fallback levels that folded
 * windows of other pairs, most specific first: the first with a positive
 * limit for it; NaN if none has.
 */
export function peerLimit(levels: readonly PeerLevel[], resource: Resource): number {
  for (const level of levels) {
    const limit = level.limits?.[resource];
    if (limit !== undefined && limit > 0 && limit < Infinity) return level.userFactor ? limit * level.userFactor(resource) : limit;
  }
  return Number.NaN;
}

/**
 * How a user's pairs compare with their images over all users, for a
 * resource: the user factor (`userFactor`: geometric mean, clamped) of the
 * ratios of each pair's p90 to its image level's p90, the pair's own image
 * (`image`) left out; 1 where there is no ratio. `pairs`: the user's pairs'
 * p90s by image; `imageLevel`: an image level's p90s.
 */
export function userFactorOf(pairs: ReadonlyMap<string, PerResource>, imageLevel: (image: string) => PerResource | undefined, image: string, resource: Resource): number {
  const ratios: number[] = [];
  for (const [other, own] of pairs) {
    if (other === image) continue;
    const mine = own[resource];
    const all = imageLevel(other)?.[resource];
    if (mine !== undefined && all !== undefined) ratios.push(mine / all);
  }
  // In one order however the pairs were listed: the same factor to the last bit.
  return userFactor(ratios.sort((a, b) => a - b));
}

/**
 * Whether a level folded windows of a pair other than the one asking:
 * `contributors` pairs fed it, `fedByAsker` tells whether the asker is one.
 * Counts, not the pairs themselves: the everyone level of a large trace has
 * tens of thousands, and a walk of their keys (what a `for … in` over a
 * record costs, however early it stops) made this most of a live replay.
 */
export function fedByOthers(contributors: number, fedByAsker: boolean): boolean {
  return contributors > (fedByAsker ? 1 : 0);
}

/** One field of a profile's predictions (its limits, its p90s), per resource where it is a number; undefined for no profile. */
export function predicted(resources: Profile["resources"], field: "limit" | "p90"): PerResource;
export function predicted(resources: Profile["resources"] | undefined, field: "limit" | "p90"): PerResource | undefined;
export function predicted(resources: Profile["resources"] | undefined, field: "limit" | "p90"): PerResource | undefined {
  if (!resources) return undefined;
  const values: PerResource = {};
  for (const [resource, prediction] of Object.entries(resources) as Array<[Resource, Partial<Record<"limit" | "p90", unknown>> | null]>) {
    const value = prediction?.[field];
    if (typeof value === "number") values[resource] = value;
  }
  return values;
}

/** A named kind of model: what config files call it, and how to build or restore one. */
export interface ModelFactory {
  readonly name: string;
  /** Bumped when the state layout changes; older states are discarded, not misread. */
  readonly stateVersion: number;
  create(): ForecastModel;
  restore(state: unknown): ForecastModel;
  /** State every model of this factory shares, if any. */
  readonly shared?: SharedModelState;
  /** Whether its models take the peers' prior (`ForecastModel.observe`): the stage then looks the pairs' fallback levels up. */
  readonly readsPeers?: boolean;
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
