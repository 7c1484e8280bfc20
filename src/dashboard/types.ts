// The dashboard's JSON (GET /v1/dashboard/...): one set of types for the
// server that builds it and the page that reads it (web/src imports them
// with `import type`). Dependency-free apart from core/types, which is too,
// so the browser build can type-check against it.
import type { ActuationResult, AllocationLevel, Anomaly, Profile, ProfileLevel, Resource } from "../core/types.js";

export type { Resource } from "../core/types.js";

/** Usage of one resource in one window: median, 95th percentile and peak. */
export type UsageStats = [p50: number, p95: number, max: number];

export interface UsagePoint {
  t: number;
  workloads: number;
  usage: Partial<Record<Resource, UsageStats>>;
  oomKills: number;
}

export interface ForecastBand {
  p50: number;
  p90: number;
  p99: number;
  request: number;
  limit: number;
  model: string;
}

export interface ForecastPoint {
  t: number;
  level: ProfileLevel;
  windows: number;
  resources: Partial<Record<Resource, ForecastBand>>;
}

export interface AllocationPoint {
  t: number;
  requestId: string;
  node: string;
  ok: boolean;
  reason: string;
  level: AllocationLevel;
  cpu: { request: number; limit: number } | null;
  memory: { request: number; limit: number } | null;
  gpus: number;
}

export interface PairSummary {
  image: string;
  user: string;
  windows: number;
  lastWindow: number | null;
  forecastLevel: ProfileLevel | null;
  lastAllocation: { level: AllocationLevel; ok: boolean; t: number } | null;
  anomalies: number;
  resources: Resource[];
  updated: number;
}

/** GET /v1/dashboard/pairs/:image/:user */
export interface PairDetail {
  image: string;
  user: string;
  /** The level the next allocation of this pair would use. */
  nextLevel: AllocationLevel;
  userFactor: { cpu: number; memory: number };
  profile: Profile | null;
  usage: UsagePoint[];
  forecast: ForecastPoint[];
  allocations: AllocationPoint[];
  /** The forecast of the level in use when it is not the pair's own. */
  fallback: { image: string; user: string; forecast: ForecastPoint[] } | null;
}

/** An anomaly as the detector published it, with what remediation did (or would have done, in a dry run). */
export interface AnomalyEntry extends Omit<Anomaly, "type" | "resource"> {
  type: string;
  resource: string;
  actions: Array<Pick<ActuationResult, "action" | "connector" | "ok" | "dryRun" | "reason" | "ts">>;
}

/** GET /v1/dashboard/nodes: this node with its capacity, the others with the decisions they published. */
export interface NodeView {
  node: string;
  local: boolean;
  capacity: { cpu: number; memory: number; gpus: number } | null;
  allocated: { cpu: number; memory: number; gpus: number } | null;
  live: number | null;
  decisions: number;
  refused: number;
  last: number;
}

/** One backtest result in the reports directory. */
export interface ReportEntry {
  name: string;
  trace: string;
  samples: number;
  workloads: number;
  policies: string[];
  resources: string[];
  html: boolean;
  modified: number;
}

/** The parts of a backtest RESULT.json the dashboard reads. */
export interface PolicyMetrics {
  slack: number | null;
  violation_rate: number | null;
  unmet?: number | null;
  changes_per_day?: number | null;
  cold_start?: { slack?: number | null; violation_rate?: number | null };
  oom_events?: number | null;
}

export interface BacktestResultView {
  trace: string;
  samples: number;
  workloads: number;
  elapsed_ms?: number;
  policies: Record<string, Record<string, PolicyMetrics>>;
}
