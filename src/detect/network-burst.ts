import type { Resource } from "../core/types.js";
import { expectedMax, last, type Detector, type DetectorView, type Finding } from "./detector.js";

/** Bytes per second below which a network history counts as "none" (left to the never-seen detector). */
export const QUIET_BYTES_PER_SECOND = 1024;

/**
 * Network burst: received or sent bytes per second more than `factor` × the
 * most the workload (or its profile) has moved, and at least `minBytes`
 * above it, at this step.
 */
export class NetworkBurstDetector implements Detector {
  readonly type = "network_burst" as const;
  constructor(
    private readonly factor = 5,
    private readonly minBytes = 2 << 20,
  ) {}

  check(view: DetectorView): Finding | null {
    for (const resource of ["net_tx", "net_rx"] as Resource[]) {
      const [value] = last(view, resource, 1);
      const expected = expectedMax(view, resource);
      if (value === undefined || Number.isNaN(value) || expected < QUIET_BYTES_PER_SECOND) continue;
      if (value > expected * this.factor && value > expected + this.minBytes) {
        return {
          resource,
          observed: value,
          expected,
          score: value / expected,
          severity: value / expected > 10 ? "critical" : "warning",
          startIndex: view.ts.length - 1,
          message: `${resource === "net_tx" ? "sent" : "received"} ${(value / 1e6).toFixed(2)} MB/s, ${(value / expected).toFixed(1)}× the most this workload had moved`,
        };
      }
    }
    return null;
  }
}
