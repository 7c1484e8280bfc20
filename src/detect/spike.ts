import type { Resource } from "../core/types.js";
import { expectedMax, last, type Detector, type DetectorView, type Finding } from "./detector.js";

/**
 * A spike: one step of CPU or memory far above anything the workload (and
 * its profile) has done, back to normal at the next step. Judged one step
 * late, so that the first step of a sustained excursion (a runaway, a
 * miner) is not called a spike. "Far above": more than `factor` × the
 * historical maximum and a floor in absolute terms (a robust test against
 * the workload's own extremes, in the spirit of seasonal-hybrid ESD's use
 * of robust statistics, where a small base makes any ratio large).
 */
export class SpikeDetector implements Detector {
  readonly type = "spike" as const;
  constructor(
    private readonly factor = 2.8,
    /** …and at least this far above it: 15% of the CPU capacity (0.25 cores without one), 256 MiB of memory. */
    private readonly minRise = { cpuShare: 0.15, cpuCores: 0.25, memoryBytes: 256 * 2 ** 20 },
  ) {}

  check(view: DetectorView): Finding | null {
    for (const resource of ["cpu", "mem"] as Resource[]) {
      const [before, peak, after] = last(view, resource, 3);
      if (before === undefined || peak === undefined || after === undefined) continue;
      const expected = expectedMax(view, resource);
      if (!(expected > 0)) continue;
      // Memory in a trace may be a fraction of an unknown size (limit 1): the floor is then a tenth of the limit.
      const rise =
        resource === "cpu"
          ? view.cpuCapacity !== null ? view.cpuCapacity * this.minRise.cpuShare : this.minRise.cpuCores
          : Math.min(this.minRise.memoryBytes, (view.memoryLimit ?? Infinity) * 0.1);
      const high = (v: number) => v > expected * this.factor && v > expected + rise;
      // Isolated: the steps on either side are within the workload's normal range.
      if (high(peak) && before <= expected * 1.2 && after <= expected * 1.2) {
        return {
          resource,
          observed: peak,
          expected,
          score: peak / expected,
          severity: peak / expected > 4 ? "critical" : "warning",
          startIndex: view.ts.length - 2,
          message: `${resource} spiked to ${peak.toPrecision(4)} for one step, ${(peak / expected).toFixed(1)}× the most this workload had used (${expected.toPrecision(4)})`,
        };
      }
    }
    return null;
  }
}
