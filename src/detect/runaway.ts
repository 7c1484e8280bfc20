import type { Resource } from "../core/types.js";
import { capacityOf, expectedMax, firstOverCompute, last, type Detector, type DetectorView, type Finding } from "./detector.js";
import { isMostlyIdle } from "./miner.js";

/**
 * Runaway: `steps` consecutive steps of CPU (or GPU) use far above anything the
 * workload (or its profile) has done: more than `factor` × its historical
 * maximum and at least `minShare` of its capacity. A workload whose profile
 * is mostly idle is left to the miner detector.
 */
export class RunawayDetector implements Detector {
  readonly type = "cpu_runaway" as const;
  constructor(
    private readonly steps = 3,
    private readonly factor = 1.5,
    private readonly minShare = 0.3,
  ) {}

  check(view: DetectorView): Finding | null {
    return firstOverCompute((resource) => this.checkResource(view, resource));
  }

  private checkResource(view: DetectorView, resource: Resource): Finding | null {
    if (isMostlyIdle(view, resource)) return null;
    const values = last(view, resource, this.steps);
    if (values.length < this.steps) return null;
    const expected = expectedMax(view, resource);
    const capacity = capacityOf(view, resource);
    const floor = capacity !== null ? capacity * this.minShare : 0;
    const threshold = Math.max(expected * this.factor, floor);
    if (!(expected > 0) || !values.every((v) => v > threshold)) return null;
    const observed = Math.min(...values);
    const unit = resource === "cpu" ? "cores" : "GPUs";
    return {
      resource,
      observed,
      expected,
      score: observed / expected,
      severity: capacity !== null && observed > 0.9 * capacity ? "critical" : "warning",
      startIndex: view.ts.length - this.steps,
      message: `${resource === "cpu" ? "CPU" : "GPU"} above ${threshold.toPrecision(3)} ${unit} for ${this.steps} steps (at least ${observed.toPrecision(3)}), against a most-ever of ${expected.toPrecision(3)}`,
    };
  }
}
