import { EventEmitter } from "node:events";
import { z } from "zod";
import { ANY, pairKey } from "../core/keys.js";
import { errorMessage } from "../core/errors.js";
import type { ActuationResult, AllocationDecision, AllocationLevel, Profile, ProfileLevel, Resource, WindowAggregate } from "../core/types.js";
import type { AnomalyEvent } from "../detect/monitor.js";
import type { AllocationPoint, AnomalyEntry, ForecastBand, ForecastPoint, PairSummary, UsagePoint, UsageStats } from "./types.js";
import { TOPICS, type Consumer, type Transport } from "../transport/topic.js";

export const dashboardConfig = z
  .object({
    /** Serve the web dashboard at /ui/ (and its JSON under /v1/dashboard). */
    enabled: z.boolean().default(true),
    /** Points kept in memory per (image, user) and series; older ones are dropped (the history database keeps them). */
    pointsPerPair: z.number().int().min(10).max(100_000).default(360),
    /** Pairs kept; the least recently updated are forgotten beyond this. */
    maxPairs: z.number().int().min(1).max(1_000_000).default(1_000),
    /** Anomalies and actuation results kept for the timeline. */
    maxEvents: z.number().int().min(10).max(1_000_000).default(2_000),
    /** Directory of backtest results (`NAME.json` from `augur backtest --out`, `NAME.html` from `--report`), relative to the pipeline file. */
    reports: z.string().min(1).optional(),
  })
  .strict();
export type DashboardConfig = z.infer<typeof dashboardConfig>;

/** A fixed-size ring: the newest `capacity` items, oldest first on read. */
class Ring<T> {
  private items: T[] = [];
  private start = 0;
  constructor(private readonly capacity: number) {}

  push(item: T): void {
    if (this.items.length < this.capacity) this.items.push(item);
    else {
      this.items[this.start] = item;
      this.start = (this.start + 1) % this.capacity;
    }
  }

  get size(): number {
    return this.items.length;
  }

  last(): T | undefined {
    if (this.items.length === 0) return undefined;
    return this.items[(this.start + this.items.length - 1) % this.items.length];
  }

  toArray(): T[] {
    return [...this.items.slice(this.start), ...this.items.slice(0, this.start)];
  }
}

interface PairSeries {
  image: string;
  user: string;
  usage: Ring<UsagePoint>;
  forecast: Ring<ForecastPoint>;
  allocations: Ring<AllocationPoint>;
  anomalies: number;
  /** Event time of the newest record of any kind. */
  updated: number;
}

export type FeedChange = { kind: "window" | "profile" | "allocation" | "anomaly"; image: string; user: string } | { kind: "actuation"; workload: string };

/** Actions that answer an anomaly (the remediator's), as opposed to the launcher's sizing. */
const REMEDIATION_ACTIONS = new Set(["alert", "throttle", "freeze", "kill", "isolate-network"]);
/** An action counts for an anomaly if it came within this long after it (escalations included). */
const ACTION_HORIZON_MS = 6 * 3_600_000;

function statsOf(window: WindowAggregate): Partial<Record<Resource, UsageStats>> {
  const out: Partial<Record<Resource, UsageStats>> = {};
  for (const [resource, stats] of Object.entries(window.resources) as Array<[Resource, NonNullable<WindowAggregate["resources"][Resource]>]>) {
    out[resource] = [stats.p50, stats.p95, stats.max];
  }
  return out;
}

function bandsOf(profile: Profile): Partial<Record<Resource, ForecastBand>> {
  const out: Partial<Record<Resource, ForecastBand>> = {};
  for (const [resource, p] of Object.entries(profile.resources) as Array<[Resource, NonNullable<Profile["resources"][Resource]>]>) {
    out[resource] = { p50: p.p50, p90: p.p90, p99: p.p99, request: p.request, limit: p.limit, model: p.model };
  }
  return out;
}

/**
 * What the dashboard shows, read from the pipeline's own topics (windows,
 * profiles, allocations, anomalies, actuations) with a consumer group of its
 * own: the same code on the embedded transport (`augur run`) and on Kafka
 * (`augur stage api`, which starts from the oldest retained record). It
 * keeps a bounded recent past in memory; the history database keeps the
 * rest. Emits "change" (a FeedChange) for live updates.
 */
export class DashboardFeed extends EventEmitter {
  private readonly pairs = new Map<string, PairSeries>();
  private readonly anomalies: Ring<AnomalyEvent>;
  private readonly actuations: Ring<ActuationResult>;
  private readonly consumers: Consumer[] = [];
  /** Records the feed could not use (never fatal: the dashboard is a view). */
  skipped = 0;

  constructor(private readonly config: DashboardConfig) {
    super();
    this.anomalies = new Ring(config.maxEvents);
    this.actuations = new Ring(config.maxEvents);
  }

  /** Reads the topics with one consumer group per topic, named `<group>.<topic>` (a Kafka group shares one subscription). */
  async start(transport: Transport, group: string): Promise<void> {
    const each = <T>(topic: string, apply: (value: T) => void) =>
      transport.consume<T>(topic, { group: `${group}.${topic}`, from: "earliest", maxBatch: 1_000, ephemeral: true }, async (batch) => {
        for (const record of batch) {
          try {
            apply(record.value);
          } catch (error) {
            this.skipped++;
            if (this.skipped <= 10) console.error(`augur: dashboard skipped a record of ${topic}: ${errorMessage(error)}`);
          }
        }
      });
    this.consumers.push(
      await each<WindowAggregate>(TOPICS.windows, (value) => this.addWindow(value)),
      await each<Profile>(TOPICS.profiles, (value) => this.addProfile(value)),
      await each<AllocationDecision>(TOPICS.allocations, (value) => this.addAllocation(value)),
      await each<AnomalyEvent>(TOPICS.anomalies, (value) => this.addAnomaly(value)),
      await each<ActuationResult>(TOPICS.actuations, (value) => this.addActuation(value)),
    );
  }

  async stop(): Promise<void> {
    for (const consumer of this.consumers.splice(0)) await consumer.stop();
  }

  private series(image: string, user: string, ts: number): PairSeries {
    const key = pairKey(image, user);
    let series = this.pairs.get(key);
    if (series) {
      this.pairs.delete(key); // most recently updated last: the map's order is the eviction order
    } else {
      const n = this.config.pointsPerPair;
      series = { image, user, usage: new Ring(n), forecast: new Ring(n), allocations: new Ring(n), anomalies: 0, updated: ts };
      if (this.pairs.size >= this.config.maxPairs) this.pairs.delete(this.pairs.keys().next().value!);
    }
    series.updated = Math.max(series.updated, ts);
    this.pairs.set(key, series);
    return series;
  }

  addWindow(window: WindowAggregate): void {
    const series = this.series(window.image, window.user, window.windowEnd);
    series.usage.push({ t: window.windowEnd, workloads: window.workloadCount, usage: statsOf(window), oomKills: window.oomKills });
    this.emit("change", { kind: "window", image: window.image, user: window.user } satisfies FeedChange);
  }

  addProfile(profile: Profile): void {
    const series = this.series(profile.image, profile.user, profile.version);
    const last = series.forecast.last();
    if (last && last.t >= profile.version) return; // a redelivered or older version
    series.forecast.push({ t: profile.version, level: profile.level, windows: profile.windows, resources: bandsOf(profile) });
    this.emit("change", { kind: "profile", image: profile.image, user: profile.user } satisfies FeedChange);
  }

  addAllocation(decision: AllocationDecision): void {
    const series = this.series(decision.image, decision.user, decision.ts);
    series.allocations.push({
      t: decision.ts,
      requestId: decision.requestId,
      node: decision.node,
      ok: decision.ok,
      reason: decision.reason,
      level: decision.level,
      cpu: decision.cpu,
      memory: decision.memory,
      gpus: decision.gpus,
    });
    this.emit("change", { kind: "allocation", image: decision.image, user: decision.user } satisfies FeedChange);
  }

  addAnomaly(event: AnomalyEvent): void {
    this.anomalies.push(event);
    this.series(event.image, event.user, event.detectedTs).anomalies++;
    this.emit("change", { kind: "anomaly", image: event.image, user: event.user } satisfies FeedChange);
  }

  addActuation(result: ActuationResult): void {
    this.actuations.push(result);
    this.emit("change", { kind: "actuation", workload: result.workload } satisfies FeedChange);
  }

  /** Exact pairs (no wildcard), most recently updated first, filtered by substrings of image and user. */
  listPairs(filter: { image?: string; user?: string; limit?: number } = {}): { pairs: PairSummary[]; total: number } {
    const image = filter.image?.toLowerCase() ?? "";
    const user = filter.user?.toLowerCase() ?? "";
    const out: PairSummary[] = [];
    let total = 0;
    for (const series of [...this.pairs.values()].reverse()) {
      if (series.image === ANY || series.user === ANY) continue;
      if (!series.image.toLowerCase().includes(image) || !series.user.toLowerCase().includes(user)) continue;
      total++;
      if (out.length >= (filter.limit ?? 200)) continue;
      const lastUsage = series.usage.last();
      const lastForecast = series.forecast.last();
      const lastAllocation = series.allocations.last();
      out.push({
        image: series.image,
        user: series.user,
        windows: series.usage.size,
        lastWindow: lastUsage?.t ?? null,
        forecastLevel: lastForecast?.level ?? null,
        lastAllocation: lastAllocation ? { level: lastAllocation.level, ok: lastAllocation.ok, t: lastAllocation.t } : null,
        anomalies: series.anomalies,
        resources: Object.keys(lastUsage?.usage ?? lastForecast?.resources ?? {}) as Resource[],
        updated: series.updated,
      });
    }
    return { pairs: out, total };
  }

  /** Every series kept for one key (exact or a fallback level such as (image, *)). */
  pair(image: string, user: string): { usage: UsagePoint[]; forecast: ForecastPoint[]; allocations: AllocationPoint[] } | null {
    const series = this.pairs.get(pairKey(image, user));
    if (!series) return null;
    return { usage: series.usage.toArray(), forecast: series.forecast.toArray(), allocations: series.allocations.toArray() };
  }

  /** Anomalies newest first, each with the remediation actions taken on its workload after it. */
  listAnomalies(filter: { image?: string; user?: string; limit?: number } = {}): AnomalyEntry[] {
    const image = filter.image?.toLowerCase() ?? "";
    const user = filter.user?.toLowerCase() ?? "";
    const actions = this.actuations.toArray().filter((result) => REMEDIATION_ACTIONS.has(result.action));
    const out: AnomalyEntry[] = [];
    for (const event of this.anomalies.toArray().reverse()) {
      if (!event.image.toLowerCase().includes(image) || !event.user.toLowerCase().includes(user)) continue;
      const prefix = `${event.type} (`;
      out.push({
        ...event,
        actions: actions
          .filter((a) => a.workload === event.workload && a.ts >= event.detectedTs && a.ts - event.detectedTs <= ACTION_HORIZON_MS && a.reason.startsWith(prefix))
          .map(({ action, connector, ok, dryRun, reason, ts }) => ({ action, connector, ok, dryRun, reason, ts })),
      });
      if (out.length >= (filter.limit ?? 500)) break;
    }
    return out;
  }

  /** Allocation decisions seen per node (the live capacity of this node comes from its engine). */
  nodesSeen(): Map<string, { decisions: number; refused: number; last: number }> {
    const nodes = new Map<string, { decisions: number; refused: number; last: number }>();
    for (const series of this.pairs.values()) {
      for (const point of series.allocations.toArray()) {
        const entry = nodes.get(point.node) ?? { decisions: 0, refused: 0, last: 0 };
        entry.decisions++;
        if (!point.ok) entry.refused++;
        entry.last = Math.max(entry.last, point.t);
        nodes.set(point.node, entry);
      }
    }
    return nodes;
  }

  stats(): { pairs: number; anomalies: number; actuations: number; skipped: number } {
    return { pairs: this.pairs.size, anomalies: this.anomalies.size, actuations: this.actuations.size, skipped: this.skipped };
  }
}
