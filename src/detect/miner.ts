import type { Resource } from "../core/types.js";
import { capacityOf, expectedMax, firstOverCompute, last, type Detector, type DetectorView, type Finding } from "./detector.js";

/** Share of steps a profile must spend at or below a tenth of capacity to count as mostly idle. */
export const IDLE_SHARE = 0.9;

export function isMostlyIdle(view: DetectorView, resource: Resource = "cpu"): boolean {
  const baseline = view.baseline(resource);
  return capacityOf(view, resource) !== null && baseline.steps > 0 && baseline.idleSteps / baseline.steps >= IDLE_SHARE;
}

/**
 * Miner-like behaviour on a workload whose profile is mostly idle and has
 * never run hot: CPU (or GPU) near the maximum it may use for `steps`
 * consecutive steps, or held back (a miner capped to a share of the
 * machine, to go unnoticed) at `heldShare` of it and `heldFactor` × its
 * most-ever or more for `heldSteps`. Unusual outbound network is noted.
 */
export class MinerDetector implements Detector {
  readonly type = "miner" as const;
  constructor(
    private readonly steps = 2,
    private readonly nearMax = 0.8,
    /** A profile that has ever run above this share of capacity is not "mostly idle" enough to call this mining. */
    private readonly neverAbove = 0.6,
    private readonly heldSteps = 6,
    private readonly heldShare = 0.3,
    private readonly heldFactor = 2,
  ) {}

  check(view: DetectorView): Finding | null {
    return firstOverCompute((resource) => this.checkResource(view, resource));
  }

  private checkResource(view: DetectorView, resource: Resource): Finding | null {
    const capacity = capacityOf(view, resource);
    if (capacity === null || !isMostlyIdle(view, resource)) return null;
    const expected = expectedMax(view, resource);
    if (expected > capacity * this.neverAbove) return null;
    // Near the maximum for a few steps, or held back for longer.
    const allAbove = (steps: number, threshold: number) => {
      const values = last(view, resource, steps);
      return values.length === steps && values.every((v) => v >= threshold) ? values : null;
    };
    const values = allAbove(this.steps, Math.max(capacity * this.nearMax, expected * 1.2)) ?? allAbove(this.heldSteps, Math.max(capacity * this.heldShare, expected * this.heldFactor));
    if (!values) return null;
    const steps = values.length;
    const observed = Math.min(...values);
    const tx = last(view, "net_tx", 1)[0];
    const txMax = expectedMax(view, "net_tx");
    const unusualNetwork = tx !== undefined && txMax > 0 && tx > 2 * txMax;
    const idle = view.baseline(resource);
    return {
      resource,
      observed,
      expected,
      score: observed / Math.max(expected, 1e-9),
      severity: "critical",
      startIndex: view.ts.length - steps,
      message: `${resource === "cpu" ? "CPU" : "GPU"} at ${observed.toPrecision(3)} of ${capacity} for ${steps} steps on a workload idle ${((idle.idleSteps / idle.steps) * 100).toFixed(0)}% of the time${unusualNetwork ? ", with unusual outbound traffic" : ""}`,
    };
  }
}
