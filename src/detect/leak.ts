import { expectedMax, last, type Detector, type DetectorView, type Finding } from "./detector.js";
import { mannKendall, theilSen } from "./stats.js";

/**
 * Memory leak: a sustained upward trend (Mann–Kendall, one-sided, over the
 * last `window` steps, the last `rising` of them each above the one before)
 * that has carried the working set past `factor` × anything the workload
 * (or its profile) held before, rising fast enough to matter. The Theil–Sen slope projects when it hits
 * its memory limit; under an hour is critical.
 */
export class LeakDetector implements Detector {
  readonly type = "memory_leak" as const;
  constructor(
    private readonly window = 6,
    private readonly rising = 3,
    private readonly factor = 1.3,
    private readonly pValue = 0.05,
    /** The last `rising` steps must add at least this share of the most-ever (a leak, not slow cache growth). */
    private readonly minRiseShare = 0.2,
  ) {}

  check(view: DetectorView): Finding | null {
    const values = last(view, "mem", this.window);
    if (values.length < this.window || values.some((v) => Number.isNaN(v))) return null;
    const tail = values.slice(-this.rising - 1);
    for (let i = 1; i < tail.length; i++) if (!(tail[i]! > tail[i - 1]!)) return null;
    const expected = expectedMax(view, "mem");
    const current = values[values.length - 1]!;
    if (!(expected > 0) || current <= expected * this.factor || current - tail[0]! < expected * this.minRiseShare) return null;
    const trend = mannKendall(values);
    if (trend.pUp > this.pValue) return null;
    const ts = view.ts.slice(-this.window);
    const slopePerMs = theilSen(values, ts);
    if (!(slopePerMs > 0)) return null;
    const limit = view.memoryLimit;
    const msToLimit = limit !== null && limit > current ? (limit - current) / slopePerMs : null;
    // The trend began where the values first rose above the step before.
    let start = values.length - 1;
    while (start > 0 && values[start - 1]! < values[start]!) start--;
    return {
      resource: "mem",
      observed: current,
      expected,
      score: -Math.log10(Math.max(trend.pUp, 1e-12)),
      severity: msToLimit !== null && msToLimit < 3_600_000 ? "critical" : "warning",
      startIndex: view.ts.length - values.length + start,
      message:
        `memory rising ${(slopePerMs * 60_000).toPrecision(3)} bytes/min (Mann–Kendall p=${trend.pUp.toPrecision(2)}), now ${current.toPrecision(4)} against a most-ever of ${expected.toPrecision(4)}` +
        (msToLimit !== null ? `; reaches its limit in ${(msToLimit / 60_000).toFixed(0)} min` : ""),
    };
  }
}
