import type { FastifyInstance } from "fastify";
import type { Launcher } from "../actuate/launcher.js";
import { createLauncher } from "../actuate/registry.js";
import { DashboardFeed } from "../dashboard/feed.js";
import { ReportDirectory } from "../dashboard/reports.js";
import { RemediateStage } from "../detect/remediate.js";
import { DetectStage } from "../detect/stage.js";
import { AggregateStage } from "../aggregate/stage.js";
import { AllocationEngine } from "../allocate/engine.js";
import { nodeInventory } from "../allocate/inventory.js";
import { createScaler } from "../allocate/scaler.js";
import { buildApi } from "../api/server.js";
import { resolveApiToken } from "../api/token.js";
import { HostCollector } from "../collect/host-collector.js";
import type { LoadedPipeline } from "../config/pipeline.js";
import { ConfigError } from "../core/errors.js";
import { Metrics } from "../core/metrics.js";
import type { AllocationDecision, Profile } from "../core/types.js";
import { createModelFactory } from "../forecast/registry.js";
import { ForecastStage } from "../forecast/stage.js";
import { HistorySink } from "../history/sink.js";
import { ProfileStore } from "../store/profile-store.js";
import { createTransport } from "../transport/create.js";
import { EmbeddedTransport } from "../transport/embedded/embedded-transport.js";
import { TOPICS, type Consumer, type Transport } from "../transport/topic.js";
import { STAGE_NAMES, type StageName } from "./stage-names.js";

export interface RunningPipeline {
  stages: StageName[];
  store: ProfileStore;
  engine: AllocationEngine;
  transport: Transport;
  api: FastifyInstance;
  address: string;
  tokenSource: string;
  collectors: HostCollector[];
  launcher: Launcher | null;
  stop(): Promise<void>;
}

export interface RunningStage {
  name: StageName;
  transport: Transport;
  collectors: HostCollector[];
  /** The HTTP API (allocate) or a metrics-only endpoint (the other stages), if listening. */
  address: string | null;
  stop(): Promise<void>;
}

/** Opens the store and engine only: what `augur allocate` and `augur profiles` need. */
export function openEngine(pipeline: LoadedPipeline, metrics?: Metrics): { store: ProfileStore; engine: AllocationEngine } {
  const store = new ProfileStore(pipeline.dataDir);
  try {
    const allocate = pipeline.config.allocate;
    const engine = new AllocationEngine(allocate, store, nodeInventory(allocate), pipeline.node, createScaler(allocate.scaler), metrics);
    return { store, engine };
  } catch (error) {
    store.close();
    throw error;
  }
}

export function aggregateStage(pipeline: LoadedPipeline, transport: Transport, metrics: Metrics, overrides: { idleWatermarkMs?: number } = {}): AggregateStage {
  const { aggregate } = pipeline.config;
  return new AggregateStage(
    transport,
    {
      kind: aggregate.window.kind,
      sizeMs: aggregate.window.sizeSeconds * 1000,
      slideMs: (aggregate.window.slideSeconds ?? aggregate.window.sizeSeconds) * 1000,
      allowedLatenessMs: aggregate.allowedLatenessSeconds * 1000,
      sketchAccuracy: aggregate.sketchAccuracy,
      latePolicy: aggregate.latePolicy,
      duplicatePolicy: aggregate.duplicatePolicy,
      idleWatermarkMs: overrides.idleWatermarkMs ?? aggregate.idleWatermarkSeconds * 1000,
    },
    metrics,
  );
}

export function forecastStage(pipeline: LoadedPipeline, transport: Transport, store: ProfileStore, metrics: Metrics): ForecastStage {
  const { forecast } = pipeline.config;
  return new ForecastStage(transport, store, createModelFactory(forecast.model, forecast.options), metrics, {
    cacheKeys: forecast.cacheKeys,
    fallbackFactory: forecast.fallbackModel === forecast.model ? undefined : createModelFactory(forecast.fallbackModel, {}),
    // On Kafka several forecast processes may share the windows: fallback levels get one owner each.
    levels: transport.kind === "embedded" ? "inline" : "repartition",
    changelog: pipeline.config.transport.kind === "kafka" && pipeline.config.transport.changelog,
    // The levels' profiles for the pairs' prior: a group of this process's own, read from the earliest record.
    peersGroup: `augur-forecast-peers-${pipeline.node}-${process.pid}-${Date.now().toString(36)}`,
  });
}

function historySink(pipeline: LoadedPipeline, transport: Transport, metrics: Metrics): HistorySink {
  if (!pipeline.config.history) throw new ConfigError(`${pipeline.path}: the history stage needs a 'history' section`);
  return new HistorySink(transport, pipeline.config.history, metrics);
}

/** This node's remediation, through the launcher's connectors; returns its stop. */
async function startRemediation(
  pipeline: LoadedPipeline,
  transport: Transport,
  metrics: Metrics,
  { actuators, launcher }: ReturnType<typeof createLauncher>,
  store: ProfileStore,
): Promise<() => Promise<void>> {
  const targets = { cgroups: actuators.cgroups, processes: actuators.processes, tc: actuators.tc, launcher, store };
  const remediate = new RemediateStage(transport, pipeline.config.detect.remediation, pipeline.node, metrics, targets);
  await remediate.start();
  return () => remediate.stop();
}

/** Every decision of the engine goes to `augur.allocations`, keyed by node (the dashboard and any other reader). */
function publishDecisions(engine: AllocationEngine, transport: Transport, node: string): void {
  engine.onDecision(async (decision) => {
    await transport.topic<AllocationDecision>(TOPICS.allocations).publish([{ key: node, value: decision, timestamp: decision.ts }]);
  });
}

/**
 * The dashboard's feed, reading the pipeline's topics. On Kafka its group is
 * new at every start, so it rebuilds the recent past from what the topics
 * retain rather than starting empty after a restart.
 */
async function startDashboard(pipeline: LoadedPipeline, transport: Transport): Promise<{ feed: DashboardFeed; reports: ReportDirectory | null }> {
  const { dashboard } = pipeline.config;
  const reports = dashboard.reports ? new ReportDirectory(dashboard.reports) : null;
  const feed = new DashboardFeed(dashboard);
  const group = transport.kind === "embedded" ? "augur-dashboard" : `augur-dashboard-${pipeline.node}-${Date.now().toString(36)}`;
  await feed.start(transport, group);
  return { feed, reports };
}

function parseListen(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(":");
  return { host: listen.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(listen.slice(at + 1)) };
}

/**
 * The allocate stage on its own: a local copy of `augur.profiles` (newest
 * version per key wins) feeding the engine and the HTTP API.
 */
async function materialiseProfiles(transport: Transport, store: ProfileStore, group: string): Promise<Consumer> {
  return transport.consume<Profile>(TOPICS.profiles, { group, from: "earliest" }, async (batch) => {
    store.writeProfiles(batch.map((record) => ({ profile: record.value, modelState: { model: "remote", stateVersion: 0, state: null } })));
  });
}

/**
 * The whole loop in one process: collectors → samples → aggregate → windows
 * → forecast → profiles (durable store) → allocation engine and HTTP API,
 * plus the history sink when the config has one. On the embedded transport
 * that is augur's default single-host mode; on Kafka it is every stage in one
 * process, sharing the topics with any other process of the same pipeline.
 */
export async function startEmbeddedPipeline(pipeline: LoadedPipeline): Promise<RunningPipeline> {
  const { config } = pipeline;
  const metrics = new Metrics({ defaultMetrics: true });
  const { store, engine } = openEngine(pipeline, metrics);
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop();
  };
  let transport: Transport;
  try {
    transport = await createTransport(config, metrics);
  } catch (error) {
    store.close();
    throw error;
  }
  stops.push(async () => store.close(), () => transport.close());
  try {
    const aggregate = aggregateStage(pipeline, transport, metrics);
    const forecast = forecastStage(pipeline, transport, store, metrics);
    const history = config.history ? historySink(pipeline, transport, metrics) : null;
    const collectors = pipeline.collectors.map((collector) => new HostCollector(collector, transport, metrics, pipeline.node));
    const { token, source: tokenSource } = resolveApiToken({ tokenEnv: config.api.tokenEnv, tokenFile: config.api.tokenFile, dataDir: pipeline.dataDir });
    const launching = createLauncher(pipeline, { engine, store, transport, metrics });
    if (launching.reason && config.actuate.connectors.length > 0) console.error(`augur: the launcher is off on this host: ${launching.reason}`);
    publishDecisions(engine, transport, pipeline.node);
    const dashboard = config.dashboard.enabled ? await startDashboard(pipeline, transport) : null;
    if (dashboard) stops.push(() => dashboard.feed.stop());
    const api = buildApi({
      dashboard: dashboard ?? undefined,
      launcher: { launcher: launching.launcher, reason: launching.reason, runs: config.actuate.runs },
      admission: config.api.admission,
      store,
      engine,
      metrics,
      node: pipeline.node,
      token,
      bodyLimitBytes: config.api.bodyLimitBytes,
      health: () => ({
        transport: transport.kind,
        ...(transport instanceof EmbeddedTransport ? { pendingRecords: transport.pending() } : {}),
        collectors: collectors.map((c) => ({ cgroup: c.cgroupVersion })),
      }),
    });

    await forecast.start();
    stops.push(() => forecast.stop());
    await aggregate.start();
    stops.push(() => aggregate.stop());
    if (history) {
      await history.start();
      stops.push(() => history.stop());
    }
    const { host, port } = parseListen(config.api.listen);
    const address = await api.listen({ host, port });
    stops.push(() => api.close());
    for (const collector of collectors) collector.start();
    stops.push(async () => {
      for (const collector of collectors) await collector.stop();
    });
    // This node's workloads' anomalies, from its own detection or (on Kafka) another process's.
    stops.push(await startRemediation(pipeline, transport, metrics, launching, store));
    if (config.detect.enabled) {
      const detect = new DetectStage(transport, config.detect, metrics);
      await detect.start(store);
      stops.push(() => detect.stop());
    }
    // Runs stop first: their last samples still reach the stages.
    if (launching.launcher) {
      stops.push(() => launching.launcher!.stopAll());
      launching.launcher.sweepPeriodically();
    }

    let stopped = false;
    return {
      stages: [...STAGE_NAMES],
      store,
      engine,
      transport,
      api,
      address,
      tokenSource,
      collectors,
      launcher: launching.launcher,
      async stop() {
        if (stopped) return;
        stopped = true;
        await stopAll();
      },
    };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/**
 * One stage as its own process (`augur stage NAME`), on the Kafka
 * transport: a consumer group that scales by partitions and restarts from
 * committed offsets.
 */
export async function startStage(pipeline: LoadedPipeline, name: StageName, options: { metricsListen?: string } = {}): Promise<RunningStage> {
  const { config } = pipeline;
  if (config.transport.kind !== "kafka") {
    throw new ConfigError(`${pipeline.path}: transport.kind: augur stage runs one stage of a distributed pipeline and needs kafka (got ${config.transport.kind}); use augur run for the embedded mode`);
  }
  const metrics = new Metrics({ defaultMetrics: true });
  const transport = await createTransport(config, metrics);
  const stops: Array<() => Promise<void>> = [() => transport.close()];
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop();
  };
  let collectors: HostCollector[] = [];
  let address: string | null = null;
  try {
    switch (name) {
      case "collect": {
        collectors = pipeline.collectors.map((collector) => new HostCollector(collector, transport, metrics, pipeline.node));
        if (collectors.length === 0) throw new ConfigError(`${pipeline.path}: collect.connectors: the collect stage needs at least one connector`);
        for (const collector of collectors) collector.start();
        stops.push(async () => {
          for (const collector of collectors) await collector.stop();
        });
        break;
      }
      case "aggregate": {
        const stage = aggregateStage(pipeline, transport, metrics);
        await stage.start();
        stops.push(() => stage.stop());
        break;
      }
      case "forecast": {
        const store = new ProfileStore(pipeline.dataDir);
        stops.push(async () => store.close());
        const stage = forecastStage(pipeline, transport, store, metrics);
        await stage.start();
        stops.push(() => stage.stop());
        break;
      }
      case "detect": {
        // Detection only: each node's actuate stage acts on the anomalies of its own workloads.
        const detect = new DetectStage(transport, config.detect, metrics);
        await detect.start(null);
        stops.push(() => detect.stop());
        break;
      }
      case "history": {
        const sink = historySink(pipeline, transport, metrics);
        await sink.start();
        stops.push(() => sink.stop());
        break;
      }
      case "allocate":
      case "actuate":
      case "api": {
        // actuate: the allocate stage of this node plus its launcher (POST /v1/runs, resizing, feedback).
        // api: the allocate stage's HTTP API plus the dashboard, fed from the topics.
        const { store, engine } = openEngine(pipeline, metrics);
        stops.push(async () => store.close());
        // Each process needs every profile: the api stage's copy is a group of its own.
        const consumer = await materialiseProfiles(transport, store, `augur-${name === "api" ? "api" : "allocate"}-${pipeline.node}`);
        stops.push(() => consumer.stop());
        publishDecisions(engine, transport, pipeline.node);
        const dashboard = name === "api" && config.dashboard.enabled ? await startDashboard(pipeline, transport) : null;
        if (dashboard) stops.push(() => dashboard.feed.stop());
        const { token } = resolveApiToken({ tokenEnv: config.api.tokenEnv, tokenFile: config.api.tokenFile, dataDir: pipeline.dataDir });
        let launcher: { launcher: Launcher | null; reason: string | null; runs: typeof config.actuate.runs } | undefined;
        if (name === "actuate") {
          const launching = createLauncher(pipeline, { engine, store, transport, metrics });
          if (!launching.launcher) throw new ConfigError(`the actuate stage cannot run here: ${launching.reason}`);
          stops.push(() => launching.launcher!.stopAll());
          launching.launcher.sweepPeriodically();
          launcher = { launcher: launching.launcher, reason: null, runs: config.actuate.runs };
          stops.push(await startRemediation(pipeline, transport, metrics, launching, store));
        }
        const api = buildApi({ dashboard: dashboard ?? undefined, store, engine, metrics, node: pipeline.node, token, bodyLimitBytes: config.api.bodyLimitBytes, launcher, admission: config.api.admission, health: () => ({ transport: transport.kind, stage: name }) });
        const { host, port } = parseListen(config.api.listen);
        address = await api.listen({ host, port });
        stops.push(() => api.close());
        break;
      }
    }
    if (name !== "allocate" && name !== "actuate" && name !== "api" && options.metricsListen) {
      const { startMetricsServer } = await import("../api/metrics-server.js");
      const server = await startMetricsServer(metrics, options.metricsListen, () => ({ transport: transport.kind, stage: name }));
      address = server.address;
      stops.push(() => server.close());
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  let stopped = false;
  return {
    name,
    transport,
    collectors,
    address,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
  };
}
