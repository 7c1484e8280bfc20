import { readFileSync, writeFileSync } from "node:fs";
import type { Command } from "commander";
import { loadUsableTrace, TRACE_FORMATS, type TraceFormat } from "../backtest/adapters/index.js";
import { cannotRead, ValidationError } from "../core/errors.js";
import { ANOMALY_TYPES, type AnomalyType } from "../detect/detector.js";
import { canonicalLines, LineFile } from "../backtest/trace.js";
import { injectAnomalies, labelLines } from "../detect/inject.js";
import { detectConfig } from "../detect/monitor.js";
import { detectTrace, eventLine, parseLabels, scoreDetections } from "../detect/offline.js";
import { fail } from "./common.js";

function format(value: string): TraceFormat {
  if (!(TRACE_FORMATS as readonly string[]).includes(value)) throw new ValidationError(`--format: one of ${TRACE_FORMATS.join(", ")} (got '${value}')`);
  return value as TraceFormat;
}

function integer(name: string, min: number, max: number) {
  return (value: string): number => {
    const parsed = Number(value);
    if (!/^-?\d+$/.test(value) || parsed < min || parsed > max) throw new ValidationError(`--${name}: an integer in ${min}..${max} (got '${value}')`);
    return parsed;
  };
}

function fraction(value: string): number {
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0 || parsed > 1) throw new ValidationError(`--rate: a number in 0..1 (got '${value}')`);
  return parsed;
}

function types(value: string): AnomalyType[] {
  const list = value.split(",").map((t) => t.trim()).filter(Boolean);
  for (const type of list) if (!(ANOMALY_TYPES as readonly string[]).includes(type)) throw new ValidationError(`--types: unknown type '${type}'; one of ${ANOMALY_TYPES.join(", ")}`);
  return list as AnomalyType[];
}

function readLabels(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (error) {
    throw new ValidationError(cannotRead("labels", path, error));
  }
}

export function registerDetect(program: Command): void {
  program
    .command("detect")
    .description("find anomalies (leaks, runaways, spikes, miners, network bursts, never-seen use) in a trace, offline")
    .requiredOption("--trace <path>", "trace file (.csv or .csv.gz) or directory")
    .option("--format <format>", `trace format: ${TRACE_FORMATS.join(" | ")}`, format, "canonical" as TraceFormat)
    .requiredOption("--out <file>", "EVENTS.jsonl: one JSON object per anomaly")
    .option("--labels <file>", "LABELS.csv (workload,type,start_ts,end_ts): print precision, recall and detection delay as JSON")
    .option("--history <path>", "earlier steps of the same workloads (say, the month before), learned first and not reported")
    .option("--history-format <format>", "format of --history (default: --format)", format)
    .option("--warmup-steps <n>", "steps of a workload's history before it is judged", integer("warmup-steps", 1, 1_000_000), 576)
    .action(async (flags: { trace: string; format: TraceFormat; out: string; labels?: string; history?: string; historyFormat?: TraceFormat; warmupSteps: number }) => {
      try {
        const labels = flags.labels ? parseLabels(readLabels(flags.labels), flags.labels) : null;
        const started = performance.now();
        const trace = await loadUsableTrace(flags.trace, flags.format);
        const config = detectConfig.parse({ warmupSteps: flags.warmupSteps });
        const history = flags.history ? await loadUsableTrace(flags.history, flags.historyFormat ?? flags.format) : undefined;
        const events = detectTrace(trace, config, { history });
        writeFileSync(flags.out, events.map((event) => eventLine(event) + "\n").join(""));
        const summary: Record<string, unknown> = {
          trace: trace.name,
          workloads: trace.workloads.length,
          samples: trace.rows,
          rejected: trace.rejected.length + (history?.rejected.length ?? 0),
          events: events.length,
          elapsed_ms: Math.round(performance.now() - started),
        };
        if (labels) summary.score = scoreDetections(trace, events, labels);
        process.stdout.write(JSON.stringify(summary, null, 2) + "\n");
      } catch (error) {
        fail(error);
      }
    });

  program
    .command("inject")
    .description("inject labelled anomalies of each type into a trace, for tests and for checking the detector on your history")
    .requiredOption("--trace <path>", "input trace")
    .option("--format <format>", `input format: ${TRACE_FORMATS.join(" | ")}`, format, "canonical" as TraceFormat)
    .requiredOption("--out <file>", "output trace in the canonical format (.csv or .csv.gz)")
    .requiredOption("--labels <file>", "LABELS.csv written here")
    .option("--seed <n>", "random seed", integer("seed", 0, 2 ** 31 - 1), 1)
    .option("--rate <fraction>", "share of eligible workloads that get an anomaly", fraction, 0.5)
    .option("--min-history-steps <n>", "untouched steps before an anomaly may start", integer("min-history-steps", 1, 1_000_000), 864)
    .option("--types <list>", `comma-separated: ${ANOMALY_TYPES.join(",")}`, types, [...ANOMALY_TYPES])
    .option("--history <path>", "earlier steps of the same workloads (as given to augur detect --history): magnitudes are relative to them too")
    .option("--history-format <format>", "format of --history (default: --format)", format)
    .action(async (flags: { trace: string; format: TraceFormat; out: string; labels: string; seed: number; rate: number; minHistorySteps: number; types: AnomalyType[]; history?: string; historyFormat?: TraceFormat }) => {
      try {
        const trace = await loadUsableTrace(flags.trace, flags.format);
        const history = flags.history ? await loadUsableTrace(flags.history, flags.historyFormat ?? flags.format) : undefined;
        const labels = injectAnomalies(trace, { seed: flags.seed, rate: flags.rate, minHistorySteps: flags.minHistorySteps, types: flags.types, history });
        const out = new LineFile(flags.out);
        for (const line of canonicalLines(trace)) await out.write(line);
        await out.close();
        writeFileSync(flags.labels, labelLines(labels).join("\n") + "\n");
        const byType: Record<string, number> = {};
        for (const label of labels) byType[label.type] = (byType[label.type] ?? 0) + 1;
        process.stdout.write(JSON.stringify({ trace: trace.name, workloads: trace.workloads.length, rejected: trace.rejected.length, injected: labels.length, byType }, null, 2) + "\n");
      } catch (error) {
        fail(error);
      }
    });
}
