import type { Resource } from "../core/types.js";

/** An (image, user) pair in a replay, with dense ids for fast per-pair state. */
export interface PairRef {
  id: number;
  image: string;
  user: string;
  imageId: number;
  userId: number;
}

/**
 * A recommender under test. For every step of every workload the replay
 * first asks `limit` (which may use only what was observed before that
 * step), scores it against the usage, then calls `observe` with the usage.
 * All workloads of a pair get the pair's limit, as all tasks of an
 * Autopilot job do. `fallback` is the trace's own limit for that row, or the
 * configured default: what a policy with no data of its own should say.
 */
export interface BacktestPolicy {
  readonly name: string;
  limit(pair: PairRef, resource: Resource, ts: number, fallback: number): number;
  observe(pair: PairRef, resource: Resource, ts: number, usage: number, workload: number, limitUsed: number): void;
  /**
   * The usage the policy's model expects at the step, before the margin or
   * rule that makes its limit (null where it has none yet): asked for the
   * report's sample workloads right after `limit` for the same step, and
   * changing nothing.
   */
  forecast?(pair: PairRef, resource: Resource, ts: number): number | null;
  /** Called once the training trace has been replayed, before scoring starts. */
  endOfTraining?(): void;
  /** What the policy learned that is worth keeping across runs (JSON-safe), if anything. */
  exportModels?(): unknown;
}

export type PolicyFactory = (options: { resources: readonly Resource[] }) => BacktestPolicy;

export { PEAK_LIKE } from "../core/types.js";

/** Per-pair, per-resource state held in dense arrays of maps. */
export class PairStates<S> {
  private readonly byResource = new Map<Resource, Array<S | undefined>>();
  constructor(private readonly create: (resource: Resource, pair: PairRef) => S) {}
  get(pair: PairRef, resource: Resource): S {
    let states = this.byResource.get(resource);
    if (!states) this.byResource.set(resource, (states = []));
    let state = states[pair.id];
    if (state === undefined) states[pair.id] = state = this.create(resource, pair);
    return state;
  }
  peek(pair: PairRef, resource: Resource): S | undefined {
    return this.byResource.get(resource)?.[pair.id];
  }
}

/** `static`: the trace's own limit where it has one, otherwise the configured default. */
export function staticPolicy(): BacktestPolicy {
  return {
    name: "static",
    limit: (_pair, _resource, _ts, fallback) => fallback,
    observe: () => undefined,
  };
}
