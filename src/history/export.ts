// Window history → a trace in the canonical format (../shared/DESIGN.md), so
// what the history stage kept trains and scores policies with `augur
// backtest --trace/--train`, exactly like a trace from elsewhere.
import { createHash } from "node:crypto";
import { canonicalLines, SeriesBuilder, type Trace } from "../backtest/trace.js";
import { ValidationError } from "../core/errors.js";
import { MAX_ID_LENGTH, validateId } from "../core/keys.js";
import { RESOURCES, type Resource } from "../core/types.js";
import { HISTORY_STATS, type HistoryWindow } from "./sink.js";

export type HistoryStat = (typeof HISTORY_STATS)[number];

/**
 * The workload of a pair's rows: `image@user`, or a digest of it when that
 * would be too long for an id. Windows aggregate a pair's workloads, so the
 * pair is the workload of the trace.
 */
export function pairWorkload(image: string, user: string): string {
  const joined = `${image}@${user}`;
  return joined.length <= MAX_ID_LENGTH ? joined : `pair-${createHash("sha256").update(joined).digest("hex").slice(0, 16)}`;
}

/**
 * One row per window: ts = window start, each resource's `stat` over the
 * window (its peak by default: a limit has to cover the window's peak), the
 * limits when known; written by the canonical writer every trace tool uses.
 * Windows are validated as they are read; a window with a bad id or no
 * statistic at all is refused with the reason.
 */
export function historyToCanonical(windows: HistoryWindow[], stat: HistoryStat = "max"): { csv: string; rows: number; pairs: number; refused: Array<{ image: string; user: string; ts: number; reason: string }> } {
  if (!HISTORY_STATS.includes(stat)) throw new ValidationError(`stat must be one of ${HISTORY_STATS.join(", ")}, got '${String(stat).slice(0, 40)}'`);
  const refused: Array<{ image: string; user: string; ts: number; reason: string }> = [];
  const refuse = (image: string, user: string, ts: number, reason: string) => refused.push({ image: String(image).slice(0, 80), user: String(user).slice(0, 80), ts, reason });
  const builders = new Map<string, SeriesBuilder>();
  for (const window of windows) {
    try {
      const image = validateId("image", window.image);
      const user = validateId("user", window.user);
      if (!Number.isSafeInteger(window.ts)) throw new ValidationError(`timestamp ${window.ts} is not whole milliseconds`);
      const values: Partial<Record<Resource, number>> = {};
      for (const resource of RESOURCES) {
        const value = window.stats[resource]?.[stat];
        if (value !== undefined && Number.isFinite(value)) values[resource] = value;
      }
      if (Object.keys(values).length === 0) throw new ValidationError(`no ${stat} of any resource`);
      const key = `${image}|${user}`;
      let builder = builders.get(key);
      if (!builder) builders.set(key, (builder = new SeriesBuilder(pairWorkload(image, user), image, user, RESOURCES)));
      builder.push(window.ts, values, window.limits.cpu ?? Number.NaN, window.limits.mem ?? Number.NaN);
    } catch (error) {
      refuse(window.image, window.user, window.ts, (error as Error).message);
    }
  }
  const trace: Trace = { name: "history", workloads: [], rows: 0, rejected: [] };
  for (const builder of builders.values()) {
    const series = builder.build((ts) => refuse(builder.image, builder.user, ts, "a second window at the same start"));
    trace.workloads.push(series);
    trace.rows += series.ts.length;
  }
  return { csv: [...canonicalLines(trace)].join("\n") + "\n", rows: trace.rows, pairs: builders.size, refused };
}
