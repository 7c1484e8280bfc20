// Window history → a trace in the canonical format (../shared/DESIGN.md), so
// what the history stage kept trains and scores policies with `augur
// backtest --trace/--train`, exactly like a trace from elsewhere.
import { createHash } from "node:crypto";
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

/** A CSV cell: quoted when it holds a comma, a quote or a leading/trailing space. */
function cell(value: string): string {
  return /[",]|^\s|\s$/.test(value) ? `"${value.replace(/"/g, '""')}"` : value;
}

/**
 * One row per window: ts = window start, each resource's `stat` over the
 * window (its peak by default: a limit has to cover the window's peak), the
 * limits when known. Windows are validated as they are read; a window with
 * a bad id or no statistic at all is refused with the reason.
 */
export function historyToCanonical(windows: HistoryWindow[], stat: HistoryStat = "max"): { csv: string; rows: number; pairs: number; refused: Array<{ image: string; user: string; ts: number; reason: string }> } {
  if (!HISTORY_STATS.includes(stat)) throw new ValidationError(`stat must be one of ${HISTORY_STATS.join(", ")}, got '${String(stat).slice(0, 40)}'`);
  const resources = RESOURCES.filter((resource) => windows.some((w) => Number.isFinite(w.stats[resource]?.[stat])));
  const withLimits = { cpu: windows.some((w) => w.limits.cpu !== undefined), mem: windows.some((w) => w.limits.mem !== undefined) };
  const header = ["ts", "workload", "image", "user", ...resources, ...(withLimits.cpu ? ["cpu_limit"] : []), ...(withLimits.mem ? ["mem_limit"] : [])];
  const lines = [header.join(",")];
  const refused: Array<{ image: string; user: string; ts: number; reason: string }> = [];
  const pairs = new Set<string>();
  const sorted = [...windows].sort((a, b) => a.ts - b.ts || a.image.localeCompare(b.image) || a.user.localeCompare(b.user));
  for (const window of sorted) {
    try {
      validateId("image", window.image);
      validateId("user", window.user);
      if (!Number.isSafeInteger(window.ts)) throw new ValidationError(`timestamp ${window.ts} is not whole milliseconds`);
      const values = resources.map((resource: Resource) => window.stats[resource]?.[stat]);
      if (values.every((value) => value === undefined)) throw new ValidationError(`no ${stat} of any resource`);
      const number = (value: number | undefined) => (value === undefined || !Number.isFinite(value) ? "" : String(value));
      lines.push(
        [
          String(window.ts),
          cell(pairWorkload(window.image, window.user)),
          cell(window.image),
          cell(window.user),
          ...values.map(number),
          ...(withLimits.cpu ? [number(window.limits.cpu)] : []),
          ...(withLimits.mem ? [number(window.limits.mem)] : []),
        ].join(","),
      );
      pairs.add(`${window.image}|${window.user}`);
    } catch (error) {
      refused.push({ image: String(window.image).slice(0, 80), user: String(window.user).slice(0, 80), ts: window.ts, reason: (error as Error).message });
    }
  }
  return { csv: lines.join("\n") + "\n", rows: lines.length - 1, pairs: pairs.size, refused };
}
