import { expectedMax, last, type Detector, type DetectorView, type Finding, type Severity } from "./detector.js";
import { mannKendall, theilSen } from "./stats.js";

/** Hourly means before a slow trend that it is compared with, at least (a day). */
const MIN_REFERENCE_BLOCKS = 24;
/** A slow rise this close to the memory limit (at its pace) needs only clear the hourly most-ever by NEAR_LIMIT_FACTOR. */
const NEAR_LIMIT_MS = 2 * 3_600_000;
const NEAR_LIMIT_FACTOR = 1.1;

/** A trend's score: how unlikely it is without one (−log10 of its Mann–Kendall p-value). */
const trendScore = (pUp: number): number => -Math.log10(Math.max(pUp, 1e-12));

/**
 * Where a leak is going: the time until `level` reaches the memory limit at
 * this slope (null: no limit, or already past it), critical under an hour,
 * and the message's note of it.
 */
function towardLimit(limit: number | null, level: number, slopePerMs: number): { msToLimit: number | null; severity: Severity; note: string } {
  const msToLimit = limit !== null && limit > level ? (limit - level) / slopePerMs : null;
  return {
    msToLimit,
    severity: msToLimit !== null && msToLimit < 3_600_000 ? "critical" : "warning",
    note: msToLimit !== null ? `; reaches its limit in ${(msToLimit / 60_000).toFixed(0)} min` : "",
  };
}

/**
 * Memory leak: a sustained upward trend (Mann–Kendall, one-sided, over the
 * last `window` steps, the last `rising` of them each above the one before)
 * that has carried the working set past `factor` × anything the workload
 * (or its profile) held before, rising fast enough to matter; or the same
 * over the hourly means of the last `trendBlocks` hours against the highest
 * hourly mean before them (a slow leak, see `slow`). The Theil–Sen slope
 * projects when it hits its memory limit; under an hour is critical.
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
    /** Hourly means a slow leak's trend is judged over, and the p-value it must reach. */
    private readonly trendBlocks = 8,
    private readonly slowPValue = 0.01,
  ) {}

  check(view: DetectorView): Finding | null {
    return this.fast(view) ?? this.slow(view);
  }

  /** A leak that outruns the working set's own noise: past the most-ever within a few steps. */
  private fast(view: DetectorView): Finding | null {
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
    const outlook = towardLimit(view.memoryLimit, current, slopePerMs);
    // The trend began where the values first rose above the step before.
    let start = values.length - 1;
    while (start > 0 && values[start - 1]! < values[start]!) start--;
    return {
      resource: "mem",
      observed: current,
      expected,
      score: trendScore(trend.pUp),
      severity: outlook.severity,
      startIndex: view.ts.length - values.length + start,
      message:
        `memory rising ${(slopePerMs * 60_000).toPrecision(3)} bytes/min (Mann–Kendall p=${trend.pUp.toPrecision(2)}), now ${current.toPrecision(4)} against a most-ever of ${expected.toPrecision(4)}` +
        outlook.note,
    };
  }

  /**
   * A slow leak (a few percent an hour, under the step-to-step noise): the
   * hourly means of the last `trendBlocks` hours rise (Mann–Kendall,
   * one-sided, p ≤ `slowPValue`; the last `rising` each above the one
   * before) to `factor` × the highest hourly mean before them (1.1 × where
   * the trend reaches the memory limit within two hours), having added
   * `minRiseShare` of it. The per-step baseline cannot see one: it
   * learns each step a look-back after it, so it rises along with the leak.
   */
  private slow(view: DetectorView): Finding | null {
    const blocks = view.blocks("mem");
    if (!blocks) return null;
    const { means, ends } = blocks;
    const w = this.trendBlocks;
    // A day of hours before the trend, at least, to compare it with.
    if (means.length < w + MIN_REFERENCE_BLOCKS && blocks.before === -Infinity) return null;
    const trend = means.slice(-w);
    if (trend.some((v) => Number.isNaN(v))) return null;
    // Still rising, hour after hour, at half the window's pace at least: a level that jumped and
    // then held has one or two steep hours among flat ones.
    const pace = (trend[w - 1]! - trend[0]!) / (w - 1);
    for (let i = w - this.rising; i < w; i++) if (!(trend[i]! - trend[i - 1]! >= pace / 2)) return null;
    let reference = blocks.before;
    for (let i = 0; i < means.length - w; i++) if (means[i]! > reference) reference = means[i]!;
    const profile = view.profileMax("mem");
    if (profile !== null && profile > reference) reference = profile;
    const current = trend[w - 1]!;
    if (!(reference > 0) || current <= reference * NEAR_LIMIT_FACTOR || current - trend[0]! < reference * this.minRiseShare) return null;
    const test = mannKendall(trend);
    if (test.pUp > this.slowPValue) return null;
    const slopePerMs = theilSen(trend, ends.slice(-w));
    if (!(slopePerMs > 0)) return null;
    const now = view.recent("mem")[view.ts.length - 1]!;
    const outlook = towardLimit(view.memoryLimit, Number.isNaN(now) ? current : Math.max(now, current), slopePerMs);
    // Past 1.3 × the hourly most-ever; or, where the limit is near, past it at all: a leak that
    // started close to its limit is OOM-killed long before it gets that far.
    const nearLimit = outlook.msToLimit !== null && outlook.msToLimit < NEAR_LIMIT_MS;
    if (current <= reference * this.factor && !nearLimit) return null;
    return {
      resource: "mem",
      observed: current,
      expected: reference,
      score: trendScore(test.pUp),
      severity: outlook.severity,
      // It began before the steps kept: at the trend's first hour at the latest.
      startIndex: 0,
      startTs: ends[ends.length - w]! - (ends[ends.length - 1]! - ends[ends.length - 2]!),
      message:
        `memory rising slowly, ${(slopePerMs * 3_600_000).toPrecision(3)} bytes/h over ${w} hourly means (Mann–Kendall p=${test.pUp.toPrecision(2)}), ` +
        `now ${current.toPrecision(4)} against an hourly most-ever of ${reference.toPrecision(4)}` +
        outlook.note,
    };
  }
}
