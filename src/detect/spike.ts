import type { Resource } from "../core/types.js";
import { expectedMax, last, type Detector, type DetectorView, type Finding } from "./detector.js";

/**
 * A spike: one step of CPU or memory far above anything the workload (and
 * its profile) has done, back to normal at the next step. Judged one step
 * late, so that the first step of a sustained excursion (a runaway, a
 * miner) is not called a spike. "Far above": more than `factor` × the
 * historical maximum (a robust test against the workload's own extremes,
 * in the spirit of seasonal-hybrid ESD's use of robust statistics).
 */
export class SpikeDetector implements Detector {
  readonly type = "spike" as const;
  constructor(private readonly factor = 2) {}

  check(view: DetectorView): Finding | null {
    for (const resource of ["cpu", "mem"] as Resource[]) {
      const [before, peak, after] = last(view, resource, 3);
      if (before === undefined || peak === undefined || after === undefined) continue;
      const expected = expectedMax(view, resource);
      if (!(expected > 0)) continue;
      const high = (v: number) => v > expected * this.factor;
      if (high(peak) && !high(before) && !high(after) && after <= expected * 1.2) {
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
