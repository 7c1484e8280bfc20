import { readFileSync, writeFileSync } from "node:fs";
import { SERVICE_LEVEL } from "../forecast/ensemble.js";
import { missRate } from "../forecast/ensemble-model.js";
import { initTensorflow } from "../forecast/global-model.js";
import { cannotRead, ValidationError } from "../core/errors.js";
import { isResource, RESOURCES, type Resource } from "../core/types.js";
import { loadTrace, requireUsable, TRACE_FORMATS, type TraceFormat } from "./adapters/index.js";
import { replayInParallel, shareTrace, workerCount } from "./parallel.js";
import { JOIN_MODELS, POLICIES, POLICY_NAMES } from "./policies/index.js";
import { replay, type ReplayResult } from "./replay.js";
import { clairvoyantSlack } from "./metrics.js";
import { renderReport, type BacktestResult } from "./report.js";
import type { RejectedRow, Trace } from "./trace.js";

export interface BacktestOptions {
  trace: string;
  format: TraceFormat;
  train?: string;
  policies: string[];
  resources?: string[];
  out: string;
  report?: string;
  /** Rejected rows (JSON lines with the reason) go here; nothing is dropped silently. */
  rejectedOut?: string;
  /** Learned models: read before the replay, written after it. */
  loadModels?: string;
  saveModels?: string;
  /** augur: event time a limit decision holds (text from the command line or a number), seconds. */
  decisionSeconds?: string | number;
  /** augur's service level: the fraction of steps allowed above the memory limit (OOM kills), and above a rate limit (throttling). */
  memoryMissRate?: string | number;
  rateMissRate?: string | number;
  /**
   * Threads the replay runs on (text from the command line or a number):
   * one shard per (policy, resource) each, the same result; 1 replays all in
   * this thread. Default: one per core, at most one per shard, for traces of
   * PARALLEL_FROM_ROWS rows or more (below, starting the threads costs more
   * than they save).
   */
  workers?: string | number;
  onProgress?: (done: number, total: number) => void;
}

export function checkBacktestOptions(options: Pick<BacktestOptions, "format" | "policies" | "resources" | "decisionSeconds" | "memoryMissRate" | "rateMissRate" | "workers">): void {
  if (!(TRACE_FORMATS as readonly string[]).includes(options.format)) {
    throw new ValidationError(`--format must be one of ${TRACE_FORMATS.join(", ")}, got '${options.format}'`);
  }
  const unknownPolicies = options.policies.filter((p) => !POLICY_NAMES.includes(p));
  if (unknownPolicies.length > 0 || options.policies.length === 0) {
    throw new ValidationError(`--policies takes names from ${POLICY_NAMES.join(", ")}; got '${options.policies.join(",")}'`);
  }
  const unknownResources = (options.resources ?? []).filter((r) => !isResource(r));
  if (unknownResources.length > 0) throw new ValidationError(`--resources takes names from ${RESOURCES.join(", ")}; unknown: ${unknownResources.join(", ")}`);
  decisionMs(options.decisionSeconds);
  serviceLevel(options);
  workers(options.workers);
}

const MAX_WORKERS = 256;
/** Rows (trace and training trace) from which a backtest replays on every core unless told otherwise. */
export const PARALLEL_FROM_ROWS = 1_000_000;

/** `--workers`: a whole number of threads from 1 to MAX_WORKERS; undefined where not given (one per core). */
function workers(value: string | number | undefined): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value).trim();
  const count = /^\d{1,3}$/.test(text) ? Number(text) : Number.NaN;
  if (!(count >= 1 && count <= MAX_WORKERS)) throw new ValidationError(`--workers takes a whole number of threads from 1 to ${MAX_WORKERS}, got '${text.slice(0, 40)}'`);
  return count;
}

const MAX_DECISION_SECONDS = 86_400;

/** `--decision-seconds` in ms: a plain number of seconds from 0 to a day. */
function decisionMs(value: string | number | undefined): number {
  if (value === undefined) return 0;
  const text = String(value).trim();
  const seconds = /^\d+(\.\d+)?$/.test(text) ? Number(text) : Number.NaN;
  if (!(seconds >= 0 && seconds <= MAX_DECISION_SECONDS)) throw new ValidationError(`--decision-seconds takes seconds from 0 to ${MAX_DECISION_SECONDS}, got '${text.slice(0, 40)}'`);
  return seconds * 1000;
}

/**
 * `--memory-miss-rate` and `--rate-miss-rate`: fractions in (0, 0.5), checked
 * as the live configuration's memoryMissRate and rateMissRate; augur's defaults where absent.
 */
function serviceLevel(options: Pick<BacktestOptions, "memoryMissRate" | "rateMissRate">): { memory: number; rate: number } {
  const fraction = (flag: string, value: string | number | undefined, fallback: number) => {
    if (value === undefined) return fallback;
    const text = String(value).trim();
    const rate = /^(\d+(\.\d*)?|\.\d+)(e-?\d{1,3})?$/i.test(text) ? Number(text) : Number.NaN;
    if (!missRate.safeParse(rate).success) throw new ValidationError(`${flag} takes a fraction of steps above 0 and below 0.5, got '${text.slice(0, 40)}'`);
    return rate;
  };
  return { memory: fraction("--memory-miss-rate", options.memoryMissRate, SERVICE_LEVEL.memory), rate: fraction("--rate-miss-rate", options.rateMissRate, SERVICE_LEVEL.rate) };
}

function resourcesIn(trace: Trace): Resource[] {
  return RESOURCES.filter((resource) => !trace.unitless?.includes(resource) && trace.workloads.some((w) => w.values[resource] !== undefined));
}

/** Loads, replays, scores and writes RESULT.json (and the report); returns the result. */
export async function runBacktest(options: BacktestOptions): Promise<{ result: BacktestResult; replayed: ReplayResult }> {
  checkBacktestOptions(options);
  const models = options.loadModels ? readModels(options.loadModels) : undefined;
  const context = { models, decisionMs: decisionMs(options.decisionSeconds), serviceLevel: serviceLevel(options) };
  // Each policy built once before the trace is read: models it cannot use are refused at once, here, not in a thread.
  for (const name of options.policies) POLICIES[name]!({ ...context, resources: [] });
  await initTensorflow();
  const started = performance.now();
  let trace = await loadTrace(options.trace, options.format);
  let train = options.train ? await loadTrace(options.train, options.format) : undefined;
  const rejected: RejectedRow[] = [...(train?.rejected ?? []), ...trace.rejected];
  try {
    requireUsable(trace, options.trace);
    if (train) requireUsable(train, options.train!);
  } catch (error) {
    // Where no row was usable, the reasons are what the user needs most: written before refusing.
    writeRejected(options.rejectedOut, rejected);
    throw error;
  }
  const resources = (options.resources as Resource[] | undefined) ?? resourcesIn(trace);
  const rows = trace.rows + (train?.rows ?? 0);
  const threads = workerCount(options.policies.length * resources.length, workers(options.workers) ?? (rows >= PARALLEL_FROM_ROWS ? undefined : 1));
  let replayed: ReplayResult;
  let saved: Record<string, unknown>;
  if (threads === 1) {
    const policies = options.policies.map((name) => POLICIES[name]!({ ...context, resources }));
    replayed = replay(trace, { policies, resources, train, onProgress: options.onProgress });
    saved = options.saveModels ? Object.fromEntries(policies.flatMap((policy) => (policy.exportModels ? [[policy.name, policy.exportModels()]] : []))) : {};
  } else {
    // In shared memory from here on: the copies the threads read are the only ones kept.
    trace = shareTrace(trace);
    train = train && shareTrace(train);
    const parallel = await replayInParallel({ trace, train, policies: options.policies, resources, context, workers: threads, exportModels: options.saveModels !== undefined, onProgress: options.onProgress });
    replayed = parallel.replayed;
    saved = Object.fromEntries(
      Object.entries(parallel.models).map(([name, byResource]) => {
        const join = JOIN_MODELS[name];
        if (!join) throw new Error(`policy ${name} exports models but has no way to join its shards' (JOIN_MODELS)`);
        return [name, join(byResource)];
      }),
    );
  }
  const result: BacktestResult = {
    trace: options.trace,
    train: options.train ?? null,
    format: options.format,
    samples: replayed.samples,
    workloads: replayed.workloads,
    elapsed_ms: Math.round(performance.now() - started),
    rejected: rejected.length,
    decision_seconds: context.decisionMs / 1000,
    service_level: { memory_miss_rate: context.serviceLevel.memory, rate_miss_rate: context.serviceLevel.rate },
    policies: replayed.scores,
    clairvoyant: Object.fromEntries(resources.map((resource) => [resource, clairvoyantSlack(trace.workloads, resource)])),
  };
  writeFileSync(options.out, JSON.stringify(result, null, 2) + "\n");
  if (options.report) writeFileSync(options.report, renderReport(result, replayed.series));
  if (options.saveModels) {
    writeFileSync(options.saveModels, JSON.stringify({ kind: "augur-backtest-models", version: 1, policies: saved }) + "\n");
  }
  writeRejected(options.rejectedOut, rejected);
  return { result, replayed };
}

/** `--rejected`: one JSON object per rejected row, with its reason (nothing written when none was). */
function writeRejected(path: string | undefined, rejected: readonly RejectedRow[]): void {
  if (path && rejected.length > 0) writeFileSync(path, rejected.map((row) => JSON.stringify(row)).join("\n") + "\n");
}

/** What `--save-models` wrote, per policy (each policy checks its own part). */
export function readModels(path: string): Record<string, unknown> {
  let parsed: { kind?: string; version?: number; policies?: Record<string, unknown> };
  try {
    parsed = JSON.parse(readFileSync(path, "utf8"));
  } catch (error) {
    throw new ValidationError(cannotRead("models", path, error));
  }
  if (parsed?.kind !== "augur-backtest-models" || parsed.version !== 1 || typeof parsed.policies !== "object" || parsed.policies === null) {
    throw new ValidationError(`${path} is not a models file written by augur backtest --save-models (version 1)`);
  }
  return parsed.policies;
}
