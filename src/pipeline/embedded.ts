import { AggregateStage } from "../aggregate/stage.js";
import { AllocationEngine } from "../allocate/engine.js";
import { nodeInventory } from "../allocate/inventory.js";
import { createScaler } from "../allocate/scaler.js";
import { buildApi } from "../api/server.js";
import { resolveApiToken } from "../api/token.js";
import { HostCollector } from "../collect/host-collector.js";
import type { LoadedPipeline } from "../config/pipeline.js";
import { Metrics } from "../core/metrics.js";
import { createModelFactory } from "../forecast/registry.js";
import { ForecastStage } from "../forecast/stage.js";
import { ProfileStore } from "../store/profile-store.js";
import { EmbeddedTransport } from "../transport/embedded/embedded-transport.js";
import type { FastifyInstance } from "fastify";

export interface RunningPipeline {
  store: ProfileStore;
  engine: AllocationEngine;
  transport: EmbeddedTransport;
  api: FastifyInstance;
  address: string;
  tokenSource: string;
  collectors: HostCollector[];
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

/**
 * The whole loop on one machine: collectors → samples → aggregate → windows
 * → forecast → profiles (durable store) → allocation engine and HTTP API.
 */
export async function startEmbeddedPipeline(pipeline: LoadedPipeline): Promise<RunningPipeline> {
  const { config } = pipeline;
  const metrics = new Metrics({ defaultMetrics: true });
  const { store, engine } = openEngine(pipeline, metrics);
  const transport = new EmbeddedTransport({ partitions: config.transport.partitions, bufferRecords: config.transport.bufferRecords });
  const window = config.aggregate.window;
  const aggregate = new AggregateStage(
    transport,
    {
      kind: window.kind,
      sizeMs: window.sizeSeconds * 1000,
      slideMs: (window.slideSeconds ?? window.sizeSeconds) * 1000,
      allowedLatenessMs: config.aggregate.allowedLatenessSeconds * 1000,
      sketchAccuracy: config.aggregate.sketchAccuracy,
      latePolicy: config.aggregate.latePolicy,
      duplicatePolicy: config.aggregate.duplicatePolicy,
      idleWatermarkMs: config.aggregate.idleWatermarkSeconds * 1000,
    },
    metrics,
  );
  const forecast = new ForecastStage(transport, store, createModelFactory(config.forecast.model, config.forecast.options), metrics, {
    cacheKeys: config.forecast.cacheKeys,
  });
  const collectors = pipeline.collectors.map((collector) => new HostCollector(collector, transport, metrics, pipeline.node));
  const { token, source: tokenSource } = resolveApiToken({ tokenEnv: config.api.tokenEnv, tokenFile: config.api.tokenFile, dataDir: pipeline.dataDir });
  const api = buildApi({
    store,
    engine,
    metrics,
    node: pipeline.node,
    token,
    bodyLimitBytes: config.api.bodyLimitBytes,
    health: () => ({ transport: transport.kind, pendingRecords: transport.pending(), collectors: collectors.map((c) => ({ cgroup: c.cgroupVersion })) }),
  });

  await forecast.start();
  await aggregate.start();
  const listen = config.api.listen;
  const at = listen.lastIndexOf(":");
  let address: string;
  try {
    address = await api.listen({ host: listen.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(listen.slice(at + 1)) });
  } catch (error) {
    await aggregate.stop();
    await forecast.stop();
    await transport.close();
    store.close();
    throw error;
  }
  for (const collector of collectors) collector.start();

  let stopped = false;
  return {
    store,
    engine,
    transport,
    api,
    address,
    tokenSource,
    collectors,
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const collector of collectors) await collector.stop();
      await api.close();
      await aggregate.stop();
      await forecast.stop();
      await transport.close();
      store.close();
    },
  };
}
