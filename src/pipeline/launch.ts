import type { Launcher } from "../actuate/launcher.js";
import { createLauncher } from "../actuate/registry.js";
import type { AllocationEngine } from "../allocate/engine.js";
import type { LoadedPipeline } from "../config/pipeline.js";
import { ConfigError } from "../core/errors.js";
import { Metrics } from "../core/metrics.js";
import type { ProfileStore } from "../store/profile-store.js";
import { createTransport } from "../transport/create.js";
import { EmbeddedTransport } from "../transport/embedded/embedded-transport.js";
import type { Transport } from "../transport/topic.js";
import { aggregateStage, forecastStage, openEngine } from "./embedded.js";

export interface LaunchPipeline {
  store: ProfileStore;
  engine: AllocationEngine;
  launcher: Launcher;
  transport: Transport;
  /** Folds what the runs measured into profiles (embedded) and closes everything. */
  close(): Promise<void>;
}

/**
 * What `augur exec` needs: the store and engine, a launcher, and a way for
 * the run's telemetry to reach the profiles. Embedded, the aggregate and
 * forecast stages run in this process into the shared data directory and
 * fold in the open windows when the run ends; on Kafka the samples go to
 * `augur.samples` for the pipeline's own stages.
 */
export async function openLaunchPipeline(pipeline: LoadedPipeline): Promise<LaunchPipeline> {
  const metrics = new Metrics();
  const { store, engine } = openEngine(pipeline, metrics);
  const closers: Array<() => Promise<void>> = [async () => store.close()];
  const closeAll = async () => {
    for (const close of closers.reverse()) await close();
  };
  try {
    const { config } = pipeline;
    let transport: Transport;
    if (config.transport.kind === "kafka") {
      transport = await createTransport(config, metrics);
      closers.push(() => transport.close());
    } else {
      const embedded = new EmbeddedTransport({ partitions: config.transport.partitions, bufferRecords: config.transport.bufferRecords });
      transport = embedded;
      closers.push(() => embedded.close());
      const forecast = forecastStage(pipeline, embedded, store, metrics);
      const aggregate = aggregateStage(pipeline, embedded, metrics, { idleWatermarkMs: 0 });
      await forecast.start();
      closers.push(() => forecast.stop());
      await aggregate.start();
      closers.push(async () => {
        await embedded.drain();
        await aggregate.stop({ flush: true });
        await embedded.drain();
      });
    }
    const { launcher, reason } = createLauncher(pipeline, { engine, store, transport, metrics });
    if (!launcher) throw new ConfigError(`augur exec cannot launch here: ${reason}`);
    let closed = false;
    return {
      store,
      engine,
      launcher,
      transport,
      async close() {
        if (closed) return;
        closed = true;
        await closeAll();
      },
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}
