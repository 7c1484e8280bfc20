import { flux, fluxDateTime, fluxExpression, HttpError, InfluxDB, Point, type WriteApi } from "@influxdata/influxdb-client";
import { errorMessage, TransientError, ValidationError } from "../core/errors.js";
import { forEachLineOfChunks } from "../core/lines.js";
import type { Metrics } from "../core/metrics.js";
import { RESOURCES, type Resource, type WindowAggregate } from "../core/types.js";
import type { HistoryConfig } from "../config/pipeline.js";
import { sendToDeadLetter } from "../transport/dead-letter.js";
import { TOPICS, type Consumer, type TopicRecord, type Transport } from "../transport/topic.js";
import { validateWindow } from "../forecast/validate-window.js";

/** Window statistics written per resource, as fields `<resource>_<stat>`. */
export const HISTORY_STATS = ["mean", "max", "p50", "p95", "p99"] as const;

const STAGE = "history";

/** One window as an InfluxDB line-protocol point: tags image, user; timestamp = window start (ms). */
export function windowPoint(measurement: string, window: WindowAggregate): Point {
  const point = new Point(measurement).tag("image", window.image).tag("user", window.user).timestamp(window.windowStart);
  point.intField("samples", window.sampleCount).intField("workloads", window.workloadCount);
  point.intField("oom_kills", window.oomKills).floatField("throttled_seconds", window.cpuThrottledSeconds);
  point.intField("window_ms", window.windowEnd - window.windowStart);
  for (const resource of RESOURCES) {
    const stats = window.resources[resource];
    if (!stats) continue;
    for (const stat of HISTORY_STATS) point.floatField(`${resource}_${stat}`, stats[stat]);
  }
  if (window.memoryLimitBytes !== null) point.floatField("mem_limit", window.memoryLimitBytes);
  if (window.cpuLimitCores !== null) point.floatField("cpu_limit", window.cpuLimitCores);
  return point;
}

/**
 * The history stage: windows → InfluxDB line protocol over the v2 write API
 * (`@influxdata/influxdb-client`). A batch counts as consumed only after its
 * points were written and flushed, so the database never misses a window;
 * a window written twice is the same point (same series, same timestamp).
 */
export class HistorySink {
  private readonly writeApi: WriteApi;
  private consumer: Consumer | null = null;

  constructor(
    private readonly transport: Transport,
    private readonly config: HistoryConfig,
    private readonly metrics: Metrics,
  ) {
    const token = process.env[config.tokenEnv] ?? "";
    this.writeApi = new InfluxDB({ url: config.url, token, timeout: 10_000 }).getWriteApi(config.org, config.bucket, "ms", {
      batchSize: config.batchSize,
      flushInterval: 0,
      maxRetries: 0, // the transport retries the whole batch
    });
  }

  async start(): Promise<void> {
    this.consumer = await this.transport.consume<WindowAggregate>(TOPICS.windows, { group: "augur-history" }, (batch) => this.handle(batch));
  }

  async handle(batch: Array<TopicRecord<WindowAggregate>>): Promise<void> {
    const points: Point[] = [];
    for (const record of batch) {
      this.metrics.recordsIn.inc({ stage: STAGE });
      try {
        points.push(windowPoint(this.config.measurement, validateWindow(record.value)));
      } catch (error) {
        await sendToDeadLetter(this.transport, STAGE, record, error, this.metrics);
      }
    }
    if (points.length === 0) return;
    this.writeApi.writePoints(points);
    try {
      await this.writeApi.flush();
    } catch (error) {
      throw new TransientError(`history database at ${this.config.url} refused the write: ${errorMessage(error)}`);
    }
    this.metrics.recordsOut.inc({ stage: STAGE }, points.length);
  }

  async stop(): Promise<void> {
    await this.consumer?.stop();
    this.consumer = null;
    try {
      await this.writeApi.close();
    } catch (error) {
      console.error(`augur: closing the history writer: ${errorMessage(error)}`);
    }
  }
}

/** A window read back from the history database: what training and backtests need. */
export interface HistoryWindow {
  image: string;
  user: string;
  ts: number;
  windowMs: number;
  samples: number;
  stats: Partial<Record<Resource, Partial<Record<(typeof HISTORY_STATS)[number], number>>>>;
  /** The limits the window's workloads ran under, where the collector knew them. */
  limits: { cpu?: number; mem?: number };
}

const FIELD = new RegExp(`^(${RESOURCES.join("|")})_(${HISTORY_STATS.join("|")})$`);

export interface HistoryQuery {
  url: string;
  measurement: string;
  fromMs: number;
  /** Inclusive: windows starting at `toMs` are read. */
  toMs: number;
  image?: string;
  user?: string;
  /** How to read: VictoriaMetrics' export API (default) or Flux (InfluxDB 2.x `/api/v2/query`). */
  query?: "victoriametrics" | "flux";
  /** Flux only: organisation, bucket and token, as the writes use them. */
  org?: string;
  bucket?: string;
  token?: string;
}

/** Gathers one value per (pair, window start, field) into windows, whichever API they came from. */
class WindowAssembler {
  private readonly windows = new Map<string, HistoryWindow>();

  add(image: string, user: string, ts: number, field: string, value: number): void {
    const key = `${image}|${user}|${ts}`;
    let window = this.windows.get(key);
    if (!window) {
      window = { image, user, ts, windowMs: 0, samples: 0, stats: {}, limits: {} };
      this.windows.set(key, window);
    }
    if (field === "samples") window.samples = value;
    else if (field === "window_ms") window.windowMs = value;
    else if (field === "cpu_limit") window.limits.cpu = value;
    else if (field === "mem_limit") window.limits.mem = value;
    else {
      const match = FIELD.exec(field);
      if (match) ((window.stats[match[1] as Resource] ??= {})[match[2] as (typeof HISTORY_STATS)[number]] = value);
    }
  }

  result(): HistoryWindow[] {
    return [...this.windows.values()].sort((a, b) => a.ts - b.ts || a.image.localeCompare(b.image) || a.user.localeCompare(b.user));
  }
}

/** Reads windows back from the history database, in window-start order. */
export async function readHistory(options: HistoryQuery): Promise<HistoryWindow[]> {
  const windows = new WindowAssembler();
  if (options.query === "flux") await readFlux(options, windows);
  else await readExport(options, windows);
  return windows.result();
}

/** Label selectors of the measurement's series (and the pair, where given), for the Prometheus-style APIs. */
function selectorParams(options: HistoryQuery): URLSearchParams {
  const selectors = [`__name__=~"${options.measurement}_.*"`];
  const quote = (value: string) => JSON.stringify(value);
  if (options.image !== undefined) selectors.push(`image=${quote(options.image)}`);
  if (options.user !== undefined) selectors.push(`user=${quote(options.user)}`);
  return new URLSearchParams({ "match[]": `{${selectors.join(",")}}`, start: String(options.fromMs / 1000), end: String(options.toMs / 1000) });
}

/** The longest line an answer may hold (one series of one field over the range asked for). */
const MAX_ANSWER_LINE = 1 << 28;

/**
 * VictoriaMetrics' Prometheus-style export API (`/api/v1/export`, JSON
 * lines) over data written with line protocol: series
 * `<measurement>_<field>` with the tags as labels. The answer is read as it
 * arrives.
 */
async function readExport(options: HistoryQuery, windows: WindowAssembler): Promise<void> {
  const source = `history export from ${options.url}`;
  const response = await fetch(`${options.url.replace(/\/$/, "")}/api/v1/export?${selectorParams(options)}`);
  if (!response.ok) throw new TransientError(`${source} failed: HTTP ${response.status} ${(await response.text()).slice(0, 400)}`);
  const prefix = `${options.measurement}_`;
  if (!response.body) return;
  const tooLong = () => new ValidationError(`${source} returned a line longer than ${MAX_ANSWER_LINE} characters`);
  await forEachLineOfChunks(response.body as unknown as AsyncIterable<Uint8Array>, MAX_ANSWER_LINE, tooLong, (line) => {
    if (!line.trim()) return;
    let series: { metric: Record<string, string>; values: number[]; timestamps: number[] };
    try {
      series = JSON.parse(line);
    } catch {
      throw new ValidationError(`${source} returned a line that is not JSON: ${JSON.stringify(line.slice(0, 80))}`);
    }
    if (
      typeof series?.metric !== "object" ||
      series.metric === null ||
      !Array.isArray(series.values) ||
      !Array.isArray(series.timestamps) ||
      series.values.length !== series.timestamps.length ||
      !series.timestamps.every((ts) => Number.isFinite(ts)) ||
      !series.values.every((value) => typeof value === "number")
    ) {
      throw new ValidationError(`${source} returned a series that is not {metric, values[], timestamps[]} of equal length`);
    }
    const name = series.metric.__name__ ?? "";
    const image = series.metric.image;
    const user = series.metric.user;
    if (!name.startsWith(prefix) || image === undefined || user === undefined) return;
    const field = name.slice(prefix.length);
    series.timestamps.forEach((ts, i) => windows.add(image, user, ts, field, series.values[i]!));
  });
}

/**
 * The (image, user) pairs with windows in the range (and matching the
 * image and user given), sorted: VictoriaMetrics' series API, or a Flux
 * query counting each pair's windows.
 */
export async function listHistoryPairs(options: HistoryQuery): Promise<Array<{ image: string; user: string }>> {
  const pairs = new Map<string, { image: string; user: string }>();
  const add = (image: unknown, user: unknown, source: string) => {
    if (typeof image !== "string" || typeof user !== "string") throw new ValidationError(`${source} returned a series without string image and user labels`);
    pairs.set(JSON.stringify([image, user]), { image, user });
  };
  if (options.query === "flux") {
    const source = `history query at ${options.url}`;
    await fluxRows(options, fluxPairsQuery(options), (row) => add(row.image, row.user, source));
  } else {
    const source = `history series list from ${options.url}`;
    const response = await fetch(`${options.url.replace(/\/$/, "")}/api/v1/series?${selectorParams(options)}`);
    if (!response.ok) throw new TransientError(`${source} failed: HTTP ${response.status} ${(await response.text()).slice(0, 400)}`);
    let answer: { status?: string; data?: unknown };
    try {
      answer = (await response.json()) as typeof answer;
    } catch {
      throw new ValidationError(`${source} is not JSON`);
    }
    if (answer?.status !== "success" || !Array.isArray(answer.data)) throw new ValidationError(`${source} is not {status: "success", data: [...]}`);
    for (const labels of answer.data as Array<Record<string, unknown> | null>) {
      if (typeof labels !== "object" || labels === null) throw new ValidationError(`${source} returned a series that is not a label set`);
      add(labels.image, labels.user, source);
    }
  }
  return [...pairs.values()].sort((a, b) => a.image.localeCompare(b.image) || a.user.localeCompare(b.user));
}

/**
 * InfluxDB 2.x: a Flux query over `/api/v2/query` (annotated CSV, parsed by
 * `@influxdata/influxdb-client`). Values from the command line enter the
 * query only through the client's `flux` template, which quotes them.
 */
async function readFlux(options: HistoryQuery, windows: WindowAssembler): Promise<void> {
  const query = flux`${fluxRange(options)}
  |> keep(columns: ["_time", "_field", "_value", "image", "user"])`;
  await fluxRows(options, query, (row) => {
    const { _time: time, _field: field, _value: value, image, user } = row;
    const ts = typeof time === "string" ? Date.parse(time) : Number.NaN;
    if (typeof field !== "string" || typeof image !== "string" || typeof user !== "string" || !Number.isFinite(ts) || typeof value !== "number") {
      throw new ValidationError(`history query at ${options.url} returned a row that is not {_time, _field, numeric _value, image, user}: ${JSON.stringify(row).slice(0, 160)}`);
    }
    windows.add(image, user, ts, field, value);
  });
}

/** The measurement's rows in the range, of the pair where given (values enter only through the `flux` template, which quotes them). */
function fluxRange(options: HistoryQuery): ReturnType<typeof flux> {
  const filters = [flux`r._measurement == ${options.measurement}`];
  if (options.image !== undefined) filters.push(flux`r.image == ${options.image}`);
  if (options.user !== undefined) filters.push(flux`r.user == ${options.user}`);
  return flux`from(bucket: ${options.bucket ?? "augur"})
  |> range(start: ${fluxDateTime(new Date(options.fromMs).toISOString())}, stop: ${fluxDateTime(new Date(options.toMs + 1).toISOString())})
  |> filter(fn: (r) => ${fluxExpression(filters.map(String).join(" and "))})`;
}

/** One row per pair: its windows (the `samples` field) counted. */
function fluxPairsQuery(options: HistoryQuery): ReturnType<typeof flux> {
  return flux`${fluxRange(options)}
  |> filter(fn: (r) => r._field == "samples")
  |> group(columns: ["image", "user"])
  |> count()
  |> keep(columns: ["image", "user", "_value"])`;
}

/** Runs a Flux query, row by row as the answer arrives; errors sorted into worth retrying or not. */
async function fluxRows(options: HistoryQuery, query: ReturnType<typeof flux>, onRow: (row: Record<string, unknown>) => void): Promise<void> {
  const api = new InfluxDB({ url: options.url, token: options.token ?? "", timeout: 60_000 }).getQueryApi(options.org ?? "augur");
  try {
    for await (const { values, tableMeta } of api.iterateRows(query)) onRow(tableMeta.toObject(values) as Record<string, unknown>);
  } catch (error) {
    if (error instanceof ValidationError) throw error;
    const status = error instanceof HttpError ? error.statusCode : 0;
    const message = `history query at ${options.url} failed: ${errorMessage(error)}`;
    // The database away or overloaded: worth retrying. A refused query or token is not.
    throw status === 0 || status >= 500 || status === 429 ? new TransientError(message) : new ValidationError(message);
  }
}
