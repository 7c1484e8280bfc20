import type { Resource } from "../core/types.js";
import { last, type Detector, type DetectorView, type Finding } from "./detector.js";

/** Per resource: at or below this, the resource counts as unused; above `active`, as used. */
const UNUSED: Partial<Record<Resource, { quiet: number; active: number }>> = {
  gpu_util: { quiet: 0.01, active: 0.1 },
  gpu_mem: { quiet: 16 * 2 ** 20, active: 256 * 2 ** 20 },
  net_tx: { quiet: 1024, active: 256 * 1024 },
  net_rx: { quiet: 1024, active: 256 * 1024 },
  disk_read: { quiet: 1024, active: 1 << 20 },
  disk_write: { quiet: 1024, active: 1 << 20 },
};

/**
 * Never-seen behaviour: a resource the workload (and its profile) has never
 * used, after a full warm-up, is now clearly in use: a GPU on a CPU-only
 * image, network on an image that never talked, disk on one that never wrote.
 */
export class NeverSeenDetector implements Detector {
  readonly type = "never_seen" as const;

  check(view: DetectorView): Finding | null {
    for (const [resource, level] of Object.entries(UNUSED) as Array<[Resource, { quiet: number; active: number }]>) {
      const [value] = last(view, resource, 1);
      if (value === undefined || Number.isNaN(value) || value <= level.active) continue;
      const baseline = view.baseline(resource);
      const profile = view.profileMax(resource);
      if (baseline.max > level.quiet || (profile !== null && profile > level.quiet)) continue;
      return {
        resource,
        observed: value,
        expected: Math.max(baseline.max, profile ?? 0),
        score: value / level.active,
        severity: resource.startsWith("gpu") ? "critical" : "warning",
        startIndex: view.ts.length - 1,
        message: `${resource} in use (${value.toPrecision(3)}) on a workload that had never used it in ${baseline.steps} steps`,
      };
    }
    return null;
  }
}
