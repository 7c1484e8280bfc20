// The dashboard's JSON (GET /v1/dashboard/...): the server's own types (src/dashboard/types.ts).

export type {
  AllocationPoint,
  AnomalyEntry as Anomaly,
  BacktestResultView as BacktestResult,
  ForecastBand,
  ForecastPoint,
  NodeView,
  PairDetail,
  PairSummary,
  PolicyMetrics,
  ReportEntry,
  Resource,
  UsagePoint,
} from "../../src/dashboard/types.js";
export type { AllocationLevel as Level } from "../../src/core/types.js";

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
