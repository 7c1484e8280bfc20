import { parse as parseCsv } from "csv-parse/sync";
import type { Trace, WorkloadSeries } from "../backtest/trace.js";
import { ValidationError } from "../core/errors.js";
import { validateId } from "../core/keys.js";
import type { Resource } from "../core/types.js";
import { ANOMALY_TYPES, type AnomalyType } from "./detector.js";
import { WorkloadMonitor, type AnomalyEvent, type DetectConfig } from "./monitor.js";
import { median } from "./stats.js";

/**
 * Runs the detectors over every workload of a trace in event time; the
 * events in detection order per workload. With `history`, each workload's
 * earlier steps (say, the month before) are replayed first to learn its
 * baseline, and nothing is reported for them.
 */
export function detectTrace(trace: Trace, config: DetectConfig, options: { history?: Trace; host?: string } = {}): AnomalyEvent[] {
  const host = options.host ?? "trace";
  const earlier = new Map((options.history?.workloads ?? []).map((series) => [series.workload, series]));
  let events: AnomalyEvent[] = [];
  for (const series of trace.workloads) {
    const monitor = new WorkloadMonitor({ workload: series.workload, image: series.image, user: series.user, host }, config);
    const before = earlier.get(series.workload);
    if (before) feedSeries(monitor, before, series.ts[0] ?? Infinity);
    events.push(...feedSeries(monitor, series));
  }
  const fleet = new Map<string, number>();
  for (const series of trace.workloads) fleet.set(series.image, (fleet.get(series.image) ?? 0) + 1);
  const step = medianOf(trace.workloads.map(stepMs)) ?? 60_000;
  events = suppressFleetWide(events, fleet, config.fleetWindowSteps * step, config.fleetShare);
  return events;
}

/**
 * Drops what a whole fleet does at once: when at least `share` of an
 * image's workloads (and at least 3) show the same anomaly on the same
 * resource within `windowMs`, the image changed (a deploy, a new model, a traffic
 * shift); none of them left *its* profile. Peer-group comparison, the usual
 * guard against fleet-wide false alarms. Two findings of trends that both
 * span longer than the window (a slow rise over hours) are at once when
 * their detections are within the shorter of the two spans: a fleet drifting
 * together is found by each workload some hours apart. Never-seen use is
 * always reported.
 */
export function suppressFleetWide(events: AnomalyEvent[], fleet: Map<string, number>, windowMs: number, share: number): AnomalyEvent[] {
  const groups = new Map<string, AnomalyEvent[]>();
  for (const event of events) {
    // A resource a workload never used is reported even when its peers start at once (new egress, a GPU).
    if (event.type === "never_seen") continue;
    const key = `${event.image}|${event.type}|${event.resource}`;
    let group = groups.get(key);
    if (!group) groups.set(key, (group = []));
    group.push(event);
  }
  const dropped = new Set<AnomalyEvent>();
  for (const group of groups.values()) markFleetWide(group, Math.max(3, Math.ceil(share * (fleet.get(group[0]!.image) ?? 1))), windowMs, dropped);
  return events.filter((event) => !dropped.has(event));
}

/**
 * One group's findings (one image, type and resource) that are at once with
 * those of at least `needed` workloads, into `dropped`. A finding e is at
 * once with every earlier or simultaneous one o detected within
 * max(windowMs, min(span(e), span(o))) before it. Linear but for trends
 * longer than the window: those detected within the window of e are a
 * range of the sorted group (kept with per-workload counts as e advances, and
 * marked as a range), and only a finding whose own span reaches further
 * looks back one by one.
 */
function markFleetWide(group: AnomalyEvent[], needed: number, windowMs: number, dropped: Set<AnomalyEvent>): void {
  group.sort((a, b) => a.detectedTs - b.detectedTs);
  const n = group.length;
  const span = (event: AnomalyEvent) => event.detectedTs - event.startTs;
  /** +1 at a marked range's start, −1 after its end. */
  const marks = new Int32Array(n + 1);
  const inWindow = new Map<string, number>();
  const enter = (event: AnomalyEvent) => inWindow.set(event.workload, (inWindow.get(event.workload) ?? 0) + 1);
  let lo = 0;
  let hi = 0; // the window is group[lo, hi)
  for (let i = 0; i < n; i++) {
    const event = group[i]!;
    const ts = event.detectedTs;
    while (hi < n && group[hi]!.detectedTs <= ts) enter(group[hi++]!);
    while (group[lo]!.detectedTs < ts - windowMs) {
      const workload = group[lo++]!.workload;
      const count = inWindow.get(workload)! - 1;
      if (count === 0) inWindow.delete(workload);
      else inWindow.set(workload, count);
    }
    // Trends that both outlast the window: detections within the shorter span count too.
    const extra: AnomalyEvent[] = [];
    const reach = span(event);
    if (reach > windowMs) {
      for (let j = lo - 1; j >= 0 && ts - group[j]!.detectedTs <= reach; j--) if (span(group[j]!) >= ts - group[j]!.detectedTs) extra.push(group[j]!);
    }
    let workloads = inWindow.size;
    if (workloads + extra.length >= needed && extra.length > 0) {
      const more = new Set<string>();
      for (const other of extra) if (!inWindow.has(other.workload)) more.add(other.workload);
      workloads += more.size;
    }
    if (workloads < needed) continue;
    marks[lo]!++;
    marks[hi]!--;
    for (const other of extra) dropped.add(other);
  }
  for (let i = 0, depth = 0; i < n; i++) {
    depth += marks[i]!;
    if (depth > 0) dropped.add(group[i]!);
  }
}

/** Feeds a series (steps before `untilTs` only) to a monitor; returns its events. */
export function feedSeries(monitor: WorkloadMonitor, series: WorkloadSeries, untilTs = Infinity): AnomalyEvent[] {
  const events: AnomalyEvent[] = [];
  const columns = Object.entries(series.values) as Array<[Resource, Float64Array]>;
  for (let i = 0; i < series.ts.length && series.ts[i]! < untilTs; i++) {
    const values: Partial<Record<Resource, number>> = {};
    for (const [resource, column] of columns) values[resource] = column[i]!;
    events.push(...monitor.observe({ ts: series.ts[i]!, values, cpuCapacity: series.limits.cpu?.[i] ?? null, memoryLimit: series.limits.mem?.[i] ?? null }));
  }
  return events;
}

/** One line of EVENTS.jsonl. */
export function eventLine(event: AnomalyEvent): string {
  return JSON.stringify({
    workload: event.workload,
    type: event.type,
    start_ts: event.startTs,
    detected_ts: event.detectedTs,
    severity: event.severity,
    image: event.image,
    user: event.user,
    resource: event.resource,
    score: Number(event.score.toPrecision(6)),
    observed: event.observed,
    expected: event.expected,
    message: event.message,
  });
}

export interface Label {
  workload: string;
  type: AnomalyType;
  startTs: number;
  endTs: number;
}

/** Reads LABELS.csv (`workload,type,start_ts,end_ts`); a bad row is an error naming its line. */
export function parseLabels(text: string, source: string): Label[] {
  let rows: string[][];
  try {
    rows = parseCsv(text, { relax_column_count: true, skip_empty_lines: true, bom: true }) as string[][];
  } catch (error) {
    throw new ValidationError(`${source}: not CSV: ${(error as Error).message}`);
  }
  const header = (rows[0] ?? []).map((cell) => cell.trim());
  const at = { workload: header.indexOf("workload"), type: header.indexOf("type"), start: header.indexOf("start_ts"), end: header.indexOf("end_ts") };
  if (Object.values(at).some((index) => index < 0)) throw new ValidationError(`${source}: the header must name workload,type,start_ts,end_ts (got ${header.join(",").slice(0, 80)})`);
  return rows.slice(1).map((row, index) => {
    const line = index + 2;
    const type = row[at.type]?.trim() as AnomalyType;
    if (!(ANOMALY_TYPES as readonly string[]).includes(type)) throw new ValidationError(`${source}:${line}: unknown anomaly type ${JSON.stringify(row[at.type]?.slice(0, 40))}; one of ${ANOMALY_TYPES.join(", ")}`);
    const startTs = Number(row[at.start]);
    const endTs = Number(row[at.end]);
    if (!Number.isFinite(startTs) || !Number.isFinite(endTs) || endTs < startTs) throw new ValidationError(`${source}:${line}: start_ts and end_ts must be epoch milliseconds with start <= end`);
    let workload: string;
    try {
      workload = validateId("workload", row[at.workload]);
    } catch (error) {
      throw new ValidationError(`${source}:${line}: ${(error as Error).message}`);
    }
    return { workload, type, startTs, endTs };
  });
}

export interface DetectionScore {
  labels: number;
  detections: number;
  truePositives: number;
  precision: number;
  recall: number;
  /** Median steps from an anomaly's start to its detection, over detected labels. */
  medianDelaySteps: number | null;
  byType: Record<string, { labels: number; detected: number; recall: number; falsePositives: number; medianDelaySteps: number | null }>;
  falseAlarms: number;
  workloadDays: number;
  falseAlarmsPer100WorkloadDays: number;
}

function medianOf(values: number[]): number | null {
  return values.length === 0 ? null : median(values);
}

/** The typical step of a workload (median spacing), for delays in steps. */
export function stepMs(series: WorkloadSeries): number {
  const gaps: number[] = [];
  for (let i = 1; i < series.ts.length; i++) gaps.push(series.ts[i]! - series.ts[i - 1]!);
  return medianOf(gaps) ?? 1;
}

/**
 * Scores detections against labels. A detection is a true positive when a
 * label of the same workload and type covers its detection time (from the
 * label's start to its end plus `graceSteps`); every other detection is a
 * false alarm. A label counts as detected by its first matching detection.
 */
export function scoreDetections(trace: Trace, events: AnomalyEvent[], labels: Label[], graceSteps = 3): DetectionScore {
  const steps = new Map(trace.workloads.map((series) => [series.workload, stepMs(series)]));
  const spanDays = trace.workloads.reduce((sum, s) => sum + (s.ts.length > 1 ? (s.ts[s.ts.length - 1]! - s.ts[0]!) / 86_400_000 : 0), 0);
  const byType: DetectionScore["byType"] = {};
  for (const type of ANOMALY_TYPES) byType[type] = { labels: 0, detected: 0, recall: 0, falsePositives: 0, medianDelaySteps: null };
  const delays = new Map<AnomalyType, number[]>();
  const matched = new Set<AnomalyEvent>();
  for (const label of labels) {
    byType[label.type]!.labels++;
    const step = steps.get(label.workload) ?? 1;
    const hit = events.find(
      (event) => event.workload === label.workload && event.type === label.type && event.detectedTs >= label.startTs && event.detectedTs <= label.endTs + graceSteps * step,
    );
    if (!hit) continue;
    byType[label.type]!.detected++;
    let list = delays.get(label.type);
    if (!list) delays.set(label.type, (list = []));
    list.push(Math.round((hit.detectedTs - label.startTs) / step));
  }
  for (const event of events) {
    const step = steps.get(event.workload) ?? 1;
    if (labels.some((label) => label.workload === event.workload && label.type === event.type && event.detectedTs >= label.startTs && event.detectedTs <= label.endTs + graceSteps * step)) matched.add(event);
    else byType[event.type]!.falsePositives++;
  }
  for (const type of ANOMALY_TYPES) {
    const entry = byType[type]!;
    entry.recall = entry.labels === 0 ? 1 : entry.detected / entry.labels;
    entry.medianDelaySteps = medianOf(delays.get(type) ?? []);
  }
  const detected = Object.values(byType).reduce((sum, t) => sum + t.detected, 0);
  const falseAlarms = events.length - matched.size;
  return {
    labels: labels.length,
    detections: events.length,
    truePositives: matched.size,
    precision: events.length === 0 ? 1 : matched.size / events.length,
    recall: labels.length === 0 ? 1 : detected / labels.length,
    medianDelaySteps: medianOf([...delays.values()].flat()),
    byType,
    falseAlarms,
    workloadDays: Number(spanDays.toFixed(2)),
    falseAlarmsPer100WorkloadDays: spanDays === 0 ? 0 : Number(((falseAlarms / spanDays) * 100).toFixed(3)),
  };
}

