// The dashboard's JSON (GET /v1/dashboard/...), typed as the server sends it.

export type Resource = "cpu" | "mem" | "net_rx" | "net_tx" | "disk_read" | "disk_write" | "gpu_util" | "gpu_mem";
export type Level = "exact" | "image" | "user" | "global" | "default" | "explicit";

export interface PairSummary {
  image: string;
  user: string;
  windows: number;
  lastWindow: number | null;
  forecastLevel: Level | null;
  lastAllocation: { level: Level; ok: boolean; t: number } | null;
  anomalies: number;
  resources: Resource[];
  updated: number;
}

export interface UsagePoint {
  t: number;
  workloads: number;
  usage: Partial<Record<Resource, [number, number, number]>>;
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
  level: Level;
  windows: number;
  resources: Partial<Record<Resource, ForecastBand>>;
}

export interface AllocationPoint {
  t: number;
  requestId: string;
  node: string;
  ok: boolean;
  reason: string;
  level: Level;
  cpu: { request: number; limit: number } | null;
  memory: { request: number; limit: number } | null;
  gpus: number;
}

export interface PairDetail {
  image: string;
  user: string;
  nextLevel: Level;
  userFactor: { cpu: number; memory: number };
  profile: { level: Level; windows: number; version: number; firstSeen: number; resources: Partial<Record<Resource, ForecastBand & { sampleCount: number; max: number }>> } | null;
  usage: UsagePoint[];
  forecast: ForecastPoint[];
  allocations: AllocationPoint[];
  fallback: { image: string; user: string; forecast: ForecastPoint[] } | null;
}

export interface Anomaly {
  workload: string;
  image: string;
  user: string;
  host: string;
  type: string;
  severity: string;
  score: number;
  resource: string;
  observed: number;
  expected: number;
  startTs: number;
  detectedTs: number;
  message: string;
  actions: Array<{ action: string; connector: string; ok: boolean; dryRun: boolean; reason: string; ts: number }>;
}

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

export interface PolicyMetrics {
  slack: number | null;
  violation_rate: number | null;
  unmet?: number | null;
  changes_per_day?: number | null;
  cold_start?: { slack?: number | null; violation_rate?: number | null };
  oom_events?: number | null;
}

export interface BacktestResult {
  trace: string;
  samples: number;
  workloads: number;
  elapsed_ms?: number;
  policies: Record<string, Record<string, PolicyMetrics>>;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  const body = (await response.json().catch(() => null)) as (T & { message?: string }) | null;
  if (!response.ok) throw new ApiError(response.status, body?.message ?? `HTTP ${response.status}`);
  return body as T;
}

export const pairPath = (image: string, user: string) => `/v1/dashboard/pairs/${encodeURIComponent(image)}/${encodeURIComponent(user)}`;

export function query(params: Record<string, string | undefined>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) if (value) search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : "";
}
