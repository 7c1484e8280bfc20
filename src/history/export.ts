// Window history → a trace in the canonical format (../shared/DESIGN.md), so
// what the history stage kept trains and scores policies with `augur
// backtest --trace/--train`, exactly like a trace from elsewhere.
import { createHash } from "node:crypto";
import { CANONICAL_HEADER, canonicalLines, SeriesBuilder, type Trace } from "../backtest/trace.js";
import { ValidationError } from "../core/errors.js";
import { MAX_ID_LENGTH, validateId } from "../core/keys.js";
import { RESOURCES, type Resource } from "../core/types.js";
import { HISTORY_STATS, listHistoryPairs, readHistory, type HistoryQuery, type HistoryWindow } from "./sink.js";

export type HistoryStat = (typeof HISTORY_STATS)[number];

export interface RefusedWindow {
  image: string;
  user: string;
  ts: number;
  reason: string;
}

/** Refused windows kept for the report (the count is always exact). */
const REFUSED_KEPT = 1_000;

/**
 * The workload of a pair's rows: `image@user`, or a digest of it when that
 * would be too long for an id. Windows aggregate a pair's workloads, so the
 * pair is the workload of the trace.
 */
export function pairWorkload(image: string, user: string): string {
  const joined = `${image}@${user}`;
  return joined.length <= MAX_ID_LENGTH ? joined : `pair-${createHash("sha256").update(joined).digest("hex").slice(0, 16)}`;
}

function checkStat(stat: HistoryStat): void {
  if (!HISTORY_STATS.includes(stat)) throw new ValidationError(`stat must be one of ${HISTORY_STATS.join(", ")}, got '${String(stat).slice(0, 40)}'`);
}

/**
 * One row per window: ts = window start, each resource's `stat` over the
 * window (its peak by default: a limit has to cover the window's peak), the
 * limits when known; written by the canonical writer every trace tool uses.
 * Windows are validated as they are read; a window with a bad id or no
 * statistic at all is refused with the reason.
 */
export function historyToCanonical(windows: HistoryWindow[], stat: HistoryStat = "max"): { trace: Trace; rows: number; pairs: number; refused: RefusedWindow[] } {
  checkStat(stat);
  const refused: RefusedWindow[] = [];
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
  return { trace, rows: trace.rows, pairs: builders.size, refused };
}

/**
 * The history of the range as a canonical trace, one pair at a time: the
 * pairs are listed first, then each pair's windows are read, converted and
 * handed to `write` line by line (the header first). Memory holds one pair's
 * windows, not the fleet's: a month of a thousand pairs' windows is far more
 * than one answer or one process holds at once.
 */
export async function exportHistory(
  query: HistoryQuery,
  stat: HistoryStat,
  write: (line: string) => void | Promise<void>,
): Promise<{ windows: number; rows: number; pairs: number; refused: number; refusedKept: RefusedWindow[] }> {
  checkStat(stat);
  const summary = { windows: 0, rows: 0, pairs: 0, refused: 0, refusedKept: [] as RefusedWindow[] };
  let header = true;
  for (const pair of await listHistoryPairs(query)) {
    const windows = await readHistory({ ...query, image: pair.image, user: pair.user });
    const converted = historyToCanonical(windows, stat);
    summary.windows += windows.length;
    summary.rows += converted.rows;
    summary.pairs += converted.pairs;
    summary.refused += converted.refused.length;
    for (const refused of converted.refused) if (summary.refusedKept.length < REFUSED_KEPT) summary.refusedKept.push(refused);
    if (header) await write(CANONICAL_HEADER);
    header = false;
    let first = true;
    for (const line of canonicalLines(converted.trace)) {
      if (first) first = false; // its own header: written once, above
      else await write(line);
    }
  }
  if (header) await write(CANONICAL_HEADER);
  return summary;
}
