import { z } from "zod";
import { CapacityError, ValidationError } from "../core/errors.js";
import { GpuCollector, gpuCollectorConfig, type GpuDevice, type GpuSnapshot } from "../collect/gpu.js";

export const gpuConnectorConfig = gpuCollectorConfig
  .extend({
    /**
     * Share a GPU between runs with MPS (the MPS control daemon must already
     * run; augur never starts it or changes compute modes). Each run gets an
     * active-thread percentage and a pinned memory limit in its environment.
     */
    mps: z
      .object({
        enabled: z.boolean().default(false),
        /** Headroom over the predicted share. */
        headroom: z.number().min(0).max(4).default(0.25),
      })
      .strict()
      .default({}),
  })
  .strict();
export type GpuConnectorConfig = z.infer<typeof gpuConnectorConfig>;

export interface GpuAssignment {
  devices: GpuDevice[];
  /** Environment of the launched process: visible devices, and MPS limits when sharing. */
  env: Record<string, string>;
}

/**
 * Picks `count` devices for a run: those no other run of this launcher
 * holds, least memory in use first, ties by index. Whole devices unless a
 * share (0..1 of one device) is asked, which MPS enforces.
 */
export function chooseDevices(devices: GpuDevice[], held: ReadonlySet<string>, count: number): GpuDevice[] {
  if (!Number.isInteger(count) || count < 1) throw new ValidationError(`gpus must be a positive whole number (got ${count})`, count);
  const free = devices.filter((device) => device.uuid !== null && !held.has(device.uuid));
  if (free.length < count) throw new CapacityError(`${count} GPU(s) asked, ${free.length} free of ${devices.length}`, { count });
  return [...free].sort((a, b) => (a.memoryUsedBytes ?? 0) - (b.memoryUsedBytes ?? 0) || a.index - b.index).slice(0, count);
}

/** The environment that confines a CUDA process to its devices (by UUID, as the MPS docs advise) and share. */
export function gpuEnvironment(devices: GpuDevice[], share?: { threadPercentage?: number; memoryLimitBytes?: number }): Record<string, string> {
  const env: Record<string, string> = { CUDA_VISIBLE_DEVICES: devices.map((device) => device.uuid).join(","), CUDA_DEVICE_ORDER: "PCI_BUS_ID" };
  if (share?.threadPercentage !== undefined) {
    env.CUDA_MPS_ACTIVE_THREAD_PERCENTAGE = String(Math.min(100, Math.max(1, Math.ceil(share.threadPercentage))));
  }
  if (share?.memoryLimitBytes !== undefined) {
    // Ordinals as the client sees them (0..n-1 after CUDA_VISIBLE_DEVICES), limits in MB.
    const megabytes = Math.max(1, Math.ceil(share.memoryLimitBytes / (1024 * 1024)));
    env.CUDA_MPS_PINNED_DEVICE_MEM_LIMIT = devices.map((_, ordinal) => `${ordinal}=${megabytes}M`).join(",");
  }
  return env;
}

/**
 * The GPU connector: device choice and share for runs augur launches. It
 * reads devices with the collector (queries only) and never changes a
 * device-wide setting: no clocks, power limits, MIG or compute mode.
 */
export class GpuConnector {
  private readonly held = new Map<string, string[]>();
  readonly collector: GpuCollector;

  constructor(readonly config: GpuConnectorConfig) {
    this.collector = new GpuCollector(config);
  }

  async assign(runId: string, count: number, predicted?: { utilization?: number; memoryBytes?: number }, snapshot?: GpuSnapshot): Promise<GpuAssignment> {
    const { devices } = snapshot ?? (await this.collector.snapshot());
    const heldNow = new Set([...this.held.values()].flat());
    const chosen = chooseDevices(devices, heldNow, count);
    this.held.set(runId, chosen.map((device) => device.uuid!));
    let share: { threadPercentage?: number; memoryLimitBytes?: number } | undefined;
    if (this.config.mps.enabled && predicted) {
      share = {};
      if (predicted.utilization !== undefined && predicted.utilization < count) {
        share.threadPercentage = ((predicted.utilization / count) * 100 * (1 + this.config.mps.headroom));
      }
      if (predicted.memoryBytes !== undefined) share.memoryLimitBytes = (predicted.memoryBytes / count) * (1 + this.config.mps.headroom);
    }
    return { devices: chosen, env: gpuEnvironment(chosen, share) };
  }

  release(runId: string): void {
    this.held.delete(runId);
  }
}
