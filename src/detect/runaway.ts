import { expectedMax, last, type Detector, type DetectorView, type Finding } from "./detector.js";
import { isMostlyIdle } from "./miner.js";

/**
 * CPU runaway: `steps` consecutive steps of CPU far above anything the
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
    if (isMostlyIdle(view)) return null;
    const values = last(view, "cpu", this.steps);
    if (values.length < this.steps) return null;
    const expected = expectedMax(view, "cpu");
    const floor = view.cpuCapacity !== null ? view.cpuCapacity * this.minShare : 0;
    const threshold = Math.max(expected * this.factor, floor);
    if (!(expected > 0) || !values.every((v) => v > threshold)) return null;
    const observed = Math.min(...values);
    return {
      resource: "cpu",
      observed,
      expected,
      score: observed / expected,
      severity: view.cpuCapacity !== null && observed > 0.9 * view.cpuCapacity ? "critical" : "warning",
      startIndex: view.ts.length - this.steps,
      message: `CPU above ${threshold.toPrecision(3)} cores for ${this.steps} steps (at least ${observed.toPrecision(3)}), against a most-ever of ${expected.toPrecision(3)}`,
    };
  }
}
